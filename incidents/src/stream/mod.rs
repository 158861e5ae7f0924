//! The incident consumer: reads `tracking.alerts`, `tracking.updates` and
//! `incidents.declared` (consumer group `<group>-incidents`, in the
//! detector's process), keeps each place's stuck and active parcels in Redis
//! ([`crate::store`]), evaluates every place a batch touched
//! ([`crate::detect`]) and writes each change to `tracking.incidents`
//! ([`crate::record`]) before the batch's offsets are stored.
//!
//! Records of one waybill are handled in order (its alerts and updates share
//! a partition number and so a consumer); different waybills run
//! concurrently. Every write is idempotent (set members, "first move wins",
//! HyperLogLogs) and an incident changes only by compare-and-set on its
//! version, so a batch re-read after a crash changes nothing twice. A change
//! written to Redis but not yet acknowledged by the broker stays marked and
//! is published again by [`IncidentDetector::republish`].
//!
//! Layout: this file decodes inputs, applies alerts and updates, evaluates
//! and commits; `declare` handles operators' declarations and lifts;
//! `publish` writes a place's incident to the topic and runs the
//! republisher.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message as _;
use trackstream_proto::v1::{
    Alert, AlertState, IncidentDeclaration, IncidentSource, IncidentState, Reason, ShipmentUpdate,
    Status, UpdateKind,
};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, Producer};

mod declare;
mod publish;

use crate::config::IncidentsConfig;
use crate::detect::{self, Decision, Member, View};
use crate::place;
use crate::store::{IncidentStore, PlaceId, Snapshot, active_member};

/// Waybills handled at once within a batch.
const CONCURRENCY: usize = 64;

#[derive(Clone, Default)]
struct Metrics {
    inputs: Family<Vec<(String, String)>, Counter>,
    changes: Family<Vec<(String, String)>, Counter>,
    published: Counter,
}

/// The [`BatchHandler`] of the incident consumer.
pub struct IncidentDetector {
    store: IncidentStore,
    producer: Producer,
    config: IncidentsConfig,
    metrics: Metrics,
}

fn failed(what: &str) -> impl Fn(redis::RedisError) -> HandlerError + '_ {
    move |e| HandlerError(format!("incidents: {what}: {e}"))
}

/// One input, decoded.
enum Input {
    Alert(Box<Alert>),
    Update(Box<ShipmentUpdate>),
    Declaration(IncidentDeclaration),
}

impl IncidentDetector {
    /// A consumer writing through `store` and publishing with `producer`;
    /// metrics `<service>_incidents_*`.
    pub fn new(
        store: IncidentStore,
        producer: Producer,
        config: IncidentsConfig,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::default();
        let sub = registry.sub_registry_with_prefix("incidents");
        sub.register(
            "inputs",
            "Records the incident detector read, by topic and outcome",
            metrics.inputs.clone(),
        );
        sub.register(
            "changes",
            "Incident changes (opened, escalated, updated, resolved) by source",
            metrics.changes.clone(),
        );
        sub.register(
            "records_published",
            "Records produced to tracking.incidents",
            metrics.published.clone(),
        );
        IncidentDetector {
            store,
            producer,
            config,
            metrics,
        }
    }

    /// Records produced to `tracking.incidents` so far (the
    /// `records_published` counter), for tools that read the topic back.
    pub fn records_published(&self) -> u64 {
        self.metrics.published.get()
    }

