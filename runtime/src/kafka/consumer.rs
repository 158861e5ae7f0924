//! The at-least-once consumer loop ([`ConsumerLoop`]): batches, offset storing
//! after the handler's effects are durable, rebalance handling, the assignment
//! check against coordinators that leave partitions unowned, and per-partition
//! progress for the detector's timers.
//!
//! Size: over the project's 700-line guide (about a third is unit tests). The
//! assignment check and the progress tracking are separable concerns; moving
//! them to `kafka/assignment.rs` and `kafka/progress.rs` is named in issue 11
//! and was left out of the trust change, which did not touch this file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
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
    /// Partitions assigned whose first record has not been seen yet, so the
    /// offset each owner resumed at is logged once per assignment (the evidence
    /// needed to tell a skipped range from a partition nobody owns).
    resuming: Arc<Mutex<BTreeSet<(String, i32)>>>,
}

/// `topic/partition` pairs, sorted and comma-separated: a stable, greppable
/// form of an assignment for logs (`detector/tests/rebalance.rs` parses it).
fn describe(tpl: &TopicPartitionList) -> String {
    let mut parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    parts.sort();
    parts.join(",")
}

/// `topic/partition@offset` pairs, for commit logs.
fn describe_offsets(tpl: &TopicPartitionList) -> String {
    let mut parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            other => format!("{}/{}@{other:?}", e.topic(), e.partition()),
        })
        .collect();
    parts.sort();
    parts.join(",")
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
            tracing::info!(partitions = %describe(tpl), "partitions revoked");
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
            if let Ok(mut resuming) = self.resuming.lock() {
                resuming.clear();
                resuming.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            }
            tracing::info!(partitions = %describe(tpl), "partitions assigned");
            self.assignment.send_replace(owned);
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe_offsets(offsets), "offsets committed"),
            // Nothing stored since the last commit: not a failure.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(err) => {
                tracing::warn!(%err, offsets = %describe_offsets(offsets), "offset commit failed");
            }
        }
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

/// Guards against a group coordinator that evicts a dead member without
/// rebalancing: the survivors rejoin into the *same* generation and get their
/// old assignment back, and the dead member's partitions are owned by nobody,
/// for good. tansu 0.6.0 does exactly that (its `Formed` heartbeat handler drops
/// the expired member but stays `Formed` with the stale assignments; see
/// docs/ARCHITECTURE.md). Every `kafka.assignment_check`, a member whose group is
/// `Stable` computes what the range assignor gives it for the live members
/// (DescribeGroups) and partition counts (metadata); if its assignment differs
/// on two checks in a row, it leaves the group and joins again, which forces the
/// coordinator into a new generation. On a correct broker the two never differ
/// in a stable group, so the check only costs a DescribeGroups and a metadata
/// request per interval; at worst (a batch longer than the interval while a
/// rebalance completes, so the new assignment is not yet applied at two checks)
/// it causes one needless rejoin, which commits first and so loses nothing.
struct AssignmentCheck {
    group: String,
    /// `<client.id>-`: the prefix of this member's id.
    me: String,
    /// The mismatch seen by the previous check: (held, expected).
    suspect: Option<(Owned, Owned)>,
}

type Owned = BTreeMap<String, BTreeSet<i32>>;

impl AssignmentCheck {
    /// The check models the range assignor (librdkafka's default first choice)
    /// with dynamic membership and our own client ids; any other setup is left
    /// alone.
    fn applies(cfg: &KafkaConfig) -> bool {
        if cfg.assignment_check.is_zero() {
            return false;
        }
        let range = cfg
            .extra
            .get("partition.assignment.strategy")
            .is_none_or(|s| s.split(',').next().map(str::trim) == Some("range"));
        // Static membership and rack-aware assignment order members differently;
        // a user-set client.id could be shared, and we could not find ourselves.
        ["group.instance.id", "client.id", "client.rack"]
            .iter()
            .all(|key| !cfg.extra.contains_key(*key))
            && range
    }

