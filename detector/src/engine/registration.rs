//! How the engine takes a registration in.
//!
//! - **Contacts stay out.** The detector needs no buyer name, phone or e-mail:
//!   it stores the registration with every waybill and embeds it in each
//!   `ShipmentUpdate` on `tracking.updates`, a topic offered to platform teams.
//!   So contacts are stripped on the way in ([`without_contacts`]); locale and
//!   time zone stay (they are not identifying and describe the order). The
//!   notifier, which delivers buyer messages, reads contacts from `shipments`.
//! - **Ownership.** A waybill belongs to the merchant whose registration joined
//!   it first. Ingest refuses another merchant's registration synchronously
//!   (409); the engine refuses it again, so a record that reached `shipments`
//!   anyway (an older ingest, a replay, a hand-written record) cannot take the
//!   parcel over: state unchanged, nothing emitted, reported in
//!   [`super::Effects::refused_registrations`] for the service to dead-letter.
//! - **Identity.** Ingest defaults `registered_at` to the request time, so a
//!   merchant repeating its registration sends a later `registered_at` each
//!   time. The registration keeps the earliest one, and a repeat that changes
//!   nothing else is no change at all: it does not move the no-pickup clock.
//! - **Join window.** A carrier may reuse a waybill number, and a merchant may
//!   register a number that already has scans of an earlier parcel. A
//!   registration therefore joins only scans dated from `rules.join_window`
//!   before its `registered_at` ([`joins`]); older scans never reach its order.

use trackstream_proto::time;
use trackstream_proto::v1::{BuyerContact, Shipment, TrackingEvent};

/// A registration the engine refused because another merchant owns the waybill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRegistration {
    /// Index of the registration in the `inputs` given to
    /// [`super::Engine::apply`], so the service can find the record it came in.
    pub input: usize,
    /// Its ordinal among the registrations of those `inputs` (0 = the first).
    /// Unlike [`RefusedRegistration::input`] it does not shift when the
    /// caller drops duplicate events from the inputs.
    pub registration: usize,
    /// The merchant that sent it.
    pub merchant_id: String,
    /// Its order id.
    pub order_id: String,
    /// The merchant that owns the waybill.
    pub owner: String,
}

impl RefusedRegistration {
    /// The dead-letter cause for a refused registration.
    pub const CAUSE: &'static str = "not_owner";
}

/// What an arriving registration does to the stored one.
#[derive(Debug)]
pub(super) enum Intake {
    /// No registration yet: this one joins the waybill.
    First(Shipment),
    /// The owner repeated its registration: nothing changes.
    Unchanged,
    /// The owner changed it: this replaces the stored one.
    Changed(Shipment),
    /// Another merchant's registration.
    Refused(RefusedRegistration),
}

/// Where an arriving registration sits in the inputs (see [`RefusedRegistration`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Position {
    /// Index in the inputs.
    pub input: usize,
    /// Ordinal among the inputs' registrations.
    pub registration: usize,
}

/// Decides what the registration `arriving` does, given the stored
/// registration (already without contacts).
pub(super) fn intake(stored: Option<&Shipment>, arriving: &Shipment, at: Position) -> Intake {
    let mut arriving = without_contacts(arriving);
    let Some(stored) = stored else {
        return Intake::First(arriving);
    };
    if arriving.merchant_id != stored.merchant_id {
        return Intake::Refused(RefusedRegistration {
            input: at.input,
            registration: at.registration,
            merchant_id: arriving.merchant_id,
            order_id: arriving.order_id,
            owner: stored.merchant_id.clone(),
        });
    }
    keep_earliest(stored, &mut arriving);
    if &arriving == stored {
        Intake::Unchanged
    } else {
        Intake::Changed(arriving)
    }
}

/// Gives `arriving` the stored `registered_at` when that is earlier (or its
/// own is unset): the no-pickup clock starts at the first registration.
fn keep_earliest(stored: &Shipment, arriving: &mut Shipment) {
    let at = |s: &Shipment| time::millis(s.registered_at.as_ref());
    let (first, now) = (at(stored), at(arriving));
    if first != 0 && (now == 0 || first < now) {
        arriving.registered_at = stored.registered_at;
    }
}

