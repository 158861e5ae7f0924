//! AfterShip: HMAC with rotating secrets, offsets in checkpoint times, subtags.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use trackstream_carriers::aftership::{self, Aftership};
use trackstream_carriers::signature::replay::{DEFAULT_TOLERANCE, ReplayWindow};
use trackstream_carriers::{
    ProviderAdapter, ProviderSettings, PushError, PushRequest, VerifiedPush,
};
use trackstream_proto::v1::{Reason, Status, TrackingEvent, ZoneSource};

/// The fixture's signed `ts`: when its push was sent.
const SENT_AT: i64 = 1_795_705_200;

/// The replay window as it was when the fixture's push arrived.
fn window_at(now: i64) -> ReplayWindow {
    ReplayWindow::new(
        chrono::DateTime::from_timestamp(now, 0).unwrap(),
        DEFAULT_TOLERANCE,
    )
}

/// `common::accept` with the clock at [`SENT_AT`] (shadows the glob import).
fn accept(
    _adapter: &dyn ProviderAdapter,
    headers: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    body: &[u8],
    settings: &ProviderSettings,
) -> Result<VerifiedPush, PushError> {
    let request = PushRequest {
        headers,
        query,
        body,
    };
    Aftership.accept_within(&request, settings, window_at(SENT_AT))
}

/// `common::accept_and_normalize` with the clock at [`SENT_AT`].
fn accept_and_normalize(
    adapter: &dyn ProviderAdapter,
    headers: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    body: &[u8],
    settings: &ProviderSettings,
) -> Vec<Vec<TrackingEvent>> {
    let push = accept(adapter, headers, query, body, settings).expect("push accepted");
    normalize_pushed(&Aftership, &push, settings)
}

const OLD: &str = "whsec-old-7d1e";
const NEW: &str = "whsec-new-93af";

fn as_settings() -> trackstream_carriers::ProviderSettings {
    settings(&[("current", NEW), ("previous", OLD)])
}

fn signed_with(body: &[u8], secret: &str) -> BTreeMap<String, String> {
    headers(&[("aftership-hmac-sha256", &aftership::sign(body, secret))])
}

#[test]
fn round_trip_honours_checkpoint_offsets() {
    let body = fixture("aftership.json");
    let verified = accept(
        &Aftership,
        &signed_with(&body, NEW),
        &BTreeMap::new(),
        &body,
        &as_settings(),
    )
    .expect("accepted");
    assert_eq!(verified.account, "current");
    let item = &verified.items[0];
    assert_eq!(
        (item.carrier.as_str(), item.waybill.as_str()),
        ("ups", "1Z999AA10123456784")
    );
    assert_eq!(
        item.envelope["event_id"],
        "6d3c1b8e-4f1a-4c4e-9d0e-2b9f3f7a1c55"
    );
    assert_eq!(item.envelope["event"], "tracking_update");

    let events = Aftership
        .normalize(&raw_scan(&Aftership, item, "current"), &as_settings())
        .unwrap();
    assert_eq!(events.len(), 3);
    let x = ZoneSource::ExplicitOffset;
    assert_event(
        &events[0],
        Status::InfoReceived,
        Reason::Unspecified,
        "InfoReceived_001",
        "2026-11-17T10:01:00Z",
        x,
        "LOUISVILLE, KY, US",
    );
    assert_event(
        &events[1],
        Status::PickedUp,
        Reason::Unspecified,
        "InTransit_002",
        "2026-11-17T22:45:00Z",
        x,
        "LOUISVILLE, KY, US",
    );
    // "2026-11-20T09:00:00-05:00" is 14:00 UTC, and the offset is the source zone.
    assert_event(
        &events[2],
        Status::OutForDelivery,
        Reason::Unspecified,
        "OutForDelivery_001",
        "2026-11-20T14:00:00Z",
        x,
        "SECAUCUS, NJ, US",
    );
    assert_eq!(events[2].source_time_zone, "-05:00");
    assert_eq!(events[2].carrier_sequence, 3);
    let location = events[2].location.as_ref().unwrap();
    assert_eq!(
        (
            location.city.as_str(),
            location.region.as_str(),
            location.country.as_str(),
            location.postal_code.as_str()
        ),
        ("SECAUCUS", "NJ", "USA", "07094")
    );
    let estimate = events[2].estimated_delivery_at.as_ref().unwrap();
    assert_eq!(
        trackstream_proto::time::from_proto(estimate).unwrap(),
        utc("2026-11-21T00:00:00Z")
    );
}

