//! The engine's data: a waybill's compact state (stored in Redis as protobuf),
//! the loaded waybill around it, and what goes in and comes out of a fold.
//! Apart from the fold itself so the stored shape reads in one place.

use prost::Message as _;
use trackstream_proto::v1::{
    Alert, DeliveryPrediction, Location, Shipment, ShipmentUpdate, Status, TrackingEvent,
};

use super::event_at;
use super::registration::RefusedRegistration;
use crate::rules::RuleId;

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
    /// When the open alert opened (the threshold it passed), ms.
    #[prost(int64, tag = "5")]
    pub opened_at: i64,
    /// Armed deadline, ms (0 = no timer): the first millisecond past the
    /// threshold (thresholds are strict; see `evaluate::past`).
    #[prost(int64, tag = "6")]
    pub deadline: i64,
    /// The anchor the deadline was computed from (for the carrier
    /// exception: the last scan, which its escalation counts from).
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
    /// The scans received, as updates see them (`current_status`, `late`);
    /// independent of batching and of the fold's clock (see `received.rs`).
    /// `None` in a state stored before it existed.
    #[prost(message, optional, tag = "11")]
    pub received: Option<super::received::Received>,
    /// The parcel's first delivery prediction, kept for every later update
    /// (on time against the first prediction is scored on it).
    #[prost(message, optional, tag = "12")]
    pub first_prediction: Option<DeliveryPrediction>,
    /// When the promise becomes likely missed, from the latest prediction
    /// (ms, 0 = not at risk): the anchor of `promise_at_risk`.
    #[prost(int64, tag = "13")]
    pub risk_at: i64,
    /// Where the newest scan was (its location without the street-level
    /// text beyond the carrier's facility name): alerts carry it so the
    /// incident detector can group stuck parcels by place.
    #[prost(message, optional, tag = "14")]
    pub place: Option<Location>,
}

impl WaybillState {
    /// Current status as an enum.
    pub fn status(&self) -> Status {
        Status::try_from(self.status).unwrap_or(Status::Unspecified)
    }

    pub(super) fn slot_mut(&mut self, rule: RuleId) -> &mut RuleSlot {
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

/// Encodes the compact state for Redis.
pub fn encode_state(state: &WaybillState) -> Vec<u8> {
    state.encode_to_vec()
}
