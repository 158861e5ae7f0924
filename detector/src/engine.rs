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
//! Size: over the 700-line guide. The fold, its rule anchors and the state
//! encoding are one state machine whose invariants are easiest to check in
//! one place; registration intake already moved to `engine/registration.rs`,
//! and the remaining split (state encoding, rule evaluation) goes with issue
//! 11's single write path, which changes the engine's inputs.

use std::time::Duration;

use prost::Message as _;
use sha2::Digest as _;
use trackstream_proto::v1::{
    Alert, AlertState, Reason, Severity, Shipment, ShipmentUpdate, Status, TrackingEvent,
    UpdateKind,
};
use trackstream_proto::{keys, time};
use trackstream_runtime::config::duration;

use crate::rules::{self, RuleId, RulesConfig};

pub mod registration;

pub use registration::RefusedRegistration;
use registration::{Intake, Position};

/// Timer-member name of a waybill's earliest pending event (see [`WaybillState::deadlines`]).
pub const PENDING_TIMER: &str = "pe";

/// Per-rule alert bookkeeping of one waybill (stored inside [`WaybillState`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuleSlot {
    /// Rule code ([`RuleId::code`]).
    #[prost(string, tag = "1")]
    pub rule: String,
    /// Episodes opened so far; the current/last alert id uses this number.
    #[prost(uint32, tag = "2")]
    pub episode: u32,
    /// Whether the current episode's alert is open.
    #[prost(bool, tag = "3")]
    pub open: bool,
    /// Current tier of the open alert.
    #[prost(uint32, tag = "4")]
    pub tier: u32,
    /// When the open alert opened (its deadline), ms.
    #[prost(int64, tag = "5")]
    pub opened_at: i64,
    /// Armed deadline, ms (0 = no timer).
    #[prost(int64, tag = "6")]
    pub deadline: i64,
    /// The anchor the deadline was computed from.
    #[prost(int64, tag = "7")]
    pub anchor: i64,
    /// Reason of the open alert (carrier exceptions).
    #[prost(int32, tag = "8")]
    pub reason: i32,
}

/// Compact per-waybill state (protobuf-encoded in Redis; history lives apart).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WaybillState {
    /// Current canonical status.
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// `occurred_at` (ms) of the event that set `status`.
    #[prost(int64, tag = "2")]
    pub status_at: i64,
    /// Latest `occurred_at` (ms) of any applied event.
    #[prost(int64, tag = "3")]
    pub last_event_at: i64,
    /// First time a pending / info-received event was seen (ms).
    #[prost(int64, tag = "4")]
    pub info_at: i64,
    /// Events applied (duplicates and pending ones excluded).
    #[prost(uint32, tag = "5")]
    pub events: u32,
    /// Reason of the winning event.
    #[prost(int32, tag = "6")]
    pub reason: i32,
    /// Alert slots, one per rule that ever armed.
    #[prost(message, repeated, tag = "7")]
    pub slots: Vec<RuleSlot>,
    /// The fold clock (ms): time of the last event folded or deadline fired.
    /// Events older than this are late.
    #[prost(int64, tag = "8")]
    pub folded_at: i64,
    /// Received events the clock has not reached yet, in fold order.
    #[prost(message, repeated, tag = "9")]
    pub pending: Vec<TrackingEvent>,
    /// Whether the `return received` update was emitted (once per waybill).
    #[prost(bool, tag = "10")]
    pub return_received: bool,
}

impl WaybillState {
    /// Current status as an enum.
    pub fn status(&self) -> Status {
        Status::try_from(self.status).unwrap_or(Status::Unspecified)
    }

    fn slot_mut(&mut self, rule: RuleId) -> &mut RuleSlot {
        let index = match self.slots.iter().position(|s| s.rule == rule.code()) {
            Some(index) => index,
            None => {
                self.slots.push(RuleSlot {
                    rule: rule.code().to_owned(),
                    ..RuleSlot::default()
                });
                self.slots.len() - 1
            }
        };
        &mut self.slots[index]
    }

    /// The slot of `rule`, if it ever armed.
    pub fn slot(&self, rule: RuleId) -> Option<&RuleSlot> {
        self.slots.iter().find(|s| s.rule == rule.code())
    }

