//! What an update says about its waybill: `current_status` and `late`.
//!
//! The fold (the alert state) runs on the detector's clock, which is the wall
//! clock or the partition's watermark *at processing time*: how far it got when
//! a scan arrives depends on how the scans were batched and how far behind the
//! consumer was. An update computed from the fold would therefore say something
//! else in a catch-up than live (a PICKED_UP update saying DELIVERED because the
//! whole backlog was folded first). Updates are computed from this view instead,
//! which depends only on the waybill's scans in arrival order:
//!
//! - its clock is the newest `received_at` (ingest's receipt time) of the scans
//!   received so far — a scan without one counts as received at its own time.
//!   That is the clock a detector processing every scan the instant it was
//!   received would have had, so the view is the "ideal live run";
//! - a received scan *vouches* once it is dated at or before that clock; one
//!   dated after it (a future-dated scan: a carrier clock bug or a zone error
//!   within normalize's skew) waits until a later receipt reaches its time, like
//!   the fold's `pending` list but without the processing clock;
//! - `current_status` is the winner among the vouched scans, by the engine's
//!   precedence (terminal beats non-terminal, then later `occurred_at`, then
//!   progress rank) with the status itself as the last tie-break, so the winner
//!   of a set of scans never depends on the order they were seen in;
//! - `late` means older than the newest scan that vouched *before* it arrived.
//!
//! The view is stored in the waybill's state ([`WaybillState::received`]); a
//! state written before it existed is converted on the next scan.

use trackstream_proto::time;
use trackstream_proto::v1::{Milestones, Shipment, Status, TrackingEvent};

use super::{WaybillState, event_at, fold_key};
use crate::rules;

/// The scans a waybill received, as its updates see them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Received {
    /// Receipt clock (ms): the newest `received_at` seen (see the module doc).
    #[prost(int64, tag = "1")]
    pub clock: i64,
    /// Winning status among the vouched scans.
    #[prost(int32, tag = "2")]
    pub status: i32,
    /// `occurred_at` (ms) of the winning scan.
    #[prost(int64, tag = "3")]
    pub status_at: i64,
    /// Newest `occurred_at` (ms) among the vouched scans.
    #[prost(int64, tag = "4")]
    pub newest: i64,
    /// How many scans vouched.
    #[prost(uint32, tag = "5")]
    pub vouched: u32,
    /// Received scans dated after `clock`, in fold order.
    #[prost(message, repeated, tag = "6")]
    pub waiting: Vec<TrackingEvent>,
    /// Earliest vouched scan at or past pickup (ms, 0 = none).
    #[prost(int64, tag = "7")]
    pub picked_up_at: i64,
    /// Latest vouched out-for-delivery scan (ms, 0 = none).
    #[prost(int64, tag = "8")]
    pub out_for_delivery_at: i64,
    /// Vouched failed delivery attempts.
    #[prost(uint32, tag = "9")]
    pub failed_attempts: u32,
    /// A carrier exception vouched.
    #[prost(bool, tag = "10")]
    pub exception: bool,
    /// The provider's estimate carried by the newest vouched scan that had
    /// one (ms, 0 = none), and that scan's time.
    #[prost(int64, tag = "11")]
    pub provider_estimate: i64,
    /// See `provider_estimate`.
    #[prost(int64, tag = "12")]
    pub provider_estimate_from: i64,
}

/// What one scan's update says.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The waybill's status after the scan.
    pub status: Status,
    /// Older than a scan that vouched before it.
    pub late: bool,
    /// The scan that became the winner at this step, if the winner changed.
    pub won: Option<TrackingEvent>,
    /// The parcel's milestones after the scan.
    pub milestones: Milestones,
}

impl Received {
    /// The view of a state stored before the view existed: its folded scans
    /// vouched, its pending ones received after them.
    pub fn from_state(state: &WaybillState) -> Self {
        let mut view = Received::default();
        if state.events > 0 {
            view.clock = state.last_event_at;
            view.status = state.status;
            view.status_at = state.status_at;
            view.newest = state.last_event_at;
            view.vouched = state.events;
        }
        for event in &state.pending {
            view.receive(event);
        }
        view
    }

    /// The winning status (`UNSPECIFIED` while nothing vouched).
    pub fn status(&self) -> Status {
        Status::try_from(self.status).unwrap_or(Status::Unspecified)
    }

