//! Helpers shared by the provider integration tests: building pushes the way
//! ingest sees them, turning accepted items into `RawScan`s the way ingest
//! writes them, and reading fixtures.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use trackstream_carriers::{
    AccountSecret, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    VerifiedPush,
};
use trackstream_proto::v1::{RawScan, TrackingEvent};

/// When every test push "arrived".
pub const RECEIVED_AT: &str = "2026-11-20T15:00:00Z";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Fixtures end with a newline that providers do not send.
    bytes.trim_ascii_end().to_vec()
}

pub fn settings(secrets: &[(&str, &str)]) -> ProviderSettings {
    ProviderSettings {
        secrets: secrets
            .iter()
            .map(|(account, secret)| AccountSecret {
                account: (*account).to_owned(),
                secret: (*secret).to_owned(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn accept(
    adapter: &dyn ProviderAdapter,
    headers: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    body: &[u8],
    settings: &ProviderSettings,
) -> Result<VerifiedPush, PushError> {
    adapter.accept(
        &PushRequest {
            headers,
            query,
            body,
        },
        settings,
    )
}

pub fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// The record ingest writes for an accepted item.
pub fn raw_scan(adapter: &dyn ProviderAdapter, item: &PushItem, account: &str) -> RawScan {
    RawScan {
        ingest_id: format!("test-{}", item.waybill),
        provider: adapter.provider() as i32,
        carrier: item.carrier.clone(),
        waybill: item.waybill.clone(),
        received_at: Some(trackstream_proto::time::to_proto(utc(RECEIVED_AT))),
        payload: item.payload.clone(),
        envelope: item.envelope.clone().into_iter().collect(),
        account: account.to_owned(),
        source: 0,
    }
}

/// Accepts `body` and normalizes every item, in push order.
pub fn accept_and_normalize(
    adapter: &dyn ProviderAdapter,
    headers: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    body: &[u8],
    settings: &ProviderSettings,
) -> Vec<Vec<TrackingEvent>> {
    let push = accept(adapter, headers, query, body, settings).expect("push accepted");
    normalize_pushed(adapter, &push, settings)
}

/// Normalizes every item of an accepted push, in push order.
pub fn normalize_pushed(
    adapter: &dyn ProviderAdapter,
    push: &VerifiedPush,
    settings: &ProviderSettings,
) -> Vec<Vec<TrackingEvent>> {
    push.items
        .iter()
        .map(|item| {
            adapter
                .normalize(&raw_scan(adapter, item, &push.account), settings)
                .expect("normalizes")
        })
        .collect()
}

pub fn occurred(event: &TrackingEvent) -> DateTime<Utc> {
    event
        .occurred_at
        .as_ref()
        .and_then(trackstream_proto::time::from_proto)
        .unwrap()
}

pub fn location_text(event: &TrackingEvent) -> &str {
    event.location.as_ref().map_or("", |l| l.text.as_str())
}

/// The id the event must have, recomputed from its identifying fields.
pub fn expected_id(event: &TrackingEvent) -> String {
    trackstream_carriers::event::event_id(
        &event.carrier,
        &event.waybill,
        occurred(event),
        &event.raw_code,
        location_text(event),
    )
}

pub fn ids(events: &[TrackingEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// Asserts the fields every provider test checks on one event.
#[track_caller]
pub fn assert_event(
    event: &TrackingEvent,
    status: trackstream_proto::v1::Status,
    reason: trackstream_proto::v1::Reason,
    raw_code: &str,
    at_utc: &str,
    zone_source: trackstream_proto::v1::ZoneSource,
    location: &str,
) {
    assert_eq!(
        (event.status, event.reason, event.raw_code.as_str()),
        (status as i32, reason as i32, raw_code),
        "status/reason/code of {event:?}"
    );
    assert_eq!(occurred(event), utc(at_utc), "time of {event:?}");
    assert_eq!(
        event.zone_source, zone_source as i32,
        "zone source of {event:?}"
    );
    assert_eq!(location_text(event), location, "location of {event:?}");
    assert_eq!(event.event_id, expected_id(event), "id of {event:?}");
}
