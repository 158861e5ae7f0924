//! Readiness of one consumer-group member: whether it holds its share of the
//! group's partitions and has caught up to where the group was when it got
//! them. A service's `/healthz` is the conjunction of its members' readiness
//! (see `admin::ReadyGate`), so an orchestrator rolling instances waits until
//! the new instance really consumes instead of trusting its first rebalance
//! (which may assign nothing while a killed predecessor's session lingers).
//!
//! The state machine ([`State`]) is pure and clocked by its caller; the
//! evaluator task ([`evaluate_forever`]) feeds it the assignment targets it
//! fetches from the broker and publishes transitions (log line, the
//! `consumer_ready{group}` gauge, the gate `/healthz` reads).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::rebalance::RebalanceContext;
use super::{Inbound, StartAt};

/// The session timeout every member uses (`session.timeout.ms`): how long a
/// killed member's partitions can stay assigned to it.
pub(super) const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a ready member stays ready while it holds no settled assignment
/// (revoked and not yet reassigned, or reassigned and still catching up) or
/// while its handler keeps failing. An eager rebalance (every member revoked,
/// then assigned) completes well within a session timeout on a healthy group;
/// flipping every instance to 503 for each one would make a rolling restart
/// of N instances take N rebalances of total unavailability.
pub(super) const GRACE: Duration = SESSION_TIMEOUT;

/// How long an empty share must have been confirmed by the coordinator (group
/// `Stable`, the range assignor's share for this member empty) before it
/// counts as legitimate: longer than a session timeout, so a dead member that
/// still counts as alive cannot be what leaves this one idle.
pub(super) const EMPTY_SETTLE: Duration = Duration::from_secs(15);

type Tp = (String, i32);

/// One member's readiness inputs and its last verdict.
#[derive(Debug, Default)]
pub(super) struct State {
    held: BTreeSet<Tp>,
    /// Bumped on every assignment change, so targets fetched for an older
    /// assignment are ignored.
    generation: u64,
    /// High watermark of each held partition observed after the assignment;
    /// `None` until fetched.
    targets: Option<BTreeMap<Tp, i64>>,
    /// Next offset known processed on each partition: by this member, or
    /// committed by the group when the partition was assigned.
    reached: BTreeMap<Tp, i64>,
    /// Since when the coordinator has confirmed an empty share (continuously).
    empty_share_since: Option<Instant>,
    /// Since when the current batch has been failing.
    failing_since: Option<Instant>,
    /// Since when a ready member has been unsettled (see [`GRACE`]).
    unsettled_since: Option<Instant>,
    ready: bool,
}

impl State {
    /// A rebalance gave this member `held` (empty on revocation). Returns the
    /// generation whose targets must be fetched.
    pub(super) fn assigned(&mut self, held: BTreeSet<Tp>) -> u64 {
        self.held = held;
        self.generation += 1;
        self.targets = None;
        self.empty_share_since = None;
        self.generation
    }

    /// The current assignment and its generation, for fetching targets.
    pub(super) fn pending_targets(&self) -> Option<(u64, BTreeSet<Tp>)> {
        (self.targets.is_none() && !self.held.is_empty())
            .then(|| (self.generation, self.held.clone()))
    }

    /// Targets of assignment `generation`: per partition, where consumption
    /// starts (committed offset, or the reset position) and the high watermark.
    pub(super) fn targets_known(&mut self, generation: u64, targets: BTreeMap<Tp, (i64, i64)>) {
        if generation != self.generation {
            return;
        }
        let mut highs = BTreeMap::new();
        for (tp, (start, high)) in targets {
            let reached = self.reached.entry(tp.clone()).or_insert(start);
            *reached = (*reached).max(start);
            highs.insert(tp, high);
        }
        self.targets = Some(highs);
    }

