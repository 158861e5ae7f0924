//! The detection engine: a pure state machine per waybill.
//!
//! Inputs are canonical events, shipment registrations and fired timers; the
//! engine mutates a [`Waybill`] snapshot and records [`Effects`] (history entries,
//! updates and alerts to emit). No I/O happens here, so every rule is unit-tested
//! without Redis or Kafka, and `store` commits the result atomically.
//!
//! Ordering rules (DESIGN.md "Order"):
//! - the waybill's status is the status of the *winning* event, where a terminal
//!   event beats any non-terminal one, then later `occurred_at` wins, then higher
//!   progress rank. This is independent of arrival order, so duplicates and
//!   shuffles converge on the same status, and nothing leaves a terminal state;
//! - a late scan (older than the latest known) is kept in history and emitted as an
//!   update flagged `late`, but moves nothing;
//! - before an event at time `t` is applied, every armed deadline `<= t` fires
//!   first, so a backlog replayed after an outage yields the alerts that living
//!   through it would have.

use prost::Message as _;
use sha2::Digest as _;
use trackstream_proto::v1::{
    Alert, AlertState, Reason, Severity, Shipment, ShipmentUpdate, Status, TrackingEvent,
    UpdateKind,
};
use trackstream_proto::{keys, time};

use crate::rules::{self, RuleId, RulesConfig};

/// Per-rule alert bookkeeping of one waybill (stored inside [`WaybillState`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuleSlot {
    /// Rule name.
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
    /// Latest `occurred_at` (ms) of any event.
    #[prost(int64, tag = "3")]
    pub last_event_at: i64,
    /// First time a pending / info-received event was seen (ms).
    #[prost(int64, tag = "4")]
    pub info_at: i64,
    /// Events applied (duplicates excluded).
    #[prost(uint32, tag = "5")]
    pub events: u32,
    /// Reason of the winning event.
    #[prost(int32, tag = "6")]
    pub reason: i32,
    /// Alert slots, one per rule that ever armed.
    #[prost(message, repeated, tag = "7")]
    pub slots: Vec<RuleSlot>,
}

impl WaybillState {
    /// Current status as an enum.
    pub fn status(&self) -> Status {
        Status::try_from(self.status).unwrap_or(Status::Unspecified)
    }

    fn slot_mut(&mut self, rule: RuleId) -> &mut RuleSlot {
        let index = match self.slots.iter().position(|s| s.rule == rule.name()) {
            Some(index) => index,
            None => {
                self.slots.push(RuleSlot {
                    rule: rule.name().to_owned(),
                    ..RuleSlot::default()
                });
                self.slots.len() - 1
            }
        };
        &mut self.slots[index]
    }

    /// The slot of `rule`, if it ever armed.
    pub fn slot(&self, rule: RuleId) -> Option<&RuleSlot> {
        self.slots.iter().find(|s| s.rule == rule.name())
    }

    /// Armed deadlines, for the timer set.
    pub fn deadlines(&self) -> impl Iterator<Item = (&str, i64)> {
        self.slots
            .iter()
            .filter(|s| s.deadline > 0)
            .map(|s| (s.rule.as_str(), s.deadline))
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
}

/// An output waiting to be written to Kafka (through the outbox).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// An order update; its sequence number is assigned at delivery.
    Update {
        /// Idempotency id: `u:<event_id>` or `r:<event_id>` (return received).
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
}

/// The rules engine.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RulesConfig,
}

impl Engine {
    /// An engine with `rules`.
    pub fn new(rules: RulesConfig) -> Self {
        Engine { rules }
    }

    /// Applies a new (not duplicate) event.
    pub fn apply_event(&self, wb: &mut Waybill, event: TrackingEvent, fx: &mut Effects) {
        let at = time::millis(event.occurred_at.as_ref());
        self.fire_due(wb, at, fx);

        let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
        let reason = Reason::try_from(event.reason).unwrap_or(Reason::Unspecified);
        let state = &mut wb.state;
        let late = state.events > 0 && at < state.last_event_at;
        if wins(status, at, state) {
            state.status = status as i32;
            state.status_at = at;
            state.reason = reason as i32;
        }
        state.last_event_at = state.last_event_at.max(at);
        state.events = state.events.saturating_add(1);
        if matches!(status, Status::Pending | Status::InfoReceived)
            && (state.info_at == 0 || at < state.info_at)
        {
            state.info_at = at;
        }
        let current = state.status();

        if let Some(reg) = &wb.registration {
            fx.outputs
                .push(update("u", reg, &event, current, late, UpdateKind::Scan));
            if reg.is_return && status == Status::Delivered && current == Status::Delivered {
                fx.outputs.push(update(
                    "r",
                    reg,
                    &event,
                    current,
                    late,
                    UpdateKind::ReturnReceived,
                ));
            }
        }
        self.carrier_exception(wb, status, reason, at, late, fx);
        fx.history.push(event);
        self.evaluate(wb, wb.state.last_event_at.max(at), fx);
    }