#[test]
fn every_secret_of_a_rotation_verifies() {
    let body = fixture("aftership.json");
    let verified = accept(
        &Aftership,
        &signed_with(&body, OLD),
        &BTreeMap::new(),
        &body,
        &as_settings(),
    )
    .unwrap();
    assert_eq!(verified.account, "previous");
}

fn with_checkpoints(
    checkpoints: Value,
    signed_by: Value,
) -> Vec<trackstream_proto::v1::TrackingEvent> {
    let body = serde_json::json!({"event": "tracking_update", "event_id": "e1", "ts": SENT_AT, "msg": {
        "slug": "fedex", "tracking_number": "7700", "signed_by": signed_by, "checkpoints": checkpoints}})
    .to_string()
    .into_bytes();
    let mut all = accept_and_normalize(
        &Aftership,
        &signed_with(&body, NEW),
        &BTreeMap::new(),
        &body,
        &as_settings(),
    );
    all.remove(0)
}

#[test]
fn subtags_map_and_unknown_codes_keep_the_tag_status() {
    let events = with_checkpoints(
        serde_json::json!([
            {"checkpoint_time": "2026-11-19T08:00:00+09:00", "tag": "Exception", "subtag": "Exception_007", "message": "Incorrect address"},
            {"checkpoint_time": "2026-11-19T09:00:00+09:00", "tag": "Exception", "subtag": "Exception_010"},
            {"checkpoint_time": "2026-11-19T10:00:00+09:00", "tag": "Exception", "subtag": "Exception_099", "message": "New thing"},
            {"checkpoint_time": "2026-11-19T11:00:00", "tag": "Teleported", "subtag": ""},
            {"checkpoint_time": "2026-11-19T12:00:00Z", "tag": "Delivered", "subtag": "Delivered_001", "city": "OSAKA", "country_iso3": "JPN"}
        ]),
        "K.TANAKA".into(),
    );
    assert_eq!(events[0].carrier, "fedex");
    assert_event(
        &events[0],
        Status::Exception,
        Reason::Address,
        "Exception_007",
        "2026-11-18T23:00:00Z",
        ZoneSource::ExplicitOffset,
        "",
    );
    assert_event(
        &events[1],
        Status::Returning,
        Reason::ReturnToSender,
        "Exception_010",
        "2026-11-19T00:00:00Z",
        ZoneSource::ExplicitOffset,
        "",
    );
    assert_event(
        &events[2],
        Status::Exception,
        Reason::Unknown,
        "Exception_099",
        "2026-11-19T01:00:00Z",
        ZoneSource::ExplicitOffset,
        "",
    );
    assert_eq!(events[2].raw_text, "New thing");
    // No offset: read in the configured zone (default UTC), and say so.
    assert_event(
        &events[3],
        Status::InTransit,
        Reason::Unknown,
        "Teleported",
        "2026-11-19T11:00:00Z",
        ZoneSource::ProviderDefault,
        "",
    );
    assert_event(
        &events[4],
        Status::Delivered,
        Reason::Unspecified,
        "Delivered_001",
        "2026-11-19T12:00:00Z",
        ZoneSource::ExplicitOffset,
        "OSAKA, JPN",
    );
    assert_eq!(
        events[4].proof_of_delivery.as_ref().unwrap().signer,
        "K.TANAKA"
    );
    assert!(events[3].proof_of_delivery.is_none());
}

