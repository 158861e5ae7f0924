//! The command line: flags, defaults and usage (kept exactly as
//! `benches/run.sh` and `benches/RESULTS.md` document them).

use std::path::PathBuf;

use anyhow::{Context, bail};
use trackstream_testkit::processes::Storage;

/// Offered load steps, webhooks/s: the last ones are above what two cores
/// accept, so acceptance stops keeping up and the throughput target is tested.
pub(crate) const DEFAULT_STEPS: &str = "100,200,400,800,1600,3200,6400,12800";

/// Webhooks in flight at once. Above the rate the pipeline accepts, this cap
/// turns the open-loop schedule into "as fast as accepted".
pub(crate) const DEFAULT_CONCURRENCY: usize = 256;

/// The flags of one run.
pub struct Options {
    pub(crate) steps: Vec<f64>,
    pub(crate) step_secs: u64,
    pub(crate) bin_dir: PathBuf,
    pub(crate) results: PathBuf,
    pub(crate) ceiling_records: usize,
    pub(crate) partitions: i32,
    pub(crate) fetch_wait_ms: Option<u64>,
    pub(crate) batch_linger_ms: Option<u64>,
    pub(crate) without_lanes: bool,
    pub(crate) without_incidents: bool,
    pub(crate) concurrency: usize,
    /// Offer the first step again after the last one: same load, broker holding
    /// every record of the run (see `fn run`).
    pub(crate) repeat_first: bool,
    /// Where the broker stores: what the stack deploys (`sqlite`) or `memory`.
    pub(crate) broker_storage: Storage,
}

/// `trackstream-bench`: runs the four services as child processes against
/// their own Redis and broker, measures the machine's ceilings, offers load
/// in steps and rewrites the generated part of the results file.
#[derive(clap::Parser)]
#[command(name = "trackstream-bench", version)]
struct Cli {
    /// Offered load steps, webhooks/s, comma-separated.
    #[arg(long, default_value = DEFAULT_STEPS, value_delimiter = ',')]
    steps: Vec<f64>,
    /// Seconds each step lasts.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// The consumers' `fetch.wait.max.ms` (default: the services' own).
    #[arg(long)]
    fetch_wait_ms: Option<u64>,
    /// The consumers' batch linger (default: the services' own).
    #[arg(long)]
    batch_linger_ms: Option<u64>,
    /// Webhooks in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Records per single-hop ceiling measurement.
    #[arg(long, default_value_t = 100_000)]
    ceiling_records: usize,
    /// The broker's storage: `sqlite` (durable, what the stack runs) or
    /// `memory`. The broker binary is `BROKER_BIN` (benches/run.sh sets it from
    /// `BROKER=nisshi|tansu`).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "memory"])]
    broker_storage: String,
    /// Skip offering the first step again after the last one.
    #[arg(long)]
    no_repeat: bool,
    /// Run the detector without delivery predictions and lane statistics
    /// (`[forecast]` and `[lanes]` off): the other half of a paired run that
    /// measures what they cost.
    #[arg(long)]
    without_lanes: bool,
    /// Run the detector without its incident detector (`[incidents]` off):
    /// the other half of a paired run that measures what it costs.
    #[arg(long)]
    without_incidents: bool,
    /// Results file whose generated part is rewritten (default
    /// benches/RESULTS.md).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Where the release service binaries are (default target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Parses the command line (clap: `--help` and `--version` answer and exit
/// before anything starts).
pub fn options() -> anyhow::Result<Options> {
    let cli = <Cli as clap::Parser>::parse();
    if cli.steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("--steps must be positive rates");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Ok(Options {
        steps: cli.steps,
        step_secs: cli.step_secs,
        bin_dir: cli.bin_dir.unwrap_or_else(|| root.join("target/release")),
        results: cli
            .results
            .unwrap_or_else(|| root.join("benches/RESULTS.md")),
        ceiling_records: cli.ceiling_records,
        partitions: i32::try_from(cli.partitions.max(1)).context("--partitions")?,
        fetch_wait_ms: cli.fetch_wait_ms,
        batch_linger_ms: cli.batch_linger_ms,
        without_lanes: cli.without_lanes,
        without_incidents: cli.without_incidents,
        concurrency: cli.concurrency.max(1),
        repeat_first: !cli.no_repeat,
        broker_storage: Storage::from_name(&cli.broker_storage)
            .context("--broker-storage: sqlite or memory")?,
    })
}
