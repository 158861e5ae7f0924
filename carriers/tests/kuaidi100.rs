//! Kuaidi100: salted and unsigned pushes, query parameters, newest-first history.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;
use trackstream_carriers::kuaidi100::{self, Kuaidi100};
use trackstream_carriers::{Outcome, ProviderAdapter, PushError};
use trackstream_proto::v1::{Reason, Status, ZoneSource};

const SALT: &str = "s4lt-2026";

fn k100_settings() -> trackstream_carriers::ProviderSettings {
    settings(&[("shop-a", SALT)])
}

fn query() -> BTreeMap<String, String> {
    headers(&[("order_id", "ORD-42"), ("merchant", "m-7")])
}

fn normalize_param(param: &[u8]) -> Vec<trackstream_proto::v1::TrackingEvent> {
    let body = kuaidi100::form_body(param, Some(SALT));
    let mut all = accept_and_normalize(
        &Kuaidi100,
        &BTreeMap::new(),
        &query(),
        &body,
        &k100_settings(),
    );
    all.remove(0)
}

#[test]
fn round_trip_carries_query_and_maps_newest_first_history() {
    let param = fixture("kuaidi100_param.json");
    let body = kuaidi100::form_body(&param, Some(SALT));
    let verified = accept(
        &Kuaidi100,
        &BTreeMap::new(),
        &query(),
        &body,
        &k100_settings(),
    )
    .expect("accepted");
    assert_eq!(verified.account, "shop-a");
    assert_eq!(verified.items.len(), 1);
    let item = &verified.items[0];
    assert_eq!(
        (item.carrier.as_str(), item.waybill.as_str()),
        ("yto", "YT6247854916511")
    );
    assert_eq!(item.payload, param, "payload is the exact param text");
    assert_eq!(
        item.envelope,
        query(),
        "callback query parameters travel with the item"
    );

    let events = Kuaidi100
        .normalize(
            &raw_scan(&Kuaidi100, item, &verified.account),
            &k100_settings(),
        )
        .unwrap();
    assert_eq!(events.len(), 4);
    let pd = ZoneSource::ProviderDefault;
    // Emitted oldest first.
    assert_event(
        &events[0],
        Status::PickedUp,
        Reason::Unspecified,
        "1",
        "2026-11-18T10:52:32Z",
        pd,
        "广东,深圳市,宝安区",
    );
    assert_event(
        &events[1],
        Status::InTransit,
        Reason::Unspecified,
        "1002",
        "2026-11-19T14:10:42Z",
        pd,
        "四川,成都市",
    );
    assert_event(
        &events[2],
        Status::InTransit,
        Reason::Unspecified,
        "0",
        "2026-11-20T05:31:23Z",
        pd,
        "四川,成都市,双流区,中和",
    );
    assert_event(
        &events[3],
        Status::OutForDelivery,
        Reason::Unspecified,
        "5",
        "2026-11-20T05:47:04Z",
        pd,
        "四川,成都市,双流区,中和",
    );
    let location = events[3].location.as_ref().unwrap();
    assert_eq!(
        (
            location.region.as_str(),
            location.city.as_str(),
            location.country.as_str(),
            location.admin_area_code.as_str()
        ),
        ("四川省", "成都市", "CN", "CN510116004000")
    );
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.carrier_sequence, index as i64 + 1);
        assert_eq!(event.source_time_zone, "Asia/Shanghai");
    }
}

#[test]
fn a_snapshot_grown_by_one_trace_keeps_old_ids_and_adds_exactly_one() {
    let param = fixture("kuaidi100_param.json");
    let old = normalize_param(&param);
    let mut grown: Value = serde_json::from_slice(&param).unwrap();
    grown["lastResult"]["state"] = "3".into();
    grown["lastResult"]["data"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"time": "2026-11-20 17:31:57", "ftime": "2026-11-20 17:31:57",
            "context": "您的快件已签收，签收人凭取货码签收。", "areaCode": null, "areaName": null,
            "status": "投柜或站签收", "statusCode": "304"}),
    );
    let new = normalize_param(grown.to_string().as_bytes());
    assert_eq!(new.len(), old.len() + 1);
    let old_ids = ids(&old);
    let new_ids = ids(&new);
    assert_eq!(&new_ids[..old_ids.len()], &old_ids[..]);
    let added: Vec<_> = new_ids.iter().filter(|id| !old_ids.contains(id)).collect();
    assert_eq!(added.len(), 1);
    let last = new.last().unwrap();
    assert_event(
        last,
        Status::Delivered,
        Reason::Unspecified,
        "304",
        "2026-11-20T09:31:57Z",
        ZoneSource::ProviderDefault,
        "",
    );
    assert_eq!(last.carrier_sequence, 5);
    // Resending the same snapshot changes nothing.
    assert_eq!(ids(&normalize_param(grown.to_string().as_bytes())), new_ids);
}