#[test]
fn forged_and_missing_signatures_are_unauthorized() {
    let body = fixture("aftership.json");
    for h in [
        signed_with(&body, "whsec-guess"),
        BTreeMap::new(),
        headers(&[("aftership-hmac-sha256", "")]),
    ] {
        let result = accept(&Aftership, &h, &BTreeMap::new(), &body, &as_settings());
        assert!(
            matches!(result, Err(PushError::Unauthorized(_))),
            "{result:?}"
        );
    }
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let body = fixture("aftership.json");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", body[..body.len() - 1].to_vec()),
        ("invalid UTF-8", b"{\"msg\":\"\xed\xa0\x80\"}".to_vec()),
        ("no msg", br#"{"event":"tracking_update"}"#.to_vec()),
        ("no slug", br#"{"msg":{"tracking_number":"1"}}"#.to_vec()),
        (
            "checkpoint not an object",
            br#"{"msg":{"slug":"ups","tracking_number":"1","checkpoints":[5]}}"#.to_vec(),
        ),
    ];
    for (name, data) in cases {
        let result = accept(
            &Aftership,
            &signed_with(&data, NEW),
            &BTreeMap::new(),
            &data,
            &as_settings(),
        );
        assert!(
            matches!(result, Err(PushError::BadRequest(_))),
            "{name}: {result:?}"
        );
    }
}

fn push_sent_at(ts: Value) -> Vec<u8> {
    serde_json::json!({"event": "tracking_update", "event_id": "e2", "ts": ts, "msg": {
        "slug": "ups", "tracking_number": "1Z1", "checkpoints": []}})
    .to_string()
    .into_bytes()
}

fn accept_at(
    body: &[u8],
    headers: &BTreeMap<String, String>,
    now: i64,
) -> Result<VerifiedPush, PushError> {
    let mut settings = as_settings();
    settings.allow_unsigned = true;
    let request = PushRequest {
        headers,
        query: &BTreeMap::new(),
        body,
    };
    Aftership.accept_within(&request, &settings, window_at(now))
}

#[test]
fn signed_ts_outside_the_replay_window_is_unauthorized() {
    let body = fixture("aftership.json");
    let signed = signed_with(&body, NEW);
    // Captured and replayed an hour later, or dated ahead of our clock.
    for now in [SENT_AT + 3_600, SENT_AT + 301, SENT_AT - 301] {
        let result = accept_at(&body, &signed, now);
        match result {
            Err(PushError::Unauthorized(reason)) => assert!(reason.contains("ts"), "{reason}"),
            other => panic!("replay at {now} accepted: {other:?}"),
        }
    }
    // Inside the tolerance, either way.
    for now in [SENT_AT, SENT_AT + 300, SENT_AT - 300] {
        assert!(accept_at(&body, &signed, now).is_ok(), "at {now}");
    }
}

#[test]
fn signed_push_without_a_readable_ts_is_unauthorized() {
    for ts in [Value::Null, "soon".into(), "".into()] {
        let body = push_sent_at(ts.clone());
        let result = accept_at(&body, &signed_with(&body, NEW), SENT_AT);
        assert!(
            matches!(result, Err(PushError::Unauthorized(_))),
            "ts {ts}: {result:?}"
        );
    }
    // A ts sent as a string is still read.
    let body = push_sent_at(SENT_AT.to_string().into());
    assert!(accept_at(&body, &signed_with(&body, NEW), SENT_AT).is_ok());
}

#[test]
fn unsigned_pushes_are_not_dated_when_unsigned_is_allowed() {
    // An unsigned ts proves nothing; allow_unsigned is already full trust.
    let body = push_sent_at(Value::Null);
    assert!(accept_at(&body, &BTreeMap::new(), SENT_AT).is_ok());
}

/// Tracking API versions from 2024 name the country `country_region` and the
/// postal code `postal_code`; either name fills the location.
#[test]
fn newer_checkpoint_field_names_fill_the_location() {
    let events = with_checkpoints(
        serde_json::json!([{"checkpoint_time": "2026-11-19T12:00:00Z", "tag": "InTransit",
            "city": "HANGZHOU", "state": "Zhejiang", "country_region": "CHN", "postal_code": "310000"}]),
        Value::Null,
    );
    let location = events[0].location.as_ref().unwrap();
    assert_eq!(
        (
            location.text.as_str(),
            location.city.as_str(),
            location.region.as_str(),
            location.country.as_str(),
            location.postal_code.as_str()
        ),
        (
            "HANGZHOU, Zhejiang, CHN",
            "HANGZHOU",
            "Zhejiang",
            "CHN",
            "310000"
        )
    );
}
