//! Benchmarks of trackstream as a whole.
//!
//! - [`loadgen`] — simulated parcels with realistic lifecycles, pushed in every
//!   provider format with correct signatures (Kdniao and Kuaidi100 as growing full
//!   snapshots), with duplicate and out-of-order pushes at configurable rates, plus
//!   the ground truth of which parcels should alert (for precision/recall);
//! - [`report`] — percentiles, the markdown tables and the SVG plot written into
//!   `benches/RESULTS.md`;
//! - `src/bin/trackstream-bench.rs` — the end-to-end benchmark (`benches/run.sh`).
//!
//! Micro-benchmarks live beside the code they measure (`carriers/benches`,
//! `detector/benches`, `notifier/benches`); their results are collected in
//! `benches/RESULTS.md` too.
#![forbid(unsafe_code)]

pub mod loadgen;
pub mod report;
