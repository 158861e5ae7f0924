//! Where the buyer's contact comes from and where it may be kept.
//!
//! The only source of a raw contact (name, phone, e-mail) is the merchant's
//! registration on `shipments`; the notifier never takes one from
//! `tracking.updates` (the detector strips them there, and an update is not the
//! merchant's word on who the buyer is). The raw contact is kept in exactly one
//! place: the registration stored in the order's `{o:O}:parcels` / `{o:O}:returns`
//! hashes, which expire with the order (`crate::lifecycle`). Held messages, the
//! open-alert index and everything the notifier logs or serves carry no raw
//! contact; a message is rendered with the contact masked.
//!
//! Push gateways deliver by looking the recipient up with the merchant (the
//! record key `<merchant_id>/<order_id>` names the order in the merchant's own
//! system): `buyer.notifications` carries only the masked contact and the
//! channels the contact allows, so a topic read by many gateways and kept for
//! the broker's retention holds no personal contact.

use trackstream_proto::keys;
use trackstream_proto::v1::{BuyerContact, Shipment};

/// `shipment` without the buyer's name, phone and e-mail (locale and time zone
/// stay: they choose the template and quiet hours, and identify nobody).
pub fn stripped(mut shipment: Shipment) -> Shipment {
    if let Some(buyer) = shipment.buyer.as_mut() {
        buyer.name.clear();
        buyer.phone.clear();
        buyer.email.clear();
    }
    shipment
}

/// Whether `buyer` holds a phone or an e-mail.
fn reachable(buyer: &BuyerContact) -> bool {
    !buyer.phone.is_empty() || !buyer.email.is_empty()
}

/// The contact a message about `waybill_keys` (sorted, lead parcel first) goes
/// to, from the order's stored registrations: the first listed parcel's
/// registration with a contact, else the order's registration with one that has
/// the lowest waybill key — never whichever was stored first, so every instance
/// and every batching picks the same. `None` when the merchant registered no
/// contact (the message still goes out, to the app channel only).
pub fn for_message(registrations: &[Shipment], waybill_keys: &[&str]) -> Option<BuyerContact> {
    let registered = |s: &&Shipment| s.buyer.as_ref().is_some_and(reachable);
    waybill_keys
        .iter()
        .find_map(|key| {
            registrations
                .iter()
                .filter(registered)
                .find(|s| keys::waybill_key(&s.carrier, &s.waybill) == *key)
        })
        .or_else(|| {
            registrations
                .iter()
                .filter(registered)
                .min_by_key(|s| keys::waybill_key(&s.carrier, &s.waybill))
        })
        .and_then(|s| s.buyer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(waybill: &str, phone: &str) -> Shipment {
        Shipment {
            carrier: "sf".into(),
            waybill: waybill.into(),
            buyer: Some(BuyerContact {
                name: "Li Lei".into(),
                phone: phone.into(),
                locale: "en".into(),
                time_zone: "Asia/Shanghai".into(),
                ..BuyerContact::default()
            }),
            ..Shipment::default()
        }
    }

    #[test]
    fn stripping_keeps_locale_and_zone_only() {
        let buyer = stripped(registration("SF1", "13812345678"))
            .buyer
            .unwrap_or_default();
        assert_eq!(
            buyer,
            BuyerContact {
                locale: "en".into(),
                time_zone: "Asia/Shanghai".into(),
                ..BuyerContact::default()
            }
        );
    }

    #[test]
    fn the_messages_own_parcel_wins_then_any_registered_contact() {
        let stored = vec![
            registration("SF2", "13800000002"),
            registration("SF1", "13800000001"),
            stripped(registration("SF3", "13800000003")),
        ];
        let phone = |keys: &[&str]| for_message(&stored, keys).map(|b| b.phone);
        assert_eq!(phone(&["sf:SF2"]).as_deref(), Some("13800000002"));
        assert_eq!(phone(&["sf:SF3", "sf:SF1"]).as_deref(), Some("13800000001"));
        assert_eq!(phone(&["sf:SF9"]).as_deref(), Some("13800000001"));
        assert_eq!(
            phone(&["sf:SF0"]).as_deref(),
            Some("13800000001"),
            "the lowest key, not the first stored"
        );
        assert_eq!(for_message(&stored[2..], &["sf:SF3"]), None);
    }
}