    /// What the range assignor gives member `me` (an id prefix) among
    /// `members`, for topics with the given partition counts; `None` if `me` is
    /// not (or ambiguously) among them. Members are ordered by id and each topic
    /// is split into contiguous ranges, the first `partitions % members` one
    /// larger — librdkafka's and the Java client's range assignor.
    fn range_share(
        partitions: &BTreeMap<String, i32>,
        members: &[String],
        me: &str,
    ) -> Option<Owned> {
        let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let mut mine = sorted.iter().enumerate().filter(|(_, m)| m.starts_with(me));
        let (index, _) = mine.next()?;
        if mine.next().is_some() {
            return None;
        }
        let n = i32::try_from(sorted.len()).ok()?;
        let i = i32::try_from(index).ok()?;
        let mut share = Owned::new();
        for (topic, count) in partitions {
            let (per, extra) = (count / n, count % n);
            let start = i * per + i.min(extra);
            let len = per + i32::from(i < extra);
            if len > 0 {
                share.insert(topic.clone(), (start..start + len).collect());
            }
        }
        Some(share)
    }

    /// Records a comparison; true when the same mismatch was seen twice in a
    /// row (a transient one, mid-rebalance, does not count).
    fn mismatch_persists(&mut self, held: &Owned, expected: Option<Owned>) -> bool {
        let Some(expected) = expected.filter(|e| e != held) else {
            self.suspect = None;
            return false;
        };
        let seen = (held.clone(), expected);
        if self.suspect.as_ref() == Some(&seen) {
            self.suspect = None;
            true
        } else {
            self.suspect = Some(seen);
            false
        }
    }
}

#[derive(Clone)]
struct LoopMetrics {
    records: Family<Vec<(&'static str, String)>, Counter>,
    retries: Counter,
    batch_seconds: Histogram,
    rejoins: Counter,
}

/// A subscribed consumer running a [`BatchHandler`] with at-least-once semantics.
pub struct ConsumerLoop {
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    topics: Vec<String>,
    /// Set when the assignment can be checked against the range assignor
    /// (see [`AssignmentCheck`]).
    check: Option<AssignmentCheck>,
    check_interval: Duration,
    assignment: Assignment,
    progress: Progress,
    resuming: Arc<Mutex<BTreeSet<(String, i32)>>>,
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
        let resuming = Arc::new(Mutex::new(BTreeSet::new()));
        // A client id of its own, so this member finds itself among the group's
        // member ids (`<client.id>-<uuid>`) when it checks its assignment.
        let client_id = format!("{group_id}.{:08x}", rand_suffix());
        let mut config = super::client_config(cfg, &client_id);
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
                cfg.statistics_interval.as_millis().to_string(),
            )
            .set(
                "fetch.wait.max.ms",
                cfg.fetch_wait_max.as_millis().to_string(),
            );
        super::apply_extra(&mut config, cfg);
        let consumer: StreamConsumer<RebalanceContext> =
            config.create_with_context(RebalanceContext {
                assignment: sender,
                progress: progress.clone(),
                resuming: resuming.clone(),
            })?;
        consumer.subscribe(topics)?;
        let check = AssignmentCheck::applies(cfg).then(|| AssignmentCheck {
            group: group_id.to_owned(),
            me: format!("{client_id}-"),
            suspect: None,
        });

        let metrics = LoopMetrics {
            records: Family::default(),
            retries: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            rejoins: Counter::default(),
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
        registry.register(
            "consumer_group_rejoins",
            "Times this consumer left and rejoined its group because the coordinator left its assignment stale",
            metrics.rejoins.clone(),
        );
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
            batch_max: cfg.batch_max.max(1),
            batch_linger: cfg.batch_linger,
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
        mut self,
        handler: Arc<H>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut backoff = Duration::from_millis(50);
        let mut check_tick = tokio::time::interval(self.check_interval);
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'outer: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = check_tick.tick() => {
                    self.check_assignment().await;
                    continue;
                }
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
            self.fill_batch(&mut batch).await;