    /// A batch was processed and its offsets stored.
    pub(super) fn processed(&mut self, batch: &[Inbound]) {
        for record in batch {
            let reached = self
                .reached
                .entry((record.topic.clone(), record.partition))
                .or_insert(0);
            *reached = (*reached).max(record.offset + 1);
        }
        self.failing_since = None;
    }

    /// The current batch failed (it is retried); `now` is the failure time.
    pub(super) fn batch_failed(&mut self, now: Instant) {
        self.failing_since.get_or_insert(now);
    }

    /// The assignment check's answer: `Some(true)` when the group is stable
    /// and this member's range share is empty, `Some(false)` when it is
    /// stable and the share is not, `None` when there is no answer.
    pub(super) fn share_checked(&mut self, empty_share: Option<bool>, now: Instant) {
        match empty_share {
            Some(true) if self.held.is_empty() => {
                self.empty_share_since.get_or_insert(now);
            }
            _ => self.empty_share_since = None,
        }
    }

    /// Whether the assignment alone justifies readiness: a non-empty one
    /// caught up to its targets, or an empty one the coordinator has
    /// confirmed for [`EMPTY_SETTLE`].
    fn settled(&self, now: Instant) -> bool {
        if self.held.is_empty() {
            return self
                .empty_share_since
                .is_some_and(|since| now.duration_since(since) >= EMPTY_SETTLE);
        }
        let Some(targets) = &self.targets else {
            return false;
        };
        self.held.iter().all(|tp| {
            targets
                .get(tp)
                .is_some_and(|high| self.reached.get(tp).is_some_and(|r| r >= high))
        })
    }

    /// Re-evaluates at `now`; returns the new verdict when it changed.
    pub(super) fn evaluate(&mut self, now: Instant) -> Option<bool> {
        let failing = self
            .failing_since
            .is_some_and(|since| now.duration_since(since) >= GRACE);
        let ready = if failing {
            false
        } else if self.settled(now) {
            self.unsettled_since = None;
            true
        } else if self.ready {
            let since = *self.unsettled_since.get_or_insert(now);
            now.duration_since(since) < GRACE
        } else {
            false
        };
        if !ready {
            self.unsettled_since = None;
        }
        (ready != self.ready).then(|| {
            self.ready = ready;
            ready
        })
    }

    /// Why the member is not ready, for the transition's log line.
    pub(super) fn reason(&self, now: Instant) -> &'static str {
        if self
            .failing_since
            .is_some_and(|since| now.duration_since(since) >= GRACE)
        {
            "batches keep failing"
        } else if self.held.is_empty() {
            "holds no partitions"
        } else if self.targets.is_none() {
            "assignment targets not fetched yet"
        } else {
            "catching up"
        }
    }

    /// Partitions held now.
    pub(super) fn held_count(&self) -> usize {
        self.held.len()
    }
}

/// What the evaluator task needs from its loop.
pub(super) struct Evaluator {
    pub(super) consumer: Arc<StreamConsumer<RebalanceContext>>,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) start_at: StartAt,
    pub(super) group: String,
    pub(super) flag: Arc<AtomicBool>,
    pub(super) gauge: Gauge,
}

/// Every tick: fetch targets of a new assignment, re-evaluate, publish
/// transitions. Runs until `shutdown`.
pub(super) async fn evaluate_forever(evaluator: Evaluator, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pending = evaluator
            .state
            .lock()
            .ok()
            .and_then(|s| s.pending_targets());
        if let Some((generation, held)) = pending {
            let consumer = evaluator.consumer.clone();
            let start_at = evaluator.start_at;
            match tokio::task::spawn_blocking(move || fetch_targets(&consumer, &held, start_at))
                .await
            {
                Ok(Ok(targets)) => {
                    if let Ok(mut state) = evaluator.state.lock() {
                        state.targets_known(generation, targets);
                    }
                }
                Ok(Err(err)) => tracing::debug!(%err, group = %evaluator.group,
                    "assignment targets not fetched; retrying"),
                Err(err) => tracing::warn!(%err, "fetching assignment targets panicked"),
            }
        }
        evaluator.publish(Instant::now());
    }
}

