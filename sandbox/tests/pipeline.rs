//! End-to-end: real broker, real Redis, all four services in-process.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use trackstream_proto::topics;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, GetOrderRequest, Milestone, RawScan, Status,
    WatchOrderRequest,
};
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox, authed};
use trackstream_testkit::kafka::all;

const WAIT: Duration = Duration::from_secs(60);

fn scan(waybill: &str, status: &str, at: chrono::DateTime<Utc>, text: &str) -> serde_json::Value {
    json!({
        "carrier": "sf", "waybill": waybill, "status": status,
        "occurred_at": at.to_rfc3339(), "description": text,
        "location": {"text": "Shenzhen hub", "city": "Shenzhen", "country": "CN"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_flows_to_updates_buyer_message_and_a_stall_alert_that_resolves() {
    let sandbox = Sandbox::start_with(|c| {
        c.detector.rules.stalled_in_transit.tiers = vec![std::time::Duration::from_secs(3)];
    })
    .await;
    let (status, body) = sandbox
        .register(&json!({
            "order_id": "O-1", "carrier": "SF", "waybill": "SF100",
            "buyer": {"name": "Li Lei", "phone": "13812345678", "email": "lilei@example.com", "locale": "en"}
        }))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));

    let t0 = Utc::now().trunc_subsecs(0) - chrono::Duration::seconds(2);
    let (status, _) = sandbox
        .post_generic(&scan("SF100", "picked_up", t0, "Picked up"))
        .await;
    assert_eq!(status, 200);

    // The order appears once its first update is recorded.
    let mut grpc = sandbox.grpc().await;
    trackstream_testkit::eventually(WAIT, "order O-1 to exist", || {
        let mut grpc = grpc.clone();
        async move {
            grpc.get_order(authed(
                GetOrderRequest {
                    order_id: "O-1".into(),
                },
                ACME_TOKEN,
            ))
            .await
            .ok()
            .filter(|o| o.get_ref().last_seq >= 1)
        }
    })
    .await;
    // Replay (seq 1) then live (seq 2) on one stream.
    let mut stream = grpc
        .watch_order(authed(
            WatchOrderRequest {
                order_id: "O-1".into(),
                after_seq: 0,
            },
            ACME_TOKEN,
        ))
        .await
        .expect("watch accepted")
        .into_inner();
    let (status, _) = sandbox
        .post_generic(&scan(
            "SF100",
            "in_transit",
            t0 + chrono::Duration::seconds(1),
            "Left hub",
        ))
        .await;
    assert_eq!(status, 200);
    let mut updates = Vec::new();
    while updates.len() < 2 {
        let next = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("update within deadline")
            .expect("stream healthy")
            .expect("stream open");
        updates.push(next);
    }
    let seen: Vec<(u64, i32)> = updates
        .iter()
        .map(|u| (u.seq, u.event.as_ref().map_or(0, |e| e.status)))
        .collect();
    assert_eq!(
        seen,
        [(1, Status::PickedUp as i32), (2, Status::InTransit as i32)]
    );
    let buyer = updates[0]
        .shipment
        .as_ref()
        .and_then(|s| s.buyer.as_ref())
        .expect("buyer");
    assert!(
        buyer.phone.is_empty() && buyer.email.is_empty() && buyer.name.is_empty(),
        "updates carry no contact, not even masked: {buyer:?}"
    );
    assert_eq!(
        buyer.locale, "en",
        "locale stays for the notifier's templates"
    );

    // One SHIPPED message for the order, contact masked, raw number nowhere.
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    messages
        .until(WAIT, "a buyer message", |r| {
            all::<BuyerNotification>(r, |m| m.iter().any(|m| m.order_id == "O-1"))
        })
        .await;
    let shipped: Vec<BuyerNotification> = messages.decoded();
    assert_eq!(
        shipped.len(),
        1,
        "picked up then in transit is one SHIPPED milestone"
    );
    assert_eq!(shipped[0].milestone, Milestone::Shipped as i32);
    assert_eq!(shipped[0].contact_masked, "138****5678");
    assert!(
        !messages.records[0]
            .payload
            .windows(11)
            .any(|w| w == b"13812345678")
    );

    // No scan for 3 s after the last one: the stall alert opens…
    let mut alerts = sandbox.reader(topics::TRACKING_ALERTS);
    let opened = |a: &[Alert]| {
        a.iter()
            .find(|a| a.rule == "stalled_in_transit" && a.state == AlertState::Opened as i32)
            .cloned()
    };
    alerts
        .until(WAIT, "an OPENED stall alert", |r| {
            all::<Alert>(r, |a| opened(a).is_some())
        })
        .await;
    let alert = opened(&alerts.decoded()).expect("opened");
    assert_eq!(
        (
            alert.waybill.as_str(),
            alert.order_id.as_str(),
            alert.merchant_id.as_str()
        ),
        ("SF100", "O-1", "m-acme")
    );

    // …and the next scan resolves the same alert.
    let (status, _) = sandbox
        .post_generic(&scan(
            "SF100",
            "out_for_delivery",
            Utc::now(),
            "Courier on the way",
        ))
        .await;
    assert_eq!(status, 200);
    let id = alert.alert_id.clone();
    alerts
        .until(WAIT, "the alert RESOLVED", |r| {
            all::<Alert>(r, |a| {
                a.iter()
                    .any(|a| a.alert_id == id && a.state == AlertState::Resolved as i32)
            })
        })
        .await;

    // Another merchant's token cannot see the order (and cannot tell it exists).
    let denied = grpc
        .get_order(authed(
            GetOrderRequest {
                order_id: "O-1".into(),
            },
            OTHER_TOKEN,
        ))
        .await
        .expect_err("other merchant");
    assert_eq!(denied.code(), tonic::Code::NotFound);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_get_a_json_reason_and_write_nothing() {
    let sandbox = Sandbox::start().await;
    let at = Utc::now();
    // Same waybill as the good push below, so it would land on the same partition
    // before it if it had been written.
    let (status, body) = sandbox
        .post_generic(&scan("W-1", "teleported", at, "?"))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("teleported")),
        "{body}"
    );

    let good = scan("W-1", "in_transit", at, "ok").to_string().into_bytes();
    let forged = trackstream_carriers::generic::sign(&good, "not-the-secret");
    let (status, body) = sandbox
        .post(
            "/v1/webhooks/generic",
            &[("x-trackstream-signature", forged)],
            good.clone(),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = sandbox.post("/v1/webhooks/nope", &[], good).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let (status, _) = sandbox
        .post_generic(&scan("W-1", "in_transit", at, "ok"))
        .await;
    assert_eq!(status, 200);
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "the good scan", |r| !r.is_empty()).await;
    let records: Vec<RawScan> = raw.decoded();
    assert_eq!(records.len(), 1);
    assert!(String::from_utf8_lossy(&records[0].payload).contains("in_transit"));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_503_while_the_broker_is_down_and_a_retry_goes_through() {
    let sandbox = Sandbox::start().await;
    let at = Utc::now();
    let (status, _) = sandbox
        .post_generic(&scan("W-OK", "in_transit", at, "before"))
        .await;
    assert_eq!(status, 200);

    sandbox.broker.cut();
    let (status, body) = sandbox
        .post_generic(&scan("W-503", "in_transit", at, "during"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");

    sandbox.broker.restore().await.expect("broker back");
    // The carrier retries until it is acknowledged.
    trackstream_testkit::eventually(WAIT, "a retried post to be acknowledged", || async {
        let (status, _) = sandbox
            .post_generic(&scan("W-503", "in_transit", at, "during"))
            .await;
        (status == 200).then_some(())
    })
    .await;
    // Both must be there: the scan acknowledged before the outage (kept) and the
    // retried one. Different partitions arrive in any order, so wait for both; a
    // lost record fails at the deadline.
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "the pre-outage and the retried scan", |r| {
        all::<RawScan>(r, |s| {
            s.iter().any(|s| s.waybill == "W-503") && s.iter().any(|s| s.waybill == "W-OK")
        })
    })
    .await;
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics_are_served_and_count_requests() {
    let sandbox = Sandbox::start().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", sandbox.ingest_admin_addr);
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        health.json::<serde_json::Value>().await.expect("json"),
        json!({"status": "ok"})
    );

    let (status, _) = sandbox
        .post_generic(&scan("M-1", "in_transit", Utc::now(), "x"))
        .await;
    assert_eq!(status, 200);
    let (status, _) = sandbox.post_generic(&json!({"carrier": "sf"})).await;
    assert_eq!(status, 400);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let counted = |outcome: &str| {
        metrics.lines().any(|l| {
            l.starts_with("trackstream_ingest_requests_total{")
                && l.contains("route=\"generic\"")
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.ends_with(" 1")
        })
    };
    assert!(counted("accepted"), "{metrics}");
    assert!(counted("bad_request"), "{metrics}");
    assert!(
        metrics.contains("trackstream_ingest_kafka_produced_records_total{topic=\"scans.raw\"} 1"),
        "{metrics}"
    );
    sandbox.shutdown().await;
}
