//! Helpers shared by the detector's test files: events, registrations, a pure
//! in-memory driver of the engine, and alert/update summaries to compare runs.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeSet;

use prost::Message as _;
use trackstream_detector::engine::{Effects, Engine, Input, Output, Waybill};
use trackstream_detector::rules::RulesConfig;
use trackstream_proto::time;
use trackstream_proto::v1::{
    Alert, AlertState, Reason, Shipment, ShipmentUpdate, Status, TrackingEvent,
};
use trackstream_runtime::kafka::OutRecord;

/// 2024-01-01T00:00:00Z in ms.
pub const T0: i64 = 1_704_067_200_000;
/// One hour in ms.
pub const H: i64 = 3_600_000;
/// How long test data lives: scenarios are dated 2024 (see [`detector`]).
pub const CENTURY: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

/// A config duration from the ms arithmetic the scenarios are written in.
pub fn millis(ms: i64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.unsigned_abs())
}

/// A canonical event; its id is stable in (carrier, waybill, time, status, reason)
/// as normalize's is.
pub fn event(key: &str, status: Status, reason: Reason, at: i64) -> TrackingEvent {
    let (carrier, waybill) = key.split_once(':').expect("carrier:waybill");
    TrackingEvent {
        event_id: format!("{key}@{at}/{}/{}", status as i32, reason as i32),
        carrier: carrier.into(),
        waybill: waybill.into(),
        status: status as i32,
        reason: reason as i32,
        raw_code: format!("{}", status as i32),
        occurred_at: Some(time::from_millis(at)),
        received_at: Some(time::from_millis(at)),
        ..Default::default()
    }
}

/// A scan without a reason.
pub fn scan(key: &str, status: Status, at: i64) -> TrackingEvent {
    event(key, status, Reason::Unspecified, at)
}

/// A registration of `key` for `order`, registered at `at`: the benchmarks'
/// synthetic registration (`loadgen::canonical`), without a delivery promise
/// (tests of the promise rules set one).
pub fn shipment(key: &str, order: &str, at: i64) -> Shipment {
    Shipment {
        order_id: order.into(),
        promised_delivery_at: None,
        ..trackstream_loadgen::canonical::registration(key, 0, at)
    }
}

/// Drives the engine for one waybill without I/O, keeping history and outputs
/// the way the service does.
pub struct Sim {
    pub engine: Engine,
    pub wb: Waybill,
    pub history: Vec<TrackingEvent>,
    pub outputs: Vec<Output>,
}

impl Sim {
    pub fn new(rules: RulesConfig, key: &str) -> Self {
        Sim {
            engine: Engine::new(rules),
            wb: Waybill {
                key: key.into(),
                ..Default::default()
            },
            history: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Applies inputs then folds to `clock`; returns this call's outputs.
    pub fn feed(&mut self, inputs: &[Input], clock: i64) -> Vec<Output> {
        let mut fx = Effects::default();
        self.engine
            .apply(&mut self.wb, inputs, &self.history, clock, &mut fx);
        self.history.extend(fx.history);
        self.outputs.extend(fx.outputs.iter().cloned());
        fx.outputs
    }

    /// One event, with the clock at its time (a clean, in-order stream).
    pub fn event(&mut self, event: TrackingEvent) -> Vec<Output> {
        let at = time::millis(event.occurred_at.as_ref());
        self.feed(&[Input::Event(event)], at)
    }

    /// One scan of this waybill at `at`.
    pub fn scan(&mut self, status: Status, at: i64) -> Vec<Output> {
        let key = self.wb.key.clone();
        self.event(scan(&key, status, at))
    }

    /// A registration, with the clock at `clock`.
    pub fn register(&mut self, shipment: Shipment, clock: i64) -> Vec<Output> {
        self.feed(&[Input::Registration(shipment)], clock)
    }

    /// Moves the clock.
    pub fn advance(&mut self, clock: i64) -> Vec<Output> {
        let mut fx = Effects::default();
        self.engine.advance(&mut self.wb, clock, &mut fx);
        self.outputs.extend(fx.outputs.iter().cloned());
        fx.outputs
    }
}

pub fn alerts(outputs: &[Output]) -> Vec<Alert> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some((**a).clone()),
            Output::Update { .. } => None,
        })
        .collect()
}

