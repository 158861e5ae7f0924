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
//!   clock is the partition's watermark minus `allowed_lateness`: every scan no
//!   more than that behind the newest one seen yields the alerts of the clean
//!   sequence, however it was shuffled, duplicated, batched or replayed;
//! - an event older than `folded_at` is applied at once without firing
//!   anything. It never moves the waybill backwards: the status is the status of
//!   the winning event, where a terminal event beats any non-terminal one, then
//!   later `occurred_at` wins, then higher progress rank — so nothing leaves a
//!   terminal state;
//! - updates (one per event id) are emitted when the event arrives, with the
//!   status the fold has reached. An update is flagged `late` when its event is
//!   older than the newest event already *folded* (`last_event_at`), never
//!   because of a pending one: a scan dated in the future waits in `pending`
//!   and must not make every real scan after it `late` (which silences the
//!   buyer's messages). Such a scan's own update goes out when it arrives; it
//!   folds when the clock reaches its time, like any scan.
//!
//! Registrations (see [`registration`]): contacts are stripped on the way in,
//! another merchant's registration is refused, an identical repeat changes
//! nothing, and an order receives only the scans inside the join window.
//!
//! Files: this one holds the fold ([`Engine::apply`], [`Engine::advance`]) and
//! the outputs it builds; `engine/state.rs` the stored state and the fold's
//! inputs and outputs; `engine/evaluate.rs` rule evaluation (anchors, tiers,
//! alerts); `engine/registration.rs` registration intake.

use sha2::Digest as _;
use trackstream_proto::v1::{
    Alert, AlertState, Reason, Severity, Shipment, ShipmentUpdate, Status, TrackingEvent,
    UpdateKind,
};
use trackstream_proto::{keys, time};

use crate::rules::{self, RuleId, RulesConfig};

pub mod registration;

pub use registration::RefusedRegistration;
use registration::{Intake, Position};

mod evaluate;
mod state;

pub use state::{
    Effects, Input, Output, PENDING_TIMER, RuleSlot, Waybill, WaybillState, encode_state,
};

/// The rules engine.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RulesConfig,
}

/// Upper bound on fold steps per call: every step folds a pending event or
/// moves a deadline strictly forward, so this only guards against bad config.
const MAX_STEPS: usize = 10_000;

impl Engine {
    /// An engine with `rules`.
    pub fn new(rules: RulesConfig) -> Self {
        Engine { rules }
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
        let mut received: Vec<(usize, bool)> = Vec::new();
        let mut joined = false;
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
                    let late = wb.state.is_late(at);
                    if at < wb.state.folded_at {
                        self.apply_to_state(wb, event, at, fx);
                    } else {
                        let key = fold_key(event);
                        let index = wb.state.pending.partition_point(|p| fold_key(p) <= key);
                        wb.state.pending.insert(index, event.clone());
                    }
                    received.push((fx.history.len(), late));
                    fx.history.push(event.clone());
                }
                Input::Registration(shipment) => {
                    let at = Position {
                        input: index,
                        registration: registrations,
                    };
                    registrations += 1;
                    let taken = match registration::intake(wb.registration.as_ref(), shipment, at) {
                        Intake::Unchanged => continue,
                        Intake::Refused(refused) => {
                            fx.refused_registrations.push(refused);
                            continue;
                        }
                        Intake::First(taken) => {
                            joined = true;
                            taken
                        }
                        Intake::Changed(taken) => taken,
                    };
                    wb.registration = Some(taken);
                    wb.registration_changed = true;
                    let at = wb.state.folded_at.max(wb.state.last_event_at);
                    self.evaluate(wb, at, fx);
                }
            }
        }
        self.advance(wb, clock, fx);

        let Some(reg) = wb.registration.clone() else {
            return;
        };
        let current = wb.state.status();
        let window = trackstream_runtime::config::duration::millis(self.rules.join_window);
        let mut updates = Vec::new();
        if joined {
            // First join: the order's stream gets every scan of the join
            // window so far, oldest first — never an earlier parcel's.
            let mut all: Vec<&TrackingEvent> = stored_history
                .iter()
                .chain(fx.history.iter())
                .filter(|e| registration::joins(&reg, window, e))
                .collect();
            all.sort_by(|a, b| fold_key(a).cmp(&fold_key(b)));
            all.dedup_by(|a, b| a.event_id == b.event_id);
            let mut latest = i64::MIN;
            for event in all {
                let at = event_at(event);
                updates.push(update(&reg, event, current, at < latest));
                latest = latest.max(at);
            }
            if !wb.state.return_received
                && reg.is_return
                && current == Status::Delivered
                && let Some(delivered) = stored_history
                    .iter()
                    .chain(fx.history.iter())
                    .filter(|e| e.status == Status::Delivered as i32)
                    .filter(|e| registration::joins(&reg, window, e))
                    .min_by_key(|e| (event_at(e) != wb.state.status_at, fold_key(e)))
            {
                wb.state.return_received = true;
                fx.outputs.push(return_received(&wb.key, &reg, delivered));
            }
        } else {
            for (index, late) in received {
                if let Some(event) = fx
                    .history
                    .get(index)
                    .filter(|e| registration::joins(&reg, window, e))
                {
                    updates.push(update(&reg, event, current, late));
                }
            }
        }
        fx.outputs.splice(first_output..first_output, updates);
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

fn update(reg: &Shipment, event: &TrackingEvent, current: Status, late: bool) -> Output {
    Output::Update {
        id: format!("u:{}", event.event_id),
        update: Box::new(ShipmentUpdate {
            seq: 0,
            order_id: reg.order_id.clone(),
            merchant_id: reg.merchant_id.clone(),
            event: Some(event.clone()),
            current_status: current as i32,
            late,
            kind: UpdateKind::Scan as i32,
            // Already stripped on intake; stripped again so no path can leak.
            shipment: Some(registration::without_contacts(reg)),
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
        }),
    }
}
