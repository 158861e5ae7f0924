//! Subscribing: the librdkafka settings every consuming service shares (offsets
//! stored by us, statistics for progress), the per-member client id the
//! assignment check needs, and the loop's metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;

use super::assignment::AssignmentCheck;
use super::rebalance::RebalanceContext;
use super::{ConsumerLoop, Progress, StartAt};
use crate::Error;
use crate::config::KafkaConfig;

#[derive(Clone)]
pub(super) struct LoopMetrics {
    pub(super) records: Family<Vec<(&'static str, String)>, Counter>,
    pub(super) retries: Counter,
    pub(super) batch_seconds: Histogram,
    pub(super) rejoins: Counter,
    /// 1 while this member is ready (see `readiness`), by group.
    pub(super) ready: Gauge,
    /// Partitions this member holds now, by group.
    pub(super) assigned: Gauge,
}

impl LoopMetrics {
    /// Creates the loop's metrics and registers them in `registry`.
    fn register(registry: &mut Registry, group: &str) -> Self {
        let label = vec![("group", group.to_owned())];
        let ready: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
        let assigned: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
        let metrics = LoopMetrics {
            records: Family::default(),
            retries: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            rejoins: Counter::default(),
            ready: ready.get_or_create(&label).clone(),
            assigned: assigned.get_or_create(&label).clone(),
        };
        registry.register(
            "consumer_ready",
            "1 while this member holds its share of its group's partitions and has caught up to where the group was when it got them (the /healthz gate), by group",
            ready,
        );
        registry.register(
            "consumer_assigned_partitions",
            "Partitions this member holds now, by group",
            assigned,
        );
        registry.register(
            "consumer_records",
            "Records consumed and processed, by topic",
            metrics.records.clone(),
        );
        registry.register(
            "consumer_batch_retries",
            "Batches retried after a transient handler failure",
            metrics.retries.clone(),
        );
        registry.register(
            "consumer_batch_seconds",
            "Time to process one batch, effects included",
            metrics.batch_seconds.clone(),
        );
        registry.register(
            "consumer_group_rejoins",
            "Times this consumer left and rejoined its group because the coordinator left its assignment stale",
            metrics.rejoins.clone(),
        );
        metrics
    }
}

impl ConsumerLoop {
    /// Joins `group_id` and subscribes to `topics`; a new group starts at the
    /// earliest offset (nothing is skipped).
    pub fn subscribe(
        cfg: &KafkaConfig,
        group_id: &str,
        topics: &[&str],
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        Self::subscribe_from(cfg, group_id, topics, StartAt::Earliest, registry)
    }

    /// Like [`ConsumerLoop::subscribe`], choosing where a new group starts. Live
    /// followers (gRPC fan-out) start at the latest offset: history comes from Redis.
    pub fn subscribe_from(
        cfg: &KafkaConfig,
        group_id: &str,
        topics: &[&str],
        start_at: StartAt,
        registry: &mut Registry,
    ) -> Result<Self, Error> {
        let (sender, assignment) = watch::channel(BTreeMap::new());
        let progress = Progress::default();
        let resuming = Arc::new(Mutex::new(BTreeSet::new()));
        let readiness = Arc::new(Mutex::new(super::readiness::State::default()));
        let metrics = LoopMetrics::register(registry, group_id);
        let (ready_gate, ready_flag) = crate::admin::ReadyGate::new(group_id);
        // A client id of its own, so this member finds itself among the group's
        // member ids (`<client.id>-<uuid>`) when it checks its assignment.
        let client_id = format!("{group_id}.{:08x}", rand_suffix());
        let mut config = crate::kafka::client_config(cfg, &client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // Offsets are stored by us, after the batch's effects are durable.
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match start_at {
                    StartAt::Earliest => "earliest",
                    StartAt::Latest => "latest",
                },
            )
            .set(
                "session.timeout.ms",
                super::readiness::SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            // Per-partition lag for `Progress` (cheap: one JSON document a tick).
            .set(
                "statistics.interval.ms",
                cfg.statistics_interval.as_millis().to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                cfg.fetch_wait_max.as_millis().to_string(),
            );
        crate::kafka::apply_extra(&mut config, cfg);
        let consumer: StreamConsumer<RebalanceContext> =
            config.create_with_context(RebalanceContext {
                assignment: sender,
                progress: progress.clone(),
                resuming: resuming.clone(),
                readiness: readiness.clone(),
                assigned_gauge: metrics.assigned.clone(),
            })?;
        consumer.subscribe(topics)?;
        let check = AssignmentCheck::applies(cfg).then(|| AssignmentCheck {
            group: group_id.to_owned(),
            me: format!("{client_id}-"),
            suspect: None,
        });

        Ok(ConsumerLoop {
            consumer: Arc::new(consumer),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            check,
            // With the check off the tick only wakes the loop; keep it rare.
            check_interval: match cfg.assignment_check {
                Duration::ZERO => Duration::from_secs(3600),
                every => every,
            },
            assignment,
            progress,
            resuming,
            group: group_id.to_owned(),
            start_at,
            readiness,
            ready_gate,
            ready_flag,
            batch_max: cfg.batch_max.max(1),
            batch_linger: cfg.batch_linger,
            metrics,
        })
    }
}

/// A random suffix for client ids (no `rand` dependency for one number).
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    // Truncation is the point: eight hex digits are plenty to tell members apart.
    hasher.finish() as u32
}
