//! The detection engine: a pure state machine per waybill.
//!
//! Inputs are canonical events, shipment registrations and the clock; the engine
//! mutates a [`Waybill`] snapshot and records [`Effects`] (history entries,
//! updates and alerts to emit). No I/O happens here, so every rule is unit-tested
//! without Redis or Kafka, and `store` commits the result atomically.
//!
//! Event time and order (DESIGN.md "Order", "Timers"):
//! - the waybill's alert state is a *fold* over its events in event-time order,
//!   interleaved with its deadlines: an event at `t` is folded only after every
//!   deadline `<= t` fired, and neither is folded before the clock reaches it. The
//!   fold clock `folded_at` is the time of the last thing folded;
//! - an arriving event at or after `folded_at` waits in `pending` (sorted) until
//!   the clock passes it, so scans that arrive out of order, in any batching,
//!   fold exactly as the time-sorted sequence would. With the event clock the
//!   clock is the partition's watermark minus `allowed_lateness` and 1 ms
//!   ([`crate::config::event_clock`]): every scan no
//!   more than that behind the newest one seen yields the alerts of the clean
//!   sequence, however it was shuffled, duplicated, batched or replayed;
//! - an event older than `folded_at` is applied at once without firing
//!   anything. It never moves the waybill backwards: the status is the status of
//!   the winning event, where a terminal event beats any non-terminal one, then
//!   later `occurred_at` wins, then higher progress rank — so nothing leaves a
//!   terminal state;
//! - updates (one per event id) are emitted when the event arrives. What they
//!   say (`current_status`, `late`) comes from the [`received`] view, not from
//!   the fold: the fold's progress depends on the clock at processing time and
//!   so on batching and lag, the view only on the scans and their arrival
//!   order, so a catch-up emits exactly what a live run emits. `late` means
//!   older than a scan received before it; a scan dated after every receipt so
//!   far (future-dated) neither counts in later updates' status nor makes them
//!   late until a later receipt reaches its time. Its own update goes out when
//!   it arrives; it folds when the clock reaches its time, like any scan.
//!
//! Registrations (see [`registration`]): contacts are stripped on the way in,
//! another merchant's registration is refused, an identical repeat changes
//! nothing, and an order receives only the scans inside the join window.
//!
//! Files: this one holds the fold ([`Engine::apply`], [`Engine::advance`]) and
//! the outputs it builds; `engine/received.rs` what updates say;
//! `engine/state.rs` the stored state and the fold's inputs and outputs;
//! `engine/evaluate.rs` rule evaluation (anchors, tiers, alerts);
//! `engine/registration.rs` registration intake.

use sha2::Digest as _;
use trackstream_proto::v1::{
    Alert, AlertState, Location, Reason, Severity, Shipment, ShipmentUpdate, Status, TrackingEvent,
    UpdateKind,
};
use trackstream_proto::{keys, time};

use crate::rules::{self, RuleId, RulesConfig};

pub mod received;
pub mod registration;

pub use received::Received;
pub use registration::RefusedRegistration;
use registration::{Intake, Position};

mod evaluate;
mod forecast;
mod state;

pub use state::{
    Effects, Input, Output, PENDING_TIMER, RuleSlot, Waybill, WaybillState, encode_state,
};

/// The rules engine.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RulesConfig,
    /// Delivery predictions (`None`: updates carry none and
    /// `promise_at_risk` never arms).
    forecaster: Option<std::sync::Arc<trackstream_lanes::forecast::Forecaster>>,
}

/// Upper bound on fold steps per call: every step folds a pending event or
/// moves a deadline strictly forward, so this only guards against bad config.
const MAX_STEPS: usize = 10_000;

impl Engine {
    /// An engine with `rules`.
    pub fn new(rules: RulesConfig) -> Self {
        Engine {
            rules,
            forecaster: None,
        }
    }

    /// The engine predicting deliveries with `forecaster`, whose windows the
    /// caller fetches before each fold ([`Engine::forecaster`]).
    pub fn with_forecaster(
        mut self,
        forecaster: std::sync::Arc<trackstream_lanes::forecast::Forecaster>,
    ) -> Self {
        self.forecaster = Some(forecaster);
        self
    }

    /// Its forecaster, if it predicts.
    pub fn forecaster(&self) -> Option<&trackstream_lanes::forecast::Forecaster> {
        self.forecaster.as_deref()
    }

    /// The rules it runs.
    pub fn rules(&self) -> &RulesConfig {
        &self.rules
    }