            self.log_resumed(&batch);
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

    /// Adds to `batch` every record librdkafka has already fetched, without
    /// waiting, then — only if `kafka.batch_linger` is set — waits that long
    /// for more. Under load a fetch response brings many records at once, so
    /// batches fill without a linger; when idle, a lone record is handled at
    /// once instead of waiting out a linger on every consuming hop.
    async fn fill_batch(&self, batch: &mut Vec<Inbound>) {
        let deadline = tokio::time::Instant::now() + self.batch_linger;
        while batch.len() < self.batch_max {
            let next = match self.consumer.recv().now_or_never() {
                Some(next) => next,
                None if self.batch_linger.is_zero() => break,
                None => tokio::select! {
                    next = self.consumer.recv() => next,
                    _ = tokio::time::sleep_until(deadline) => break,
                },
            };
            match next {
                Ok(message) => batch.push(detach(&message)),
                Err(err) => {
                    tracing::warn!(%err, "kafka consumer error");
                    break;
                }
            }
        }
    }

    /// One [`AssignmentCheck`]: ask the coordinator who is in the group and
    /// compare what we hold with the range assignor's share; rejoin if a
    /// mismatch persists.
    async fn check_assignment(&mut self) {
        let Some(check) = self.check.as_mut() else {
            return;
        };
        let held: Owned = self.assignment.borrow().clone();
        let consumer = self.consumer.clone();
        let group = check.group.clone();
        let topics = self.topics.clone();
        let me = check.me.clone();
        let expected = tokio::task::spawn_blocking(move || -> Result<Option<Owned>, KafkaError> {
            let timeout = Duration::from_secs(2);
            let groups = consumer.fetch_group_list(Some(&group), timeout)?;
            let Some(info) = groups.groups().iter().find(|g| g.name() == group) else {
                return Ok(None);
            };
            if info.state() != "Stable" {
                return Ok(None);
            }
            let members: Vec<String> = info.members().iter().map(|m| m.id().to_owned()).collect();
            let mut partitions = BTreeMap::new();
            for topic in &topics {
                let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
                for t in metadata.topics() {
                    let count = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
                    partitions.insert(t.name().to_owned(), count);
                }
            }
            Ok(AssignmentCheck::range_share(&partitions, &members, &me))
        })
        .await;
        let expected = match expected {
            Ok(Ok(expected)) => expected,
            Ok(Err(err)) => {
                tracing::debug!(%err, "assignment check skipped");
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "assignment check panicked");
                return;
            }
        };
        let shown = expected
            .as_ref()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        if !check.mismatch_persists(&held, expected) {
            return;
        }
        tracing::warn!(held = ?held, expected = %shown,
            "the coordinator left this member's assignment stale; leaving and rejoining the group");
        self.metrics.rejoins.inc();
        self.consumer.unsubscribe();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(err) = self.consumer.subscribe(&topics) {
            tracing::error!(%err, "resubscribing failed");
        }
    }

    /// Logs the first offset read on each newly assigned partition: where this
    /// owner resumed, to compare with what the previous owner committed.
    fn log_resumed(&self, batch: &[Inbound]) {
        let Ok(mut resuming) = self.resuming.lock() else {
            return;
        };
        if resuming.is_empty() {
            return;
        }
        for record in batch {
            if resuming.remove(&(record.topic.clone(), record.partition)) {
                tracing::info!(
                    topic = %record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    "partition resumed"
                );
            }
        }
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
        match self.consumer.store_offsets(&tpl) {
            Ok(()) => tracing::debug!(offsets = %describe_offsets(&tpl), "offsets stored"),
            Err(err) => tracing::debug!(%err, offsets = %describe_offsets(&tpl),
                "offset store skipped (partition revoked)"),
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

    fn owned(entries: &[(&str, &[i32])]) -> Owned {
        entries
            .iter()
            .map(|(t, ps)| ((*t).to_owned(), ps.iter().copied().collect()))
            .collect()
    }

    fn counts(entries: &[(&str, i32)]) -> BTreeMap<String, i32> {
        entries.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn range_share_splits_each_topic_by_sorted_member_id() {
        let partitions = counts(&[("events", 4), ("shipments", 5)]);
        let members = ids(&["g.bbbb-2", "g.aaaa-1"]);
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &members, "g.aaaa-"),
            Some(owned(&[("events", &[0, 1]), ("shipments", &[0, 1, 2])]))
        );
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &members, "g.bbbb-"),
            Some(owned(&[("events", &[2, 3]), ("shipments", &[3, 4])]))
        );
        // Alone: everything.
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &ids(&["g.bbbb-2"]), "g.bbbb-"),
            Some(owned(&[
                ("events", &[0, 1, 2, 3]),
                ("shipments", &[0, 1, 2, 3, 4])
            ]))
        );
        // More members than partitions: the last ones get nothing.
        let many = ids(&["a-1", "b-1", "c-1", "d-1", "e-1"]);
        assert_eq!(
            AssignmentCheck::range_share(&counts(&[("events", 4)]), &many, "e-"),
            Some(Owned::new())
        );
        // Not found, or not unique: no opinion.
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &members, "g.cccc-"),
            None
        );
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &ids(&["g.a-1", "g.a-2"]), "g.a-"),
            None
        );
    }

    #[test]
    fn the_check_runs_only_where_it_models_the_assignor() {
        let mut cfg = KafkaConfig::default();
        assert!(
            AssignmentCheck::applies(&cfg),
            "defaults: range, dynamic ids"
        );
        cfg.assignment_check = Duration::ZERO;
        assert!(!AssignmentCheck::applies(&cfg), "0 disables it");
        for (key, value) in [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("group.instance.id", "detector-0"),
            ("client.id", "shared"),
        ] {
            let mut cfg = KafkaConfig::default();
            cfg.extra.insert(key.into(), value.into());
            assert!(!AssignmentCheck::applies(&cfg), "{key}={value}");
        }
        let mut cfg = KafkaConfig::default();
        cfg.extra.insert(
            "partition.assignment.strategy".into(),
            "range,roundrobin".into(),
        );
        assert!(AssignmentCheck::applies(&cfg), "range first");
    }

    #[test]
    fn only_a_mismatch_seen_twice_in_a_row_triggers_a_rejoin() {
        let mut check = AssignmentCheck {
            group: "g".into(),
            me: "g.aaaa-".into(),
            suspect: None,
        };
        let half = owned(&[("events", &[2, 3])]);
        let all = owned(&[("events", &[0, 1, 2, 3])]);
        assert!(
            !check.mismatch_persists(&all, Some(all.clone())),
            "consistent"
        );
        assert!(!check.mismatch_persists(&half, None), "no opinion");
        // The stale state tansu 0.6.0 leaves a survivor in: alone, half the partitions.
        assert!(
            !check.mismatch_persists(&half, Some(all.clone())),
            "first sighting"
        );
        assert!(
            check.mismatch_persists(&half, Some(all.clone())),
            "persists: rejoin"
        );
        assert!(
            !check.mismatch_persists(&half, Some(all.clone())),
            "counting restarts"
        );
        // A transient mismatch that resolves does not count.
        assert!(!check.mismatch_persists(&Owned::new(), Some(all.clone())));
        assert!(!check.mismatch_persists(&all, Some(all.clone())));
        assert!(!check.mismatch_persists(&Owned::new(), Some(all.clone())));
        // Nor does a mismatch that changes (a rebalance under way).
        assert!(!check.mismatch_persists(&half, Some(all)));
    }

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
