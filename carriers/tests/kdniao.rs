//! Kdniao: batch split, signature variants, per-trace status rule, stable ids.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use trackstream_carriers::kdniao::{self, Kdniao};
use trackstream_carriers::signature::replay::{DEFAULT_TOLERANCE, ReplayWindow};
use trackstream_carriers::{
    Outcome, ProviderAdapter, ProviderSettings, PushError, PushRequest, VerifiedPush,
};
use trackstream_proto::v1::{Reason, Status, TrackingEvent, ZoneSource};

/// The fixtures' `PushTime` (2026-11-20 14:05:12 China time), in UTC.
const PUSHED_AT: &str = "2026-11-20T06:05:12Z";

fn window_at(now: &str) -> ReplayWindow {
    ReplayWindow::new(utc(now), DEFAULT_TOLERANCE)
}

/// `common::accept` with the clock at [`PUSHED_AT`] (shadows the glob import).
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
    Kdniao.accept_within(&request, settings, window_at(PUSHED_AT))
}

/// `common::accept_and_normalize` with the clock at [`PUSHED_AT`].
fn accept_and_normalize(
    adapter: &dyn ProviderAdapter,
    headers: &BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
    body: &[u8],
    settings: &ProviderSettings,
) -> Vec<Vec<TrackingEvent>> {
    let push = accept(adapter, headers, query, body, settings).expect("push accepted");
    normalize_pushed(&Kdniao, &push, settings)
}

const APP_KEY: &str = "56da2cf8-c8a2-44b2-b6fa-476cd7d1ba17";

fn kdniao_settings() -> trackstream_carriers::ProviderSettings {
    settings(&[("1237100", APP_KEY), ("1999999", "other-app-key")])
}

fn push(request_data: &[u8]) -> Result<trackstream_carriers::VerifiedPush, PushError> {
    let body = kdniao::form_body(request_data, APP_KEY);
    accept(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &body,
        &kdniao_settings(),
    )
}

fn single_item(item: Value) -> Vec<u8> {
    serde_json::json!({"EBusinessID": "1237100", "PushTime": "2026-11-20 14:05:12",
                       "Count": "1", "Data": [item]})
    .to_string()
    .into_bytes()
}

fn normalize_item(item: &Value) -> Vec<trackstream_proto::v1::TrackingEvent> {
    let body = kdniao::form_body(&single_item(item.clone()), APP_KEY);
    let mut all = accept_and_normalize(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &body,
        &kdniao_settings(),
    );
    assert_eq!(all.len(), 1);
    all.remove(0)
}

#[test]
fn two_waybills_split_into_two_items_with_exact_bytes_and_envelope() {
    let request_data = fixture("kdniao_request_data.json");
    let verified = push(&request_data).expect("signed push accepted");
    assert_eq!(verified.account, "1237100");
    assert_eq!(verified.items.len(), 2);
    let (sf, yto) = (&verified.items[0], &verified.items[1]);
    assert_eq!(
        (sf.carrier.as_str(), sf.waybill.as_str()),
        ("sf", "SF1400000000001")
    );
    assert_eq!(
        (yto.carrier.as_str(), yto.waybill.as_str()),
        ("yto", "YT7500000000002")
    );

    // Each payload is the exact byte range of its Data element, not a re-encoding.
    let text = String::from_utf8(request_data.clone()).unwrap();
    for item in &verified.items {
        let payload = std::str::from_utf8(&item.payload).unwrap();
        assert!(text.contains(payload), "payload is a slice of RequestData");
        assert!(payload.starts_with('{') && payload.ends_with('}'));
    }
    let whole: Value = serde_json::from_slice(&request_data).unwrap();
    let first: Value = serde_json::from_slice(&sf.payload).unwrap();
    assert_eq!(first, whole["Data"][0]);

    for item in &verified.items {
        assert_eq!(item.envelope["EBusinessID"], "1237100");
        assert_eq!(item.envelope["PushTime"], "2026-11-20 14:05:12");
        assert_eq!(item.envelope["RequestType"], "101");
    }
}