#[test]
fn traces_without_codes_fall_back_to_text_then_state() {
    let param = serde_json::json!({"status": "polling", "lastResult": {"state": "6", "com": "zhongtong",
        "nu": "ZT1", "data": [
            {"time": "2026-11-20 12:00:00", "context": "退回中", "status": ""},
            {"time": "2026-11-20 11:00:00", "context": "代收", "status": "代签"},
            {"ftime": "2026-11-20 10:00:00", "context": "奇怪", "status": "未知状态"},
            {"time": "2026-11-20 09:00:00", "context": "新码", "status": "签收", "statusCode": "399"}]}});
    let events = normalize_param(param.to_string().as_bytes());
    assert_eq!(events[0].carrier, "zto");
    assert_eq!(
        (
            events[0].status,
            events[0].reason,
            events[0].raw_code.as_str()
        ),
        (Status::Delivered as i32, Reason::Unknown as i32, "399")
    );
    assert_eq!(
        (
            events[1].status,
            events[1].reason,
            events[1].raw_code.as_str()
        ),
        (Status::InTransit as i32, Reason::Unknown as i32, "未知状态")
    );
    assert_eq!(
        occurred(&events[1]),
        utc("2026-11-20T02:00:00Z"),
        "ftime when time is absent"
    );
    assert_eq!(
        (
            events[2].status,
            events[2].reason,
            events[2].raw_code.as_str()
        ),
        (
            Status::Delivered as i32,
            Reason::SignedByProxy as i32,
            "代签"
        )
    );
    assert_eq!(
        (
            events[3].status,
            events[3].reason,
            events[3].raw_code.as_str()
        ),
        (Status::Returning as i32, Reason::ReturnToSender as i32, "")
    );
}

#[test]
fn unsigned_pushes_need_allow_unsigned() {
    let param = fixture("kuaidi100_param.json");
    let body = kuaidi100::form_body(&param, None);
    let refused = accept(
        &Kuaidi100,
        &BTreeMap::new(),
        &query(),
        &body,
        &k100_settings(),
    );
    assert!(
        matches!(refused, Err(PushError::Unauthorized(_))),
        "{refused:?}"
    );
    let mut open = k100_settings();
    open.allow_unsigned = true;
    let verified = accept(&Kuaidi100, &BTreeMap::new(), &query(), &body, &open).unwrap();
    assert_eq!(verified.account, "");
    // A present but wrong sign is still refused when unsigned pushes are allowed.
    let forged = kuaidi100::form_body(&param, Some("guess"));
    let refused = accept(&Kuaidi100, &BTreeMap::new(), &query(), &forged, &open);
    assert!(matches!(refused, Err(PushError::Unauthorized(_))));
}

#[test]
fn sign_is_uppercase_md5_of_param_and_salt_and_lowercase_is_accepted() {
    // Independent value (Python hashlib).
    assert_eq!(
        kuaidi100::sign(b"{}", "salt"),
        "4DF345D41BAFC8E489CC9C94112F002A"
    );
    let param = fixture("kuaidi100_param.json");
    let lower = kuaidi100::sign(&param, SALT).to_lowercase();
    let body =
        trackstream_carriers::form::encode(&[("param", &param[..]), ("sign", lower.as_bytes())]);
    assert!(
        accept(
            &Kuaidi100,
            &BTreeMap::new(),
            &query(),
            &body,
            &k100_settings()
        )
        .is_ok()
    );
}

#[test]
fn malformed_params_are_bad_requests() {
    let param = fixture("kuaidi100_param.json");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", param[..param.len() - 10].to_vec()),
        (
            "invalid UTF-8",
            b"{\"lastResult\":{\"com\":\"\xff\"}}".to_vec(),
        ),
        (
            "no lastResult",
            r#"{"status":"abort","message":"3天查询无记录"}"#.as_bytes().to_vec(),
        ),
        (
            "no nu",
            br#"{"lastResult":{"com":"yuantong","data":[]}}"#.to_vec(),
        ),
        (
            "data not a list",
            br#"{"lastResult":{"com":"yuantong","nu":"1","data":{}}}"#.to_vec(),
        ),
    ];
    for (name, data) in cases {
        let body = kuaidi100::form_body(&data, Some(SALT));
        let result = accept(
            &Kuaidi100,
            &BTreeMap::new(),
            &query(),
            &body,
            &k100_settings(),
        );
        assert!(
            matches!(result, Err(PushError::BadRequest(_))),
            "{name}: {result:?}"
        );
    }
    let result = accept(
        &Kuaidi100,
        &BTreeMap::new(),
        &query(),
        b"sign=AB",
        &k100_settings(),
    );
    assert!(matches!(result, Err(PushError::BadRequest(_))));
}

