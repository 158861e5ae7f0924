//! Benchmarks of trackstream as a whole.
//!
//! - [`e2e`] — the end-to-end benchmark behind `trackstream-bench`
//!   (`benches/run.sh`): stack start-up, load steps, the follower that reads
//!   the pipeline's topics, scoring against the load generator's ground truth,
//!   and the report;
//! - [`scale`] — the per-stage scaling runs behind `trackstream-scale`
//!   (`benches/scale.sh`): 1, 2, … instances of each consuming stage draining
//!   the same backlog, against one Redis or a Redis Cluster;
//! - [`predict`] — the delivery-prediction accuracy benchmark behind
//!   `trackstream-predict` (`trackstream-lanes` on a generated history:
//!   calibration, error by stage, coverage, promise-at-risk, a degraded lane);
//! - [`incidents`] — the incident detector's benchmark behind
//!   `trackstream-incidents` (weeks of generated traffic with ordinary
//!   stalls and injected hub closures through the real detector, Redis and
//!   broker: detection delay, false incidents, messages saved, cost);
//! - [`web`] — the web face's benchmark behind `trackstream-web` (a notifier
//!   with its web face over a real Redis and broker: buyer views per second and
//!   their latency, and produce → open buyer page latency for many streams);
//! - [`report`] — percentiles, the markdown tables and the SVG plot written into
//!   `benches/RESULTS.md`;
//! - the load itself (parcel lifecycles pushed as signed provider webhooks)
//!   comes from the `trackstream-loadgen` crate, which the demo shares.
//!
//! Micro-benchmarks live beside the code they measure (`carriers/benches`,
//! `detector/benches`, `notifier/benches`); their results are collected in
//! `benches/RESULTS.md` too.
#![forbid(unsafe_code)]

pub mod e2e;
pub mod incidents;
pub mod predict;
pub mod report;
pub mod scale;
pub mod web;

/// Runs `work` on a multi-threaded runtime until it ends or `SIGINT` /
/// `SIGTERM` arrives; on a signal `on_stop` runs and the answer is an error
/// naming it. Either way `work` is dropped, and with it every child process a
/// benchmark started (services, broker, Redis): a killed benchmark must not
/// leave them running into the next one.
pub(crate) fn until_stopped<F>(work: F, on_stop: impl Fn()) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stopped = |why: &str| {
            on_stop();
            anyhow::anyhow!("{why}; stopped the services, broker and Redis")
        };
        tokio::select! {
            result = work => result,
            _ = tokio::signal::ctrl_c() => Err(stopped("interrupted")),
            _ = terminate.recv() => Err(stopped("terminated")),
        }
    })
}
