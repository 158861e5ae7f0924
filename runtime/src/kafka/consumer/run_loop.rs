//! The consumer's run loop: fetch a batch (without lingering when idle), hand
//! it to the handler until it succeeds, store its offsets, and between
//! batches run the assignment check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::assignment::{AssignmentCheck, Owned, expected_share};
use super::readiness::{self, Evaluator};
use super::rebalance::{RebalanceContext, describe_offsets};
use super::subscribe::LoopMetrics;
use super::{Assignment, BatchHandler, Inbound, Progress, StartAt};
use crate::Error;
use crate::admin::ReadyGate;

/// Longest the run loop waits on shutdown for the other holders of the
/// consumer (readiness evaluation, metadata calls on the blocking pool) to let
/// go, so the consumer closes in the loop: longer than their own timeouts.
const HANDLES_RELEASED_WITHIN: Duration = Duration::from_secs(15);

/// A subscribed consumer running a [`BatchHandler`] with at-least-once semantics.
pub struct ConsumerLoop {
    pub(super) consumer: Arc<StreamConsumer<RebalanceContext>>,
    pub(super) topics: Vec<String>,
    /// Set when the assignment can be checked against the range assignor
    /// (see [`AssignmentCheck`]).
    pub(super) check: Option<AssignmentCheck>,
    pub(super) check_interval: Duration,
    pub(super) assignment: Assignment,
    pub(super) progress: Progress,
    pub(super) resuming: Arc<Mutex<BTreeSet<(String, i32)>>>,
    pub(super) group: String,
    pub(super) start_at: StartAt,
    /// Readiness inputs, shared with the rebalance callbacks.
    pub(super) readiness: Arc<Mutex<readiness::State>>,
    /// Open while this member is ready (see [`ConsumerLoop::ready_gate`]).
    pub(super) ready_gate: ReadyGate,
    pub(super) ready_flag: Arc<std::sync::atomic::AtomicBool>,
    pub(super) batch_max: usize,
    pub(super) batch_linger: Duration,
    pub(super) metrics: LoopMetrics,
}

impl ConsumerLoop {
    /// The partition assignment, updated on rebalances.
    pub fn assignment(&self) -> Assignment {
        self.assignment.clone()
    }

    /// This member's readiness, named after its group: open while it holds a
    /// non-empty assignment and has processed every partition of it up to the
    /// high watermark seen when it got it (or the coordinator has confirmed
    /// an empty share for longer than a session timeout: more members than
    /// partitions). It stays open through a rebalance that settles within
    /// ten seconds, and closes when the assignment stays unsettled longer or a
    /// batch keeps failing that long. Evaluated while [`ConsumerLoop::run`]
    /// runs; logged and exported as `consumer_ready{group}` on each change.
    pub fn ready_gate(&self) -> ReadyGate {
        self.ready_gate.clone()
    }

    /// Serves the admin listener (`/healthz`, `/livez`, `/metrics`) of a
    /// service with this one consumer: `/healthz` is 200 only while
    /// [`ConsumerLoop::ready_gate`] is open.
    pub async fn serve_admin(
        &self,
        admin: &crate::config::AdminConfig,
        registry: prometheus_client::registry::Registry,
        shutdown: CancellationToken,
    ) -> Result<(std::net::SocketAddr, crate::admin::Health), Error> {
        crate::admin::serve_gated_with(
            &admin.listen,
            &admin.limits,
            registry,
            shutdown,
            vec![self.ready_gate()],
        )
        .await
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
        // Readiness is evaluated beside the loop, so a long batch or a retry
        // does not freeze it; it ends with the loop.
        let evaluator = tokio::spawn(readiness::evaluate_forever(
            Evaluator {
                consumer: self.consumer.clone(),
                state: self.readiness.clone(),
                start_at: self.start_at,
                group: self.group.clone(),
                flag: self.ready_flag.clone(),
                gauge: self.metrics.ready.clone(),
            },
            shutdown.child_token(),
        ));
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
                Ok(message) => batch.push(Inbound::detach(&message)),
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
                        if let Ok(mut state) = self.readiness.lock() {
                            state.batch_failed(Instant::now());
                        }
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
            if let Ok(mut state) = self.readiness.lock() {
                state.processed(&batch);
            }
        }
        evaluator.abort();
        // The consumer must close here, in an orderly shutdown where the broker
        // is still reachable: librdkafka's close blocks until it has left the
        // group, in whichever thread drops the last handle. The evaluator holds
        // one, and so may a blocking metadata call it or the assignment check
        // started (each bounded by its own timeout); left behind, the last
        // handle dropped later — on a blocking-pool thread the runtime waits
        // for on exit, possibly after the broker had gone, where the close
        // never finishes (fede1024/rust-rdkafka#509).
        let _ = evaluator.await;
        let released = tokio::time::Instant::now() + HANDLES_RELEASED_WITHIN;
        while Arc::strong_count(&self.consumer) > 1 && tokio::time::Instant::now() < released {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.ready_flag
            .store(false, std::sync::atomic::Ordering::Release);
        self.metrics.ready.set(0);
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
                Ok(message) => batch.push(Inbound::detach(&message)),
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
        let Some((group, me)) = self.check.as_ref().map(|c| (c.group.clone(), c.me.clone())) else {
            return;
        };
        let held: Owned = self.assignment.borrow().clone();
        let consumer = self.consumer.clone();
        let topics = self.topics.clone();
        let expected =
            tokio::task::spawn_blocking(move || expected_share(&consumer, &group, &topics, &me))
                .await;
        let expected = match expected {
            Ok(Ok(expected)) => expected,
            Ok(Err(err)) => {
                tracing::debug!(%err, "assignment check skipped");
                self.share_checked(None);
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "assignment check panicked");
                self.share_checked(None);
                return;
            }
        };
        self.share_checked(expected.as_ref().map(Owned::is_empty));
        let shown = expected
            .as_ref()
            .map(|e| format!("{e:?}"))
            .unwrap_or_default();
        tracing::debug!(held = ?held, expected = %shown, "assignment checked");
        let Some(check) = self.check.as_mut() else {
            return;
        };
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

    /// Tells readiness whether the coordinator confirms an empty share.
    fn share_checked(&self, empty_share: Option<bool>) {
        if let Ok(mut state) = self.readiness.lock() {
            state.share_checked(empty_share, Instant::now());
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