    fn count(&self, topic: &str, outcome: &str) {
        self.metrics
            .inputs
            .get_or_create(&vec![
                ("topic".into(), topic.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }

    fn decode(&self, record: &Inbound) -> Option<(String, Input)> {
        let input = match record.topic.as_str() {
            topics::TRACKING_ALERTS => Alert::decode(record.payload.as_slice()).map(|a| {
                (
                    keys::waybill_key(&a.carrier, &a.waybill),
                    Input::Alert(Box::new(a)),
                )
            }),
            topics::TRACKING_UPDATES => {
                ShipmentUpdate::decode(record.payload.as_slice()).map(|u| {
                    let key = u
                        .event
                        .as_ref()
                        .map(|e| keys::waybill_key(&e.carrier, &e.waybill))
                        .unwrap_or_default();
                    (key, Input::Update(Box::new(u)))
                })
            }
            topics::INCIDENTS_DECLARED => IncidentDeclaration::decode(record.payload.as_slice())
                .map(|d| (String::new(), Input::Declaration(d))),
            _ => return None,
        };
        match input {
            Ok(input) => Some(input),
            Err(err) => {
                self.count(&record.topic, "undecodable");
                tracing::warn!(topic = %record.topic, partition = record.partition,
                    offset = record.offset, %err, "incidents: record not decodable; skipped");
                None
            }
        }
    }

    /// An alert: a parcel held up at a place, or moving again.
    async fn on_alert(&self, alert: &Alert, touched: &mut Touched) -> redis::RedisResult<()> {
        let waybill = keys::waybill_key(&alert.carrier, &alert.waybill);
        let reason = Reason::try_from(alert.reason).unwrap_or(Reason::Unspecified);
        let effective = time::millis(alert.effective_at.as_ref());
        if !place::holds_up(&alert.rule, reason) {
            self.count(topics::TRACKING_ALERTS, "not_held_up");
            return Ok(());
        }
        if alert.state == AlertState::Resolved as i32 {
            let stuck = self.store.stuck(&waybill).await?;
            if let Some(at) = stuck
                && let Some(member) = self.store.member(&at, &waybill).await?
                && member.alert_id == alert.alert_id
            {
                self.store.moved(&at, &waybill, effective).await?;
                touched.at(at, effective);
                self.count(topics::TRACKING_ALERTS, "moved");
            }
            return Ok(());
        }
        if alert.state != AlertState::Opened as i32 {
            return Ok(());
        }
        let Some(key) = alert.location.as_ref().and_then(place::of) else {
            self.count(topics::TRACKING_ALERTS, "unplaced");
            return Ok(());
        };
        let at = PlaceId {
            carrier: alert.carrier.clone(),
            place: key,
        };
        if let Some(existing) = self.store.member(&at, &waybill).await?
            && existing.alert_id == alert.alert_id
        {
            self.count(topics::TRACKING_ALERTS, "repeat");
            return Ok(());
        }
        let member = Member {
            waybill,
            merchant: alert.merchant_id.clone(),
            order: alert.order_id.clone(),
            alert_id: alert.alert_id.clone(),
            rule: alert.rule.clone(),
            reason: alert.reason,
            since: effective,
            ..Member::default()
        };
        self.store.hold(&at, &member, false).await?;
        tracing::debug!(waybill = %member.waybill, order_id = %member.order, place = %at.place,
            rule = %member.rule, "incidents: parcel held up");
        self.count(topics::TRACKING_ALERTS, "held_up");
        touched.at(at, effective);
        Ok(())
    }

    /// A scan update: where the parcel is active now.
    async fn on_update(
        &self,
        update: &ShipmentUpdate,
        declared: &BTreeSet<PlaceId>,
        touched: &mut Touched,
    ) -> redis::RedisResult<()> {
        let Some(event) = update.event.as_ref() else {
            return Ok(());
        };
        if update.late || update.kind != UpdateKind::Scan as i32 {
            return Ok(());
        }
        let waybill = keys::waybill_key(&event.carrier, &event.waybill);
        let when = time::millis(event.occurred_at.as_ref());
        let status = Status::try_from(update.current_status).unwrap_or(Status::Unspecified);
        let (from, stuck) = self.store.positions(&waybill).await?;
        // A parcel a declared incident linked without an alert moves on with
        // any newer scan that is not itself a problem.
        if let Some(at) = stuck
            && let Some(member) = self.store.member(&at, &waybill).await?
            && member.alert_id.is_empty()
            && when > member.since
            && status != Status::Exception
        {
            self.store.moved(&at, &waybill, when).await?;
            touched.at(at, when);
        }
        if matches!(
            status,
            Status::Delivered | Status::Returned | Status::Cancelled | Status::Expired
        ) {
            if let Some(from) = from.as_ref() {
                self.store.gone(&waybill, from).await?;
            }
            self.count(topics::TRACKING_UPDATES, "final");
            return Ok(());
        }
        let Some(key) = event.location.as_ref().and_then(place::of) else {
            self.count(topics::TRACKING_UPDATES, "unplaced");
            return Ok(());
        };
        let at = PlaceId {
            carrier: event.carrier.clone(),
            place: key,
        };
        let member = active_member(&waybill, &update.merchant_id, &update.order_id);
        self.store
            .seen(&waybill, from.as_ref(), &at, &member, when)
            .await?;
        self.count(topics::TRACKING_UPDATES, "seen");
        if declared.contains(&at) {
            let held = Member {
                waybill,
                merchant: update.merchant_id.clone(),
                order: update.order_id.clone(),
                since: when,
                ..Member::default()
            };
            if self.store.hold(&at, &held, true).await? {
                touched.at(at, when);
            }
        }
        Ok(())
    }

    /// Evaluates one place until its change (if any) is committed.
    async fn evaluate(&self, at: &PlaceId, when: i64) -> redis::RedisResult<bool> {
        for _ in 0..8 {
            let snapshot = self.read(at, when).await?;
            self.store.trim(at, &self.trim(&snapshot, when)).await?;
            let stuck = detect::stuck(&self.config, &snapshot.members, when).len();
            if stuck > 0 {
                self.store.peak(at, when, stuck).await?;
            }
            let view = self.view(at, when, &snapshot);
            let Some(mut decision) = detect::decide(&self.config, &view) else {
                return Ok(false);
            };
            let incident = &mut decision.incident;
            if incident.state == IncidentState::Opened as i32 && incident.expected_delay_hours == 0
            {
                // What the carrier's earlier incidents here (or anywhere) held
                // their parcels for: the buyers' expected delay.
                incident.expected_delay_hours = self.store.expected_hold(at).await?.unwrap_or(0);
            }
            if self.commit(at, &snapshot, &decision).await? {
                if decision.incident.state == IncidentState::Resolved as i32
                    && let Some(hours) = detect::held_hours(&snapshot.members, &decision.incident)
                {
                    self.store.record_hold(at, hours).await?;
                }
                return Ok(true);
            }
        }
        tracing::warn!(carrier = %at.carrier, place = %at.place,
            "incidents: place changed by another instance 8 times in a row; evaluated at its next input");
        Ok(false)
    }

    async fn read(&self, at: &PlaceId, when: i64) -> redis::RedisResult<Snapshot> {
        self.store
            .snapshot(
                at,
                when,
                IncidentsConfig::ms(self.config.active_window),
                self.config.baseline_days,
            )
            .await
    }

    fn view<'a>(&self, at: &'a PlaceId, when: i64, snapshot: &'a Snapshot) -> View<'a> {
        View {
            carrier: &at.carrier,
            place: &at.place,
            at: when,
            members: &snapshot.members,
            active: snapshot.active,
            baseline: detect::Baseline::of(&self.config, &snapshot.days, &snapshot.members, when),
            current: snapshot.current.as_ref(),
        }
    }

    /// Members that can go: moved (or stuck) longer ago than twice the stale
    /// window, and in no open incident.
    fn trim(&self, snapshot: &Snapshot, when: i64) -> Vec<String> {
        let horizon = when.saturating_sub(2 * IncidentsConfig::ms(self.config.stale_after));
        let open = snapshot
            .current
            .as_ref()
            .filter(|c| c.open())
            .map(|c| c.id.as_str());
        snapshot
            .members
            .iter()
            .filter(|m| Some(m.incident.as_str()) != open || m.incident.is_empty())
            .filter(|m| {
                if m.moved > 0 {
                    m.moved < horizon
                } else {
                    m.since < horizon
                }
            })
            .map(|m| m.waybill.clone())
            .collect()
    }

    async fn commit(
        &self,
        at: &PlaceId,
        snapshot: &Snapshot,
        decision: &Decision,
    ) -> redis::RedisResult<bool> {
        let done = self
            .store
            .commit(at, snapshot.version, &decision.incident, &decision.link)
            .await?;
        if done {
            let incident = &decision.incident;
            let state =
                IncidentState::try_from(incident.state).unwrap_or(IncidentState::Unspecified);
            let source =
                IncidentSource::try_from(incident.source).unwrap_or(IncidentSource::Detected);
            let state_name = state
                .as_str_name()
                .trim_start_matches("INCIDENT_STATE_")
                .to_ascii_lowercase();
            let source_name = source
                .as_str_name()
                .trim_start_matches("INCIDENT_SOURCE_")
                .to_ascii_lowercase();
            self.metrics
                .changes
                .get_or_create(&vec![
                    ("state".into(), state_name.clone()),
                    ("source".into(), source_name.clone()),
                ])
                .inc();
            tracing::info!(incident_id = %incident.id, carrier = %at.carrier, place = %at.place,
                state = %state_name, source = %source_name, tier = incident.tier,
                affected = incident.affected, moved = incident.moved, active = incident.active,
                linked = decision.link.len(), "incident {state_name}");
            let declared_open =
                source == IncidentSource::Declared && state != IncidentState::Resolved;
            if source == IncidentSource::Declared {
                self.store.set_declared(at, declared_open).await?;
            }
        }
        Ok(done)
    }
}

/// The places a batch touched, with the newest event time each was touched at.
#[derive(Default)]
struct Touched(BTreeMap<PlaceId, i64>);

impl Touched {
    fn at(&mut self, place: PlaceId, when: i64) {
        let entry = self.0.entry(place).or_insert(when);
        *entry = (*entry).max(when);
    }
}

impl BatchHandler for IncidentDetector {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let mut by_waybill: BTreeMap<String, Vec<Input>> = BTreeMap::new();
        let mut declarations = Vec::new();
        for record in batch {
            match self.decode(record) {
                Some((_, Input::Declaration(d))) => declarations.push(d),
                Some((key, input)) if !key.is_empty() => {
                    by_waybill.entry(key).or_default().push(input)
                }
                _ => {}
            }
        }
        let declared: BTreeSet<PlaceId> = if by_waybill.is_empty() {
            BTreeSet::new()
        } else {
            self.store
                .declared()
                .await
                .map_err(failed("reading declarations"))?
                .into_iter()
                .collect()
        };
        let results: Vec<redis::RedisResult<Touched>> =
            futures::stream::iter(by_waybill.into_values())
                .map(|inputs| {
                    let declared = &declared;
                    async move {
                        let mut touched = Touched::default();
                        for input in &inputs {
                            match input {
                                Input::Alert(alert) => self.on_alert(alert, &mut touched).await?,
                                Input::Update(update) => {
                                    self.on_update(update, declared, &mut touched).await?
                                }
                                Input::Declaration(_) => {}
                            }
                        }
                        Ok(touched)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
        let mut touched = Touched::default();
        for result in results {
            for (at, when) in result.map_err(failed("applying inputs"))?.0 {
                touched.at(at, when);
            }
        }
        let mut changed: BTreeSet<PlaceId> = BTreeSet::new();
        for (at, when) in touched.0 {
            if self
                .evaluate(&at, when)
                .await
                .map_err(failed("evaluating"))?
            {
                changed.insert(at);
            }
        }
        for declaration in &declarations {
            changed.extend(self.on_declaration(declaration).await?);
        }
        for at in &changed {
            self.publish(at).await?;
        }
        Ok(())
    }
}
