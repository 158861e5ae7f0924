//! The detector's two loops over one engine: the Kafka batch handler (events and
//! registrations) and the timer loop (deadlines of owned partitions).
//!
//! The clock each fold runs to is [`Detector::clock`]: wall time, or with the
//! event clock the partition's watermark (newest `occurred_at` seen, including
//! the batch at hand) minus `allowed_lateness`. The stored watermark — what the
//! timer loop fires against — only advances after a batch is committed, so the
//! timer loop never fires a deadline that a scan of the batch in flight would
//! have prevented.
//!
//! Size: over the 700-line guide. It holds the two write paths (scan batches
//! and timers) and, since the trust change, their dead-letter branches; issue
//! 11 replaces the two paths by one (a due deadline becomes an input of the
//! same load → fold → commit → deliver pipeline), which removes most of the
//! duplication here. Splitting before that would split code that is about to
//! be merged; dead-letter building already lives in `letters.rs` and expiry in
//! `lifecycle.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use tracing::Instrument;
use trackstream_proto::v1::{Alert, AlertState, Shipment, TrackingEvent};
use trackstream_proto::{time, topics};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::dlq::DeadLetters;
use trackstream_runtime::kafka::{
    Assignment, BatchHandler, HandlerError, Inbound, OutRecord, Producer, Progress,
};

use crate::config::{ClockMode, RetentionConfig, TimerConfig};
use crate::engine::{Effects, Engine, Input, Output};
use crate::engine::{Waybill, WaybillState};
use crate::letters::{self, Failure, cause};
use crate::lifecycle::Retention;
use crate::sink::{Sink, SinkError};
use crate::store::{Change, Committed, Encoded, LoadRequest, Loaded, Store};

/// One waybill's inputs in a batch.
struct Group {
    partition: i32,
    key: String,
    inputs: Vec<Input>,
    /// Index in the batch of the record each input came from (parallel to
    /// `inputs`): what a dead letter carries.
    records: Vec<usize>,
    event_ids: Vec<String>,
}

/// A waybill folded in a round, with its encoded outputs.
struct Folded {
    /// Index of its [`Group`].
    group: usize,
    waybill: Waybill,
    outputs: Vec<Output>,
    encoded: Vec<Encoded>,
    /// Sequence number of each update output (alerts: `None`).
    seqs: Vec<Option<u64>>,
    /// When its keys expire (ms since the epoch).
    expire_at: i64,
}

/// What firing one timer produced.
#[derive(Default)]
struct Fired {
    outputs: Vec<Output>,
    letters: Vec<OutRecord>,
    /// The waybill's ownership claim to refresh: `(waybill key, expire-at)`.
    claim: Option<(String, i64)>,
}

/// The result of one round over a partition.
struct Round {
    clock: i64,
    done: Vec<Folded>,
    /// Groups whose compare-and-set failed.
    conflicts: Vec<usize>,
}

