//! A Kuaidi100 subscription without `resultv2` sends traces with neither
//! `statusCode` nor `status`: through the running pipeline (ingest → normalize
//! → detector), the oldest trace "已收取快件" becomes a PICKED_UP event and a
//! PICKED_UP update of the order, and resending the push (then a grown one)
//! gives the same event ids, so the order gets each scan once.

use std::time::Duration;

use chrono::{FixedOffset, Utc};
use serde_json::json;
use trackstream_carriers::{AccountSecret, ProviderSettings, outbound};
use trackstream_proto::topics;
use trackstream_proto::v1::{ShipmentUpdate, Status, TrackingEvent};
use trackstream_sandbox::Sandbox;
use trackstream_testkit::kafka::all;

const WAIT: Duration = Duration::from_secs(60);
const SALT: &str = "salt-cn-pickup";
const WAYBILL: &str = "SF7700000000001";

/// A China-time trace time `hours_ago` hours before the test's start, as
/// Kuaidi100 writes it. The start is taken once: the resent and grown pushes
/// must carry the same trace times (a push built a second later would carry
/// new ones, and so new event ids — the test failed that way when a push
/// crossed a second boundary).
fn china_time(hours_ago: i64) -> String {
    static START: std::sync::OnceLock<chrono::DateTime<Utc>> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Utc::now);
    let china = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| panic!("UTC+8 is valid"));
    (start - chrono::Duration::hours(hours_ago))
        .with_timezone(&china)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A push of `traces` (context, hours ago), newest first, without codes.
fn param(traces: &[(&str, i64)], state: &str) -> Vec<u8> {
    let data: Vec<_> = traces
        .iter()
        .map(|(context, ago)| json!({"time": china_time(*ago), "context": context}))
        .collect();
    json!({"status": "polling", "message": "", "lastResult": {"state": state, "ischeck": "0",
        "com": "shunfeng", "nu": WAYBILL, "data": data}})
    .to_string()
    .into_bytes()
}

async fn push(sandbox: &Sandbox, param: &[u8]) {
    let push = outbound::signed_push("kuaidi100", param, SALT, None)
        .unwrap_or_else(|| panic!("kuaidi100 is a provider route"));
    let (status, body) = sandbox.post(&push.path, &push.headers, push.body).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kuaidi100_push_without_codes_yields_a_picked_up_update() {
    let settings = ProviderSettings {
        secrets: vec![AccountSecret {
            account: "shop-a".into(),
            secret: SALT.into(),
        }],
        ..ProviderSettings::default()
    };
    let sandbox = Sandbox::start_with(|c| {
        c.ingest
            .providers
            .insert("kuaidi100".into(), settings.clone());
        c.normalize.providers.insert("kuaidi100".into(), settings);
    })
    .await;
    let (status, body) = sandbox
        .register(&json!({"order_id": "O-CN-1", "carrier": "sf", "waybill": WAYBILL}))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));

    // Times are fixed once (`china_time`), so the resent and grown pushes
    // carry the same traces.
    let picked = ("【广州市】顺丰速运 已收取快件", 30);
    let moved = ("快件已从【广州转运中心】发出，收件人：张三", 20);
    let first = param(&[moved, picked], "0");
    push(&sandbox, &first).await;
    push(&sandbox, &first).await;
    let delivered = ("您的快件已签收，签收人：收件人本人", 2);
    push(&sandbox, &param(&[delivered, moved, picked], "3")).await;

    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    let done = |u: &[ShipmentUpdate]| {
        u.iter().any(|u| {
            u.event
                .as_ref()
                .is_some_and(|e| e.status == Status::Delivered as i32)
        })
    };
    updates
        .until(WAIT, "the delivered update", |r| all(r, done))
        .await;
    let updates: Vec<ShipmentUpdate> = updates
        .decoded::<ShipmentUpdate>()
        .into_iter()
        .filter(|u| u.order_id == "O-CN-1")
        .collect();
    let seen: Vec<(i32, i32, u64)> = updates
        .iter()
        .map(|u| {
            (
                u.event.as_ref().map_or(0, |e| e.status),
                u.current_status,
                u.seq,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Status::PickedUp as i32, Status::PickedUp as i32, 1),
            (Status::InTransit as i32, Status::InTransit as i32, 2),
            (Status::Delivered as i32, Status::Delivered as i32, 3),
        ],
        "one update per trace, the pickup read from its text, none repeated"
    );

    // The events themselves: the pickup keeps an empty raw code and its text.
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "the three events", |r| {
            all(r, |e: &[TrackingEvent]| e.len() >= 3)
        })
        .await;
    let pickup: Vec<TrackingEvent> = events
        .decoded::<TrackingEvent>()
        .into_iter()
        .filter(|e| e.status == Status::PickedUp as i32)
        .collect();
    let ids: std::collections::BTreeSet<&str> =
        pickup.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "the resent trace has the same id: {pickup:?}");
    assert_eq!(pickup[0].raw_code, "");
    assert_eq!(pickup[0].raw_text, picked.0);
    assert_eq!(
        updates[0].event.as_ref().map(|e| e.event_id.as_str()),
        Some(pickup[0].event_id.as_str())
    );
    sandbox.shutdown().await;
}
