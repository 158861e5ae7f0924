//! What each canonical status means to the rules: final or not, its progress
//! rank, whether it is a carrier-reported problem, and which silence rule
//! watches a parcel in it.

use trackstream_proto::v1::{Reason, Status};

use super::RuleId;

/// Whether a status is final: nothing moves a parcel out of it.
pub fn is_terminal(status: Status) -> bool {
    matches!(
        status,
        Status::Delivered | Status::Returned | Status::Cancelled | Status::Expired
    )
}

/// Progress rank for tie-breaking scans with the same time.
pub fn rank(status: Status) -> i32 {
    match status {
        Status::Unspecified => 0,
        Status::Pending => 1,
        Status::InfoReceived => 2,
        Status::PickedUp => 3,
        Status::InTransit | Status::Customs | Status::Exception => 4,
        Status::OutForDelivery | Status::DeliveryAttemptFailed => 5,
        Status::AvailableForPickup => 6,
        Status::Returning => 7,
        Status::Delivered | Status::Returned | Status::Cancelled | Status::Expired => 8,
    }
}

/// The silence rule that watches a parcel in `status` while no carrier
/// exception is open (while one is, the exception alone watches: its silence
/// escalates it). `None`: no silence rule — not picked up yet (the pickup
/// rules watch, anchored at registration), or terminal. The problem statuses
/// fall back to the transit stall only when no exception alert is open, i.e.
/// when `carrier_exception` is disabled. `docs/RULES.md` has this table.
pub fn silence_rule(status: Status) -> Option<RuleId> {
    match status {
        Status::PickedUp
        | Status::InTransit
        | Status::DeliveryAttemptFailed
        | Status::Exception
        | Status::Returning => Some(RuleId::StalledInTransit),
        Status::Customs => Some(RuleId::StalledInCustoms),
        Status::OutForDelivery => Some(RuleId::OutForDeliveryNotDelivered),
        Status::AvailableForPickup => Some(RuleId::UncollectedAtPickupPoint),
        Status::Unspecified
        | Status::Pending
        | Status::InfoReceived
        | Status::Delivered
        | Status::Returned
        | Status::Cancelled
        | Status::Expired => None,
    }
}

/// Whether an event is a carrier-reported problem that raises an alert at once.
pub fn is_carrier_problem(status: Status, reason: Reason) -> bool {
    matches!(
        status,
        Status::DeliveryAttemptFailed
            | Status::Exception
            | Status::Returning
            | Status::Returned
            | Status::Cancelled
    ) || matches!(
        reason,
        Reason::Address
            | Reason::Refused
            | Reason::RecipientUnreachable
            | Reason::Damaged
            | Reason::Lost
            | Reason::CustomsHold
            | Reason::CustomsDocuments
            | Reason::CustomsDuties
            | Reason::DeliveryAttemptFailed
            | Reason::Cancelled
            | Reason::ReturnToSender
    )
}