    /// Armed timers, for the partition's timer set: each rule's deadline, plus
    /// [`PENDING_TIMER`] at the earliest pending event (folded when the clock
    /// reaches it).
    pub fn deadlines(&self) -> impl Iterator<Item = (&str, i64)> {
        self.slots
            .iter()
            .filter(|s| s.deadline > 0)
            .map(|s| (s.rule.as_str(), s.deadline))
            .chain(
                self.pending
                    .first()
                    .map(|e| (PENDING_TIMER, event_at(e).max(1))),
            )
    }

    /// Whether an event at `at` is late: older than the newest event folded.
    /// Pending events do not count, so a future-dated one makes nothing late.
    pub fn is_late(&self, at: i64) -> bool {
        self.events > 0 && at < self.last_event_at
    }
}

/// A loaded waybill: its state, registration and identity.
#[derive(Debug, Clone, Default)]
pub struct Waybill {
    /// `carrier:waybill`.
    pub key: String,
    /// Kafka partition owning it (hash tag of its Redis keys).
    pub partition: i32,
    /// Optimistic-concurrency version of the stored state (0 = new).
    pub version: u64,
    /// The state.
    pub state: WaybillState,
    /// The registration, once joined.
    pub registration: Option<Shipment>,
    /// Set when `registration` changed and must be stored.
    pub registration_changed: bool,
    /// Wall clock only (ms; 0 = none): a deadline that no received scan
    /// follows does not fire before this time. The service sets it to the apply
    /// time plus `timers.grace` whenever inputs are applied, because a carrier
    /// snapshot pushed late reaches the detector one record per scan: firing a
    /// deadline computed from its first, old scan before the next record is
    /// read raises an alert that the next scan resolves at once. Not stored in
    /// the state: the timer set carries it as the timer's score (see
    /// [`Waybill::timer_scores`]), so the timer loop fires the deadline when
    /// the grace is over. A deadline that a received scan follows in time
    /// fires regardless — the fold knows the gap was real.
    pub hold_until: i64,
}

impl Waybill {
    /// What the partition's timer set should hold for this waybill: each armed
    /// timer with the score it fires at — the rule's deadline, held until
    /// [`Waybill::hold_until`] (the pending-event timer is never held).
    pub fn timer_scores(&self) -> impl Iterator<Item = (&str, i64)> {
        self.state.deadlines().map(|(rule, deadline)| {
            if rule == PENDING_TIMER {
                (rule, deadline)
            } else {
                (rule, deadline.max(self.hold_until))
            }
        })
    }
}

/// One input for a waybill.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A canonical event (already checked not to be a duplicate).
    Event(TrackingEvent),
    /// A shipment registration (joins whenever it arrives).
    Registration(Shipment),
}

/// An output waiting to be written to Kafka (through the outbox).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// An order update; its sequence number is assigned at delivery.
    Update {
        /// Idempotency id: `u:<event_id>`, or `r:<carrier:waybill>` (return received).
        id: String,
        /// The update with `seq` unset.
        update: Box<ShipmentUpdate>,
    },
    /// An alert transition.
    Alert(Box<Alert>),
}

impl Output {
    /// Outbox field: unique per emission, so a re-emission overwrites itself.
    pub fn outbox_id(&self) -> String {
        match self {
            Output::Update { id, .. } => id.clone(),
            Output::Alert(alert) => format!("a:{}:{}:{}", alert.alert_id, alert.state, alert.tier),
        }
    }
}