type Labels = Vec<(&'static str, String)>;

/// Due timers of one partition fired at once (in flight against Redis).
const FIRE_CONCURRENCY: usize = 64;

/// Metrics of detection; each is logged where it happens too.
#[derive(Clone)]
struct Metrics {
    inputs: Family<Labels, Counter>,
    alerts: Family<Labels, Counter>,
    conflicts: Counter,
    timers_fired: Counter,
    expired_timers: Counter,
    unsendable_letters: Counter,
}

/// The detector: engine + store + sink (the Kafka producer in production).
pub struct Detector<S: Sink = Producer> {
    engine: Engine,
    store: Store,
    sink: S,
    timers: TimerConfig,
    metrics: Metrics,
    /// Partitions whose outbox may hold undelivered outputs.
    dirty: Mutex<BTreeSet<i32>>,
    /// With the wall clock: how far the consumer has got, so deadlines fire only
    /// on partitions it has caught up on (see [`Detector::with_progress`]).
    progress: Option<Progress>,
    /// The wall clock in ms (injectable so tests move time without sleeping).
    wall: WallClock,
    /// Where poison goes (`tracking.dlq`).
    letters: DeadLetters,
    /// When a parcel's keys expire.
    retention: Retention,
}

/// A source of wall-clock time in ms since the epoch.
pub type WallClock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// A permanent failure that reaches the consumer loop was not attributable to
/// one record; the batch is retried (and logged as such).
impl From<Failure> for HandlerError {
    fn from(err: Failure) -> Self {
        HandlerError(err.to_string())
    }
}

impl<S: Sink> Detector<S> {
    /// A detector over `store`, writing through `sink`.
    pub fn new(
        engine: Engine,
        store: Store,
        sink: S,
        timers: TimerConfig,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics {
            inputs: Family::default(),
            alerts: Family::default(),
            conflicts: Counter::default(),
            timers_fired: Counter::default(),
            expired_timers: Counter::default(),
            unsendable_letters: Counter::default(),
        };
        registry.register(
            "inputs",
            "Inputs applied, by kind (event, duplicate, registration, undecodable)",
            metrics.inputs.clone(),
        );
        registry.register(
            "alerts",
            "Alert transitions emitted, by rule and state",
            metrics.alerts.clone(),
        );
        registry.register(
            "commit_conflicts",
            "Optimistic commits retried because the waybill changed concurrently",
            metrics.conflicts.clone(),
        );
        registry.register(
            "timers_fired",
            "Deadlines processed by the timer loop",
            metrics.timers_fired.clone(),
        );
        registry.register(
            "expired_timers",
            "Due timer entries dropped because their waybill's keys had expired",
            metrics.expired_timers.clone(),
        );
        registry.register(
            "unsendable_letters",
            "Dead letters dropped because even without their value they exceed the size limit",
            metrics.unsendable_letters.clone(),
        );
        let letters = DeadLetters::register(
            registry,
            topics::TRACKING_DLQ,
            letters::STAGE,
            sink.max_record_bytes(),
        );
        Detector {
            engine,
            store,
            sink,
            timers,
            metrics,
            dirty: Mutex::new(BTreeSet::new()),
            progress: None,
            wall: std::sync::Arc::new(|| chrono::Utc::now().timestamp_millis()),
            letters,
            retention: Retention::default(),
        }
    }

    /// Sets when parcels' keys expire (default: [`RetentionConfig::default`]).
    pub fn with_retention(mut self, retention: RetentionConfig) -> Self {
        self.retention = Retention::new(retention);
        self
    }

    /// Replaces the wall clock (`clock = "wall"`): tests drive time with it
    /// instead of sleeping through deadlines and graces.
    pub fn with_wall_clock(mut self, wall: WallClock) -> Self {
        self.wall = wall;
        self
    }

    /// The grace a batch gives the deadlines of the waybills it touches, as the
    /// time they may fire from (0 = none; see [`crate::engine::Waybill::hold_until`]).
    fn hold_until(&self, clock: i64) -> i64 {
        match self.timers.clock {
            ClockMode::Wall if !self.timers.grace.is_zero() => clock.saturating_add(
                trackstream_runtime::config::duration::millis(self.timers.grace),
            ),
            _ => 0,
        }
    }

    /// Fires wall-clock deadlines of a partition only once the consumer has caught
    /// up on it (no batch in flight, no lag in statistics taken after the last
    /// batch). A backlog may hold the scan that cancels a deadline — the rest of a
    /// late snapshot split across batches, a push that arrived late — and firing
    /// before reading it raises a false alarm. (The event clock needs no gate: its
    /// watermark only moves with committed batches.)
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    fn may_fire(&self, partition: i32) -> bool {
        match (&self.progress, self.timers.clock) {
            (Some(progress), ClockMode::Wall) => {
                progress.caught_up(topics::TRACKING_EVENTS, partition)
                    && progress.caught_up(topics::SHIPMENTS, partition)
            }
            _ => true,
        }
    }

    /// The store (tests and benches inspect Redis through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    fn count(&self, kind: &str) {
        self.metrics
            .inputs
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// Prepares, produces and clears outputs of one partition (the timer loop
    /// and outbox re-delivery). An output over the size limit is dropped
    /// before it gets a sequence number; an output the sink refuses for good
    /// is dropped too; each such output becomes a synthetic letter from
    /// `source` (stage `stage`), produced with `letters`. Their outbox entries
    /// are cleared with the delivered ones.
    async fn deliver(
        &self,
        partition: i32,
        outputs: Vec<Output>,
        mut letters: Vec<OutRecord>,
        stage: &'static str,
        source: &str,
    ) -> Result<(), Failure> {
        if outputs.is_empty() && letters.is_empty() {
            return Ok(());
        }
        let limit = self.sink.max_record_bytes();
        let mut sendable = Vec::with_capacity(outputs.len());
        let mut dropped = Vec::new();
        for output in outputs {
            let encoded = Encoded::new(&output);
            if letters::record_len(&encoded) > limit {
                letters.push(self.output_letter(
                    stage,
                    source,
                    partition,
                    &encoded,
                    cause::OUTPUT_TOO_LARGE,
                    &letters::too_large_detail(&encoded, limit),
                ));
                dropped.push(encoded.outbox_id);
            } else {
                sendable.push(output);
            }
        }
        let order_expire_at = self.retention.order_expires_at((self.wall)());
        let deliveries = self
            .store
            .prepare(partition, &sendable, order_expire_at)
            .await?;
        self.send_letters(letters).await?;
        let records = deliveries
            .iter()
            .map(|d| OutRecord::new(d.topic, d.key.clone(), d.payload.clone()))
            .collect();
        let refused = self
            .produce_all(records, |index, reason| {
                deliveries.get(index).map(|d| {
                    self.letters.letter_as(
                        stage,
                        &letters::synthetic(source, partition, &d.key, d.payload.clone()),
                        cause::OUTPUT_REFUSED,
                        reason,
                    )
                })
            })
            .await;
        if let Err(err) = refused {
            // Outputs stay in the outbox; flushed before the next attempt.
            if let Ok(mut dirty) = self.dirty.lock() {
                dirty.insert(partition);
            }
            return Err(err);
        }
        self.store.clear_outbox(&deliveries).await?;
        let ids: Vec<&str> = dropped.iter().map(String::as_str).collect();
        self.store.drop_outbox(partition, &ids).await?;
        for output in &sendable {
            if let Output::Alert(alert) = output {
                self.log_alert(alert);
            }
        }
        Ok(())
    }

    /// A synthetic letter for an output no input record carried.
    fn output_letter(
        &self,
        stage: &'static str,
        source: &str,
        partition: i32,
        output: &Encoded,
        cause: &'static str,
        detail: &str,
    ) -> OutRecord {
        let inbound = letters::synthetic(source, partition, &output.key, output.body.clone());
        self.letters.letter_as(stage, &inbound, cause, detail)
    }

    /// Produces dead letters. They are sized to fit (`runtime::dlq` drops a
    /// value that does not), so any failure here is treated as retriable.
    ///
    /// A letter that still cannot fit (its key alone over the limit) is
    /// logged with its source coordinates and counted
    /// (`unsendable_letters`), never retried: retrying it would stall the
    /// partition it was meant to free.
    async fn send_letters(&self, mut letters: Vec<OutRecord>) -> Result<(), Failure> {
        let limit = self.sink.max_record_bytes();
        letters.retain(|letter| {
            let fits = letter.encoded_len() <= limit;
            if !fits {
                self.metrics.unsendable_letters.inc();
                let header = |name: &str| {
                    letter
                        .headers
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or_default()
                };
                tracing::error!(
                    key = %trackstream_runtime::dlq::truncate(&letter.key, 128),
                    bytes = letter.encoded_len(), limit,
                    cause = header(trackstream_runtime::dlq::headers::CAUSE),
                    source_topic = header(trackstream_runtime::dlq::headers::SOURCE_TOPIC),
                    source_partition = header(trackstream_runtime::dlq::headers::SOURCE_PARTITION),
                    source_offset = header(trackstream_runtime::dlq::headers::SOURCE_OFFSET),
                    "dead letter too large to produce; dropped");
            }
            fits
        });
        if letters.is_empty() {
            return Ok(());
        }
        self.sink
            .send_all(letters)
            .await
            .map_err(|err| Failure::Sink(SinkError::Unavailable(err.to_string())))
    }

    /// Produces `records` in order. If the sink refuses them for good, it falls
    /// back to one record at a time, so only the records it refuses are set
    /// aside — as the letter `letter_for(index, reason)` builds, produced
    /// after. A retriable failure is returned as it is (the caller retries).
    async fn produce_all(
        &self,
        records: Vec<OutRecord>,
        letter_for: impl Fn(usize, &str) -> Option<OutRecord>,
    ) -> Result<(), Failure> {
        if records.is_empty() {
            return Ok(());
        }
        let err = match self.sink.send_all(records.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) if !err.is_permanent() => return Err(err.into()),
            Err(err) => err,
        };
        tracing::warn!(%err, count = records.len(), "outputs refused for good; producing one at a time");
        let mut letters = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            match self.sink.send_all(vec![record]).await {
                Ok(()) => {}
                Err(err) if err.is_permanent() => {
                    letters.extend(letter_for(index, &err.to_string()));
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.send_letters(letters).await
    }

    fn log_alert(&self, alert: &Alert) {
        let state = AlertState::try_from(alert.state).unwrap_or(AlertState::Unspecified);
        self.metrics
            .alerts
            .get_or_create(&vec![
                ("rule", alert.rule.clone()),
                ("state", state.as_str_name().to_owned()),
            ])
            .inc();
        tracing::info!(alert_id = %alert.alert_id, rule = %alert.rule, state = state.as_str_name(),
            tier = alert.tier, waybill = %alert.waybill, order_id = %alert.order_id, "alert emitted");
    }

    /// Re-delivers whatever a partition's outbox still holds. Entries that
    /// can never be produced (over the size limit, refused, undecodable) are
    /// dead-lettered and removed, so they neither gate the partition nor
    /// survive a restart.
    pub async fn flush_outbox(&self, partition: i32) -> Result<usize, HandlerError> {
        let (pending, undecodable) = self
            .store
            .pending_outbox(partition)
            .await
            .map_err(Failure::from)?;
        let count = pending.len();
        let letters: Vec<OutRecord> = undecodable
            .iter()
            .map(|(id, bytes)| {
                self.letters.letter(
                    &letters::synthetic(letters::SOURCE_OUTBOX, partition, id, bytes.clone()),
                    cause::UNDECODABLE,
                    "outbox entry does not decode as an update or an alert",
                )
            })
            .collect();
        self.deliver(
            partition,
            pending,
            letters,
            letters::STAGE,
            letters::SOURCE_OUTBOX,
        )
        .await?;
        let ids: Vec<&str> = undecodable.iter().map(|(id, _)| id.as_str()).collect();
        self.store
            .drop_outbox(partition, &ids)
            .await
            .map_err(Failure::from)?;
        if count > 0 {
            tracing::info!(partition, count, "outbox re-delivered");
        }
        Ok(count)
    }

    async fn flush_dirty(&self) -> Result<(), HandlerError> {
        let dirty: Vec<i32> = match self.dirty.lock() {
            Ok(mut dirty) => std::mem::take(&mut *dirty).into_iter().collect(),
            Err(_) => Vec::new(),
        };
        for partition in dirty {
            if let Err(err) = self.flush_outbox(partition).await {
                if let Ok(mut set) = self.dirty.lock() {
                    set.insert(partition);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// The clock deadlines of `partition` fire against, in ms: wall time, or
    /// the stored event-time watermark minus `allowed_lateness`.
    pub async fn clock(&self, partition: i32) -> Result<i64, HandlerError> {
        self.clock_with(partition, i64::MIN)
            .await
            .map_err(HandlerError::from)
    }

    /// The clock with the batch at hand's newest event time `seen` included.
    async fn clock_with(&self, partition: i32, seen: i64) -> Result<i64, Failure> {
        Ok(match self.timers.clock {
            ClockMode::Wall => (self.wall)(),
            ClockMode::Event => {
                let stored = self.store.watermark(partition).await?;
                stored
                    .max(seen)
                    .saturating_sub(trackstream_runtime::config::duration::millis(
                        self.timers.allowed_lateness,
                    ))
            }
        })
    }

    /// Fires due timers of `partition` (deadlines, and pending events the
    /// clock reached); returns how many were processed.
    pub async fn fire_timers(&self, partition: i32) -> Result<usize, HandlerError> {
        let now = self.clock(partition).await?;
        let due = self
            .store
            .due_timers(partition, now, self.timers.batch)
            .await
            .map_err(Failure::from)?;
        // Waybills are independent (each commit is a compare-and-set on its own
        // state), so their round trips to Redis overlap.
        let mut outputs = Vec::new();
        let mut letters = Vec::new();
        let mut claims = Vec::new();
        for chunk in due.chunks(FIRE_CONCURRENCY) {
            self.metrics.timers_fired.inc_by(chunk.len() as u64);
            let fired = futures::future::try_join_all(chunk.iter().map(|(key, rule, score)| {
                self.fire_one(partition, key, rule, *score, now).instrument(
                    tracing::debug_span!("fire", waybill = %key, partition, rule = %rule),
                )
            }))
            .await?;
            for one in fired {
                outputs.extend(one.outputs);
                letters.extend(one.letters);
                claims.extend(one.claim);
            }
        }
        self.deliver(
            partition,
            outputs,
            letters,
            letters::STAGE_TIMERS,
            letters::SOURCE_TIMERS,
        )
        .await?;
        self.store
            .expire_owners(&claims)
            .await
            .map_err(Failure::from)?;
        Ok(due.len())
    }

    async fn fire_one(
        &self,
        partition: i32,
        key: &str,
        rule: &str,
        score: i64,
        now: i64,
    ) -> Result<Fired, Failure> {
        loop {
            let loaded = self.store.load(partition, key, &[]).await?;
            let before = loaded.waybill.state.clone();
            let mut waybill = loaded.waybill;
            let mut fx = Effects::default();
            self.engine.advance(&mut waybill, now, &mut fx);
            if waybill.state == before {
                // Nothing was due: the member no longer matches the state (it
                // moved on without its member being re-scored, or its keys
                // expired); drop it.
                if waybill.version == 0 {
                    self.metrics.expired_timers.inc();
                    tracing::debug!(waybill = %key, rule, "timer of an expired waybill dropped");
                }
                self.store.drop_timer(partition, key, rule, score).await?;
                return Ok(Fired::default());
            }
            // Outputs that can never be produced are set aside before they
            // reach the outbox (they would gate the partition forever).
            let limit = self.sink.max_record_bytes();
            let mut letters = Vec::new();
            let mut index = 0;
            while index < fx.outputs.len() {
                let encoded = fx.outputs.get(index).map(Encoded::new);
                match encoded {
                    Some(encoded) if letters::record_len(&encoded) > limit => {
                        letters.push(self.output_letter(
                            letters::STAGE_TIMERS,
                            letters::SOURCE_TIMERS,
                            partition,
                            &encoded,
                            cause::OUTPUT_TOO_LARGE,
                            &letters::too_large_detail(&encoded, limit),
                        ));
                        fx.outputs.remove(index);
                    }
                    _ => index += 1,
                }
            }
            let expire_at = self
                .retention
                .parcel_expires_at(&waybill.state, (self.wall)());
            match self
                .store
                .commit(&before, &waybill, &[], &fx.outputs, expire_at)
                .await
                .map_err(Failure::from)
            {
                Ok(true) => {
                    return Ok(Fired {
                        outputs: fx.outputs,
                        letters,
                        claim: Some((key.to_owned(), expire_at)),
                    });
                }
                Ok(false) => {
                    self.metrics.conflicts.inc();
                }
                Err(err) if err.is_permanent() => {
                    // The waybill's data breaks the script: set the timer
                    // aside (its state goes in the letter) instead of firing
                    // it again every tick.
                    let state = crate::engine::encode_state(&before);
                    letters.push(self.letters.letter_as(
                        letters::STAGE_TIMERS,
                        &letters::synthetic(letters::SOURCE_TIMERS, partition, key, state),
                        cause::SCRIPT_ERROR,
                        &format!("timer {rule}: {err}"),
                    ));
                    self.store.drop_timer(partition, key, rule, score).await?;
                    return Ok(Fired {
                        letters,
                        ..Fired::default()
                    });
                }
                Err(err) => return Err(err),
            }
        }
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
            tokio::time::interval((self.timers.tick).max(std::time::Duration::from_millis(1)));
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

    /// Applies a batch of consumed records (what the Kafka loop calls; public so
    /// tests and benches drive the exact same path without a broker).
    ///
    /// The number of Redis round trips is constant per partition of the batch,
    /// not per record: one pipelined load (states, registrations, duplicate
    /// check, watermark), the fold in memory, one commit script (each waybill
    /// on its own compare-and-set; on a standalone server it also assigns the
    /// updates' sequence numbers), then — after the sink acknowledged — one
    /// pipelined outbox clear and watermark raise. Partitions are independent
    /// (their keys share one slot, their records one Kafka partition), so each
    /// goes through those steps on its own and they overlap: Redis works on one
    /// partition's commit while the detector folds another's. A waybill whose
    /// compare-and-set failed (another instance wrote it) is reloaded and
    /// re-applied in another round with the other conflicting ones.
    pub async fn apply_batch(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.flush_dirty().await?;
        let (groups, seen, mut undecodable) = self.group(batch);
        let mut by_partition: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (index, group) in groups.iter().enumerate() {
            by_partition.entry(group.partition).or_default().push(index);
        }
        for partition in undecodable.keys() {
            by_partition.entry(*partition).or_default();
        }
        // Every partition runs to its end even if another fails: one that
        // committed must either clear its outbox or be marked for re-delivery.
        let groups = &groups;
        let results =
            futures::future::join_all(by_partition.into_iter().map(|(partition, members)| {
                let newest = seen.get(&partition).copied().unwrap_or(i64::MIN);
                let letters = undecodable.remove(&partition).unwrap_or_default();
                async move {
                    let mut committing = false;
                    let result = self
                        .apply_partition(
                            partition,
                            members,
                            groups,
                            batch,
                            newest,
                            letters,
                            &mut committing,
                        )
                        .await;
                    if result.is_err()
                        && committing
                        && let Ok(mut dirty) = self.dirty.lock()
                    {
                        // Its outbox may hold committed outputs nobody produced.
                        dirty.insert(partition);
                    }
                    result
                }
            }))
            .await;
        results.into_iter().collect::<Result<Vec<()>, Failure>>()?;
        Ok(())
    }

    /// One partition's part of a batch: rounds of load → fold → commit until
    /// no waybill conflicts, sequence numbers (when not inline), dead letters,
    /// produce, then clear the outbox, raise the watermark and refresh the
    /// ownership claims' expiry. Sets `committing` once a commit may have
    /// written outputs to the outbox.
    #[allow(clippy::too_many_arguments)]
    async fn apply_partition(
        &self,
        partition: i32,
        members: Vec<usize>,
        groups: &[Group],
        batch: &[Inbound],
        newest: i64,
        mut letters: Vec<OutRecord>,
        committing: &mut bool,
    ) -> Result<(), Failure> {
        let wall = (self.wall)();
        let order_expire_at = self.retention.order_expires_at(wall);
        let mut committed: Vec<Folded> = Vec::new();
        let mut clock = None;
        let mut todo = members;
        // Inputs set aside (dead-lettered) per group, kept across rounds.
        let mut excluded: HashMap<usize, BTreeSet<usize>> = HashMap::new();
        while !todo.is_empty() {
            *committing = true;
            let round = self
                .round(
                    partition,
                    &todo,
                    (groups, batch),
                    clock,
                    newest,
                    wall,
                    &mut excluded,
                    &mut letters,
                )
                .await?;
            clock = Some(round.clock);
            if !round.conflicts.is_empty() {
                self.metrics.conflicts.inc_by(round.conflicts.len() as u64);
            }
            committed.extend(round.done);
            todo = round.conflicts;
        }
        // Sequence numbers not assigned by the commit (Redis Cluster): one
        // idempotent script per update in its order's slot, all in flight.
        if !self.store.inline_sequence() {
            let pending = committed.iter_mut().flat_map(|f| {
                f.encoded
                    .iter()
                    .zip(f.seqs.iter_mut())
                    .filter(|(e, _)| e.order.is_some())
            });
            futures::future::try_join_all(pending.map(|(encoded, seq)| async move {
                *seq = Some(self.store.sequence(encoded, order_expire_at).await?);
                Ok::<_, redis::RedisError>(())
            }))
            .await?;
        }
        let mut records = Vec::new();
        // Per record: the group and output it came from (for a letter).
        let mut origins: Vec<(usize, Output)> = Vec::new();
        let mut outbox_ids = Vec::new();
        let mut alerts = Vec::new();
        let mut claims = Vec::with_capacity(committed.len());
        for folded in committed {
            claims.push((folded.waybill.key.clone(), folded.expire_at));
            for ((encoded, seq), output) in folded
                .encoded
                .into_iter()
                .zip(folded.seqs)
                .zip(&folded.outputs)
            {
                let delivery = encoded.delivery(partition, seq);
                outbox_ids.push(delivery.outbox_id);
                records.push(OutRecord::new(
                    delivery.topic,
                    delivery.key,
                    delivery.payload,
                ));
                origins.push((folded.group, output.clone()));
            }
            alerts.extend(folded.outputs.into_iter().filter_map(|o| match o {
                Output::Alert(alert) => Some(alert),
                Output::Update { .. } => None,
            }));
        }
        // Letters first: once they are acknowledged, the outputs they replace
        // may be forgotten. On failure the outputs stay in the outbox, and the
        // caller marks the partition for re-delivery before the next attempt.
        self.send_letters(letters).await?;
        self.produce_all(records, |index, reason| {
            let (group, output) = origins.get(index)?;
            let group = groups.get(*group)?;
            let blamed = letters::culprits(&group.inputs, &|_| true, output);
            let record = blamed
                .first()
                .and_then(|i| group.records.get(*i))
                .and_then(|r| batch.get(*r));
            Some(match record {
                Some(record) => self.letters.letter(record, cause::OUTPUT_REFUSED, reason),
                None => {
                    let encoded = Encoded::new(output);
                    self.output_letter(
                        letters::STAGE,
                        letters::SOURCE_OUTBOX,
                        partition,
                        &encoded,
                        cause::OUTPUT_REFUSED,
                        reason,
                    )
                }
            })
        })
        .await?;
        let ids: Vec<&str> = outbox_ids.iter().map(String::as_str).collect();
        let mark = (self.timers.clock == ClockMode::Event && newest > i64::MIN).then_some(newest);
        futures::future::try_join(
            self.store.finish_partition(partition, &ids, mark),
            self.store.expire_owners(&claims),
        )
        .await?;
        for alert in &alerts {
            self.log_alert(alert);
        }
        Ok(())
    }

    /// Decodes and groups a batch by waybill (partition order kept within
    /// each), and notes each partition's newest event time. Records that do
    /// not decode become letters, per partition.
    #[allow(clippy::type_complexity)]
    fn group(
        &self,
        batch: &[Inbound],
    ) -> (
        Vec<Group>,
        BTreeMap<i32, i64>,
        BTreeMap<i32, Vec<OutRecord>>,
    ) {
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<(i32, String), usize> = HashMap::new();
        let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
        let mut undecodable: BTreeMap<i32, Vec<OutRecord>> = BTreeMap::new();
        for (at_batch, record) in batch.iter().enumerate() {
            let input = if record.topic == topics::SHIPMENTS {
                Shipment::decode(record.payload.as_slice())
                    .map(Input::Registration)
                    .map_err(|e| e.to_string())
            } else {
                TrackingEvent::decode(record.payload.as_slice())
                    .map(Input::Event)
                    .map_err(|e| e.to_string())
            };
            let input = match input {
                Ok(input) => input,
                Err(err) => {
                    self.count("undecodable");
                    undecodable
                        .entry(record.partition)
                        .or_default()
                        .push(self.letters.letter(
                            record,
                            cause::UNDECODABLE,
                            &format!("not a trackstream.v1 record: {err}"),
                        ));
                    continue;
                }
            };
            let newest = seen.entry(record.partition).or_insert(i64::MIN);
            match &input {
                Input::Event(event) => {
                    self.count("event");
                    *newest = (*newest).max(time::millis(event.occurred_at.as_ref()));
                }
                Input::Registration(_) => self.count("registration"),
            }
            let key = (record.partition, record.key_str());
            let at = *index.entry(key).or_insert_with_key(|(partition, key)| {
                groups.push(Group {
                    partition: *partition,
                    key: key.clone(),
                    inputs: Vec::new(),
                    records: Vec::new(),
                    event_ids: Vec::new(),
                });
                groups.len() - 1
            });
            if let (Some(group), Input::Event(event)) = (groups.get_mut(at), &input) {
                group.event_ids.push(event.event_id.clone());
            }
            if let Some(group) = groups.get_mut(at) {
                group.inputs.push(input);
                group.records.push(at_batch);
            }
        }
        (groups, seen, undecodable)
    }

    /// Folds one waybill's inputs (minus those `excluded`, and duplicates)
    /// and checks every output's size. An output over the limit is blamed on
    /// the input that made it ([`letters::culprits`]): that input is
    /// dead-lettered, excluded, and the waybill folded again without it, so
    /// its other inputs still apply. An oversized output no input of the batch
    /// made is dropped with a synthetic letter. Returns `None` when nothing
    /// changed.
    #[allow(clippy::too_many_arguments)]
    fn fold_group(
        &self,
        partition: i32,
        (group, batch): (&Group, &[Inbound]),
        loaded: &Loaded,
        history: &[TrackingEvent],
        clock: i64,
        hold_until: i64,
        excluded: &mut BTreeSet<usize>,
        letters: &mut Vec<OutRecord>,
    ) -> Option<(Waybill, Effects, Vec<Encoded>)> {
        let limit = self.sink.max_record_bytes();
        let mut first = true;
        loop {
            let mut known = loaded.known.clone();
            let mut waybill = loaded.waybill.clone();
            waybill.hold_until = hold_until;
            // Usually nothing is a duplicate or set aside: then the group's
            // inputs are the fold's inputs as they are, without copying.
            let distinct = {
                let mut ids: Vec<&str> = group.event_ids.iter().map(String::as_str).collect();
                ids.sort_unstable();
                ids.windows(2).all(|w| w[0] != w[1])
            };
            let mut filtered: Vec<Input> = Vec::new();
            let fresh: &[Input] = if known.is_empty() && distinct && excluded.is_empty() {
                &group.inputs
            } else {
                for (i, input) in group.inputs.iter().enumerate() {
                    if excluded.contains(&i) {
                        continue;
                    }
                    match input {
                        Input::Event(event) if !known.insert(event.event_id.clone()) => {
                            if first {
                                self.count("duplicate");
                            }
                        }
                        _ => filtered.push(input.clone()),
                    }
                }
                &filtered
            };
            first = false;
            let mut fx = Effects::default();
            self.engine
                .apply(&mut waybill, fresh, history, clock, &mut fx);
            // Registrations the engine refused (another merchant's registration
            // of an owned waybill; ingest refuses these with 409, so one here
            // came around it) are dead-lettered and left out of any refold.
            // The engine counts them among the registrations it was given, so
            // the ordinal maps back to the group's inputs minus those excluded.
            for refused in std::mem::take(&mut fx.refused_registrations) {
                let input = group
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(i, input)| {
                        !excluded.contains(i) && matches!(input, Input::Registration(_))
                    })
                    .nth(refused.registration)
                    .map(|(i, _)| i);
                let Some(i) = input else { continue };
                excluded.insert(i);
                if let Some(record) = group.records.get(i).and_then(|r| batch.get(*r)) {
                    letters.push(self.letters.letter(
                        record,
                        cause::NOT_OWNER,
                        &format!(
                            "merchant {} registered order {} for a waybill owned by merchant {}",
                            refused.merchant_id, refused.order_id, refused.owner
                        ),
                    ));
                }
            }
            if fx.history.is_empty()
                && fx.outputs.is_empty()
                && !waybill.registration_changed
                && waybill.state == loaded.waybill.state
            {
                return None;
            }
            let mut encoded: Vec<Encoded> = fx.outputs.iter().map(Encoded::new).collect();
            let over: Vec<usize> = encoded
                .iter()
                .enumerate()
                .filter(|(_, e)| letters::record_len(e) > limit)
                .map(|(i, _)| i)
                .collect();
            if over.is_empty() {
                return Some((waybill, fx, encoded));
            }
            let live = |i: usize| !excluded.contains(&i);
            let blamed: BTreeSet<usize> = over
                .iter()
                .filter_map(|o| fx.outputs.get(*o))
                .flat_map(|output| letters::culprits(&group.inputs, &live, output))
                .collect();
            let detail = over
                .first()
                .and_then(|o| encoded.get(*o))
                .map(|e| letters::too_large_detail(e, limit))
                .unwrap_or_default();
            if blamed.is_empty() {
                for o in over.into_iter().rev() {
                    if o < encoded.len() && o < fx.outputs.len() {
                        let output = encoded.remove(o);
                        fx.outputs.remove(o);
                        letters.push(self.output_letter(
                            letters::STAGE,
                            letters::SOURCE_OUTBOX,
                            partition,
                            &output,
                            cause::OUTPUT_TOO_LARGE,
                            &letters::too_large_detail(&output, limit),
                        ));
                    }
                }
                return Some((waybill, fx, encoded));
            }
            for i in blamed {
                excluded.insert(i);
                if let Some(record) = group.records.get(i).and_then(|r| batch.get(*r)) {
                    letters.push(
                        self.letters
                            .letter(record, cause::OUTPUT_TOO_LARGE, &detail),
                    );
                }
            }
        }
    }

    /// One load → fold → commit round over some waybills of one partition.
    /// `clock` is the partition's clock from an earlier round of the same
    /// batch (`None` on the first: computed from the loaded watermark and the
    /// batch's `newest` event time).
    #[allow(clippy::too_many_arguments)]
    async fn round(
        &self,
        partition: i32,
        members: &[usize],
        (groups, batch): (&[Group], &[Inbound]),
        clock: Option<i64>,
        newest: i64,
        wall: i64,
        excluded: &mut HashMap<usize, BTreeSet<usize>>,
        letters: &mut Vec<OutRecord>,
    ) -> Result<Round, Failure> {
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
        let clock =
            match (clock, self.timers.clock) {
                (Some(clock), _) => clock,
                (None, ClockMode::Wall) => (self.wall)(),
                (None, ClockMode::Event) => stored.max(newest).saturating_sub(
                    trackstream_runtime::config::duration::millis(self.timers.allowed_lateness),
                ),
            };
        // A registration joining a waybill that already has scans needs the
        // stored history (to send the order every scan so far): rare, fetched
        // in flight together.
        let joins: Vec<bool> = members
            .iter()
            .zip(&loaded)
            .map(|(i, l)| {
                let wb = &l.waybill;
                wb.registration.is_none()
                    && (wb.state.events > 0 || !wb.state.pending.is_empty())
                    && groups.get(*i).is_some_and(|g| {
                        g.inputs
                            .iter()
                            .any(|input| matches!(input, Input::Registration(_)))
                    })
            })
            .collect();
        let histories =
            futures::future::try_join_all(members.iter().zip(&joins).map(|(i, join)| async move {
                match (join, groups.get(*i)) {
                    (true, Some(g)) => self.store.history(partition, &g.key).await,
                    _ => Ok(Vec::new()),
                }
            }))
            .await?;
        let hold_until = self.hold_until(clock);
        let mut folds: Vec<Folded> = Vec::with_capacity(members.len());
        let mut befores: Vec<WaybillState> = Vec::with_capacity(members.len());
        let mut histories_new: Vec<Vec<TrackingEvent>> = Vec::with_capacity(members.len());
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
                partition,
                (group, batch),
                &loaded,
                &history,
                clock,
                hold_until,
                set_aside,
                letters,
            ) else {
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
        let order_expire_at = self.retention.order_expires_at(wall);
        let results = match self
            .store
            .commit_partition(partition, &changes, order_expire_at)
            .await
            .map_err(Failure::from)
        {
            Ok(results) => results.into_iter().map(Some).collect(),
            Err(err) if err.is_permanent() => {
                // A script failed on some waybill's data: commit them one at
                // a time to find which, and set that one's inputs aside.
                tracing::warn!(%err, partition, "commit script failed; committing waybills one by one");
                let mut results = Vec::with_capacity(changes.len());
                for change in &changes {
                    match self
                        .store
                        .commit_partition(partition, std::slice::from_ref(change), order_expire_at)
                        .await
                        .map_err(Failure::from)
                    {
                        Ok(mut one) => results.push(one.pop()),
                        Err(err) if err.is_permanent() => results.push(None),
                        Err(err) => return Err(err),
                    }
                }
                results
            }
            Err(err) => return Err(err),
        };
        drop(changes);
        let mut round = Round {
            clock,
            done: Vec::with_capacity(folds.len()),
            conflicts: Vec::new(),
        };
        for (mut folded, result) in folds.into_iter().zip(results) {
            match result {
                Some(Committed::Done(seqs)) => {
                    if self.store.inline_sequence() {
                        let mut seqs = seqs.into_iter();
                        for (encoded, seq) in folded.encoded.iter().zip(folded.seqs.iter_mut()) {
                            if encoded.order.is_some() {
                                *seq = seqs.next();
                            }
                        }
                    }
                    round.done.push(folded);
                }
                Some(Committed::Conflict) => {
                    tracing::debug!(waybill = %folded.waybill.key, "concurrent change; re-applying");
                    round.conflicts.push(folded.group);
                }
                None => {
                    // Its inputs cannot be committed: every one not yet set
                    // aside is dead-lettered (the script may have written part
                    // of the waybill before failing; see ARCHITECTURE.md).
                    let Some(group) = groups.get(folded.group) else {
                        continue;
                    };
                    let set_aside = excluded.entry(folded.group).or_default();
                    for (i, r) in group.records.iter().enumerate() {
                        if set_aside.insert(i)
                            && let Some(record) = batch.get(*r)
                        {
                            letters.push(self.letters.letter(
                                record,
                                cause::SCRIPT_ERROR,
                                "the commit script failed on this waybill's data",
                            ));
                        }
                    }
                }
            }
        }
        Ok(round)
    }
}

impl<S: Sink> BatchHandler for Detector<S> {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.apply_batch(batch).await
    }
}
