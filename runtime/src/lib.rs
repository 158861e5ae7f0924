//! The machinery every trackstream service shares, so the four services contain
//! only their own logic.
//!
//! - [`cli`] — the `--config` argument every service binary takes (clap);
//! - [`config`] — TOML file plus `TRACKSTREAM__SECTION__KEY` env overrides, and the
//!   sections every service has (Kafka, Redis, admin HTTP, logging);
//! - [`kafka`] — the idempotent `acks=all` producer and the at-least-once consumer
//!   loop (offsets stored only after a batch's effects are acknowledged);
//! - [`dlq`] — dead letters: how a stage sets aside a record it can never process;
//! - [`redis`] — one connection type over standalone Redis and Redis Cluster;
//! - [`telemetry`] — `tracing` setup and the Prometheus registry;
//! - [`merchants`] — merchant ids and their bearer tokens (ingest and gRPC auth);
//! - [`ident`] — the one grammar and length limits for identifiers and contact fields;
//! - [`ownership`] — the Redis key that says which merchant owns a waybill;
//! - [`order_log`] — the per-order update log in Redis (detector writes, notifier reads);
//! - [`admin`] — the `/healthz` and `/metrics` HTTP endpoints;
//! - [`shutdown`] — SIGTERM/SIGINT into a cancellation token;
//! - [`error`] — the one error type, mapped once to HTTP and gRPC status codes.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod dlq;
pub mod error;
pub mod ident;
pub mod kafka;
pub mod merchants;
pub mod order_log;
pub mod ownership;
pub mod redis;
pub mod shutdown;
pub mod telemetry;

pub use error::{ApiError, Error};
pub use tokio_util::sync::CancellationToken;
