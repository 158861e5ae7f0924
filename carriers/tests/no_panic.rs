//! Property tests: no input makes any adapter panic, in `accept` or `normalize`.
//!
//! Pushes are signed the way each provider signs, over exactly the generated
//! bytes, so the parsers behind the signature check are what gets exercised.
//! Inputs are arbitrary bytes, random JSON built from the providers' own field
//! names, and the realistic fixtures with random leaves swapped in.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use serde_json::Value;
use trackstream_carriers::{
    ProviderSettings, Registry, aftership, easypost, generic, kdniao, kuaidi100, seventeen_track,
};
use trackstream_proto::v1::RawScan;

const SECRET: &str = "prop-secret";

const ROUTES: &[&str] = &trackstream_carriers::outbound::ROUTES;

const FIXTURES: &[(&str, &str)] = &[
    ("kdniao", "kdniao_request_data.json"),
    ("kuaidi100", "kuaidi100_param.json"),
    ("17track", "seventeen_track.json"),
    ("aftership", "aftership.json"),
    ("easypost", "easypost.json"),
];

/// Field names the adapters read, so random JSON reaches past the first lookup.
const KEYS: &[&str] = &[
    "EBusinessID",
    "PushTime",
    "Data",
    "ShipperCode",
    "LogisticCode",
    "State",
    "StateEx",
    "Traces",
    "AcceptTime",
    "AcceptStation",
    "Action",
    "Location",
    "EstimatedDeliveryTime",
    "lastResult",
    "com",
    "nu",
    "state",
    "data",
    "time",
    "ftime",
    "status",
    "statusCode",
    "areaName",
    "areaCode",
    "event",
    "number",
    "carrier",
    "track_info",
    "tracking",
    "providers",
    "events",
    "time_iso",
    "time_utc",
    "sub_status",
    "stage",
    "address",
    "time_metrics",
    "estimated_delivery_date",
    "from",
    "to",
    "msg",
    "slug",
    "tracking_number",
    "checkpoints",
    "checkpoint_time",
    "tag",
    "subtag",
    "signed_by",
    "expected_delivery",
    "description",
    "result",
    "tracking_code",
    "tracking_details",
    "datetime",
    "status_detail",
    "tracking_location",
    "est_delivery_date",
    "scans",
    "waybill",
    "occurred_at",
];

const SCALARS: &[&str] = &[
    "",
    "0",
    "3",
    "304",
    "4",
    "999",
    "2026-11-20 14:03:00",
    "2026-11-20T09:00:00-05:00",
    "2026-11-20T14:00:00Z",
    "2026-02-30 25:61:61",
    "9999-12-31T23:59:59+14:00",
    "-262144-01-01T00:00:00Z",
    "2026-11-22",
    "tracker.updated",
    "Exception_Returning",
    "InTransit_002",
    "return_to_sender",
    "签收",
    "\u{0}",
    "\u{fffd}",
    "💥",
    "_",
    "Exception_",
    "+262142-12-31 23:59:59",
    "-262143-01-01 00:00:00",
    "+262142-12-31T23:59:59",
    "-262143-01-01",
    "+262142-12-31",
];

