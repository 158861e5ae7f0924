use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::KafkaConfig;

/// A consumed record, owned so a batch can outlive the poll that fetched it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Inbound {
    /// The key as UTF-8, lossy (keys are ours and ASCII in practice).
    pub fn key_str(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }
}

/// Why a batch failed. Transient failures are retried with the same batch; offsets
/// are not stored until it succeeds.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// The service-specific part of a consumer: apply one batch's effects and return
/// only when they are durable (Kafka acknowledged, Redis written). Records it cannot
/// process are its own to dead-letter; an `Err` means "retry this batch".
pub trait BatchHandler: Send + Sync + 'static {
    /// Processes `batch` (records in partition order).
    fn handle(&self, batch: &[Inbound]) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Where a consumer group without committed offsets starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// From the oldest retained record.
    Earliest,
    /// From records produced after joining.
    Latest,
}

/// The partitions this instance owns, per topic; updated on every rebalance. The
/// detector fires timers only for partitions in here.
pub type Assignment = watch::Receiver<BTreeMap<String, BTreeSet<i32>>>;

#[derive(Default)]
struct PartitionProgress {
    /// A batch holding records of this partition is being processed.
    in_flight: bool,
    /// When the last batch holding records of this partition finished.
    last_batch_done: Option<Instant>,
    /// Lag from the latest librdkafka statistics, and when they were taken.
    lag: Option<(i64, Instant)>,
}

/// Whether a consumer has processed everything the broker holds on a partition.
///
/// The detector fires a partition's wall-clock deadlines only when it is caught
/// up: a backlog may hold the scan that cancels the deadline (a carrier snapshot
/// whose scans are split across batches, a push that arrived late), and firing
/// before reading it would raise a false alarm.
#[derive(Clone, Default)]
pub struct Progress {
    partitions: Arc<Mutex<HashMap<(String, i32), PartitionProgress>>>,
}

impl Progress {
    /// True when no batch of `topic`/`partition` is in flight and statistics taken
    /// after the last batch finished show no lag.
    pub fn caught_up(&self, topic: &str, partition: i32) -> bool {
        let Ok(partitions) = self.partitions.lock() else {
            return false;
        };
        let Some(progress) = partitions.get(&(topic.to_owned(), partition)) else {
            return false;
        };
        match progress.lag {
            Some((lag, at)) => {
                !progress.in_flight
                    && lag <= 0
                    && progress.last_batch_done.is_none_or(|done| at > done)
            }
            None => false,
        }
    }

    fn set_in_flight(&self, batch: &[Inbound], in_flight: bool) {
        let Ok(mut partitions) = self.partitions.lock() else {
            return;
        };
        let now = Instant::now();
        for record in batch {
            let entry = partitions
                .entry((record.topic.clone(), record.partition))
                .or_default();
            entry.in_flight = in_flight;
            if !in_flight {
                entry.last_batch_done = Some(now);
            }
        }
    }

    fn record_stats(&self, statistics: &Statistics) {
        for (topic, stats) in &statistics.topics {
            for (id, partition) in &stats.partitions {
                // Negative ids are librdkafka's internal "unassigned" partition.
                if *id >= 0 {
                    self.record_lag(topic, *id, partition.consumer_lag, partition.hi_offset);
                }
            }
        }
    }

    /// Records a lag reading; `consumer_lag` -1 means "no offset known yet",
    /// which counts as caught up only when the partition is empty.
    fn record_lag(&self, topic: &str, partition: i32, consumer_lag: i64, hi_offset: i64) {
        let lag = match (consumer_lag, hi_offset) {
            (lag, _) if lag >= 0 => lag,
            (_, hi) if hi <= 0 => 0,
            (_, hi) => hi,
        };
        if let Ok(mut partitions) = self.partitions.lock() {
            partitions
                .entry((topic.to_owned(), partition))
                .or_default()
                .lag = Some((lag, Instant::now()));
        }
    }
}

struct RebalanceContext {
    assignment: watch::Sender<BTreeMap<String, BTreeSet<i32>>>,
    progress: Progress,
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: Statistics) {
        self.progress.record_stats(&statistics);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Stop partition-owned work (timers) before the partitions move on.
            self.assignment.send_replace(BTreeMap::new());
            // Commit what was stored so the next owner starts where we stopped.
            if tpl.count() > 0
                && let Err(err) = consumer.commit_consumer_state(CommitMode::Sync)
            {
                tracing::debug!(%err, "commit on revoke (nothing stored is fine)");
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut owned: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
            for element in tpl.elements() {
                owned
                    .entry(element.topic().to_owned())
                    .or_default()
                    .insert(element.partition());
            }
            tracing::info!(assignment = ?owned, "partitions assigned");
            self.assignment.send_replace(owned);
        }
    }
}

