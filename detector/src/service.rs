//! The detector's two loops over one engine: the Kafka batch handler (events and
//! registrations) and the timer loop (deadlines of owned partitions).

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use trackstream_proto::v1::{Alert, AlertState, Shipment, TrackingEvent};
use trackstream_proto::{time, topics};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::{
    Assignment, BatchHandler, HandlerError, Inbound, KafkaError, OutRecord, Producer,
};

use crate::config::{ClockMode, TimerConfig};
use crate::engine::{Effects, Engine, Output};
use crate::store::{Delivery, Store};

type Labels = Vec<(&'static str, String)>;

enum Input {
    Event(TrackingEvent),
    Registration(Shipment),
}

/// Metrics of detection; each is logged where it happens too.
#[derive(Clone)]
struct Metrics {
    inputs: Family<Labels, Counter>,
    alerts: Family<Labels, Counter>,
    conflicts: Counter,
    timers_fired: Counter,
}

/// The detector: engine + store + producer.
pub struct Detector {
    engine: Engine,
    store: Store,
    producer: Producer,
    timers: TimerConfig,
    metrics: Metrics,
    /// Partitions whose outbox may hold undelivered outputs.
    dirty: Mutex<BTreeSet<i32>>,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

impl From<Failure> for HandlerError {
    fn from(err: Failure) -> Self {
        HandlerError(err.to_string())
    }
}

impl Detector {
    /// A detector over `store`, writing through `producer`.
    pub fn new(
        engine: Engine,
        store: Store,
        producer: Producer,
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
            producer,
            timers,
            metrics,
            dirty: Mutex::new(BTreeSet::new()),
        }
    }

    fn count(&self, kind: &str) {
        self.metrics
            .inputs
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// Applies one waybill's inputs: load, run the engine, commit (retrying on a
    /// concurrent change), and return the outputs to deliver.
    async fn process(
        &self,
        partition: i32,
        key: &str,
        inputs: &[Input],
    ) -> Result<Vec<Output>, Failure> {
        let span = tracing::debug_span!("waybill", waybill = key, partition);
        let _guard = span.enter();
        drop(_guard);
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
            let mut fx = Effects::default();
            for input in inputs {
                match input {
                    Input::Event(event) => {
                        if known.insert(event.event_id.clone()) {
                            self.engine
                                .apply_event(&mut waybill, event.clone(), &mut fx);
                        } else {
                            self.count("duplicate");
                        }
                    }
                    Input::Registration(shipment) => {
                        let mut history =
                            if waybill.registration.is_none() && waybill.state.events > 0 {
                                let mut stored = self.store.history(partition, key).await?;
                                stored.extend(fx.history.iter().cloned());
                                stored
                            } else {
                                Vec::new()
                            };
                        let now = self.now_for(partition).await?;
                        self.engine.apply_registration(
                            &mut waybill,
                            shipment.clone(),
                            &mut history,
                            now,
                            &mut fx,
                        );
                    }
                }
            }
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
        let records = deliveries
            .iter()
            .map(|d| OutRecord::new(d.topic, d.key.clone(), d.payload.clone()))
            .collect();
        if let Err(err) = self.producer.send_all(records).await {
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

    async fn now_for(&self, partition: i32) -> Result<i64, Failure> {
        Ok(match self.timers.clock {
            ClockMode::Wall => chrono::Utc::now().timestamp_millis(),
            ClockMode::Event => {
                self.store.advance_watermark(partition, 0).await? - self.timers.allowed_lateness.0
            }
        })
    }

    /// Fires due deadlines of `partition`; returns how many were processed.
    pub async fn fire_timers(&self, partition: i32) -> Result<usize, HandlerError> {
        let now = self.now_for(partition).await.map_err(HandlerError::from)?;
        let due = self
            .store
            .due_timers(partition, now, self.timers.batch)
            .await
            .map_err(Failure::from)?;
        let mut outputs = Vec::new();
        for (key, rule, deadline) in &due {
            self.metrics.timers_fired.inc();
            let fired = self.fire_one(partition, key, rule, *deadline, now).await?;
            outputs.extend(fired);
        }
        self.deliver(partition, &outputs).await?;
        Ok(due.len())
    }

    async fn fire_one(
        &self,
        partition: i32,
        key: &str,
        rule: &str,
        deadline: i64,
        now: i64,
    ) -> Result<Vec<Output>, Failure> {
        loop {
            let loaded = self.store.load(partition, key, &[]).await?;
            let before = loaded.waybill.state.clone();
            let mut waybill = loaded.waybill;
            let mut fx = Effects::default();
            self.engine.fire_due(&mut waybill, now, &mut fx);
            if waybill.state == before {
                // The member no longer matches the state (it moved on): drop it.
                let armed = before
                    .slots
                    .iter()
                    .any(|s| s.rule == rule && s.deadline == deadline);
                if !armed {
                    self.store.drop_timer(partition, key, rule).await?;
                }
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

    /// The timer loop: every tick, fire due deadlines of the partitions this
    /// instance owns; on assignment, first re-deliver their outboxes (overdue
    /// deadlines then fire at once on the next tick).
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
                // Drain a backlog of overdue deadlines without waiting a tick each.
                loop {
                    match self.fire_timers(*partition).await {
                        Ok(n) if n >= self.timers.batch => continue,
                        Ok(_) => break,
                        Err(err) => {
                            tracing::warn!(%err, partition, "firing timers failed; will retry");
                            break;
                        }
                    }
                }
            }
        }
    }
}

impl BatchHandler for Detector {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.flush_dirty().await?;
        // Group inputs by waybill, keeping partition order within each waybill.
        let mut order: Vec<(i32, String)> = Vec::new();
        let mut groups: std::collections::HashMap<(i32, String), Vec<Input>> = Default::default();
        let mut watermarks: std::collections::HashMap<i32, i64> = Default::default();
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
            if let Input::Event(event) = &input {
                let at = time::millis(event.occurred_at.as_ref());
                let wm = watermarks.entry(record.partition).or_insert(at);
                *wm = (*wm).max(at);
            }
            let key = (record.partition, record.key_str());
            if !groups.contains_key(&key) {
                order.push(key.clone());
            }
            groups.entry(key).or_default().push(input);
        }
        let results = futures::future::try_join_all(order.iter().map(|key| {
            let inputs = groups.get(key).map(Vec::as_slice).unwrap_or_default();
            async move {
                self.process(key.0, &key.1, inputs)
                    .await
                    .map(|o| (key.0, o))
            }
        }))
        .await?;
        let mut by_partition: std::collections::BTreeMap<i32, Vec<Output>> = Default::default();
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
            for (partition, at) in watermarks {
                self.store
                    .advance_watermark(partition, at)
                    .await
                    .map_err(Failure::from)?;
            }
        }
        Ok(())
    }
}