#[test]
fn reply_is_kuaidi100s_dialect() {
    let ok: Value = serde_json::from_slice(
        &Kuaidi100
            .reply(Outcome::Accepted {
                account: "a",
                items: 1,
            })
            .body,
    )
    .unwrap();
    assert_eq!(ok["result"], true);
    assert_eq!(ok["returnCode"], "200");
    let no: Value = serde_json::from_slice(
        &Kuaidi100
            .reply(Outcome::Rejected {
                status: 500,
                reason: "kafka down",
            })
            .body,
    )
    .unwrap();
    assert_eq!(
        no,
        serde_json::json!({"result": false, "returnCode": "500", "message": "kafka down"})
    );
}

/// A subscription without `resultv2`: traces carry no `statusCode` and no
/// `status`. The oldest "已收取快件" is the pickup, read from its text; recipient,
/// locker and delivery wordings that share its characters are not; the newest
/// still takes `lastResult.state`.
#[test]
fn traces_without_codes_read_the_pickup_from_their_text() {
    let snapshot = |data: Value| {
        serde_json::json!({"status": "polling", "lastResult": {"state": "0", "com": "shunfeng",
            "nu": "SF7", "data": data}})
        .to_string()
    };
    let oldest_two = serde_json::json!([
        {"time": "2026-11-19 08:00:00", "context": "快件已从【广州转运中心】发出，收件人：张三"},
        {"time": "2026-11-18 16:20:11", "context": "【广州市】顺丰速运 已收取快件"}]);
    let events = normalize_param(snapshot(oldest_two.clone()).as_bytes());
    let statuses: Vec<i32> = events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [Status::PickedUp as i32, Status::InTransit as i32],
        "the newest takes state 0"
    );
    assert_eq!((events[0].raw_code.as_str(), events[0].reason), ("", 0));

    // Grown by two traces, resent: the pickup keeps its id and its status, and
    // the new traces that merely mention 收件 / 代收 are not pickups.
    let mut grown = oldest_two.as_array().unwrap().clone();
    grown.insert(
        0,
        serde_json::json!({"time": "2026-11-20 09:00:00", "context": "快件已由【菜鸟驿站】代收，请及时取件"}),
    );
    grown.insert(
        0,
        serde_json::json!({"time": "2026-11-20 10:00:00", "context": "您的快件已签收，签收人：收件人本人"}),
    );
    let mut body: Value = serde_json::from_str(&snapshot(Value::Array(grown))).unwrap();
    body["lastResult"]["state"] = "3".into();
    let again = normalize_param(body.to_string().as_bytes());
    assert_eq!(&ids(&again)[..2], &ids(&events)[..]);
    let statuses: Vec<i32> = again.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            Status::PickedUp as i32,
            Status::InTransit as i32,
            Status::InTransit as i32,
            Status::Delivered as i32
        ]
    );
    assert_eq!(
        ids(&normalize_param(body.to_string().as_bytes())),
        ids(&again)
    );
}

/// A code always wins over the text: a trace coded in transit stays in transit
/// however it is worded.
#[test]
fn a_status_code_or_text_wins_over_the_pickup_wording() {
    let param = serde_json::json!({"status": "polling", "lastResult": {"state": "0", "com": "yuantong",
        "nu": "YT9", "data": [
            {"time": "2026-11-19 08:00:00", "context": "已揽收", "status": "在途"},
            {"time": "2026-11-18 08:00:00", "context": "已揽收", "statusCode": "0"}]}});
    let events = normalize_param(param.to_string().as_bytes());
    assert!(
        events.iter().all(|e| e.status == Status::InTransit as i32),
        "{events:?}"
    );
}

/// Province and city in full form: from `areaName` however it is written, a
/// province from `areaCode` when the name has none, and from `context` when
/// there is no `areaName` at all; the location text stays as sent (it is in the
/// event id).
#[test]
fn scans_are_mapped_to_province_and_city() {
    let param = serde_json::json!({"status": "polling", "lastResult": {"state": "0", "com": "yuantong",
        "nu": "YT9", "data": [
            {"time": "2026-11-20 09:00:00", "context": "【成都转运中心】 已发出 下一站 【四川省成都市高新区公司】",
             "statusCode": "1002"},
            {"time": "2026-11-19 18:00:00", "context": "【四川省成都市高新区中和一部公司】 已收入",
             "statusCode": "0"},
            {"time": "2026-11-19 08:00:00", "context": "到达", "statusCode": "0",
             "areaCode": "CN330100000000", "areaName": "杭州市"},
            {"time": "2026-11-18 20:00:00", "context": "已揽收", "statusCode": "1",
             "areaCode": "CN440306000000", "areaName": "广东省深圳市宝安区"},
            {"time": "2026-11-18 18:00:00", "context": "已下单", "statusCode": "101",
             "areaCode": "CN513200000000", "areaName": "四川,阿坝"}]}});
    let events = normalize_param(param.to_string().as_bytes());
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
            ("四川,阿坝", "四川省", "阿坝"),
            ("广东省深圳市宝安区", "广东省", "深圳市"),
            ("杭州市", "浙江省", "杭州市"),
            ("", "四川省", "成都市"),
            ("", "", ""),
        ]
    );
}