#[test]
fn round_trip_maps_actions_and_reads_china_time() {
    let request_data = fixture("kdniao_request_data.json");
    let body = kdniao::form_body(&request_data, APP_KEY);
    let events = accept_and_normalize(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &body,
        &kdniao_settings(),
    );
    let sf = &events[0];
    assert_eq!(sf.len(), 5);
    let pd = ZoneSource::ProviderDefault;
    assert_event(
        &sf[0],
        Status::PickedUp,
        Reason::Unspecified,
        "1",
        "2026-11-18T08:20:11Z",
        pd,
        "广州市",
    );
    assert_event(
        &sf[1],
        Status::InTransit,
        Reason::Unspecified,
        "204",
        "2026-11-18T14:41:05Z",
        pd,
        "广州市",
    );
    assert_event(
        &sf[2],
        Status::InTransit,
        Reason::Unspecified,
        "201",
        "2026-11-18T22:02:37Z",
        pd,
        "深圳市",
    );
    assert_event(
        &sf[3],
        Status::OutForDelivery,
        Reason::Unspecified,
        "202",
        "2026-11-20T00:15:00Z",
        pd,
        "深圳市",
    );
    assert_event(
        &sf[4],
        Status::Delivered,
        Reason::SignedByProxy,
        "304",
        "2026-11-20T03:02:45Z",
        pd,
        "深圳市",
    );
    for (index, event) in sf.iter().enumerate() {
        assert_eq!(event.source_time_zone, "Asia/Shanghai");
        assert_eq!(event.carrier_sequence, index as i64 + 1);
        assert_eq!(
            event.provider,
            trackstream_proto::v1::Provider::Kdniao as i32
        );
        assert_eq!(event.ingest_id, "test-SF1400000000001");
    }
    assert_eq!(sf[4].raw_text, "快件已签收，签收人：前台代收");

    // No Action: the oldest trace of a collected parcel is the pickup, the newest
    // takes StateEx (numbers are accepted where Kdniao usually sends strings).
    let yto = &events[1];
    assert_eq!(yto.len(), 2);
    assert_event(
        &yto[0],
        Status::PickedUp,
        Reason::Unspecified,
        "",
        "2026-11-19T11:30:00Z",
        pd,
        "杭州市",
    );
    assert_event(
        &yto[1],
        Status::InTransit,
        Reason::Unspecified,
        "",
        "2026-11-19T18:11:09Z",
        pd,
        "杭州市",
    );
    let estimate = yto[1].estimated_delivery_at.as_ref().unwrap();
    assert_eq!(
        trackstream_proto::time::from_proto(estimate).unwrap(),
        utc("2026-11-21T16:00:00Z")
    );
}