#[derive(Clone)]
struct LoopMetrics {
    records: Family<Vec<(&'static str, String)>, Counter>,
    retries: Counter,
    batch_seconds: Histogram,
}

/// A subscribed consumer running a [`BatchHandler`] with at-least-once semantics.
pub struct ConsumerLoop {
    consumer: StreamConsumer<RebalanceContext>,
    assignment: Assignment,
    progress: Progress,
    batch_max: usize,
    batch_linger: Duration,
    metrics: LoopMetrics,
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
        let mut config = super::client_config(cfg, group_id);
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
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Per-partition lag for `Progress` (cheap: one JSON document a tick).
            .set(
                "statistics.interval.ms",
                cfg.statistics_interval_ms.to_string(),
            )
            .set("fetch.wait.max.ms", cfg.fetch_wait_max_ms.to_string());
        super::apply_extra(&mut config, cfg);
        let consumer: StreamConsumer<RebalanceContext> =
            config.create_with_context(RebalanceContext {
                assignment: sender,
                progress: progress.clone(),
            })?;
        consumer.subscribe(topics)?;

        let metrics = LoopMetrics {
            records: Family::default(),
            retries: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
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
        Ok(ConsumerLoop {
            consumer,
            assignment,
            progress,
            batch_max: cfg.batch_max.max(1),
            batch_linger: Duration::from_millis(cfg.batch_linger_ms),
            metrics,
        })
    }

    /// The partition assignment, updated on rebalances.
    pub fn assignment(&self) -> Assignment {
        self.assignment.clone()
    }

    /// How far processing has got on each partition.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Runs until `shutdown`: fetch a batch, hand it to `handler` (retrying
    /// transient failures), store offsets. On shutdown the current batch finishes
    /// and stored offsets are committed synchronously.
    pub async fn run<H: BatchHandler>(
        self,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut backoff = Duration::from_millis(50);
        'outer: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            let mut batch = Vec::with_capacity(self.batch_max);
            match first {
                Ok(message) => batch.push(detach(&message)),
                Err(err) => {
                    tracing::warn!(%err, "kafka consumer error");
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + self.batch_linger;
            while batch.len() < self.batch_max {
                tokio::select! {
                    message = self.consumer.recv() => match message {
                        Ok(message) => batch.push(detach(&message)),
                        Err(err) => { tracing::warn!(%err, "kafka consumer error"); break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }

            let started = Instant::now();
            self.progress.set_in_flight(&batch, true);
            loop {
                match handler.handle(&batch).await {
                    Ok(()) => break,
                    Err(err) => {
                        self.metrics.retries.inc();
                        tracing::warn!(%err, records = batch.len(), retry_in = ?backoff,
                            "batch failed; retrying without storing offsets");
                        tokio::select! {
                            _ = shutdown.cancelled() => break 'outer,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            backoff = Duration::from_millis(50);
            self.progress.set_in_flight(&batch, false);
            self.metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            self.store_offsets(&batch);
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed on shutdown"),
            Err(err) => tracing::debug!(%err, "final commit (nothing stored is fine)"),
        }
        Ok(())
    }

    fn store_offsets(&self, batch: &[Inbound]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for record in batch {
            let entry = next.entry((&record.topic, record.partition)).or_insert(0);
            *entry = (*entry).max(record.offset + 1);
            self.metrics
                .records
                .get_or_create(&vec![("topic", record.topic.clone())])
                .inc();
        }
        let mut tpl = TopicPartitionList::with_capacity(next.len());
        for ((topic, partition), offset) in next {
            if let Err(err) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(%err, topic, partition, "cannot store offset");
            }
        }
        // Fails for partitions revoked meanwhile; their new owner replays them.
        if let Err(err) = self.consumer.store_offsets(&tpl) {
            tracing::debug!(%err, "offset store skipped (partition revoked)");
        }
    }
}

fn detach(message: &rdkafka::message::BorrowedMessage<'_>) -> Inbound {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Inbound {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32) -> Inbound {
        Inbound {
            topic: "t".into(),
            partition,
            offset: 0,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn caught_up_needs_fresh_zero_lag_after_the_last_batch() {
        let progress = Progress::default();
        assert!(!progress.caught_up("t", 0), "no statistics yet");
        progress.record_lag("t", 0, 0, 10);
        assert!(progress.caught_up("t", 0));

        progress.set_in_flight(&[record(0)], true);
        progress.record_lag("t", 0, 0, 10);
        assert!(!progress.caught_up("t", 0), "a batch is in flight");
        progress.set_in_flight(&[record(0)], false);
        assert!(!progress.caught_up("t", 0), "statistics predate the batch");
        progress.record_lag("t", 0, 3, 13);
        assert!(!progress.caught_up("t", 0), "records still waiting");
        progress.record_lag("t", 0, 0, 13);
        assert!(progress.caught_up("t", 0));

        progress.record_lag("t", 1, -1, 0);
        assert!(
            progress.caught_up("t", 1),
            "an empty partition is caught up"
        );
        progress.record_lag("t", 2, -1, 5);
        assert!(
            !progress.caught_up("t", 2),
            "unknown position on a non-empty partition"
        );
    }
}
