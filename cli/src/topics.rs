//! `trackstream topics create`: every pipeline topic through the admin API
//! (`trackstream_runtime::kafka::admin`), idempotent.

use anyhow::Context;
use clap::{Args, Subcommand};
use trackstream_runtime::kafka::admin::{self, Outcome};

use crate::Kafka;

/// `topics ...`.
#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create every pipeline topic (existing ones are left as they are).
    /// shipments and tracking.events get the same partition count
    /// (co-partitioning); a mismatch on existing topics is an error.
    Create(CreateArgs),
}

/// `topics create` options; the defaults are production-safe, the local stack
/// passes `--replication-factor 1`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    kafka: Kafka,
    /// Partitions of every topic (the detector scales out up to this many).
    #[arg(long, default_value_t = admin::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Replicas of every partition.
    #[arg(long, default_value_t = admin::DEFAULT_REPLICATION_FACTOR, value_parser = clap::value_parser!(i32).range(1..))]
    replication_factor: i32,
    /// `min.insync.replicas` of every topic (capped at the replication factor).
    #[arg(long, default_value_t = admin::DEFAULT_MIN_INSYNC_REPLICAS, value_parser = clap::value_parser!(i32).range(1..))]
    min_insync_replicas: i32,
}

/// Runs a `topics` command; prints one JSON line per topic.
pub async fn run(command: TopicsCommand) -> anyhow::Result<()> {
    let TopicsCommand::Create(args) = command;
    let specs = admin::pipeline_topics(
        args.partitions,
        args.replication_factor,
        args.min_insync_replicas,
    );
    let outcomes = admin::create_topics(&args.kafka.config(), &specs)
        .await
        .with_context(|| format!("creating topics on {}", args.kafka.brokers))?;
    for (topic, outcome) in outcomes {
        let outcome = match outcome {
            Outcome::Created => "created",
            Outcome::Existed => "existed",
        };
        crate::emit(format_args!(
            "{}",
            serde_json::json!({ "topic": topic, "outcome": outcome })
        ))?;
    }
    eprintln!(
        "topics ready on {}: {} × {} partitions, replication {}",
        args.kafka.brokers,
        specs.len(),
        args.partitions,
        args.replication_factor
    );
    Ok(())
}