#[test]
fn the_same_snapshot_pushed_twice_gives_identical_ids() {
    let request_data = fixture("kdniao_request_data.json");
    let body = kdniao::form_body(&request_data, APP_KEY);
    let run = || {
        accept_and_normalize(
            &Kdniao,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &body,
            &kdniao_settings(),
        )
        .iter()
        .map(|events| ids(events))
        .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    let all: std::collections::BTreeSet<_> = first.iter().flatten().collect();
    assert_eq!(all.len(), 7, "every trace has its own id");
}

#[test]
fn a_snapshot_grown_by_one_trace_keeps_old_ids_and_adds_one() {
    let whole: Value = serde_json::from_slice(&fixture("kdniao_request_data.json")).unwrap();
    for full in [whole["Data"][0].clone(), whole["Data"][1].clone()] {
        let mut shorter = full.clone();
        shorter["Traces"].as_array_mut().unwrap().pop();
        let old = ids(&normalize_item(&shorter));
        let new = ids(&normalize_item(&full));
        assert_eq!(new.len(), old.len() + 1);
        assert_eq!(&new[..old.len()], &old[..]);
        assert!(!old.contains(&new[old.len()]));
    }
}

#[test]
fn unknown_codes_are_kept_with_reason_unknown() {
    let item = serde_json::json!({"ShipperCode": "ZTO", "LogisticCode": "ZT1", "State": "4",
        "StateEx": "4", "Traces": [
            {"AcceptTime": "2026-11-20 10:00:00", "AcceptStation": "新状态", "Location": "上海市", "Action": "999"},
            {"AcceptTime": "2026-11-20 11:00:00", "AcceptStation": "新问题", "Location": "上海市", "Action": "499"}]});
    let events = normalize_item(&item);
    let pd = ZoneSource::ProviderDefault;
    assert_event(
        &events[0],
        Status::InTransit,
        Reason::Unknown,
        "999",
        "2026-11-20T02:00:00Z",
        pd,
        "上海市",
    );
    assert_event(
        &events[1],
        Status::Exception,
        Reason::Unknown,
        "499",
        "2026-11-20T03:00:00Z",
        pd,
        "上海市",
    );
    assert_eq!(events[0].raw_text, "新状态");
}

#[test]
fn a_snapshot_without_traces_carries_its_state_except_no_trace() {
    let problem = serde_json::json!({"ShipperCode": "YTO", "LogisticCode": "YT9", "State": "4",
        "StateEx": "401", "Location": "杭州市", "Traces": []});
    let events = normalize_item(&problem);
    assert_eq!(events.len(), 1);
    assert_event(
        &events[0],
        Status::Exception,
        Reason::NoTrace,
        "401",
        RECEIVED_AT,
        ZoneSource::ReceivedAt,
        "杭州市",
    );

    let nothing = serde_json::json!({"ShipperCode": "YTO", "LogisticCode": "YT9", "State": "0",
        "Success": false, "Reason": "暂无轨迹信息", "Traces": null});
    assert!(normalize_item(&nothing).is_empty());
}

#[test]
fn a_configured_zone_replaces_china_time() {
    let whole: Value = serde_json::from_slice(&fixture("kdniao_request_data.json")).unwrap();
    let raw = trackstream_proto::v1::RawScan {
        carrier: "sf".into(),
        waybill: "SF1400000000001".into(),
        payload: whole["Data"][0].to_string().into_bytes(),
        ..Default::default()
    };
    let mut utc_settings = kdniao_settings();
    utc_settings.time_zone = Some("UTC".into());
    let events = Kdniao.normalize(&raw, &utc_settings).unwrap();
    assert_eq!(occurred(&events[0]), utc("2026-11-18T16:20:11Z"));
    assert_eq!(events[0].source_time_zone, "UTC");
}

#[test]
fn forged_missing_and_cross_account_signatures_are_unauthorized() {
    let request_data = fixture("kdniao_request_data.json");
    let unauthorized = |body: Vec<u8>| {
        let result = accept(
            &Kdniao,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &body,
            &kdniao_settings(),
        );
        assert!(
            matches!(result, Err(PushError::Unauthorized(_))),
            "{result:?}"
        );
    };
    unauthorized(kdniao::form_body(&request_data, "wrong-key"));
    unauthorized(trackstream_carriers::form::encode(&[(
        "RequestData",
        &request_data[..],
    )]));
    // Base64 of the raw digest is not what Kdniao sends.
    let raw_digest =
        trackstream_carriers::signature::base64_std(&trackstream_carriers::signature::md5(&[
            &request_data[..],
            APP_KEY.as_bytes(),
        ]));
    unauthorized(trackstream_carriers::form::encode(&[
        ("RequestData", &request_data[..]),
        ("DataSign", raw_digest.as_bytes()),
    ]));
    // Account 1999999's key cannot vouch for a push naming EBusinessID 1237100.
    unauthorized(kdniao::form_body(&request_data, "other-app-key"));
}

#[test]
fn data_sign_encoded_twice_or_not_at_all_is_tolerated() {
    let request_data = fixture("kdniao_request_data.json");
    let sign = kdniao::sign(&request_data, APP_KEY);
    let once = trackstream_carriers::form::encode(&[("x", sign.as_bytes())]);
    let once = &once[2..];
    let twice = trackstream_carriers::form::encode(&[("DataSign", once)]);
    let mut body = trackstream_carriers::form::encode(&[("RequestData", &request_data[..])]);
    body.push(b'&');
    body.extend_from_slice(&twice);
    let verified = accept(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &body,
        &kdniao_settings(),
    );
    assert_eq!(verified.unwrap().items.len(), 2);

    let mut raw = trackstream_carriers::form::encode(&[("RequestData", &request_data[..])]);
    raw.extend_from_slice(b"&DataSign=");
    raw.extend_from_slice(sign.as_bytes());
    let verified = accept(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &raw,
        &kdniao_settings(),
    );
    assert_eq!(verified.unwrap().items.len(), 2);
}

#[test]
fn malformed_request_data_is_a_bad_request() {
    let request_data = fixture("kdniao_request_data.json");
    let truncated = &request_data[..request_data.len() / 2];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", truncated.to_vec()),
        (
            "invalid UTF-8",
            b"{\"EBusinessID\":\"1237100\",\"Data\":[\xff]}".to_vec(),
        ),
        (
            "empty Data",
            br#"{"EBusinessID":"1237100","PushTime":"x","Data":[]}"#.to_vec(),
        ),
        ("no Data", br#"{"EBusinessID":"1237100"}"#.to_vec()),
        (
            "missing LogisticCode",
            br#"{"EBusinessID":"1237100","Data":[{"ShipperCode":"SF"}]}"#.to_vec(),
        ),
        (
            "Data not objects",
            br#"{"EBusinessID":"1237100","Data":[1]}"#.to_vec(),
        ),
        ("not JSON", b"RequestData".to_vec()),
    ];
    for (name, data) in cases {
        let result = push(&data);
        assert!(
            matches!(result, Err(PushError::BadRequest(_))),
            "{name}: {result:?}"
        );
    }
    let no_field = accept(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        b"DataSign=abc",
        &kdniao_settings(),
    );
    assert!(matches!(no_field, Err(PushError::BadRequest(_))));
}

#[test]
fn normalize_rejects_what_is_not_an_item() {
    for payload in [&b"{"[..], b"[]", b"\xff", br#"{"Traces": 5}"#] {
        let raw = trackstream_proto::v1::RawScan {
            payload: payload.to_vec(),
            ..Default::default()
        };
        assert!(
            Kdniao.normalize(&raw, &kdniao_settings()).is_err(),
            "{payload:?}"
        );
    }
}

#[test]
fn reply_is_kdniaos_dialect_in_china_time() {
    let at = utc("2026-11-20T06:03:00Z");
    let ok = kdniao::reply_at(
        Outcome::Accepted {
            account: "1237100",
            items: 2,
        },
        at,
    );
    let body: Value = serde_json::from_slice(&ok.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"EBusinessID": "1237100", "UpdateTime": "2026-11-20 14:03:00",
                           "Success": true, "Reason": ""})
    );
    let no = kdniao::reply_at(
        Outcome::Rejected {
            status: 401,
            reason: "bad sign",
        },
        at,
    );
    let body: Value = serde_json::from_slice(&no.body).unwrap();
    assert_eq!(body["Success"], false);
    assert_eq!(body["Reason"], "bad sign");
    let live = Kdniao.reply(Outcome::Accepted {
        account: "1",
        items: 1,
    });
    assert_eq!(live.content_type, "application/json");
}

