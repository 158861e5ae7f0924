//! The test kit: the real parts tests run against, and nothing of trackstream's
//! own services, so a service's tests build only that service.
//!
//! - [`processes`] — real `redis-server` and broker (nisshi or tansu, Kafka
//!   protocol) child processes on free ports, killed on drop; the broker sits
//!   behind a [`link::Link`] that fault tests cut and restore, and can be
//!   SIGKILLed and restarted on its data;
//! - [`services`] — service tasks stopped (on drop too) before the broker and
//!   Redis they use;
//! - [`kafka`] — topic creation through the Kafka admin API (works against any
//!   broker), and [`kafka::TopicReader`] to read what the services wrote, polling
//!   with a deadline (never sleeping as synchronisation);
//! - [`cluster`] — a three-master Redis Cluster on loopback ports;
//! - [`child`] — a service binary as a child process, killed with SIGKILL;
//! - [`merchants`] — the two shops of multi-tenant tests and their tokens;
//! - [`binary`] — run a built binary to completion with a deadline (`--help`
//!   checks, CLI tests);
//! - [`admin`] — a service's `/healthz` status and its gauges from `/metrics`;
//! - [`procfs`] — CPU and memory of processes from `/proc`, for the benchmarks;
//! - [`grpc`] — client helpers for the tracking API (bearer token, SERVING
//!   wait, next stream message with a deadline).
//!
//! The whole-cluster sandbox (all four services in one process) is the
//! test-only crate `trackstream-sandbox`, which depends on this one and on
//! every service; services dev-depend on this crate only, so there is no
//! dependency cycle and `cargo test -p trackstream-detector` builds neither
//! ingest nor the notifier.
//!
//! Nothing here depends on a service someone started by hand: the broker binary
//! is installed and cached by `deploy/local/install-deps.sh` (run by the test
//! command), and found via `BROKER_BIN` (or the older `TANSU_BIN`) or that cache.
#![forbid(unsafe_code)]

pub mod admin;
pub mod binary;
pub mod child;
pub mod cluster;
pub mod grpc;
pub mod kafka;
pub mod link;
pub mod merchants;
pub mod processes;
pub mod procfs;
pub mod services;

use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or fails after `timeout`. The way tests
/// wait for asynchronous effects: a condition with a deadline, not a sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match within(timeout, check).await {
        Some(value) => value,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Like [`eventually`], but `None` on timeout instead of a panic, for tests that
/// gather diagnostics (logs, broker state) before they fail.
pub async fn within<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; the caller binds it next).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
