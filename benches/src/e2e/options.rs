//! The command line: flags, defaults and usage (kept exactly as
//! `benches/run.sh` and `benches/RESULTS.md` document them).

use std::path::PathBuf;

use anyhow::{Context, bail};

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
    pub(crate) concurrency: usize,
    /// Offer the first step again after the last one: same load, broker holding
    /// every record of the run (see `fn run`).
    pub(crate) repeat_first: bool,
}

pub(crate) const USAGE: &str = "trackstream-bench [--steps 100,200,...,12800] [--step-secs 10] [--partitions 8] \
[--fetch-wait-ms N] [--batch-linger-ms N] [--concurrency 256] [--ceiling-records 100000] \
[--no-repeat] [--results benches/RESULTS.md] [--bin-dir target/release]";

/// Parses the command line; `--help` answers with the usage as an error, so
/// nothing starts.
pub fn options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        bail!("usage: {USAGE}");
    }
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str, default: &str| -> anyhow::Result<u64> {
        get(flag)
            .unwrap_or_else(|| default.into())
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))
    };
    let optional = |flag: &str| -> anyhow::Result<Option<u64>> {
        get(flag)
            .map(|v| v.parse())
            .transpose()
            .with_context(|| format!("{flag} takes a whole number"))
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let steps: Vec<f64> = get("--steps")
        .unwrap_or_else(|| DEFAULT_STEPS.into())
        .split(',')
        .map(|s| s.trim().parse::<f64>().context("--steps takes numbers"))
        .collect::<anyhow::Result<_>>()?;
    if steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        bail!("--steps must be positive rates");
    }
    Ok(Options {
        steps,
        step_secs: number("--step-secs", "10")?,
        bin_dir: get("--bin-dir").map_or_else(|| root.join("target/release"), PathBuf::from),
        results: get("--results").map_or_else(|| root.join("benches/RESULTS.md"), PathBuf::from),
        ceiling_records: usize::try_from(number("--ceiling-records", "100000")?)?,
        partitions: i32::try_from(number("--partitions", "8")?)?.max(1),
        fetch_wait_ms: optional("--fetch-wait-ms")?,
        batch_linger_ms: optional("--batch-linger-ms")?,
        concurrency: usize::try_from(number("--concurrency", &DEFAULT_CONCURRENCY.to_string())?)?
            .max(1),
        repeat_first: !args.iter().any(|a| a == "--no-repeat"),
    })
}