#[test]
fn signed_push_time_outside_the_replay_window_is_unauthorized() {
    let body = kdniao::form_body(&fixture("kdniao_request_data.json"), APP_KEY);
    let at = |now: &str| {
        let request = PushRequest {
            headers: &BTreeMap::new(),
            query: &BTreeMap::new(),
            body: &body,
        };
        Kdniao.accept_within(&request, &kdniao_settings(), window_at(now))
    };
    for now in [
        "2026-11-20T07:05:12Z",
        "2026-11-20T06:10:13Z",
        "2026-11-20T06:00:11Z",
    ] {
        match at(now) {
            Err(PushError::Unauthorized(reason)) => {
                assert!(reason.contains("PushTime"), "{reason}");
            }
            other => panic!("replay at {now} accepted: {other:?}"),
        }
    }
    for now in ["2026-11-20T06:10:12Z", "2026-11-20T06:00:12Z"] {
        assert!(at(now).is_ok(), "at {now}");
    }
    // A signed push without a readable PushTime cannot be dated.
    let undated = kdniao::form_body(
        br#"{"EBusinessID":"1237100","PushTime":"x","Data":[{"ShipperCode":"SF","LogisticCode":"SF1"}]}"#,
        APP_KEY,
    );
    let result = accept(
        &Kdniao,
        &BTreeMap::new(),
        &BTreeMap::new(),
        &undated,
        &kdniao_settings(),
    );
    assert!(
        matches!(result, Err(PushError::Unauthorized(_))),
        "{result:?}"
    );
}

