//! The command line of `trackstream-scale` (documented in `benches/RESULTS.md`,
//! "Scaling per stage").

use std::path::PathBuf;

use anyhow::{Context, bail};
use trackstream_testkit::processes::Storage;

/// Which Redis the services use in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisMode {
    /// One `redis-server`.
    Standalone,
    /// Three masters of a Redis Cluster, every slot covered.
    Cluster,
}

impl RedisMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster (3 masters)",
        }
    }
}

/// The flags of one run.
pub struct Options {
    pub(crate) instances: Vec<usize>,
    pub(crate) redis: Vec<RedisMode>,
    pub(crate) webhooks: usize,
    pub(crate) partitions: i32,
    pub(crate) broker_storage: Storage,
    pub(crate) concurrency: usize,
    pub(crate) bin_dir: PathBuf,
    pub(crate) results: Option<PathBuf>,
}

/// `trackstream-scale`: per consuming stage (normalize, detector, notifier),
/// how fast 1, 2, … instances in one consumer group drain the same backlog.
#[derive(clap::Parser)]
#[command(name = "trackstream-scale", version)]
struct Cli {
    /// Instance counts to measure, comma-separated; each gets a fresh broker,
    /// Redis and backlog.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    instances: Vec<usize>,
    /// Redis setups, comma-separated: `standalone`, `cluster` (three masters).
    #[arg(long, default_value = "standalone,cluster", value_delimiter = ',')]
    redis: Vec<String>,
    /// Webhooks in the backlog (~3.2 scans each, duplicates included).
    #[arg(long, default_value_t = 40_000)]
    webhooks: usize,
    /// Partitions of every topic (the most instances a stage can use).
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// The broker's storage. `memory` by default: the stages are measured,
    /// not the broker (nisshi's SQLite caps the pipeline far below them).
    #[arg(long, default_value = "memory", value_parser = ["sqlite", "memory"])]
    broker_storage: String,
    /// Webhooks in flight at once while the backlog is written.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Where the release service binaries are (default target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Write the tables to this markdown file too.
    #[arg(long)]
    results: Option<PathBuf>,
}

/// Parses the command line.
pub fn options() -> anyhow::Result<Options> {
    let cli = <Cli as clap::Parser>::parse();
    if cli.instances.is_empty() || cli.instances.contains(&0) {
        bail!("--instances must be positive counts");
    }
    if cli.instances.iter().any(|k| *k > cli.partitions as usize) {
        bail!("--instances above --partitions: the extra members would hold nothing");
    }
    let redis = cli
        .redis
        .iter()
        .map(|r| match r.as_str() {
            "standalone" => Ok(RedisMode::Standalone),
            "cluster" => Ok(RedisMode::Cluster),
            other => bail!("--redis: standalone or cluster, not {other:?}"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Ok(Options {
        instances: cli.instances,
        redis,
        webhooks: cli.webhooks.max(100),
        partitions: i32::try_from(cli.partitions.max(1)).context("--partitions")?,
        broker_storage: Storage::from_name(&cli.broker_storage)
            .context("--broker-storage: sqlite or memory")?,
        concurrency: cli.concurrency.max(1),
        bin_dir: cli.bin_dir.unwrap_or_else(|| root.join("target/release")),
        results: cli.results,
    })
}