    /// Joins a registration. On first join, the waybill's buffered history is
    /// emitted as updates (in event-time order) so the order's stream is complete.
    pub fn apply_registration(
        &self,
        wb: &mut Waybill,
        shipment: Shipment,
        history: &mut [TrackingEvent],
        now: i64,
        fx: &mut Effects,
    ) {
        let first_join = wb.registration.is_none();
        if wb.registration.as_ref() == Some(&shipment) {
            return;
        }
        wb.registration = Some(shipment);
        wb.registration_changed = true;
        if first_join && let Some(reg) = &wb.registration {
            history.sort_by_key(|e| (time::millis(e.occurred_at.as_ref()), e.event_id.clone()));
            let current = wb.state.status();
            let mut latest = i64::MIN;
            for event in history.iter() {
                let at = time::millis(event.occurred_at.as_ref());
                let late = at < latest;
                latest = latest.max(at);
                fx.outputs
                    .push(update("u", reg, event, current, late, UpdateKind::Scan));
                if reg.is_return
                    && event.status == Status::Delivered as i32
                    && current == Status::Delivered
                {
                    fx.outputs.push(update(
                        "r",
                        reg,
                        event,
                        current,
                        late,
                        UpdateKind::ReturnReceived,
                    ));
                }
            }
        }
        self.evaluate(wb, now.max(wb.state.last_event_at), fx);
    }

    /// Fires every deadline of `wb` that is `<= now` (a fired timer, or an
    /// overdue one after a restart), then re-evaluates.
    pub fn fire_due(&self, wb: &mut Waybill, now: i64, fx: &mut Effects) {
        // Each firing moves a slot's deadline strictly forward (next tier) or
        // clears it, so this terminates; the bound guards against bad config.
        for _ in 0..64 {
            let due = wb
                .state
                .slots
                .iter()
                .filter(|s| s.deadline > 0 && s.deadline <= now)
                .min_by_key(|s| s.deadline)
                .and_then(|s| RuleId::from_name(&s.rule).map(|r| (r, s.deadline)));
            let Some((rule, deadline)) = due else { break };
            self.fire(wb, rule, deadline, fx);
        }
    }

    fn fire(&self, wb: &mut Waybill, rule: RuleId, deadline: i64, fx: &mut Effects) {
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
        let next = usize::try_from(slot.tier + 1)
            .ok()
            .and_then(|i| tiers.get(i));
        slot.deadline = next.map_or(0, |t| slot.anchor.saturating_add(t.0).max(deadline + 1));
        let slot = slot.clone();
        let severity = config.severity(slot.tier);
        fx.outputs.push(Output::Alert(Box::new(
            self.alert(wb, rule, &slot, state, severity, deadline),
        )));
    }

    /// Resolves, re-arms or disarms every timer rule after a change.
    fn evaluate(&self, wb: &mut Waybill, at: i64, fx: &mut Effects) {
        for rule in RuleId::TIMED {
            let config = self.rules.timer(rule);
            let anchor = config.and_then(|_| anchor(rule, wb));
            let (carrier, level) = carrier_and_level(wb);
            let Some(slot) = wb.state.slots.iter().position(|s| s.rule == rule.name()) else {
                if let (Some(config), Some(anchor)) = (config, anchor) {
                    let first = config
                        .tiers_for(&carrier, &level)
                        .first()
                        .map_or(0, |t| t.0);
                    let slot = wb.state.slot_mut(rule);
                    slot.anchor = anchor;
                    slot.deadline = anchor.saturating_add(first).max(1);
                }
                continue;
            };
            let current = wb.state.slots[slot].clone();
            if current.open && anchor != Some(current.anchor) {
                let severity = config.map_or(Severity::Warning, |c| c.severity(current.tier));
                let mut resolved = current.clone();
                resolved.open = false;
                resolved.deadline = 0;
                wb.state.slots[slot] = resolved.clone();
                fx.outputs.push(Output::Alert(Box::new(self.alert(
                    wb,
                    rule,
                    &current,
                    AlertState::Resolved,
                    severity,
                    at,
                ))));
            }
            let first = config
                .map(|c| c.tiers_for(&carrier, &level))
                .and_then(|t| t.first())
                .map_or(0, |t| t.0);
            let slot = &mut wb.state.slots[slot];
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
            last_event_at: (wb.state.last_event_at > 0)
                .then(|| time::from_millis(wb.state.last_event_at)),
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

fn update(
    prefix: &str,
    reg: &Shipment,
    event: &TrackingEvent,
    current: Status,
    late: bool,
    kind: UpdateKind,
) -> Output {
    Output::Update {
        id: format!("{prefix}:{}", event.event_id),
        update: Box::new(ShipmentUpdate {
            seq: 0,
            order_id: reg.order_id.clone(),
            merchant_id: reg.merchant_id.clone(),
            event: Some(event.clone()),
            current_status: current as i32,
            late,
            kind: kind as i32,
            shipment: Some(reg.clone()),
        }),
    }
}

/// Encodes the compact state for Redis.
pub fn encode_state(state: &WaybillState) -> Vec<u8> {
    state.encode_to_vec()
}