impl Evaluator {
    fn publish(&self, now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(ready) = state.evaluate(now) else {
            return;
        };
        self.flag.store(ready, Ordering::Release);
        self.gauge.set(i64::from(ready));
        if ready {
            tracing::info!(group = %self.group, partitions = state.held_count(),
                "consumer ready: holds its share and caught up");
        } else {
            tracing::warn!(group = %self.group, partitions = state.held_count(),
                reason = state.reason(now), "consumer not ready");
        }
    }
}

/// Per held partition: where consumption starts (the group's committed
/// offset, or where `start_at` resets a partition without one) and the high
/// watermark now — "where the group was" when this member got it. Blocking.
fn fetch_targets(
    consumer: &StreamConsumer<RebalanceContext>,
    held: &BTreeSet<Tp>,
    start_at: StartAt,
) -> Result<BTreeMap<Tp, (i64, i64)>, rdkafka::error::KafkaError> {
    let timeout = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::with_capacity(held.len());
    for (topic, partition) in held {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut targets = BTreeMap::new();
    for (topic, partition) in held {
        let (low, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
        let start = match committed
            .find_partition(topic, *partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => offset.max(low),
            _ => match start_at {
                StartAt::Earliest => low,
                StartAt::Latest => high,
            },
        };
        targets.insert((topic.clone(), *partition), (start, high));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(entries: &[(&str, i32)]) -> BTreeSet<Tp> {
        entries.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    fn targets(entries: &[(&str, i32, i64, i64)]) -> BTreeMap<Tp, (i64, i64)> {
        entries
            .iter()
            .map(|(t, p, start, high)| (((*t).to_owned(), *p), (*start, *high)))
            .collect()
    }

    fn record(topic: &str, partition: i32, offset: i64) -> Inbound {
        Inbound {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn not_ready_until_assigned_and_caught_up_to_the_watermark_seen_at_assignment() {
        let t0 = Instant::now();
        let mut state = State::default();
        assert_eq!(state.evaluate(t0), None, "starts not ready");
        assert_eq!(state.reason(t0), "holds no partitions");
        let generation = state.assigned(tps(&[("t", 0), ("t", 1)]));
        assert_eq!(state.evaluate(t0), None, "targets unknown");
        assert_eq!(state.reason(t0), "assignment targets not fetched yet");
        // Partition 0 resumes at its committed 5 with 8 on the broker; 1 is done.
        state.targets_known(generation, targets(&[("t", 0, 5, 8), ("t", 1, 3, 3)]));
        assert_eq!(state.evaluate(t0), None, "three records behind");
        assert_eq!(state.reason(t0), "catching up");
        state.processed(&[record("t", 0, 5), record("t", 0, 6)]);
        assert_eq!(state.evaluate(t0), None, "one record behind");
        state.processed(&[record("t", 0, 7)]);
        assert_eq!(state.evaluate(t0), Some(true), "caught up");
        // Records produced after the assignment do not make it unready.
        state.processed(&[record("t", 0, 8)]);
        assert_eq!(state.evaluate(t0), None, "still ready");
    }

    #[test]
    fn targets_of_an_older_assignment_are_ignored() {
        let t0 = Instant::now();
        let mut state = State::default();
        let old = state.assigned(tps(&[("t", 0)]));
        let new = state.assigned(tps(&[("t", 1)]));
        state.targets_known(old, targets(&[("t", 0, 0, 0)]));
        assert_eq!(state.pending_targets(), Some((new, tps(&[("t", 1)]))));
        assert_eq!(state.evaluate(t0), None);
        state.targets_known(new, targets(&[("t", 1, 4, 4)]));
        assert_eq!(state.pending_targets(), None);
        assert_eq!(state.evaluate(t0), Some(true));
    }

    #[test]
    fn an_empty_assignment_is_ready_only_once_the_coordinator_confirmed_it_long_enough() {
        let t0 = Instant::now();
        let mut state = State::default();
        state.assigned(BTreeSet::new());
        state.share_checked(None, t0);
        assert_eq!(state.evaluate(t0), None, "no answer: not ready");
        // A dead member's lingering session can make an empty share look right.
        state.share_checked(Some(true), t0);
        assert_eq!(state.evaluate(t0 + EMPTY_SETTLE / 2), None, "not yet");
        state.share_checked(Some(false), t0 + EMPTY_SETTLE / 2);
        state.share_checked(Some(true), t0 + EMPTY_SETTLE / 2);
        assert_eq!(
            state.evaluate(t0 + EMPTY_SETTLE),
            None,
            "a contradicting answer restarts the wait"
        );
        assert_eq!(
            state.evaluate(t0 + EMPTY_SETTLE / 2 + EMPTY_SETTLE),
            Some(true),
            "more members than partitions, confirmed for a session timeout and more"
        );
        // Getting partitions means catching up on them first.
        state.assigned(tps(&[("t", 0)]));
        state.share_checked(Some(true), t0 + EMPTY_SETTLE * 2);
        assert_eq!(
            state.empty_share_since, None,
            "an empty share while holding partitions is not an empty assignment"
        );
    }

    #[test]
    fn a_ready_member_tolerates_a_rebalance_within_the_grace_but_not_longer() {
        let t0 = Instant::now();
        let mut state = State::default();
        let generation = state.assigned(tps(&[("t", 0)]));
        state.targets_known(generation, targets(&[("t", 0, 2, 2)]));
        assert_eq!(state.evaluate(t0), Some(true));
        // Revoked, reassigned and caught up within the grace: never unready.
        state.assigned(BTreeSet::new());
        assert_eq!(state.evaluate(t0 + GRACE / 2), None);
        let generation = state.assigned(tps(&[("t", 0)]));
        state.targets_known(generation, targets(&[("t", 0, 2, 2)]));
        assert_eq!(state.evaluate(t0 + GRACE), None, "settled again");
        // Revoked for good.
        let t1 = t0 + GRACE * 2;
        state.assigned(BTreeSet::new());
        assert_eq!(state.evaluate(t1), None, "grace starts");
        assert_eq!(
            state.evaluate(t1 + GRACE),
            Some(false),
            "lost its partitions"
        );
        assert_eq!(state.reason(t1 + GRACE), "holds no partitions");
        // Reassigned: ready again only once caught up.
        let generation = state.assigned(tps(&[("t", 0)]));
        state.targets_known(generation, targets(&[("t", 0, 2, 3)]));
        assert_eq!(state.evaluate(t1 + GRACE * 2), None);
        state.processed(&[record("t", 0, 2)]);
        assert_eq!(state.evaluate(t1 + GRACE * 2), Some(true));
    }

    #[test]
    fn a_handler_failing_longer_than_the_grace_makes_it_unready_until_a_batch_succeeds() {
        let t0 = Instant::now();
        let mut state = State::default();
        let generation = state.assigned(tps(&[("t", 0)]));
        state.targets_known(generation, targets(&[("t", 0, 0, 1)]));
        state.processed(&[record("t", 0, 0)]);
        assert_eq!(state.evaluate(t0), Some(true));
        state.batch_failed(t0);
        state.batch_failed(t0 + GRACE / 2);
        assert_eq!(state.evaluate(t0 + GRACE / 2), None, "a retry is not lag");
        assert_eq!(state.evaluate(t0 + GRACE), Some(false), "stuck");
        assert_eq!(state.reason(t0 + GRACE), "batches keep failing");
        state.processed(&[record("t", 0, 1)]);
        assert_eq!(state.evaluate(t0 + GRACE), Some(true), "moving again");
    }
}
