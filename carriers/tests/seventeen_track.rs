//! 17TRACK: header signature, UTC fields, merged provider timelines.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use trackstream_carriers::seventeen_track::{self, SeventeenTrack};
use trackstream_carriers::{ProviderAdapter, PushError};
use trackstream_proto::v1::{Reason, Status, ZoneSource};

const KEY: &str = "9F2B5E0C8D7A4B3C";

fn st_settings() -> trackstream_carriers::ProviderSettings {
    settings(&[("main", KEY)])
}

fn signed(body: &[u8]) -> BTreeMap<String, String> {
    headers(&[("sign", &seventeen_track::sign(body, KEY))])
}

#[test]
fn round_trip_prefers_utc_fields_and_merges_providers_oldest_first() {
    let body = fixture("seventeen_track.json");
    let verified = accept(
        &SeventeenTrack,
        &signed(&body),
        &BTreeMap::new(),
        &body,
        &st_settings(),
    )
    .expect("accepted");
    assert_eq!(verified.account, "main");
    let item = &verified.items[0];
    assert_eq!(
        (item.carrier.as_str(), item.waybill.as_str()),
        ("chinapost", "RR123456785CN")
    );
    assert_eq!(item.payload, body);
    assert_eq!(item.envelope["event"], "TRACKING_UPDATED");

    let events = SeventeenTrack
        .normalize(&raw_scan(&SeventeenTrack, item, "main"), &st_settings())
        .unwrap();
    assert_eq!(events.len(), 4);
    let u = ZoneSource::UtcField;
    assert_event(
        &events[0],
        Status::PickedUp,
        Reason::Unspecified,
        "InTransit_PickedUp",
        "2026-11-16T10:40:00Z",
        u,
        "SHENZHEN",
    );
    assert_event(
        &events[1],
        Status::InTransit,
        Reason::Unspecified,
        "InTransit_Departure",
        "2026-11-16T19:20:00Z",
        u,
        "SHENZHEN",
    );
    assert_event(
        &events[2],
        Status::InTransit,
        Reason::Unspecified,
        "InTransit_CustomsReleased",
        "2026-11-20T02:30:00Z",
        u,
        "JFK AIRPORT",
    );
    assert_event(
        &events[3],
        Status::InTransit,
        Reason::Unspecified,
        "InTransit_Arrival",
        "2026-11-20T14:00:00Z",
        u,
        "NEW YORK NY DISTRIBUTION CENTER",
    );
    // The instant comes from time_utc; the local offset is kept as the source zone.
    assert_eq!(events[3].source_time_zone, "-05:00");
    assert_eq!(events[0].source_time_zone, "+08:00");
    let location = events[3].location.as_ref().unwrap();
    assert_eq!(
        (
            location.city.as_str(),
            location.region.as_str(),
            location.country.as_str(),
            location.postal_code.as_str()
        ),
        ("NEW YORK", "NY", "US", "10001")
    );
    let estimate = events[0].estimated_delivery_at.as_ref().unwrap();
    assert_eq!(
        trackstream_proto::time::from_proto(estimate).unwrap(),
        utc("2026-11-23T05:00:00Z")
    );
}

fn one_event(event: Value) -> trackstream_proto::v1::TrackingEvent {
    let body =
        serde_json::json!({"event": "TRACKING_UPDATED", "data": {"number": "N1", "carrier": 21051,
        "track_info": {"tracking": {"providers": [{"events": [event]}]}}}})
        .to_string()
        .into_bytes();
    let mut all = accept_and_normalize(
        &SeventeenTrack,
        &signed(&body),
        &BTreeMap::new(),
        &body,
        &st_settings(),
    );
    assert_eq!(all[0].len(), 1);
    all.remove(0).remove(0)
}

