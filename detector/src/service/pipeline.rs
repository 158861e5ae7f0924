//! The one pipeline every input goes through, a partition at a time: rounds of
//! load → fold → commit until no waybill conflicts, then deliver (sequence,
//! dead letters, produce, clear the outbox). A consumer batch's scans and
//! registrations and the timer loop's due deadlines differ only in what a
//! [`Source`] says: which clock the fold runs to, whether a grace holds the
//! deadlines, what a dead letter carries, and what happens to a waybill the
//! fold left unchanged.

use std::collections::{BTreeSet, HashMap};

use trackstream_runtime::kafka::{Inbound, OutRecord};

use super::Detector;
use crate::config::ClockMode;
use crate::engine::{Input, Output, Waybill, WaybillState};
use crate::letters::{self, Failure, cause};
use crate::sink::Sink;
use crate::store::{Change, Committed, Due, Encoded, LoadRequest};

/// One waybill's inputs.
pub(super) struct Group {
    pub partition: i32,
    pub key: String,
    pub inputs: Vec<Input>,
    /// Index in the batch of the record each input came from (parallel to
    /// `inputs`): what a dead letter carries.
    pub records: Vec<usize>,
    pub event_ids: Vec<String>,
    /// The timer members that brought it in (timer loop only).
    pub due: Vec<Due>,
}

/// Where a partition's inputs come from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Source {
    /// A consumer batch; `newest` is its newest event time on the partition
    /// (`i64::MIN` without events).
    Batch { newest: i64 },
    /// The timer loop, firing what is due at `now` (the partition's clock).
    Timers { now: i64 },
    /// Outbox re-delivery (delivery only: nothing is folded).
    Outbox,
}

impl Source {
    /// Stage and `dlq.source.topic` of a synthetic letter (an output or a
    /// waybill no input record carries).
    pub fn letter_origin(self) -> (&'static str, &'static str) {
        match self {
            Source::Batch { .. } | Source::Outbox => (letters::STAGE, letters::SOURCE_OUTBOX),
            Source::Timers { .. } => (letters::STAGE_TIMERS, letters::SOURCE_TIMERS),
        }
    }
}

/// One partition's work: its groups, the batch their records index into
/// (empty for timers), and where they came from.
pub(super) struct Job<'a> {
    pub partition: i32,
    pub groups: &'a [Group],
    pub batch: &'a [Inbound],
    pub source: Source,
}

/// A waybill folded in a round, with its encoded outputs.
pub(super) struct Folded {
    /// Index of its [`Group`].
    pub group: usize,
    pub waybill: Waybill,
    pub outputs: Vec<Output>,
    pub encoded: Vec<Encoded>,
    /// Sequence number of each update output (alerts: `None`).
    pub seqs: Vec<Option<u64>>,
    /// When its keys expire (ms since the epoch).
    pub expire_at: i64,
}

/// The result of one round over a partition.
struct Round {
    clock: i64,
    done: Vec<Folded>,
    /// Groups whose compare-and-set failed.
    conflicts: Vec<usize>,
    /// Groups the fold left unchanged.
    unchanged: Vec<usize>,
}

impl<S: Sink> Detector<S> {
    /// One partition's part: rounds of load → fold → commit until no waybill
    /// conflicts, then delivery (sequence numbers when not inline, dead
    /// letters, produce, clear the outbox, raise the watermark, refresh the
    /// ownership claims' expiry). Sets `committing` once a commit may have
    /// written outputs to the outbox.
    pub(super) async fn apply_partition(
        &self,
        job: &Job<'_>,
        members: Vec<usize>,
        mut letters: Vec<OutRecord>,
        committing: &mut bool,
    ) -> Result<(), Failure> {
        let wall = (self.wall)();
        let mut committed: Vec<Folded> = Vec::new();
        let mut unchanged: Vec<usize> = Vec::new();
        let mut clock = match job.source {
            Source::Timers { now } => Some(now),
            Source::Batch { .. } | Source::Outbox => None,
        };
        let mut todo = members;
        // Inputs set aside (dead-lettered) per group, kept across rounds.
        let mut excluded: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        while !todo.is_empty() {
            *committing = true;
            let round = self
                .round(job, &todo, clock, wall, &mut excluded, &mut letters)
                .await?;
            clock = Some(round.clock);
            if !round.conflicts.is_empty() {
                self.metrics.conflicts.inc_by(round.conflicts.len() as u64);
            }
            committed.extend(round.done);
            unchanged.extend(round.unchanged);
            todo = round.conflicts;
        }
        // Due timers that changed nothing no longer match their waybill's
        // state (it moved on, or its keys expired): drop them.
        let stale: Vec<&Due> = unchanged
            .iter()
            .filter_map(|g| job.groups.get(*g))
            .flat_map(|g| &g.due)
            .collect();
        self.store.drop_timers(job.partition, &stale).await?;
        let mark = match job.source {
            Source::Batch { newest } => {
                (self.timers.clock == ClockMode::Event && newest > i64::MIN).then_some(newest)
            }
            Source::Timers { .. } | Source::Outbox => None,
        };
        self.deliver_committed(job, committed, letters, wall, mark)
            .await
    }