    /// Receives one scan (not a duplicate) and says what its update says.
    pub fn receive(&mut self, event: &TrackingEvent) -> Seen {
        let at = event_at(event);
        self.clock = self.clock.max(received_at(event));
        // Scans received earlier that the clock now reaches vouch first.
        let mut won = None;
        while self
            .waiting
            .first()
            .is_some_and(|w| event_at(w) <= self.clock)
        {
            let earlier = self.waiting.remove(0);
            if self.vouch(&earlier) {
                won = Some(earlier);
            }
        }
        let late = self.vouched > 0 && at < self.newest;
        if at <= self.clock {
            if self.vouch(event) {
                won = Some(event.clone());
            }
        } else {
            let key = fold_key(event);
            let index = self.waiting.partition_point(|w| fold_key(w) <= key);
            self.waiting.insert(index, event.clone());
        }
        Seen {
            status: self.status(),
            late,
            won,
            milestones: self.milestones(),
        }
    }

    /// The milestones the vouched scans say (what delivery statistics and
    /// predictions are made of).
    pub fn milestones(&self) -> Milestones {
        let ts = |ms: i64| (ms != 0).then(|| time::from_millis(ms));
        Milestones {
            picked_up_at: ts(self.picked_up_at),
            out_for_delivery_at: ts(self.out_for_delivery_at),
            delivered_at: ts(self.status_at)
                .filter(|_| self.vouched > 0 && self.status() == Status::Delivered),
            failed_attempts: self.failed_attempts,
            exception: self.exception,
            provider_estimated_delivery_at: ts(self.provider_estimate),
            newest_scan_at: ts(self.newest).filter(|_| self.vouched > 0),
        }
    }

    /// Whether the refund trigger is due: a return whose winning scan is a
    /// delivery of this parcel (not dated before the registration's join window).
    pub fn return_delivered(&self, reg: &Shipment, window: i64) -> bool {
        reg.is_return
            && self.vouched > 0
            && self.status() == Status::Delivered
            && self.status_at >= super::registration::join_from(reg, window)
    }

    /// Counts a scan among the vouched; true when it becomes the winner.
    fn vouch(&mut self, event: &TrackingEvent) -> bool {
        let at = event_at(event);
        let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
        let wins =
            self.vouched == 0 || precedence(status, at) > precedence(self.status(), self.status_at);
        if wins {
            self.status = status as i32;
            self.status_at = at;
        }
        self.newest = if self.vouched == 0 {
            at
        } else {
            self.newest.max(at)
        };
        self.vouched = self.vouched.saturating_add(1);
        self.note_milestone(event, status, at);
        wins
    }

    /// Moves the milestones by one vouched scan.
    fn note_milestone(&mut self, event: &TrackingEvent, status: Status, at: i64) {
        let picked_up = matches!(
            status,
            Status::PickedUp
                | Status::InTransit
                | Status::Customs
                | Status::OutForDelivery
                | Status::AvailableForPickup
                | Status::DeliveryAttemptFailed
                | Status::Delivered
        );
        if picked_up && (self.picked_up_at == 0 || at < self.picked_up_at) {
            self.picked_up_at = at;
        }
        if status == Status::OutForDelivery && at > self.out_for_delivery_at {
            self.out_for_delivery_at = at;
        }
        self.failed_attempts = self
            .failed_attempts
            .saturating_add(u32::from(status == Status::DeliveryAttemptFailed));
        self.exception |= status == Status::Exception;
        let estimate = time::millis(event.estimated_delivery_at.as_ref());
        if estimate > 0 && (self.provider_estimate == 0 || at >= self.provider_estimate_from) {
            self.provider_estimate = estimate;
            self.provider_estimate_from = at;
        }
    }
}

/// The engine's status precedence (`wins` in `evaluate.rs`), completed with the
/// status as a tie-break: same-rank statuses at the same instant (in transit
/// and exception, say) then have one winner whatever the order they came in.
fn precedence(status: Status, at: i64) -> (bool, i64, i32, i32) {
    (
        rules::is_terminal(status),
        at,
        rules::rank(status),
        status as i32,
    )
}

/// When ingest received the scan; its own time when that is unknown.
pub fn received_at(event: &TrackingEvent) -> i64 {
    match event.received_at.as_ref() {
        Some(received) => time::millis(Some(received)),
        None => event_at(event),
    }
}

/// The order in which a first registration replays the stored scans: receipt
/// time, then fold order. Scans of one waybill reach the detector in the order
/// ingest received their pushes, and adapters emit a push's scans oldest
/// first, so this is the arrival order a live run saw — the replay then says
/// what live updates said (including `late` for a scan a later push inserted
/// into the trace).
pub fn replay_key(event: &TrackingEvent) -> (i64, (i64, i32, &str)) {
    (received_at(event), fold_key(event))
}