#[test]
fn time_utc_gives_utc_field_and_offsets_or_defaults_otherwise() {
    let e = one_event(
        serde_json::json!({"time_utc": "2026-11-20T14:00:00Z", "sub_status": "Delivered_Other"}),
    );
    assert_event(
        &e,
        Status::Delivered,
        Reason::Unspecified,
        "Delivered_Other",
        "2026-11-20T14:00:00Z",
        ZoneSource::UtcField,
        "",
    );
    assert_eq!(e.carrier, "usps");
    let e = one_event(
        serde_json::json!({"time_iso": "2026-11-20T09:00:00-05:00", "stage": "OutForDelivery"}),
    );
    assert_event(
        &e,
        Status::OutForDelivery,
        Reason::Unspecified,
        "OutForDelivery",
        "2026-11-20T14:00:00Z",
        ZoneSource::ExplicitOffset,
        "",
    );
    let e = one_event(
        serde_json::json!({"time_iso": "2026-11-20 09:00", "sub_status": "Exception_Returning"}),
    );
    assert_event(
        &e,
        Status::Returning,
        Reason::ReturnToSender,
        "Exception_Returning",
        "2026-11-20T09:00:00Z",
        ZoneSource::ProviderDefault,
        "",
    );
}

#[test]
fn unknown_sub_statuses_keep_the_raw_code_and_the_prefix_status() {
    let e = one_event(
        serde_json::json!({"time_utc": "2026-11-20T14:00:00Z", "sub_status": "Exception_Teleported",
        "description": "Parcel teleported"}),
    );
    assert_event(
        &e,
        Status::Exception,
        Reason::Unknown,
        "Exception_Teleported",
        "2026-11-20T14:00:00Z",
        ZoneSource::UtcField,
        "",
    );
    assert_eq!(e.raw_text, "Parcel teleported");
    let e = one_event(
        serde_json::json!({"time_utc": "2026-11-20T14:00:00Z", "sub_status": "Wormhole_001"}),
    );
    assert_event(
        &e,
        Status::InTransit,
        Reason::Unknown,
        "Wormhole_001",
        "2026-11-20T14:00:00Z",
        ZoneSource::UtcField,
        "",
    );
    let e = one_event(serde_json::json!({"description": "no code, no time"}));
    assert_eq!(
        (e.status, e.reason, e.zone_source),
        (
            Status::InTransit as i32,
            Reason::Unknown as i32,
            ZoneSource::ReceivedAt as i32
        )
    );
}

#[test]
fn stopped_pushes_are_accepted_with_no_events() {
    let body = br#"{"event":"TRACKING_STOPPED","data":{"number":"N1","carrier":21051}}"#;
    let all = accept_and_normalize(
        &SeventeenTrack,
        &signed(body),
        &BTreeMap::new(),
        body,
        &st_settings(),
    );
    assert!(all[0].is_empty());
}

#[test]
fn forged_and_missing_signatures_are_unauthorized() {
    let body = fixture("seventeen_track.json");
    let forged = headers(&[("sign", &seventeen_track::sign(&body, "other"))]);
    for h in [forged, BTreeMap::new()] {
        let result = accept(&SeventeenTrack, &h, &BTreeMap::new(), &body, &st_settings());
        assert!(
            matches!(result, Err(PushError::Unauthorized(_))),
            "{result:?}"
        );
    }
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let body = fixture("seventeen_track.json");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", body[..body.len() / 3].to_vec()),
        ("invalid UTF-8", b"{\"event\":\"\xc3\x28\"}".to_vec()),
        ("no data", br#"{"event":"TRACKING_UPDATED"}"#.to_vec()),
        ("no number", br#"{"event":"TRACKING_UPDATED","data":{"carrier":3011}}"#.to_vec()),
        ("events not a list", br#"{"data":{"number":"1","carrier":1,"track_info":{"tracking":{"providers":[{"events":7}]}}}}"#.to_vec()),
    ];
    for (name, data) in cases {
        let result = accept(
            &SeventeenTrack,
            &signed(&data),
            &BTreeMap::new(),
            &data,
            &st_settings(),
        );
        assert!(
            matches!(result, Err(PushError::BadRequest(_))),
            "{name}: {result:?}"
        );
    }
}
