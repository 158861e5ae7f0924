//! normalize — every provider's format in, one canonical event out.
//!
//! Consumes `scans.raw` (one provider item per waybill, bytes as received), finds
//! the provider's adapter in `trackstream_carriers`, and writes one
//! `TrackingEvent` per scan to `tracking.events`, keyed `carrier:waybill`, its
//! free text capped ([`bounds`]). Records that cannot be parsed, scans dated in
//! the future ([`skew`]) and events too large to write go to `scans.dlq` through
//! the runtime's one dead-letter mechanism (`trackstream_runtime::dlq`): the
//! input unchanged, with stage, cause and source position in headers — never
//! dropped, never a panic, never a stalled partition ([`write`]). Unknown
//! provider codes still produce events (reason `UNKNOWN`) and are counted.
//!
//! normalize keeps no durable state: dedup happens downstream by event id, which
//! is stable across resends (it only remembers the ids it wrote recently, in
//! memory, to drop resent snapshots at the source — [`recent`]), so replaying `scans.raw` ([`replay`], `trackstream-normalize
//! replay`, operator guide in `docs/REPLAY.md`) only re-derives events the
//! detector already has.
//!
//! Layout: [`config`], [`handler`] (the batch handler), [`bounds`] (free-text
//! caps), [`skew`] (future-dated scans), [`write`] (writing with dead letters
//! for refused records), [`recent`] (ids written recently), [`replay`] (the
//! re-normalize command), [`cli`] (the binary's command line, shared with
//! `trackstream replay`), this file (wiring).
#![forbid(unsafe_code)]

pub mod bounds;
pub mod cli;
pub mod config;
pub mod handler;
pub mod recent;
pub mod replay;
pub mod skew;
pub mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use trackstream_proto::topics;
use trackstream_runtime::kafka::{ConsumerLoop, Producer};
use trackstream_runtime::{CancellationToken, Error, telemetry};

pub use config::Config;

/// A started normalize.
pub struct Running {
    /// `/healthz` and `/metrics` address.
    pub admin_addr: SocketAddr,
    /// Completes after shutdown, once the last batch is stored.
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// Joins the consumer group and starts normalizing.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = telemetry::registry("normalize");
    let producer = Producer::new(&config.kafka, "trackstream-normalize", &mut registry)?;
    let group = config.kafka.group_for("normalize");
    let consumer =
        ConsumerLoop::subscribe(&config.kafka, &group, &[topics::SCANS_RAW], &mut registry)?;
    let handler = Arc::new(
        handler::Normalizer::new(producer.clone(), &config, &mut registry)
            .remembering(config.recent_events),
    );
    let (admin_addr, health) = consumer
        .serve_admin(&config.admin, registry, shutdown.clone())
        .await?;
    tracing::info!(%admin_addr, group, "normalize consuming scans.raw");
    let task = tokio::spawn(async move {
        let result = consumer.run(handler, shutdown).await;
        health.set(false);
        producer.flush(std::time::Duration::from_secs(10));
        tracing::info!("normalize stopped");
        result
    });
    Ok(Running { admin_addr, task })
}
