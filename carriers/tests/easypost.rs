//! EasyPost: prefixed hex HMAC with an NFKD secret, tracker details, returns.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use trackstream_carriers::easypost::{self, Easypost};
use trackstream_carriers::{ProviderAdapter, PushError};
use trackstream_proto::v1::{Reason, Status, ZoneSource};

const SECRET: &str = "A1B2C3-webhook";

fn ep_settings() -> trackstream_carriers::ProviderSettings {
    settings(&[("prod", SECRET)])
}

fn signed(body: &[u8]) -> BTreeMap<String, String> {
    headers(&[("x-hmac-signature", &easypost::sign(body, SECRET))])
}

#[test]
fn round_trip_maps_return_to_sender() {
    let body = fixture("easypost.json");
    let verified = accept(
        &Easypost,
        &signed(&body),
        &BTreeMap::new(),
        &body,
        &ep_settings(),
    )
    .expect("accepted");
    assert_eq!(verified.account, "prod");
    let item = &verified.items[0];
    assert_eq!(
        (item.carrier.as_str(), item.waybill.as_str()),
        ("usps", "9400100000000000000001")
    );
    assert_eq!(item.envelope["id"], "evt_3c3f5d5a8a3c11ef9e7c");
    assert_eq!(item.envelope["description"], "tracker.updated");

    let events = Easypost
        .normalize(&raw_scan(&Easypost, item, "prod"), &ep_settings())
        .unwrap();
    assert_eq!(events.len(), 4);
    let x = ZoneSource::ExplicitOffset;
    let charleston = "CHARLESTON, SC, 29407, US";
    assert_event(
        &events[0],
        Status::InfoReceived,
        Reason::Unspecified,
        "pre_transit",
        "2026-11-14T18:00:00Z",
        x,
        "",
    );
    assert_event(
        &events[1],
        Status::InTransit,
        Reason::Unspecified,
        "in_transit",
        "2026-11-16T13:22:00Z",
        x,
        charleston,
    );
    assert_event(
        &events[2],
        Status::Exception,
        Reason::DeliveryAttemptFailed,
        "failure",
        "2026-11-18T16:10:00Z",
        x,
        charleston,
    );
    assert_event(
        &events[3],
        Status::Returning,
        Reason::ReturnToSender,
        "return_to_sender",
        "2026-11-20T14:45:00Z",
        x,
        charleston,
    );
    assert_eq!(events[3].raw_text, "Return to Sender Processed");
    assert_eq!(events[3].carrier_sequence, 4);
    assert!(events[3].estimated_delivery_at.is_none());
    let location = events[3].location.as_ref().unwrap();
    assert_eq!(
        (
            location.city.as_str(),
            location.region.as_str(),
            location.postal_code.as_str()
        ),
        ("CHARLESTON", "SC", "29407")
    );
}

#[test]
fn delivered_scans_carry_the_signer_and_estimate() {
    let body = serde_json::json!({"id": "evt_1", "description": "tracker.created", "result": {
        "tracking_code": "EZ1", "carrier": "UPS", "signed_by": "J SMITH",
        "est_delivery_date": "2026-11-21T00:00:00Z", "tracking_details": [
            {"datetime": "2026-11-21T15:02:00Z", "status": "delivered", "status_detail": "arrived_at_destination",
             "message": "Delivered", "tracking_location": null},
            {"datetime": "2026-11-21T16:00:00Z", "status": "teleported", "message": "?"}]}})
    .to_string()
    .into_bytes();
    let events = accept_and_normalize(
        &Easypost,
        &signed(&body),
        &BTreeMap::new(),
        &body,
        &ep_settings(),
    )
    .remove(0);
    assert_event(
        &events[0],
        Status::Delivered,
        Reason::Unspecified,
        "delivered",
        "2026-11-21T15:02:00Z",
        ZoneSource::ExplicitOffset,
        "",
    );
    assert_eq!(
        events[0].proof_of_delivery.as_ref().unwrap().signer,
        "J SMITH"
    );
    let estimate = events[0].estimated_delivery_at.as_ref().unwrap();
    assert_eq!(
        trackstream_proto::time::from_proto(estimate).unwrap(),
        utc("2026-11-21T00:00:00Z")
    );
    assert_event(
        &events[1],
        Status::InTransit,
        Reason::Unknown,
        "teleported",
        "2026-11-21T16:00:00Z",
        ZoneSource::ExplicitOffset,
        "",
    );
}

#[test]
fn secrets_are_nfkd_normalized_like_easyposts_sdks() {
    // "ﬁ" (U+FB01) decomposes to "fi" under NFKD; value computed with Python's
    // unicodedata + hmac, as easypost-python's validate_webhook does.
    let body = b"{}";
    assert_eq!(
        easypost::sign(body, "\u{fb01}-secret"),
        "hmac-sha256-hex=2a0389658eb8f52b2827622a7f9bfb5a2cf9ecc8434b14644f9a5d9416a88aa6"
    );
    let settings = settings(&[("ligature", "\u{fb01}-secret")]);
    let h = headers(&[("x-hmac-signature", &easypost::sign(body, "fi-secret"))]);
    let verified = accept(&Easypost, &h, &BTreeMap::new(), body, &settings).unwrap();
    assert_eq!(verified.account, "ligature");
}

#[test]
fn non_tracker_events_are_acknowledged_without_items() {
    let body = br#"{"id":"evt_2","description":"batch.updated","result":{"object":"Batch"}}"#;
    let verified = accept(
        &Easypost,
        &signed(body),
        &BTreeMap::new(),
        body,
        &ep_settings(),
    )
    .unwrap();
    assert!(verified.items.is_empty());
}

#[test]
fn forged_and_missing_signatures_are_unauthorized() {
    let body = fixture("easypost.json");
    let bare_hex = easypost::sign(&body, SECRET).replace("hmac-sha256-hex=", "");
    for h in [
        headers(&[("x-hmac-signature", &easypost::sign(&body, "guess"))]),
        headers(&[("x-hmac-signature", &bare_hex)]),
        BTreeMap::new(),
    ] {
        let result = accept(&Easypost, &h, &BTreeMap::new(), &body, &ep_settings());
        assert!(
            matches!(result, Err(PushError::Unauthorized(_))),
            "{result:?}"
        );
    }
    let upper = headers(&[(
        "x-hmac-signature",
        &easypost::sign(&body, SECRET).to_uppercase(),
    )]);
    assert!(accept(&Easypost, &upper, &BTreeMap::new(), &body, &ep_settings()).is_ok());
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let body = fixture("easypost.json");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", body[..body.len() - 2].to_vec()),
        ("invalid UTF-8", b"{\"description\":\"tracker.updated\xff\"}".to_vec()),
        ("no result", br#"{"description":"tracker.updated"}"#.to_vec()),
        ("no tracking_code", br#"{"description":"tracker.updated","result":{"carrier":"USPS"}}"#.to_vec()),
        ("details not a list", br#"{"description":"tracker.updated","result":{"carrier":"USPS","tracking_code":"1","tracking_details":"x"}}"#.to_vec()),
    ];
    for (name, data) in cases {
        let result = accept(
            &Easypost,
            &signed(&data),
            &BTreeMap::new(),
            &data,
            &ep_settings(),
        );
        assert!(
            matches!(result, Err(PushError::BadRequest(_))),
            "{name}: {result:?}"
        );
    }
}