/// What applying inputs produced.
#[derive(Debug, Default)]
pub struct Effects {
    /// New history entries: event id → event.
    pub history: Vec<TrackingEvent>,
    /// Outputs, in emission order.
    pub outputs: Vec<Output>,
    /// Registrations refused because another merchant owns the waybill; they
    /// changed nothing and emitted nothing. The service dead-letters each with
    /// cause [`RefusedRegistration::CAUSE`].
    pub refused_registrations: Vec<RefusedRegistration>,
}

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
        let window = duration::millis(self.rules.join_window);
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

    /// Folds pending events and fires deadlines up to `clock`, in time order (a
    /// deadline due at an event's time fires first). The timer loop calls this
    /// for due timers; [`Engine::apply`] calls it after every batch. A deadline
    /// with no pending event after it waits while `clock < wb.hold_until`
    /// (see [`Waybill::hold_until`]).
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

    /// Applies one event to the state: status, anchors, carrier exceptions,
    /// return received, then re-arms timers.
    fn apply_to_state(&self, wb: &mut Waybill, event: &TrackingEvent, at: i64, fx: &mut Effects) {
        let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
        let reason = Reason::try_from(event.reason).unwrap_or(Reason::Unspecified);
        let state = &mut wb.state;
        let late = state.events > 0 && at < state.last_event_at;
        if wins(status, at, state) {
            state.status = status as i32;
            state.status_at = at;
            state.reason = reason as i32;
        }
        state.last_event_at = if state.events == 0 {
            at
        } else {
            state.last_event_at.max(at)
        };
        state.events = state.events.saturating_add(1);
        if matches!(status, Status::Pending | Status::InfoReceived)
            && (state.info_at == 0 || at < state.info_at)
        {
            state.info_at = at;
        }
        self.carrier_exception(wb, status, reason, at, late, fx);
        // The refund trigger needs this parcel's delivery: a delivery dated
        // before the join window is an earlier parcel's under the same number.
        let window = duration::millis(self.rules.join_window);
        if !wb.state.return_received
            && wb.state.status() == Status::Delivered
            && let Some(reg) = wb
                .registration
                .as_ref()
                .filter(|r| r.is_return && wb.state.status_at >= registration::join_from(r, window))
        {
            wb.state.return_received = true;
            fx.outputs.push(return_received(&wb.key, reg, event));
        }
        self.evaluate(wb, wb.state.last_event_at, fx);
    }

    fn fire(&self, wb: &mut Waybill, rule: RuleId, deadline: i64, fx: &mut Effects) {
        wb.state.folded_at = wb.state.folded_at.max(deadline);
        let Some(config) = self.rules.timer(rule) else {
            wb.state.slot_mut(rule).deadline = 0;
            return;
        };
        let (carrier, level) = carrier_and_level(wb);
        let tiers = config.tiers_for(&carrier, &level);
        let slot = wb.state.slot_mut(rule);
        let state = if slot.open {
            slot.tier += 1;
            AlertState::Escalated
        } else {
            slot.episode += 1;
            slot.open = true;
            slot.tier = 0;
            slot.opened_at = deadline;
            AlertState::Opened
        };
        slot.deadline = next_deadline(slot.anchor, tiers, slot.tier, deadline);
        let slot = slot.clone();
        let severity = config.severity(slot.tier);
        fx.outputs.push(Output::Alert(Box::new(
            self.alert(wb, rule, &slot, state, severity, deadline),
        )));
    }

    /// Resolves, re-arms or disarms every timer rule after a change.
    ///
    /// A stall-type rule (anchored at the last scan or status change) resolves
    /// when its anchor moves: the parcel moved. The "not picked up" rules resolve
    /// only when the parcel is picked up; their anchor (earliest of registration
    /// and info received) can move earlier when a registration joins late, which
    /// reschedules the open alert instead of resolving it, so a late registration
    /// yields the alerts of an early one.
    fn evaluate(&self, wb: &mut Waybill, at: i64, fx: &mut Effects) {
        let (carrier, level) = carrier_and_level(wb);
        for rule in RuleId::TIMED {
            let config = self.rules.timer(rule);
            let anchor = config.and_then(|_| anchor(rule, wb));
            let tiers = config.map_or(&[][..], |c| c.tiers_for(&carrier, &level));
            let first = tiers.first().map_or(0, |t| duration::millis(*t));
            let Some(index) = wb.state.slots.iter().position(|s| s.rule == rule.code()) else {
                if let (Some(_), Some(anchor)) = (config, anchor) {
                    let slot = wb.state.slot_mut(rule);
                    slot.anchor = anchor;
                    slot.deadline = anchor.saturating_add(first).max(1);
                }
                continue;
            };
            let current = wb.state.slots[index].clone();
            let sticky = matches!(rule, RuleId::NoPickup | RuleId::ReturnNotPickedUp);
            if current.open && anchor != Some(current.anchor) {
                if let (true, Some(anchor)) = (sticky, anchor) {
                    let slot = &mut wb.state.slots[index];
                    slot.anchor = anchor;
                    if slot.deadline > 0 {
                        slot.deadline = next_deadline(anchor, tiers, slot.tier, slot.opened_at);
                    }
                    continue;
                }
                let severity = config.map_or(Severity::Warning, |c| c.severity(current.tier));
                let slot = &mut wb.state.slots[index];
                slot.open = false;
                slot.deadline = 0;
                fx.outputs.push(Output::Alert(Box::new(self.alert(
                    wb,
                    rule,
                    &current,
                    AlertState::Resolved,
                    severity,
                    at,
                ))));
            }
            let slot = &mut wb.state.slots[index];
            if !slot.open {
                match anchor {
                    Some(anchor) => {
                        slot.anchor = anchor;
                        slot.deadline = anchor.saturating_add(first).max(1);
                    }
                    None => slot.deadline = 0,
                }
            }
        }
    }

    fn carrier_exception(
        &self,
        wb: &mut Waybill,
        status: Status,
        reason: Reason,
        at: i64,
        late: bool,
        fx: &mut Effects,
    ) {
        let rule = RuleId::CarrierException;
        if !self.rules.carrier_exception.enabled {
            return;
        }
        let severity = self.rules.carrier_exception.severity;
        let current_is_problem = is_problem_state(&wb.state);
        if rules::is_carrier_problem(status, reason) {
            let slot = wb.state.slot_mut(rule);
            if slot.open {
                return;
            }
            slot.episode += 1;
            slot.open = true;
            slot.tier = 0;
            slot.opened_at = at;
            slot.reason = if reason == Reason::Unspecified {
                problem_reason(status) as i32
            } else {
                reason as i32
            };
            let opened = slot.clone();
            fx.outputs.push(Output::Alert(Box::new(self.alert(
                wb,
                rule,
                &opened,
                AlertState::Opened,
                severity,
                at,
            ))));
            if late && !current_is_problem {
                // A later scan already shows the parcel moving again.
                self.resolve_exception(wb, wb.state.last_event_at, fx);
            }
        } else if !late && !current_is_problem {
            self.resolve_exception(wb, at, fx);
        }
    }

    fn resolve_exception(&self, wb: &mut Waybill, at: i64, fx: &mut Effects) {
        let rule = RuleId::CarrierException;
        let Some(slot) = wb.state.slot(rule).filter(|s| s.open).cloned() else {
            return;
        };
        wb.state.slot_mut(rule).open = false;
        let severity = self.rules.carrier_exception.severity;
        fx.outputs.push(Output::Alert(Box::new(self.alert(
            wb,
            rule,
            &slot,
            AlertState::Resolved,
            severity,
            at,
        ))));
    }

    fn alert(
        &self,
        wb: &Waybill,
        rule: RuleId,
        slot: &RuleSlot,
        state: AlertState,
        severity: Severity,
        effective_at: i64,
    ) -> Alert {
        let (carrier, waybill) = keys::split_waybill_key(&wb.key).unwrap_or(("", &wb.key));
        let reg = wb.registration.as_ref();
        let status = wb.state.status();
        let summary = format!(
            "{} {} {}: {} (tier {}, last scan {}, status {})",
            wb.key,
            rule.name(),
            state
                .as_str_name()
                .trim_start_matches("ALERT_STATE_")
                .to_ascii_lowercase(),
            describe(rule),
            slot.tier,
            time::from_proto(&time::from_millis(wb.state.last_event_at))
                .filter(|_| wb.state.events > 0)
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
            status.as_str_name().trim_start_matches("STATUS_"),
        );
        Alert {
            alert_id: alert_id(&wb.key, rule, slot.episode),
            rule: rule.name().to_owned(),
            state: state as i32,
            severity: severity as i32,
            tier: slot.tier,
            episode: slot.episode,
            carrier: carrier.to_owned(),
            waybill: waybill.to_owned(),
            order_id: reg.map(|r| r.order_id.clone()).unwrap_or_default(),
            merchant_id: reg.map(|r| r.merchant_id.clone()).unwrap_or_default(),
            reason: slot.reason,
            last_status: status as i32,
            last_event_at: (wb.state.events > 0).then(|| time::from_millis(wb.state.last_event_at)),
            effective_at: Some(time::from_millis(effective_at)),
            opened_at: Some(time::from_millis(slot.opened_at)),
            summary,
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

/// Deadline of the tier after `tier`, never at or before `after` (0 = none left).
fn next_deadline(anchor: i64, tiers: &[Duration], tier: u32, after: i64) -> i64 {
    usize::try_from(tier.saturating_add(1))
        .ok()
        .and_then(|i| tiers.get(i))
        .map_or(0, |t| {
            anchor
                .saturating_add(duration::millis(*t))
                .max(after.saturating_add(1))
        })
}

fn wins(status: Status, at: i64, state: &WaybillState) -> bool {
    if state.events == 0 {
        return true;
    }
    let current = state.status();
    let key = |s: Status, t: i64| (rules::is_terminal(s), t, rules::rank(s));
    key(status, at) > key(current, state.status_at)
}

fn anchor(rule: RuleId, wb: &Waybill) -> Option<i64> {
    let state = &wb.state;
    let status = if state.events == 0 {
        Status::Unspecified
    } else {
        state.status()
    };
    let reg = wb.registration.as_ref();
    let registered_at = reg.map_or(0, |r| time::millis(r.registered_at.as_ref()));
    let is_return = reg.is_some_and(|r| r.is_return);
    let not_picked_up = matches!(
        status,
        Status::Unspecified | Status::Pending | Status::InfoReceived
    );
    let earliest = [registered_at, state.info_at]
        .into_iter()
        .filter(|t| *t > 0)
        .min();
    match rule {
        RuleId::NoPickup => (not_picked_up && !is_return).then_some(earliest).flatten(),
        RuleId::ReturnNotPickedUp => (not_picked_up && is_return).then_some(earliest).flatten(),
        RuleId::StalledInTransit => matches!(
            status,
            Status::PickedUp
                | Status::InTransit
                | Status::Customs
                | Status::Exception
                | Status::DeliveryAttemptFailed
                | Status::Returning
        )
        .then_some(state.last_event_at),
        RuleId::OutForDeliveryNotDelivered => {
            (status == Status::OutForDelivery).then_some(state.status_at)
        }
        RuleId::UncollectedAtPickupPoint => {
            (status == Status::AvailableForPickup).then_some(state.status_at)
        }
        RuleId::PromisedDateMissed => reg
            .map(|r| time::millis(r.promised_delivery_at.as_ref()))
            .filter(|p| *p > 0 && !rules::is_terminal(status)),
        RuleId::CarrierException => None,
    }
}

fn is_problem_state(state: &WaybillState) -> bool {
    let reason = Reason::try_from(state.reason).unwrap_or(Reason::Unspecified);
    state.events > 0 && rules::is_carrier_problem(state.status(), reason)
}

fn problem_reason(status: Status) -> Reason {
    match status {
        Status::DeliveryAttemptFailed => Reason::DeliveryAttemptFailed,
        Status::Returning | Status::Returned => Reason::ReturnToSender,
        Status::Cancelled => Reason::Cancelled,
        _ => Reason::Unspecified,
    }
}

fn carrier_and_level(wb: &Waybill) -> (String, String) {
    let carrier = keys::split_waybill_key(&wb.key)
        .map_or("", |(c, _)| c)
        .to_owned();
    let level = wb
        .registration
        .as_ref()
        .map(|r| r.service_level.clone())
        .unwrap_or_default();
    (carrier, level)
}

fn describe(rule: RuleId) -> &'static str {
    match rule {
        RuleId::NoPickup => "not picked up",
        RuleId::StalledInTransit => "no new scan",
        RuleId::OutForDeliveryNotDelivered => "out for delivery but not delivered",
        RuleId::UncollectedAtPickupPoint => "waiting at locker / pickup point",
        RuleId::PromisedDateMissed => "promised delivery time passed",
        RuleId::ReturnNotPickedUp => "return not picked up",
        RuleId::CarrierException => "carrier reported a problem",
    }
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

/// Encodes the compact state for Redis.
pub fn encode_state(state: &WaybillState) -> Vec<u8> {
    state.encode_to_vec()
}