pub fn updates(outputs: &[Output]) -> Vec<(String, ShipmentUpdate)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Update { id, update } => Some((id.clone(), (**update).clone())),
            Output::Alert(_) => None,
        })
        .collect()
}

/// `(rule, state, tier)` of each alert, in order.
pub fn transitions(outputs: &[Output]) -> Vec<(String, AlertState, u32)> {
    alerts(outputs)
        .into_iter()
        .map(|a| {
            (
                a.rule,
                AlertState::try_from(a.state).unwrap_or(AlertState::Unspecified),
                a.tier,
            )
        })
        .collect()
}

/// What a consumer dedups alerts by: `(alert_id, state, tier)`.
pub type AlertKey = (String, i32, u32);

pub fn alert_key(alert: &Alert) -> AlertKey {
    (alert.alert_id.clone(), alert.state, alert.tier)
}

pub fn alert_set(alerts: &[Alert]) -> BTreeSet<AlertKey> {
    alerts.iter().map(alert_key).collect()
}

/// Alerts and updates decoded from sink records.
pub fn decode_records(records: &[OutRecord]) -> (Vec<Alert>, Vec<ShipmentUpdate>) {
    let mut alerts = Vec::new();
    let mut updates = Vec::new();
    for record in records {
        match record.topic {
            trackstream_proto::topics::TRACKING_ALERTS => {
                alerts.push(Alert::decode(record.payload.as_slice()).expect("alert"));
            }
            trackstream_proto::topics::TRACKING_UPDATES => {
                updates.push(ShipmentUpdate::decode(record.payload.as_slice()).expect("update"));
            }
            other => panic!("unexpected topic {other}"),
        }
    }
    (alerts, updates)
}

/// An update's identity: its kind and event id (return received: one per waybill).
pub fn update_key(update: &ShipmentUpdate) -> (i32, String) {
    (
        update.kind,
        update
            .event
            .as_ref()
            .map(|e| e.event_id.clone())
            .unwrap_or_default(),
    )
}

/// A small deterministic PRNG so scenarios are reproducible without a seed file.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(self.below(i as u64 + 1)).expect("fits");
            items.swap(i, j);
        }
    }
}

/// A scenario: one parcel's registration and scans, chosen to exercise the
/// rules (stalls with escalation, exceptions, pickup point, out for delivery,
/// promised date, returns), every parcel ending in a terminal state so its
/// alerts do not depend on where the clock stops.
pub fn scenario(key: &str, order: &str, kind: u64, start: i64) -> (Shipment, Vec<TrackingEvent>) {
    use Status::*;
    let mut reg = shipment(key, order, start);
    let s = |status: Status, h: i64| scan(key, status, start + h * H);
    let e = |status: Status, reason: Reason, h: i64| event(key, status, reason, start + h * H);
    let events = match kind % 8 {
        // Clean delivery, no alert.
        0 => vec![
            s(InfoReceived, 1),
            s(PickedUp, 5),
            s(InTransit, 20),
            s(OutForDelivery, 30),
            s(Delivered, 33),
        ],
        // Late pickup (no_pickup opens and escalates), then a 50 h stall.
        1 => vec![
            s(InfoReceived, 2),
            s(PickedUp, 60),
            s(InTransit, 70),
            s(InTransit, 120),
            s(Delivered, 125),
        ],
        // Carrier exception, then moving again, then failed attempt, delivered.
        2 => vec![
            s(PickedUp, 1),
            e(Exception, Reason::Address, 10),
            s(InTransit, 12),
            s(OutForDelivery, 20),
            s(DeliveryAttemptFailed, 22),
            s(OutForDelivery, 40),
            s(Delivered, 41),
        ],
        // Uncollected at a locker for two days.
        3 => vec![
            s(PickedUp, 1),
            s(InTransit, 8),
            s(AvailableForPickup, 20),
            s(Delivered, 70),
        ],
        // Out for delivery for 40 h (36 h rule), delivered.
        4 => vec![s(PickedUp, 1), s(OutForDelivery, 10), s(Delivered, 50)],
        // Promised date missed and escalated, delivered late.
        5 => {
            reg.promised_delivery_at = Some(time::from_millis(start + 30 * H));
            vec![
                s(PickedUp, 1),
                s(InTransit, 20),
                s(InTransit, 40),
                s(InTransit, 60),
                s(Delivered, 62),
            ]
        }
        // A return: picked up late, delivered back (return received).
        6 => {
            reg.is_return = true;
            vec![
                s(InfoReceived, 1),
                s(PickedUp, 200),
                s(InTransit, 210),
                s(Delivered, 220),
            ]
        }
        // Customs hold, lost, returned (terminal problem).
        _ => vec![
            s(PickedUp, 1),
            e(Customs, Reason::CustomsHold, 30),
            s(InTransit, 35),
            e(Exception, Reason::Lost, 90),
            s(Returning, 100),
            s(Returned, 150),
        ],
    };
    (reg, events)
}