/// Traces without `Action`: one whose text says the carrier took the parcel in
/// is `PICKED_UP` wherever it stands (here the second, after an order-placed
/// trace), even when `State` says nothing was collected; a trace saying 代收 or
/// naming the 收件人 is not. The raw code stays empty, so the ids are those of
/// the same snapshot resent.
#[test]
fn traces_without_action_read_the_pickup_from_their_text() {
    let item = serde_json::json!({"ShipperCode": "SF", "LogisticCode": "SF9", "State": "2",
        "Traces": [
            {"AcceptTime": "2026-11-18 10:00:00", "AcceptStation": "商家已下单，等待揽件"},
            {"AcceptTime": "2026-11-18 16:20:11", "AcceptStation": "【广州市】顺丰速运 已收取快件"},
            {"AcceptTime": "2026-11-19 08:00:00", "AcceptStation": "快件已由【驿站】代收，收件人：张三"},
            {"AcceptTime": "2026-11-19 09:00:00", "AcceptStation": "快件已到达【深圳转运中心】"}]});
    let events = normalize_item(&item);
    let statuses: Vec<i32> = events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            Status::PickedUp as i32,
            Status::PickedUp as i32,
            Status::InTransit as i32,
            Status::InTransit as i32
        ],
        "oldest-trace rule, text, neither, newest's State"
    );
    assert!(events.iter().all(|e| e.raw_code.is_empty()));
    assert_eq!(ids(&normalize_item(&item)), ids(&events));

    // State 10 ("awaiting pickup") turns the oldest-trace rule off; the text
    // still says who picked the parcel up.
    let mut waiting = item.clone();
    waiting["State"] = "10".into();
    waiting["Traces"].as_array_mut().unwrap().pop();
    let events = normalize_item(&waiting);
    let statuses: Vec<i32> = events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            Status::InTransit as i32,
            Status::PickedUp as i32,
            Status::InfoReceived as i32
        ]
    );
}

/// A trace's `Location` stays its text and city; the province comes from it
/// (municipalities: "上海市" is both) or from the station text when that agrees, and the station text names the city
/// when `Location` is empty. Where the parcel goes next ("下一站") is not where
/// it is.
#[test]
fn scans_are_mapped_to_province_and_city() {
    let whole: Value = serde_json::from_slice(&fixture("kdniao_request_data.json")).unwrap();
    let mut item = whole["Data"][1].clone();
    item["Traces"].as_array_mut().unwrap().extend([
        serde_json::json!({"AcceptTime": "2026-11-20 10:00:00", "Location": "",
            "AcceptStation": "到达【上海市浦东新区】"}),
        serde_json::json!({"AcceptTime": "2026-11-20 11:00:00", "Location": "深圳市",
            "AcceptStation": "【广州市】 广东广州转运中心 已发出"}),
        serde_json::json!({"AcceptTime": "2026-11-20 12:00:00", "Location": "浙江省杭州市"}),
    ]);
    let events = normalize_item(&item);
    let places: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            let l = e.location.as_ref().unwrap();
            (l.text.as_str(), l.region.as_str(), l.city.as_str())
        })
        .collect();
    assert_eq!(
        places,
        [
            // "【浙江省杭州市萧山区公司】 已揽收"
            ("杭州市", "浙江省", "杭州市"),
            // "【杭州转运中心】 已发出 下一站 【上海转运中心】"
            ("杭州市", "", "杭州市"),
            ("", "上海市", "上海市"),
            // The station names another city: no province is taken from it.
            ("深圳市", "", "深圳市"),
            ("浙江省杭州市", "浙江省", "杭州市"),
        ]
    );
}
