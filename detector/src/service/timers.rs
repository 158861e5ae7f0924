//! The timer loop's side: due deadlines of owned partitions become inputs of
//! the pipeline (a waybill with no new inputs, folded to the partition's
//! clock), gated until the consumer has caught up; outboxes of gained
//! partitions are re-delivered first.

use std::collections::{BTreeSet, HashMap};

use tracing::Instrument;
use trackstream_proto::topics;
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::{Assignment, HandlerError};

use super::Detector;
use super::pipeline::{Group, Job, Source};
use crate::letters::Failure;
use crate::sink::Sink;

impl<S: Sink> Detector<S> {
    /// Fires due timers of `partition` (deadlines, and pending events the
    /// clock reached); returns how many were processed. The due waybills go
    /// through the same pipeline as a consumer batch, with no inputs and the
    /// partition's clock: one load, one commit, one delivery.
    pub async fn fire_timers(&self, partition: i32) -> Result<usize, HandlerError> {
        let now = self.clock(partition).await?;
        let due = self
            .store
            .due_timers(partition, now, self.timers.batch)
            .await
            .map_err(Failure::from)?;
        if due.is_empty() {
            return Ok(0);
        }
        let count = due.len();
        self.metrics.timers_fired.inc_by(count as u64);
        // A waybill with several due rules is folded once.
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for member in due {
            let at = *index.entry(member.0.clone()).or_insert_with(|| {
                groups.push(Group {
                    partition,
                    key: member.0.clone(),
                    inputs: Vec::new(),
                    records: Vec::new(),
                    event_ids: Vec::new(),
                    due: Vec::new(),
                });
                groups.len() - 1
            });
            if let Some(group) = groups.get_mut(at) {
                group.due.push(member);
            }
        }
        let job = Job {
            partition,
            groups: &groups,
            batch: &[],
            source: Source::Timers { now },
        };
        let mut committing = false;
        let result = self
            .apply_partition(
                &job,
                (0..groups.len()).collect(),
                Vec::new(),
                &mut committing,
            )
            .instrument(tracing::debug_span!(
                "fire",
                partition,
                waybills = groups.len()
            ))
            .await;
        if result.is_err()
            && committing
            && let Ok(mut dirty) = self.dirty.lock()
        {
            // Its outbox may hold committed outputs nobody produced.
            dirty.insert(partition);
        }
        result?;
        Ok(count)
    }

    /// Fires every due timer of `partition`, batch after batch, until none is
    /// due; returns how many were processed.
    pub async fn drain_timers(&self, partition: i32) -> Result<usize, HandlerError> {
        let mut total = 0;
        loop {
            let n = self.fire_timers(partition).await?;
            total += n;
            if n < self.timers.batch.max(1) {
                return Ok(total);
            }
        }
    }

    /// The timer loop: every tick, fire due deadlines of the partitions this
    /// instance owns; on assignment, first re-deliver their outboxes (overdue
    /// deadlines then fire at once on the next tick). Revoked partitions are
    /// dropped from the set as soon as the consumer reports the revocation.
    pub async fn run_timers(&self, mut assignment: Assignment, shutdown: CancellationToken) {
        let mut owned: BTreeSet<i32> = BTreeSet::new();
        let mut tick =
            tokio::time::interval(self.timers.tick.max(std::time::Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = assignment.changed() => {
                    if changed.is_err() { break; }
                    let now_owned: BTreeSet<i32> = assignment
                        .borrow_and_update()
                        .get(topics::TRACKING_EVENTS)
                        .cloned()
                        .unwrap_or_default();
                    let gained: Vec<i32> = now_owned.difference(&owned).copied().collect();
                    owned = now_owned;
                    for partition in gained {
                        if let Err(err) = self.flush_outbox(partition).await {
                            tracing::warn!(%err, partition, "outbox flush failed; will retry");
                            if let Ok(mut dirty) = self.dirty.lock() { dirty.insert(partition); }
                        }
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            if let Err(err) = self.flush_dirty().await {
                tracing::warn!(%err, "outbox flush failed; will retry");
                continue;
            }
            for partition in &owned {
                // Drain a backlog of overdue deadlines without waiting a tick
                // each, but let an assignment change interrupt it.
                if assignment.has_changed().unwrap_or(true) {
                    break;
                }
                if !self.may_fire(*partition) {
                    continue;
                }
                if let Err(err) = self.drain_timers(*partition).await {
                    tracing::warn!(%err, partition, "firing timers failed; will retry");
                }
            }
        }
    }
}
