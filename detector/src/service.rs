//! The detector's two loops over one engine: the Kafka batch handler (events and
//! registrations) and the timer loop (deadlines of owned partitions).
//!
//! The clock each fold runs to is [`Detector::clock`]: wall time, or with the
//! event clock the partition's watermark (newest `occurred_at` seen, including
//! the batch at hand) minus `allowed_lateness`. The stored watermark — what the
//! timer loop fires against — only advances after a batch is committed, so the
//! timer loop never fires a deadline that a scan of the batch in flight would
//! have prevented.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use trackstream_proto::v1::{Alert, AlertState, Shipment, TrackingEvent};
use trackstream_proto::{time, topics};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::{
    Assignment, BatchHandler, HandlerError, Inbound, OutRecord, Producer, Progress,
};

use crate::config::{ClockMode, TimerConfig};
use crate::engine::{Effects, Engine, Input, Output};
use crate::sink::{Sink, SinkError};
use crate::store::{Delivery, Store};

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
}

/// A source of wall-clock time in ms since the epoch.
pub type WallClock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("produce: {0}")]
    Sink(#[from] SinkError),
}

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
        Detector {
            engine,
            store,
            sink,
            timers,
            metrics,
            dirty: Mutex::new(BTreeSet::new()),
            progress: None,
            wall: std::sync::Arc::new(|| chrono::Utc::now().timestamp_millis()),
        }
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
            ClockMode::Wall if self.timers.grace.0 > 0 => clock.saturating_add(self.timers.grace.0),
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

    /// Applies one waybill's inputs: load, de-duplicate, run the engine to
    /// `clock`, commit (retrying on a concurrent change), and return the outputs
    /// to deliver.
    async fn process(
        &self,
        partition: i32,
        key: &str,
        inputs: &[Input],
        clock: i64,
    ) -> Result<Vec<Output>, Failure> {
        let ids: Vec<String> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Event(e) => Some(e.event_id.clone()),
                Input::Registration(_) => None,
            })
            .collect();
        loop {
            let loaded = self.store.load(partition, key, &ids).await?;
            let before = loaded.waybill.state.clone();
            let mut known = loaded.known;
            let mut waybill = loaded.waybill;
            waybill.hold_until = self.hold_until(clock);
            let fresh: Vec<Input> = inputs
                .iter()
                .filter(|input| match input {
                    Input::Event(event) => {
                        let new = known.insert(event.event_id.clone());
                        if !new {
                            self.count("duplicate");
                        }
                        new
                    }
                    Input::Registration(_) => true,
                })
                .cloned()
                .collect();
            let joins = waybill.registration.is_none()
                && fresh.iter().any(|i| matches!(i, Input::Registration(_)))
                && (waybill.state.events > 0 || !waybill.state.pending.is_empty());
            let history = if joins {
                self.store.history(partition, key).await?
            } else {
                Vec::new()
            };
            let mut fx = Effects::default();
            self.engine
                .apply(&mut waybill, &fresh, &history, clock, &mut fx);
            if fx.history.is_empty()
                && fx.outputs.is_empty()
                && !waybill.registration_changed
                && waybill.state == before
            {
                return Ok(Vec::new());
            }
            if self
                .store
                .commit(&before, &waybill, &fx.history, &fx.outputs)
                .await?
            {
                return Ok(fx.outputs);
            }
            self.metrics.conflicts.inc();
            tracing::debug!(waybill = key, "concurrent change; re-applying");
        }
    }

    /// Prepares, produces and clears outputs of one partition.
    async fn deliver(&self, partition: i32, outputs: &[Output]) -> Result<(), Failure> {
        if outputs.is_empty() {
            return Ok(());
        }
        let deliveries = self.store.prepare(partition, outputs).await?;
        self.send(&deliveries).await?;
        for output in outputs {
            if let Output::Alert(alert) = output {
                self.log_alert(alert);
            }
        }
        Ok(())
    }

    async fn send(&self, deliveries: &[Delivery]) -> Result<(), Failure> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let records = deliveries
            .iter()
            .map(|d| OutRecord::new(d.topic, d.key.clone(), d.payload.clone()))
            .collect();
        if let Err(err) = self.sink.send_all(records).await {
            // Outputs stay in the outbox; flushed before the next attempt.
            if let Ok(mut dirty) = self.dirty.lock() {
                dirty.extend(deliveries.iter().map(|d| d.partition));
            }
            return Err(err.into());
        }
        self.store.clear_outbox(deliveries).await?;
        Ok(())
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

    /// Re-delivers whatever a partition's outbox still holds.
    pub async fn flush_outbox(&self, partition: i32) -> Result<usize, HandlerError> {
        let pending = self
            .store
            .pending_outbox(partition)
            .await
            .map_err(Failure::from)?;
        let count = pending.len();
        self.deliver(partition, &pending).await?;
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
                    .saturating_sub(self.timers.allowed_lateness.0)
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
        for chunk in due.chunks(FIRE_CONCURRENCY) {
            self.metrics.timers_fired.inc_by(chunk.len() as u64);
            let fired = futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|(key, rule, score)| self.fire_one(partition, key, rule, *score, now)),
            )
            .await?;
            outputs.extend(fired.into_iter().flatten());
        }
        self.deliver(partition, &outputs).await?;
        Ok(due.len())
    }

    async fn fire_one(
        &self,
        partition: i32,
        key: &str,
        rule: &str,
        score: i64,
        now: i64,
    ) -> Result<Vec<Output>, Failure> {
        loop {
            let loaded = self.store.load(partition, key, &[]).await?;
            let before = loaded.waybill.state.clone();
            let mut waybill = loaded.waybill;
            let mut fx = Effects::default();
            self.engine.advance(&mut waybill, now, &mut fx);
            if waybill.state == before {
                // Nothing was due: the member no longer matches the state (it
                // moved on without its member being re-scored); drop it.
                self.store.drop_timer(partition, key, rule, score).await?;
                return Ok(Vec::new());
            }
            if self
                .store
                .commit(&before, &waybill, &[], &fx.outputs)
                .await?
            {
                return Ok(fx.outputs);
            }
            self.metrics.conflicts.inc();
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
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(
            u64::try_from(self.timers.tick.0).unwrap_or(200).max(1),
        ));
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
    pub async fn apply_batch(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.flush_dirty().await?;
        // Group inputs by waybill, keeping partition order within each waybill.
        let mut order: Vec<(i32, String)> = Vec::new();
        let mut groups: HashMap<(i32, String), Vec<Input>> = HashMap::new();
        let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
        for record in batch {
            let input = if record.topic == topics::SHIPMENTS {
                Shipment::decode(record.payload.as_slice())
                    .ok()
                    .map(Input::Registration)
            } else {
                TrackingEvent::decode(record.payload.as_slice())
                    .ok()
                    .map(Input::Event)
            };
            let Some(input) = input else {
                self.count("undecodable");
                tracing::error!(topic = %record.topic, partition = record.partition, offset = record.offset,
                    "undecodable record skipped (not produced by trackstream.v1)");
                continue;
            };
            self.count(match &input {
                Input::Event(_) => "event",
                Input::Registration(_) => "registration",
            });
            let newest = seen.entry(record.partition).or_insert(i64::MIN);
            if let Input::Event(event) = &input {
                *newest = (*newest).max(time::millis(event.occurred_at.as_ref()));
            }
            let key = (record.partition, record.key_str());
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(input);
        }
        let mut clocks: BTreeMap<i32, i64> = BTreeMap::new();
        for (partition, newest) in &seen {
            clocks.insert(*partition, self.clock_with(*partition, *newest).await?);
        }
        let results = futures::future::try_join_all(order.iter().map(|key| {
            let inputs = groups.get(key).map(Vec::as_slice).unwrap_or_default();
            let clock = clocks.get(&key.0).copied().unwrap_or(i64::MIN);
            async move {
                self.process(key.0, &key.1, inputs, clock)
                    .await
                    .map(|o| (key.0, o))
            }
        }))
        .await?;
        let mut by_partition: BTreeMap<i32, Vec<Output>> = BTreeMap::new();
        for (partition, outputs) in results {
            by_partition.entry(partition).or_default().extend(outputs);
        }
        let deliveries = futures::future::try_join_all(
            by_partition
                .iter()
                .map(|(p, outputs)| self.store.prepare(*p, outputs)),
        )
        .await
        .map_err(Failure::from)?;
        let deliveries: Vec<Delivery> = deliveries.into_iter().flatten().collect();
        self.send(&deliveries).await?;
        for outputs in by_partition.values() {
            for output in outputs {
                if let Output::Alert(alert) = output {
                    self.log_alert(alert);
                }
            }
        }
        if self.timers.clock == ClockMode::Event {
            for (partition, newest) in seen {
                if newest > i64::MIN {
                    self.store
                        .advance_watermark(partition, newest)
                        .await
                        .map_err(Failure::from)?;
                }
            }
        }
        Ok(())
    }
}

impl<S: Sink> BatchHandler for Detector<S> {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.apply_batch(batch).await
    }
}