    /// Applies one waybill's inputs (events already de-duplicated) in arrival
    /// order, then folds up to `clock`. `stored_history` is the waybill's stored
    /// history; it is only read when a registration joins for the first time
    /// (to emit the updates the order missed, inside the join window), so
    /// callers may pass it empty otherwise.
    ///
    /// Updates do not depend on `clock` or on how the inputs were batched: each
    /// scan's update is emitted where it arrives, with the registration held at
    /// that point, and says what the [`received`] view says after it; the one
    /// `RETURN_RECEIVED` goes right after the update that made the view a
    /// delivery. The fold (alerts) runs on `clock`.
    ///
    /// A registration from another merchant than the stored one's is refused
    /// (listed in [`Effects::refused_registrations`], nothing else changes).
    pub fn apply(
        &self,
        wb: &mut Waybill,
        inputs: &[Input],
        stored_history: &[TrackingEvent],
        clock: i64,
        fx: &mut Effects,
    ) {
        let first_output = fx.outputs.len();
        let window = trackstream_runtime::config::duration::millis(self.rules.join_window);
        // The refund trigger is decided here, on the received view; the fold
        // may emit one too (`apply_to_state`), which is dropped below.
        let mut returned = wb.state.return_received;
        let mut updates = Vec::new();
        let mut registrations = 0;
        // A registration stored by an older version still holds contacts:
        // strip them now, and store it again without.
        if let Some(reg) = wb.registration.as_mut()
            && registration::has_contacts(reg)
        {
            *reg = registration::without_contacts(reg);
            wb.registration_changed = true;
        }
        for (index, input) in inputs.iter().enumerate() {
            match input {
                Input::Event(event) => {
                    let at = event_at(event);
                    if wb.state.received.is_none() {
                        wb.state.received = Some(Received::from_state(&wb.state));
                    }
                    let seen = wb.state.received.get_or_insert_default().receive(event);
                    if at < wb.state.folded_at {
                        self.apply_to_state(wb, event, at, fx);
                    } else {
                        let key = fold_key(event);
                        let index = wb.state.pending.partition_point(|p| fold_key(p) <= key);
                        wb.state.pending.insert(index, event.clone());
                    }
                    fx.history.push(event.clone());
                    let Some(reg) = wb.registration.as_ref() else {
                        continue;
                    };
                    if registration::joins(reg, window, event) {
                        updates.push(update(reg, event, &seen));
                    }
                    if !returned
                        && wb
                            .state
                            .received
                            .as_ref()
                            .is_some_and(|v| v.return_delivered(reg, window))
                    {
                        returned = true;
                        let delivered = seen.won.as_ref().unwrap_or(event);
                        updates.push(return_received(&wb.key, reg, delivered));
                    }
                }
                Input::Registration(shipment) => {
                    let at = Position {
                        input: index,
                        registration: registrations,
                    };
                    registrations += 1;
                    let (taken, joined) =
                        match registration::intake(wb.registration.as_ref(), shipment, at) {
                            Intake::Unchanged => continue,
                            Intake::Refused(refused) => {
                                fx.refused_registrations.push(refused);
                                continue;
                            }
                            Intake::First(taken) => (taken, true),
                            Intake::Changed(taken) => (taken, false),
                        };
                    if joined {
                        // Every scan received so far (stored, or earlier in
                        // this batch) is replayed to the order.
                        let earlier: Vec<&TrackingEvent> =
                            stored_history.iter().chain(fx.history.iter()).collect();
                        returned |=
                            replay(&wb.key, &taken, window, &earlier, returned, &mut updates);
                    }
                    wb.registration = Some(taken);
                    wb.registration_changed = true;
                    let at = wb.state.folded_at.max(wb.state.last_event_at);
                    self.evaluate(wb, at, fx);
                }
            }
        }
        self.forecast(wb, &mut updates, fx);
        self.advance(wb, clock, fx);
        // Only the refund trigger decided above counts (see `returned`).
        let folded = fx.outputs.split_off(first_output);
        fx.outputs.extend(updates);
        fx.outputs.extend(folded.into_iter().filter(|o| {
            !matches!(o, Output::Update { update, .. } if update.kind == UpdateKind::ReturnReceived as i32)
        }));
        wb.state.return_received = returned;
    }

