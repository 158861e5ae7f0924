//! `trackstream repartition`: moves the detector's per-partition state in
//! Redis after `shipments` and `tracking.events` grew to more partitions
//! (`trackstream_detector::store::repartition`; the whole procedure, with
//! when to stop what, is in `docs/SCALING.md`).

use anyhow::Context;
use clap::Args;
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::redis::RedisConn;

use crate::emit;

/// The detector's Redis and the partition counts.
#[derive(Args)]
pub struct RepartitionArgs {
    /// The detector's Redis (`redis.url` of its config), when not a Cluster.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    /// A Redis Cluster master (repeat for every master: each is scanned for
    /// state keys); replaces `--redis-url`.
    #[arg(long = "cluster-node", value_name = "URL")]
    cluster_nodes: Vec<String>,
    /// The partition count the state was written with.
    #[arg(long)]
    from: i32,
    /// The partition count of `shipments` and `tracking.events` now.
    #[arg(long)]
    to: i32,
    /// Count what would move; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs the move and prints its summary as one JSON line.
pub async fn run(args: RepartitionArgs) -> anyhow::Result<()> {
    let config = RedisConfig {
        url: args.redis_url.clone(),
        cluster_nodes: args.cluster_nodes.clone(),
    };
    let nodes = if args.cluster_nodes.is_empty() {
        vec![args.redis_url]
    } else {
        args.cluster_nodes
    };
    let conn = RedisConn::connect(&config)
        .await
        .context("connecting to the detector's Redis")?;
    let moved = trackstream_detector::store::repartition::repartition(
        &conn,
        &nodes,
        args.from,
        args.to,
        args.dry_run,
    )
    .await?;
    emit(format_args!(
        "{}",
        serde_json::json!({
            "from": args.from,
            "to": args.to,
            "dry_run": args.dry_run,
            "waybills": moved.waybills,
            "waybills_moved": moved.waybills_moved,
            "keys_moved": moved.keys_moved,
            "timers_moved": moved.timers_moved,
            "watermark_ms": moved.watermark,
        })
    ))?;
    Ok(())
}
