//! The security test target: attacks on a real stack (real `redis-server`, real
//! Kafka-protocol broker, the services in-process), one test per item of the
//! trust issue. Each module holds the attacks on one part of the pipeline:
//!
//! - [`ingest`] — ownership (takeover refused with 409), bounds on every field,
//!   oversized input, provider accounts bound to merchants, the OpenAPI document
//!   and generated bodies on every route;
//! - [`edge`] — HTTP connection hygiene (slow and idle connections closed, a
//!   connection cap, admin endpoints only on the admin listener), replay windows
//!   of signed provider timestamps, startup validation of secrets and tokens;
//! - [`normalize`] — poison and oversized outputs dead-lettered while other
//!   waybills keep flowing, future-dated scans;
//! - [`detector`] — history window, oversized outputs (scans and timers), lifecycle
//!   expiry, no raw contacts on `tracking.updates`/`tracking.alerts`, large joins;
//! - [`notifier`] — merchant-scoped message ids and keys, one bad message never
//!   starves its shard, the per-merchant watcher quota.
//!
//! Run: `cargo test -p trackstream-sandbox --test security`.

mod detector;
mod edge;
mod ingest;
mod normalize;
mod notifier;
