//! detector — catches every stuck parcel before the buyer complains.
//!
//! Consumes `tracking.events` and `shipments` (co-partitioned by waybill key, so
//! one instance owns both sides of a parcel), keeps per-waybill state in Redis,
//! and emits `tracking.updates` (per-order, sequence-numbered) and
//! `tracking.alerts` (OPENED → ESCALATED → RESOLVED, stable ids).
//!
//! Layout:
//! - [`rules`] — rule ids, thresholds, overrides (configuration);
//! - [`engine`] — the pure per-waybill state machine (status monotonicity,
//!   registration join, alert lifecycle, deadlines);
//! - [`store`] — Redis layout, the one commit, sequence numbers, outbox, timers;
//! - [`service`] — the one load → fold → commit → deliver pipeline, fed by the
//!   Kafka batch handler and by the timer loop (due deadlines);
//! - [`sink`] — where outputs go (Kafka; memory for tests and benches);
//! - [`letters`] — poison: typed failures, output size checks, dead letters;
//! - [`lifecycle`] — when a parcel's keys expire;
//! - [`config`] — what it reads.
//!
//! Delivery is at-least-once with idempotent effects: a waybill's change and its
//! outputs are committed together (state + history + timers + outbox, one Lua
//! script, compare-and-set on a version) whether a scan, a registration or a due
//! deadline caused it; outputs are produced, then cleared from the outbox, then
//! offsets are stored. A crash replays into the same ids. A
//! consumer batch costs a constant number of Redis round trips per partition
//! (pipelined load, one commit script for all its waybills, one outbox clear),
//! not per record.
#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod letters;
pub mod lifecycle;
pub mod rules;
pub mod service;
pub mod sink;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use trackstream_proto::topics;
use trackstream_runtime::kafka::{ConsumerLoop, Producer};
use trackstream_runtime::redis::RedisConn;
use trackstream_runtime::{CancellationToken, Error, telemetry};

pub use config::Config;

/// A started detector.
pub struct Running {
    /// `/healthz` and `/metrics` address.
    pub admin_addr: SocketAddr,
    /// Completes after shutdown.
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// Connects to Redis and Kafka and starts both loops.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = telemetry::registry("detector");
    let conn = RedisConn::connect(&config.redis).await?;
    let producer = Producer::new(&config.kafka, "trackstream-detector", &mut registry)?;
    let group = config.kafka.group_for("detector");
    let consumer = ConsumerLoop::subscribe(
        &config.kafka,
        &group,
        &[topics::TRACKING_EVENTS, topics::SHIPMENTS],
        &mut registry,
    )?;
    let lane_store =
        trackstream_lanes::store::LaneStore::new(conn.clone(), "reader", config.lanes.keep_days);
    let mut engine = engine::Engine::new(config.rules.clone());
    if config.forecast.enabled {
        engine = engine.with_forecaster(Arc::new(trackstream_lanes::forecast::Forecaster::new(
            lane_store.clone(),
            config.forecast,
        )));
    }
    // The lane statistics consumer: its own group over the updates this
    // detector produces (ARCHITECTURE.md, lanes, says why it lives here).
    let stats = if config.lanes.enabled {
        let group = format!("{group}-lanes");
        let loop_metrics = registry.sub_registry_with_prefix("lanes");
        let consumer = ConsumerLoop::subscribe(
            &config.kafka,
            &group,
            &[topics::TRACKING_UPDATES],
            loop_metrics,
        )?;
        let handler = Arc::new(trackstream_lanes::stream::LaneStats::new(
            lane_store,
            producer.clone(),
            config.lanes.clone(),
            &mut registry,
        ));
        Some((consumer, handler))
    } else {
        None
    };
    // The incident detector: its own group over the alerts and updates this
    // detector produces and the operators' declarations (ARCHITECTURE.md,
    // incidents).
    let incidents = if config.incidents.enabled {
        config.incidents.validate().map_err(Error::Config)?;
        let group = format!("{group}-incidents");
        let loop_metrics = registry.sub_registry_with_prefix("incidents");
        let consumer = ConsumerLoop::subscribe(
            &config.kafka,
            &group,
            &[
                topics::TRACKING_ALERTS,
                topics::TRACKING_UPDATES,
                topics::INCIDENTS_DECLARED,
            ],
            loop_metrics,
        )?;
        let keep = trackstream_runtime::config::duration::millis(config.incidents.keep);
        let handler = Arc::new(trackstream_incidents::stream::IncidentDetector::new(
            trackstream_incidents::store::IncidentStore::new(conn.clone(), keep),
            producer.clone(),
            config.incidents.clone(),
            &mut registry,
        ));
        Some((consumer, handler))
    } else {
        None
    };
    let mut detector = service::Detector::new(
        engine,
        store::Store::new(conn),
        producer.clone(),
        config.timers.clone(),
        &mut registry,
    )
    .with_retention(config.retention.clone());
    if !config.kafka.statistics_interval.is_zero() {
        detector = detector.with_progress(consumer.progress());
    }
    let detector = Arc::new(detector);
    let (admin_addr, health) = consumer
        .serve_admin(&config.admin, registry, shutdown.clone())
        .await?;
    tracing::info!(%admin_addr, group, clock = ?config.timers.clock, "detector running");

    let timers = {
        let detector = detector.clone();
        let assignment = consumer.assignment();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { detector.run_timers(assignment, shutdown).await })
    };
    let stats = stats.map(|(consumer, handler)| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move { consumer.run(handler, shutdown).await })
    });
    let incidents = incidents.map(|(consumer, handler)| {
        let republish = {
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { handler.republish(shutdown).await })
        };
        let shutdown = shutdown.clone();
        let run = tokio::spawn(async move { consumer.run(handler, shutdown).await });
        (run, republish)
    });
    let task = tokio::spawn(async move {
        let result = consumer.run(detector, shutdown).await;
        if let Some(stats) = stats {
            match stats.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(%err, "lane statistics consumer failed"),
                Err(err) => tracing::error!(%err, "lane statistics consumer panicked"),
            }
        }
        if let Some((run, republish)) = incidents {
            match run.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(%err, "incident detector failed"),
                Err(err) => tracing::error!(%err, "incident detector panicked"),
            }
            if let Err(err) = republish.await {
                tracing::error!(%err, "incident republisher panicked");
            }
        }
        health.set(false);
        if let Err(err) = timers.await {
            tracing::error!(%err, "timer loop panicked");
        }
        producer.flush(std::time::Duration::from_secs(10));
        tracing::info!("detector stopped");
        result
    });
    Ok(Running { admin_addr, task })
}
