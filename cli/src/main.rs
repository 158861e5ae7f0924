//! `trackstream`: the operator CLI.
//!
//! One binary for what an operator or an integrating provider does by hand:
//! create topics, look at records, ask the gRPC API about an order, send a signed
//! test push, register a shipment, replay normalization and redrive dead letters.
//! It talks to the same endpoints as the services (Kafka, ingest's HTTP API, the
//! notifier's gRPC API) and reuses the libraries they use, so it cannot drift from
//! them.
//!
//! Layout:
//! - this file — the clap command tree and dispatch (errors become `anyhow` here);
//! - [`records`] — reading a topic from the beginning, the end or a time, one
//!   mechanism for `tail` and `dlq`;
//! - [`decode`] — topic → protobuf message type, records as JSON lines;
//! - [`tail`], [`dlq`], [`order`], [`http`] (`push`, `register`), [`topics`],
//!   [`repartition`] — one module per command family.
//!
//! Output is JSON lines on stdout (one record, reply or summary per line), so it
//! pipes into `jq`; progress and diagnostics go to stderr.
#![forbid(unsafe_code)]

mod decode;
mod dlq;
mod http;
mod incidents;
mod order;
mod records;
mod repartition;
mod tail;
mod topics;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use trackstream_runtime::config::KafkaConfig;

/// Operate a trackstream deployment: topics, records, orders, test pushes,
/// registrations, replays and dead letters.
#[derive(Parser)]
#[command(name = "trackstream", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the Kafka brokers are (for commands that read or write topics).
#[derive(Args, Clone)]
struct Kafka {
    /// Bootstrap servers, comma-separated. Default: the local stack's broker
    /// (`deploy/local/stack.sh`).
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// An extra librdkafka property, e.g. `security.protocol=SASL_SSL`
    /// (repeatable; the services' `kafka.extra`).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = key_value)]
    properties: Vec<(String, String)>,
}

impl Kafka {
    fn config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            extra: self.properties.iter().cloned().collect(),
            ..KafkaConfig::default()
        }
    }
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.trim().is_empty())
        .map(|(key, value)| (key.trim().to_owned(), value.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

#[derive(Subcommand)]
enum Command {
    /// Kafka topics of the pipeline.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Print a topic's records as JSON lines, protobuf values decoded.
    Tail(tail::TailArgs),
    /// Orders through the notifier's gRPC API (as a merchant).
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// Sign a provider payload with a configured secret and post it to ingest, as
    /// the provider would; non-2xx exits non-zero.
    Push(http::PushArgs),
    /// Register shipments with ingest (as a merchant).
    Register(http::RegisterArgs),
    /// Re-normalize a range of scans.raw (normalize's replay; see docs/REPLAY.md)
    /// and print a JSON summary.
    Replay(ReplayCommand),
    /// Dead letters on scans.dlq and tracking.dlq.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Move the detector's state in Redis after `shipments` and
    /// `tracking.events` grew to more partitions (the detector stopped; see
    /// docs/SCALING.md) and print a JSON summary.
    Repartition(repartition::RepartitionArgs),
    /// Declare an incident (a carrier's closure of an area) or lift one, on
    /// incidents.declared (docs/INCIDENTS.md).
    #[command(subcommand)]
    Incidents(incidents::IncidentsCommand),
    /// Print a shell completion script (e.g. `trackstream completions bash >
    /// /etc/bash_completion.d/trackstream`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `replay`: normalize's config (providers, Kafka) plus the replay range.
#[derive(Args)]
struct ReplayCommand {
    /// normalize's TOML config (the providers' settings decide the mapping);
    /// `KAFKA_BROKERS` and `TRACKSTREAM__...` overrides apply as for the service.
    #[arg(long, value_name = "FILE", env = "TRACKSTREAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    range: trackstream_normalize::cli::ReplayArgs,
}

/// Writes one output line. Output piped into `head` or a closed pager is not an
/// error worth a panic (what `println!` does): [`main`] ends quietly on it.
pub fn emit(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_fmt(line)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match run(Cli::parse()).await {
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topics(command) => topics::run(command).await,
        Command::Tail(args) => tail::run(args).await,
        Command::Order(command) => order::run(command).await,
        Command::Push(args) => http::push(args).await,
        Command::Register(args) => http::register(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Dlq(command) => dlq::run(command).await,
        Command::Repartition(args) => repartition::run(args).await,
        Command::Incidents(command) => incidents::run(command).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "trackstream", &mut script);
            emit(format_args!(
                "{}",
                String::from_utf8_lossy(&script).trim_end()
            ))?;
            Ok(())
        }
    }
}

async fn replay(args: ReplayCommand) -> anyhow::Result<()> {
    let config: trackstream_normalize::Config =
        trackstream_runtime::config::load(args.config.as_deref())
            .context("loading the normalize config")?;
    let options = args.range.into_options()?;
    let summary = trackstream_normalize::replay::run(&config, &options)
        .await
        .context("replaying scans.raw")?;
    emit(format_args!("{}", serde_json::to_string(&summary)?))?;
    Ok(())
}