/// The reference: registration first, then every scan in time order with the
/// clock at its time, then the clock moved to `end`. Returns the alert set and
/// the update ids.
pub fn clean_run(
    rules: &RulesConfig,
    key: &str,
    reg: &Shipment,
    events: &[TrackingEvent],
    end: i64,
) -> (BTreeSet<AlertKey>, BTreeSet<(i32, String)>) {
    let mut sim = Sim::new(rules.clone(), key);
    let first = events
        .iter()
        .map(|e| time::millis(e.occurred_at.as_ref()))
        .min()
        .unwrap_or(0);
    sim.register(
        reg.clone(),
        first.min(time::millis(reg.registered_at.as_ref())),
    );
    // The engine's canonical fold order: time, then progress rank, then event id
    // (same-time scans must fold the same way however they arrive).
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| {
        let key = |e: &TrackingEvent| {
            let status = trackstream_proto::v1::Status::try_from(e.status)
                .unwrap_or(trackstream_proto::v1::Status::Unspecified);
            (
                time::millis(e.occurred_at.as_ref()),
                trackstream_detector::rules::rank(status),
                e.event_id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    for event in sorted {
        sim.event(event);
    }
    sim.advance(end);
    (
        alert_set(&alerts(&sim.outputs)),
        updates(&sim.outputs)
            .iter()
            .map(|(_, u)| update_key(u))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Many parcels over several partitions, as Kafka records.
// ---------------------------------------------------------------------------

use trackstream_detector::config::{ClockMode, TimerConfig};
use trackstream_detector::service::Detector;
use trackstream_detector::sink::MemorySink;
use trackstream_detector::store::Store;
use trackstream_proto::topics;
use trackstream_runtime::kafka::Inbound;

/// One parcel of a world.
#[derive(Clone)]
pub struct Parcel {
    pub key: String,
    pub partition: i32,
    pub registration: Shipment,
    pub events: Vec<TrackingEvent>,
}

/// `count` parcels cycling through every scenario, starts staggered over ten
/// days, spread over `partitions`.
pub fn world(count: usize, partitions: i32, prefix: &str) -> Vec<Parcel> {
    (0..count)
        .map(|i| {
            let key = format!("sf:{prefix}{i:05}");
            let start = T0 + i64::try_from(i % 37).expect("small") * 7 * H;
            let (registration, events) = scenario(&key, &format!("O-{prefix}{i}"), i as u64, start);
            Parcel {
                partition: i32::try_from(i).expect("small") % partitions,
                key,
                registration,
                events,
            }
        })
        .collect()
}

/// When the world's last scan happens.
pub fn world_end(parcels: &[Parcel]) -> i64 {
    parcels
        .iter()
        .flat_map(|p| p.events.iter())
        .map(|e| time::millis(e.occurred_at.as_ref()))
        .max()
        .unwrap_or(T0)
}

/// The alerts and update keys of every parcel's clean run, the clock at `end`.
pub fn expected(
    rules: &RulesConfig,
    parcels: &[Parcel],
    end: i64,
) -> (BTreeSet<AlertKey>, BTreeSet<(i32, String)>) {
    let mut alerts = BTreeSet::new();
    let mut updates = BTreeSet::new();
    for p in parcels {
        let (a, u) = clean_run(rules, &p.key, &p.registration, &p.events, end);
        alerts.extend(a);
        updates.extend(u);
    }
    (alerts, updates)
}

pub fn event_record(partition: i32, event: &TrackingEvent) -> Inbound {
    Inbound {
        topic: topics::TRACKING_EVENTS.into(),
        partition,
        offset: 0,
        key: Some(format!("{}:{}", event.carrier, event.waybill).into_bytes()),
        payload: event.encode_to_vec(),
        headers: Vec::new(),
    }
}

pub fn registration_record(partition: i32, shipment: &Shipment) -> Inbound {
    Inbound {
        topic: topics::SHIPMENTS.into(),
        partition,
        offset: 0,
        key: Some(format!("{}:{}", shipment.carrier, shipment.waybill).into_bytes()),
        payload: shipment.encode_to_vec(),
        headers: Vec::new(),
    }
}

/// How registrations and scans arrive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arrival {
    /// Registration before the first scan, scans in time order.
    Clean,
    /// Registration right after the parcel's first scan.
    RegistrationAfterFirstScan,
    /// Each parcel's scans permuted among the stream positions they occupy.
    ShuffledWithinWaybill,
    /// Shuffled, and the registration after the parcel's last scan.
    ShuffledRegistrationLast,
}

/// The world as one record stream, ordered by time across parcels.
pub fn stream(parcels: &[Parcel], arrival: Arrival, rng: &mut Lcg) -> Vec<Inbound> {
    // (sort time, tiebreak, record)
    let mut slots: Vec<(i64, u64, Inbound)> = Vec::new();
    for (n, p) in parcels.iter().enumerate() {
        let mut events = p.events.clone();
        events.sort_by_key(|e| time::millis(e.occurred_at.as_ref()));
        let times: Vec<i64> = events
            .iter()
            .map(|e| time::millis(e.occurred_at.as_ref()))
            .collect();
        let shuffled = matches!(
            arrival,
            Arrival::ShuffledWithinWaybill | Arrival::ShuffledRegistrationLast
        );
        if shuffled {
            rng.shuffle(&mut events);
        }
        let n = n as u64 * 1000;
        for (i, (at, event)) in times.iter().zip(&events).enumerate() {
            slots.push((*at, n + 1 + i as u64, event_record(p.partition, event)));
        }
        let reg_at = match arrival {
            Arrival::Clean | Arrival::ShuffledWithinWaybill => (times[0], n),
            Arrival::RegistrationAfterFirstScan => (times[0], n + 1),
            Arrival::ShuffledRegistrationLast => (times[times.len() - 1], n + 999),
        };
        slots.push((
            reg_at.0,
            reg_at.1,
            registration_record(p.partition, &p.registration),
        ));
    }
    slots.sort_by_key(|(at, tie, _)| (*at, *tie));
    slots.into_iter().map(|(_, _, r)| r).collect()
}

/// One heartbeat scan per partition at `at`, of a parcel of its own that never
/// raises anything: it moves every partition's event-time watermark to `at`.
pub fn heartbeats(partitions: i32, at: i64) -> Vec<Inbound> {
    (0..partitions)
        .map(|p| event_record(p, &scan(&format!("hb:P{p}"), Status::Unspecified, at)))
        .collect()
}

/// Splits records into batches of 1..=`max` records.
pub fn batches(records: Vec<Inbound>, max: u64, rng: &mut Lcg) -> Vec<Vec<Inbound>> {
    let mut out = Vec::new();
    let mut rest = records.into_iter().peekable();
    while rest.peek().is_some() {
        let n = 1 + rng.below(max);
        out.push(rest.by_ref().take(n as usize).collect());
    }
    out
}

pub fn event_clock(lateness: i64) -> TimerConfig {
    TimerConfig {
        clock: ClockMode::Event,
        allowed_lateness: millis(lateness),
        tick: millis(20),
        batch: 1000,
        ..TimerConfig::default()
    }
}

/// A detector over `conn` writing into memory.
///
/// Its data lives for a century: scenarios are dated from [`T0`] (2024) and
/// some tests inject a wall clock there, and with the default retention their
/// parcels' keys would be past their expiry the moment they are written
/// (expiries are absolute, from the wall clock). Lifecycle tests set their own.
pub fn detector(
    conn: trackstream_runtime::redis::RedisConn,
    rules: &RulesConfig,
    timers: TimerConfig,
) -> Detector<MemorySink> {
    Detector::new(
        Engine::new(rules.clone()),
        Store::new(conn),
        MemorySink::new(),
        timers,
        &mut prometheus_client::registry::Registry::default(),
    )
    .with_retention(trackstream_detector::config::RetentionConfig {
        after_terminal: CENTURY,
        after_silence: CENTURY,
        order_log: CENTURY,
        backdate: std::time::Duration::ZERO,
    })
}

/// Feeds every batch, draining due timers of every partition after each one
/// (the timer loop, deterministically), and returns what was emitted.
pub async fn drive(
    detector: &Detector<MemorySink>,
    batches: &[Vec<Inbound>],
    partitions: i32,
) -> Vec<OutRecord> {
    for batch in batches {
        detector.apply_batch(batch).await.expect("batch applies");
        for p in 0..partitions {
            detector.drain_timers(p).await.expect("timers fire");
        }
    }
    detector.sink().take()
}

/// Checks per-order sequence numbers: one per update identity, 1..=n per order.
pub fn assert_sequences(updates: &[ShipmentUpdate]) {
    use std::collections::BTreeMap;
    let mut by_order: BTreeMap<&str, BTreeMap<(i32, String), u64>> = BTreeMap::new();
    for u in updates {
        let seqs = by_order.entry(u.order_id.as_str()).or_default();
        let previous = seqs.insert(update_key(u), u.seq);
        assert!(
            previous.is_none_or(|s| s == u.seq),
            "update {:?} of {} re-emitted with another seq",
            update_key(u),
            u.order_id
        );
    }
    for (order, seqs) in by_order {
        let mut got: Vec<u64> = seqs.values().copied().collect();
        got.sort_unstable();
        let want: Vec<u64> = (1..=got.len() as u64).collect();
        assert_eq!(got, want, "order {order}: sequence has gaps or repeats");
    }
}

/// Asserts two alert sets are equal, naming the waybill, rule and episode of
/// every difference rather than dumping both sets.
pub fn assert_same_alerts(
    got: &BTreeSet<AlertKey>,
    want: &BTreeSet<AlertKey>,
    parcels: &[Parcel],
    what: &str,
) {
    if got == want {
        return;
    }
    let mut names = std::collections::HashMap::new();
    for p in parcels {
        for rule in trackstream_detector::rules::RuleId::ALL {
            for episode in 1..10 {
                names.insert(
                    trackstream_detector::engine::alert_id(&p.key, rule, episode),
                    format!("{} {} ep{episode}", p.key, rule.name()),
                );
            }
        }
    }
    let describe = |k: &AlertKey| {
        format!(
            "{} state {} tier {}",
            names.get(&k.0).cloned().unwrap_or_else(|| k.0.clone()),
            k.1,
            k.2
        )
    };
    let extra: Vec<String> = got.difference(want).map(describe).collect();
    let missing: Vec<String> = want.difference(got).map(describe).collect();
    panic!(
        "{what}: alerts differ from the clean run\n  extra:   {extra:#?}\n  missing: {missing:#?}"
    );
}