#[test]
fn times_at_the_edge_of_chronos_range_do_not_panic() {
    use trackstream_carriers::time::{parse_date_or_time, parse_local_or_offset, parse_utc_field};
    for text in SCALARS {
        for zone in [
            chrono_tz::Asia::Shanghai,
            chrono_tz::Pacific::Kiritimati,
            chrono_tz::Etc::GMTPlus12,
        ] {
            let _ = parse_local_or_offset(text, zone);
            let _ = parse_date_or_time(text, zone);
        }
        let _ = parse_utc_field(text);
    }
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(SCALARS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn settings_strategy() -> impl Strategy<Value = ProviderSettings> {
    (
        any::<bool>(),
        prop::sample::select(
            &[
                None,
                Some("UTC"),
                Some("Asia/Shanghai"),
                Some("Not/AZone"),
                Some("America/New_York"),
            ][..],
        ),
    )
        .prop_map(|(allow_unsigned, zone)| {
            let mut s = settings(&[("acct", SECRET)]);
            s.allow_unsigned = allow_unsigned;
            s.time_zone = zone.map(str::to_owned);
            s
        })
}

/// Signs `content` as `route`'s provider would, returning headers and body.
fn signed_push(route: &str, content: &[u8]) -> (BTreeMap<String, String>, Vec<u8>) {
    match route {
        "generic" => (
            headers(&[("x-trackstream-signature", &generic::sign(content, SECRET))]),
            content.to_vec(),
        ),
        "kdniao" => (BTreeMap::new(), kdniao::form_body(content, SECRET)),
        "kuaidi100" => (BTreeMap::new(), kuaidi100::form_body(content, Some(SECRET))),
        "17track" => (
            headers(&[("sign", &seventeen_track::sign(content, SECRET))]),
            content.to_vec(),
        ),
        "aftership" => (
            headers(&[("aftership-hmac-sha256", &aftership::sign(content, SECRET))]),
            content.to_vec(),
        ),
        "easypost" => (
            headers(&[("x-hmac-signature", &easypost::sign(content, SECRET))]),
            content.to_vec(),
        ),
        other => panic!("unknown route {other}"),
    }
}

/// Accepts a signed push and normalizes whatever it yields; only panics matter.
fn exercise(route: &str, content: &[u8], settings: &ProviderSettings) {
    let registry = Registry::builtin();
    let adapter = registry.by_route(route).unwrap();
    let (h, body) = signed_push(route, content);
    let query = headers(&[("order_id", "o-1")]);
    if let Ok(push) = accept(adapter, &h, &query, &body, settings) {
        for item in &push.items {
            let _ = adapter.normalize(&raw_scan(adapter, item, &push.account), settings);
        }
    }
    // The same bytes unsigned, and as a stored payload.
    let _ = accept(adapter, &BTreeMap::new(), &query, content, settings);
    let raw = RawScan {
        payload: content.to_vec(),
        carrier: "c".into(),
        waybill: "w".into(),
        ..Default::default()
    };
    let _ = adapter.normalize(&raw, settings);
}

fn leaves(value: &mut Value) -> Vec<&mut Value> {
    match value {
        Value::Array(items) => items.iter_mut().flat_map(leaves).collect(),
        Value::Object(map) => map.values_mut().flat_map(leaves).collect(),
        leaf => vec![leaf],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(route in prop::sample::select(ROUTES), bytes in prop::collection::vec(any::<u8>(), 0..512), s in settings_strategy()) {
        exercise(route, &bytes, &s);
    }

    #[test]
    fn arbitrary_json_never_panics(route in prop::sample::select(ROUTES), value in json_value(), s in settings_strategy()) {
        exercise(route, value.to_string().as_bytes(), &s);
    }

    #[test]
    fn json_ish_text_never_panics(route in prop::sample::select(ROUTES), text in r#"[\{\}\[\]",:0-9a-zA-Z_ \-+.\\é签]{0,200}"#, s in settings_strategy()) {
        exercise(route, text.as_bytes(), &s);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        index in 0..FIXTURES.len(),
        swaps in prop::collection::vec((any::<prop::sample::Index>(), scalar()), 1..8),
        cut in any::<prop::sample::Index>(),
        s in settings_strategy(),
    ) {
        let (route, file) = FIXTURES[index];
        let mut value: Value = serde_json::from_slice(&fixture(file)).unwrap();
        for (at, replacement) in swaps {
            let mut all = leaves(&mut value);
            if !all.is_empty() {
                let slot = at.index(all.len());
                *all[slot] = replacement;
            }
        }
        let text = value.to_string();
        exercise(route, text.as_bytes(), &s);
        // And truncated anywhere.
        let end = cut.index(text.len() + 1);
        exercise(route, &text.as_bytes()[..end], &s);
    }
}
