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
pub mod predict;
pub mod report;
pub mod scale;