    /// One load → fold → commit round over some waybills of one partition.
    /// `clock` is the partition's clock from an earlier round (`None` on a
    /// batch's first: computed from the loaded watermark and the batch's
    /// newest event time).
    async fn round(
        &self,
        job: &Job<'_>,
        members: &[usize],
        clock: Option<i64>,
        wall: i64,
        excluded: &mut HashMap<usize, BTreeSet<usize>>,
        letters: &mut Vec<OutRecord>,
    ) -> Result<Round, Failure> {
        let (partition, groups) = (job.partition, job.groups);
        let requests: Vec<LoadRequest<'_>> = members
            .iter()
            .filter_map(|i| groups.get(*i))
            .map(|g| LoadRequest {
                key: &g.key,
                event_ids: &g.event_ids,
            })
            .collect();
        let want_watermark = clock.is_none() && self.timers.clock == ClockMode::Event;
        let (stored, loaded) = self
            .store
            .load_partition(partition, &requests, want_watermark)
            .await?;
        let newest = match job.source {
            Source::Batch { newest } => newest,
            Source::Timers { .. } | Source::Outbox => i64::MIN,
        };
        let clock = match (clock, self.timers.clock) {
            (Some(clock), _) => clock,
            (None, ClockMode::Wall) => (self.wall)(),
            (None, ClockMode::Event) => {
                crate::config::event_clock(stored.max(newest), self.timers.allowed_lateness)
            }
        };
        // A registration joining a waybill that already has scans needs the
        // stored history (to send the order every scan so far): rare, fetched
        // in flight together.
        let histories =
            futures::future::try_join_all(members.iter().zip(&loaded).map(|(i, l)| async move {
                let wb = &l.waybill;
                match groups.get(*i) {
                    Some(g)
                        if wb.registration.is_none()
                            && (wb.state.events > 0 || !wb.state.pending.is_empty())
                            && g.inputs.iter().any(|i| matches!(i, Input::Registration(_))) =>
                    {
                        self.store.history(partition, &g.key).await
                    }
                    _ => Ok(Vec::new()),
                }
            }))
            .await?;
        let in_round: Vec<Option<&Group>> = members.iter().map(|i| groups.get(*i)).collect();
        self.prefetch_windows(&in_round, &loaded, &histories)
            .await?;
        // A batch's inputs hold their waybills' deadlines for the grace; a
        // fired deadline holds nothing.
        let hold_until = match job.source {
            Source::Batch { .. } => self.hold_until(clock),
            Source::Timers { .. } | Source::Outbox => 0,
        };
        let mut round = Round {
            clock,
            done: Vec::with_capacity(members.len()),
            conflicts: Vec::new(),
            unchanged: Vec::new(),
        };
        let mut folds: Vec<Folded> = Vec::with_capacity(members.len());
        let mut befores: Vec<WaybillState> = Vec::with_capacity(members.len());
        let mut histories_new = Vec::with_capacity(members.len());
        for ((index, loaded), history) in members.iter().zip(loaded).zip(histories) {
            let Some(group) = groups.get(*index) else {
                continue;
            };
            let _span = tracing::debug_span!("fold", waybill = %group.key, partition).entered();
            let set_aside = excluded.entry(*index).or_default();
            if !group.inputs.is_empty() && set_aside.len() == group.inputs.len() {
                continue;
            }
            let Some((waybill, fx, encoded)) = self.fold_group(
                job,
                group,
                &loaded,
                (&history, clock, hold_until),
                set_aside,
                letters,
            ) else {
                if !group.due.is_empty() && loaded.waybill.version == 0 {
                    self.metrics.expired_timers.inc();
                    tracing::debug!(waybill = %group.key, "timer of an expired waybill dropped");
                }
                round.unchanged.push(*index);
                continue;
            };
            let expire_at = self.retention.parcel_expires_at(&waybill.state, wall);
            folds.push(Folded {
                group: *index,
                seqs: vec![None; encoded.len()],
                waybill,
                outputs: fx.outputs,
                encoded,
                expire_at,
            });
            befores.push(loaded.waybill.state);
            histories_new.push(fx.history);
        }
        let changes: Vec<Change<'_>> = folds
            .iter()
            .zip(&befores)
            .zip(&histories_new)
            .map(|((f, before), history)| Change {
                before,
                waybill: &f.waybill,
                history,
                outputs: &f.encoded,
                expire_at: f.expire_at,
            })
            .collect();
        let results = self.commit_all(partition, &changes, wall).await?;
        drop(changes);
        for ((mut folded, before), result) in folds.into_iter().zip(befores).zip(results) {
            match result {
                Ok(Committed::Done(seqs)) => {
                    let mut seqs = seqs.into_iter();
                    for (encoded, seq) in folded.encoded.iter().zip(folded.seqs.iter_mut()) {
                        if encoded.order.is_some() {
                            *seq = seqs.next();
                        }
                    }
                    round.done.push(folded);
                }
                Ok(Committed::Conflict) => {
                    tracing::debug!(waybill = %folded.waybill.key, "concurrent change; re-applying");
                    round.conflicts.push(folded.group);
                }
                Err(err) => {
                    self.set_aside_poison(job, folded.group, &before, &err, excluded, letters);
                    round.unchanged.extend(
                        groups
                            .get(folded.group)
                            .filter(|g| !g.due.is_empty())
                            .map(|_| folded.group),
                    );
                }
            }
        }
        Ok(round)
    }