/// The registration as the detector keeps it: buyer name, phone and e-mail
/// removed; locale and time zone kept.
pub fn without_contacts(shipment: &Shipment) -> Shipment {
    Shipment {
        buyer: shipment.buyer.as_ref().map(|b| BuyerContact {
            name: String::new(),
            phone: String::new(),
            email: String::new(),
            locale: b.locale.clone(),
            time_zone: b.time_zone.clone(),
        }),
        ..shipment.clone()
    }
}

/// Whether a registration still carries a contact (stored by an older version).
pub(super) fn has_contacts(shipment: &Shipment) -> bool {
    shipment
        .buyer
        .as_ref()
        .is_some_and(|b| !(b.name.is_empty() && b.phone.is_empty() && b.email.is_empty()))
}

/// The earliest `occurred_at` (ms) whose scans join `registration`:
/// `registered_at - window`, or everything when `registered_at` is unset.
pub fn join_from(registration: &Shipment, window: i64) -> i64 {
    match time::millis(registration.registered_at.as_ref()) {
        0 => i64::MIN,
        at => at.saturating_sub(window),
    }
}

/// Whether `event` belongs to the order of `registration` (see [`join_from`]).
pub fn joins(registration: &Shipment, window: i64, event: &TrackingEvent) -> bool {
    time::millis(event.occurred_at.as_ref()) >= join_from(registration, window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(merchant: &str, at: i64) -> Shipment {
        Shipment {
            order_id: "O-1".into(),
            merchant_id: merchant.into(),
            carrier: "sf".into(),
            waybill: "SF1".into(),
            buyer: Some(BuyerContact {
                name: "Li Lei".into(),
                phone: "13812345678".into(),
                email: "li@example.com".into(),
                locale: "en".into(),
                time_zone: "Asia/Shanghai".into(),
            }),
            registered_at: (at != 0).then(|| time::from_millis(at)),
            ..Default::default()
        }
    }

    const FIRST: Position = Position {
        input: 0,
        registration: 0,
    };

    #[test]
    fn a_repeat_keeps_the_earliest_registered_at_and_is_unchanged() {
        let stored = without_contacts(&reg("m-a", 1_000));
        assert!(matches!(
            intake(Some(&stored), &reg("m-a", 9_000), FIRST),
            Intake::Unchanged
        ));
        // An unset registered_at on either side is no change of the clock.
        assert!(matches!(
            intake(Some(&stored), &reg("m-a", 0), FIRST),
            Intake::Unchanged
        ));
        match intake(
            Some(&without_contacts(&reg("m-a", 0))),
            &reg("m-a", 5),
            FIRST,
        ) {
            Intake::Changed(taken) => assert_eq!(time::millis(taken.registered_at.as_ref()), 5),
            other => panic!("{other:?}"),
        }
        match intake(Some(&stored), &reg("m-a", 500), FIRST) {
            Intake::Changed(taken) => {
                assert_eq!(time::millis(taken.registered_at.as_ref()), 500);
            }
            other => panic!("an earlier registered_at moves the clock earlier: {other:?}"),
        }
    }

    #[test]
    fn another_merchant_is_refused_and_contacts_never_pass() {
        let stored = without_contacts(&reg("m-a", 1_000));
        match intake(Some(&stored), &reg("m-b", 1_000), FIRST) {
            Intake::Refused(refused) => assert_eq!(refused.owner, "m-a"),
            other => panic!("{other:?}"),
        }
        match intake(None, &reg("m-b", 1_000), FIRST) {
            Intake::First(taken) => {
                assert!(!has_contacts(&taken));
                let buyer = taken.buyer.unwrap_or_default();
                assert_eq!(
                    (buyer.locale.as_str(), buyer.time_zone.as_str()),
                    ("en", "Asia/Shanghai")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_join_window_is_measured_back_from_registered_at() {
        assert_eq!(join_from(&reg("m-a", 10_000), 3_000), 7_000);
        assert_eq!(join_from(&reg("m-a", 0), 3_000), i64::MIN, "unset: all");
        assert_eq!(join_from(&reg("m-a", i64::MIN + 1), i64::MAX), i64::MIN);
    }
}