    /// Folds pending events and fires deadlines up to `clock`, in time order.
    /// The timer loop calls this for due timers; [`Engine::apply`] calls it
    /// after every batch. A deadline with no pending event after it waits
    /// while `clock < wb.hold_until` (see [`Waybill::hold_until`]).
    ///
    /// Thresholds are strict ("more than 24 h without a scan"): a deadline is
    /// armed at the first millisecond *past* its threshold, so an event at the
    /// threshold instant (the next scan exactly 24h00 after the last, delivery
    /// exactly at the promised time) sorts before it and is folded first — it
    /// moves the parcel on and re-arms the rule, and nothing opens. An event
    /// at the deadline itself (1 ms past the threshold) comes after it: the
    /// deadline fires first. Because the stored deadline is already the firing
    /// instant, the timer set's score, the grace and the timer loop's "due at
    /// `now`" all keep one meaning, and a deadline is never due while the
    /// clock stands exactly at its threshold.
    pub fn advance(&self, wb: &mut Waybill, clock: i64, fx: &mut Effects) {
        for _ in 0..MAX_STEPS {
            let deadline = wb
                .state
                .slots
                .iter()
                .filter(|s| s.deadline > 0 && s.deadline <= clock)
                .min_by_key(|s| s.deadline)
                .and_then(|s| RuleId::from_code(&s.rule).map(|r| (r, s.deadline)));
            let pending = wb
                .state
                .pending
                .first()
                .map(event_at)
                .filter(|t| *t <= clock);
            match (deadline, pending) {
                (Some(_), None) if clock < wb.hold_until => break,
                // `at` is past its threshold, so `at <= p` means the event
                // came strictly after the threshold: the deadline fires first.
                (Some((rule, at)), pending) if pending.is_none_or(|p| at <= p) => {
                    self.fire(wb, rule, at, fx);
                }
                (_, Some(at)) => {
                    let event = wb.state.pending.remove(0);
                    self.apply_to_state(wb, &event, at, fx);
                    wb.state.folded_at = wb.state.folded_at.max(at);
                }
                _ => break,
            }
        }
        // A slot of an unknown rule code (written by a newer version) cannot
        // fire; disarm it rather than let the timer loop find it due forever.
        for slot in &mut wb.state.slots {
            if RuleId::from_code(&slot.rule).is_none() && slot.deadline <= clock {
                slot.deadline = 0;
            }
        }
    }
}

/// The alert id: waybill + rule + episode, hashed. A replay or restart recomputes
/// exactly the same id.
pub fn alert_id(waybill_key: &str, rule: RuleId, episode: u32) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(waybill_key.as_bytes());
    hasher.update(b"\x1f");
    hasher.update(rule.name().as_bytes());
    hasher.update(b"\x1f");
    hasher.update(episode.to_be_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// `occurred_at` in ms.
fn event_at(event: &TrackingEvent) -> i64 {
    time::millis(event.occurred_at.as_ref())
}

/// The order events fold in: time, then progress, then id — independent of
/// arrival order.
fn fold_key(event: &TrackingEvent) -> (i64, i32, &str) {
    let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
    (
        event_at(event),
        rules::rank(status),
        event.event_id.as_str(),
    )
}

/// A first registration's updates: every scan received before it (`earlier`)
/// inside the join window — never an earlier parcel's — in the order the scans
/// arrived ([`received::replay_key`]), each with what a [`Received`] view built
/// in that order says after it, so the order gets the updates a registration
/// present from the start would have got. The refund trigger, when due and not
/// `returned` yet, goes right after the update that made the view a delivery.
/// Returns whether it was emitted.
fn replay(
    waybill_key: &str,
    reg: &Shipment,
    window: i64,
    earlier: &[&TrackingEvent],
    returned: bool,
    updates: &mut Vec<Output>,
) -> bool {
    let mut all = earlier.to_vec();
    all.sort_by(|a, b| received::replay_key(a).cmp(&received::replay_key(b)));
    let mut ids = std::collections::HashSet::new();
    all.retain(|e| ids.insert(e.event_id.as_str()));
    let mut view = Received::default();
    let mut emitted = false;
    for event in all {
        let seen = view.receive(event);
        if registration::joins(reg, window, event) {
            updates.push(update(reg, event, &seen));
        }
        if !returned && !emitted && view.return_delivered(reg, window) {
            emitted = true;
            updates.push(return_received(
                waybill_key,
                reg,
                seen.won.as_ref().unwrap_or(event),
            ));
        }
    }
    emitted
}

/// A scan's update: status, `late` and milestones as the [`Received`] view
/// says after it.
fn update(reg: &Shipment, event: &TrackingEvent, seen: &received::Seen) -> Output {
    Output::Update {
        id: format!("u:{}", event.event_id),
        update: Box::new(ShipmentUpdate {
            seq: 0,
            order_id: reg.order_id.clone(),
            merchant_id: reg.merchant_id.clone(),
            event: Some(event.clone()),
            current_status: seen.status as i32,
            late: seen.late,
            kind: UpdateKind::Scan as i32,
            // Already stripped on intake; stripped again so no path can leak.
            shipment: Some(registration::without_contacts(reg)),
            milestones: Some(seen.milestones),
            ..ShipmentUpdate::default()
        }),
    }
}

/// The refund trigger: once per return waybill, id `r:<carrier:waybill>`.
fn return_received(waybill_key: &str, reg: &Shipment, event: &TrackingEvent) -> Output {
    Output::Update {
        id: format!("r:{waybill_key}"),
        update: Box::new(ShipmentUpdate {
            seq: 0,
            order_id: reg.order_id.clone(),
            merchant_id: reg.merchant_id.clone(),
            event: Some(event.clone()),
            current_status: Status::Delivered as i32,
            late: false,
            kind: UpdateKind::ReturnReceived as i32,
            shipment: Some(registration::without_contacts(reg)),
            ..ShipmentUpdate::default()
        }),
    }
}