    /// Commits a round's changes with one script call. If the script fails on
    /// some waybill's data, commits them one at a time to find which: those
    /// come back as `Err(reason)`.
    async fn commit_all(
        &self,
        partition: i32,
        changes: &[Change<'_>],
        wall: i64,
    ) -> Result<Vec<Result<Committed, String>>, Failure> {
        let order_expire_at = self.retention.order_expires_at(wall);
        let commit = |changes| async move {
            self.store
                .commit_partition(partition, changes, order_expire_at)
                .await
                .map_err(Failure::from)
        };
        match commit(changes).await {
            Ok(results) => Ok(results.into_iter().map(Ok).collect()),
            Err(err) if err.is_permanent() => {
                tracing::warn!(%err, partition, "commit script failed; committing waybills one by one");
                let mut results = Vec::with_capacity(changes.len());
                for change in changes {
                    match commit(std::slice::from_ref(change)).await {
                        Ok(mut one) => results.push(one.pop().ok_or_else(|| err.to_string())),
                        Err(err) if err.is_permanent() => results.push(Err(err.to_string())),
                        Err(err) => return Err(err),
                    }
                }
                Ok(results)
            }
            Err(err) => Err(err),
        }
    }

    /// A waybill the commit script fails on: its inputs not yet set aside are
    /// dead-lettered (the script may have written part of the waybill before
    /// failing; see ARCHITECTURE.md); a fired deadline has no input record, so
    /// its letter carries the waybill's state, and its timers are dropped
    /// instead of firing again every tick.
    fn set_aside_poison(
        &self,
        job: &Job<'_>,
        index: usize,
        before: &WaybillState,
        err: &str,
        excluded: &mut HashMap<usize, BTreeSet<usize>>,
        letters: &mut Vec<OutRecord>,
    ) {
        let Some(group) = job.groups.get(index) else {
            return;
        };
        let set_aside = excluded.entry(index).or_default();
        for (i, r) in group.records.iter().enumerate() {
            if set_aside.insert(i)
                && let Some(record) = job.batch.get(*r)
            {
                letters.push(self.letters.letter(
                    record,
                    cause::SCRIPT_ERROR,
                    "the commit script failed on this waybill's data",
                ));
            }
        }
        if !group.due.is_empty() {
            let (stage, source) = job.source.letter_origin();
            let rules: Vec<&str> = group.due.iter().map(|(_, rule, _)| rule.as_str()).collect();
            let state = crate::engine::encode_state(before);
            letters.push(self.letters.letter_as(
                stage,
                &letters::synthetic(source, job.partition, &group.key, state),
                cause::SCRIPT_ERROR,
                &format!("timer {}: {err}", rules.join(",")),
            ));
        }
    }
}
