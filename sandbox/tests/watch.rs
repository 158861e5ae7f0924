//! The gRPC tracking API over the whole pipeline: WatchOrder across a
//! reconnect, merchant scoping and GetOrder. (The notifier's own API tests,
//! fed directly, are in `notifier/tests/watch.rs`.)
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use tokio::sync::Notify;
use tonic::transport::Endpoint;
use trackstream_proto::v1::{
    GetOrderRequest, Severity, ShipmentUpdate, Status, WatchAlertsRequest,
};
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox};
use trackstream_testkit::grpc::{authed, next, wait_serving, watch};

/// How long any one expectation may take.
const WAIT: Duration = Duration::from_secs(60);

fn utc(text: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn sandbox_channel(sandbox: &Sandbox) -> Endpoint {
    Endpoint::from_shared(format!("http://{}", sandbox.grpc_addr)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_order_reconnecting_mid_stream_misses_and_duplicates_nothing() {
    let sandbox = Arc::new(Sandbox::start().await);
    let (status, _) = sandbox
        .register(&json!([
            {"order_id": "O-W", "carrier": "sf", "waybill": "SFW-A",
             "buyer": {"phone": "13812345678", "locale": "en"}},
            {"order_id": "O-W", "carrier": "sf", "waybill": "SFW-B",
             "buyer": {"phone": "13812345678", "locale": "en"}},
        ]))
        .await;
    assert_eq!(status, 200);
    wait_serving(
        sandbox_channel(&sandbox).connect().await.unwrap(),
        trackstream_notifier::TRACKING_SERVICE,
        WAIT,
    )
    .await;
    let mut grpc = sandbox.grpc().await;
    // A registered order can be watched before its first scan.
    let mut first = trackstream_testkit::eventually(WAIT, "the watch accepted", || {
        let mut grpc = grpc.clone();
        async move { grpc.watch_order(watch("O-W", 0, ACME_TOKEN)).await.ok() }
    })
    .await
    .into_inner();

    // Scans keep arriving before, while and after the client is disconnected;
    // the two parcels sit on different partitions, so live updates can arrive
    // out of sequence order.
    const TOTAL: u64 = 24;
    let disconnected = Arc::new(Notify::new());
    let reconnected = Arc::new(Notify::new());
    let t0 = Utc::now().trunc_subsecs(0) - chrono::Duration::hours(1);
    let poster = {
        let sandbox = sandbox.clone();
        let (disconnected, reconnected) = (disconnected.clone(), reconnected.clone());
        tokio::spawn(async move {
            for i in 1..=TOTAL {
                if i == 11 {
                    disconnected.notified().await;
                }
                if i == 17 {
                    reconnected.notified().await;
                }
                let waybill = if i % 2 == 0 { "SFW-B" } else { "SFW-A" };
                let at = t0 + chrono::Duration::seconds(i64::try_from(i).unwrap_or(0));
                let scan = json!({
                    "carrier": "sf", "waybill": waybill, "status": "in_transit",
                    "occurred_at": at.to_rfc3339(), "description": format!("scan {i}"),
                    "location": {"text": format!("hub {i}")}
                });
                let (status, body) = sandbox.post_generic(&scan).await;
                assert_eq!(status, 200, "{body}");
            }
        })
    };

    let mut seen: Vec<ShipmentUpdate> = Vec::new();
    while seen.len() < 6 {
        seen.push(next(&mut first, WAIT).await.unwrap().expect("stream open"));
    }
    drop(first);
    disconnected.notify_one();
    let resume = seen.last().map_or(0, |u| u.seq);
    let mut second = grpc
        .watch_order(watch("O-W", resume, ACME_TOKEN))
        .await
        .unwrap()
        .into_inner();
    reconnected.notify_one();
    while seen.len() < usize::try_from(TOTAL).unwrap() {
        seen.push(next(&mut second, WAIT).await.unwrap().expect("stream open"));
    }
    poster.await.unwrap();

    let seqs: Vec<u64> = seen.iter().map(|u| u.seq).collect();
    assert_eq!(
        seqs,
        (1..=TOTAL).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let mut texts: Vec<String> = seen
        .iter()
        .map(|u| {
            u.event
                .as_ref()
                .map_or_else(String::new, |e| e.raw_text.clone())
        })
        .collect();
    texts.sort();
    let mut expected: Vec<String> = (1..=TOTAL).map(|i| format!("scan {i}")).collect();
    expected.sort();
    assert_eq!(texts, expected, "every scan exactly once");
    // Updates carry no buyer contact (the detector strips it); nothing raw
    // reaches a watcher either way.
    assert!(seen.iter().all(|u| {
        u.shipment
            .as_ref()
            .and_then(|s| s.buyer.as_ref())
            .is_none_or(|b| b.phone.is_empty() && b.email.is_empty() && b.name.is_empty())
    }));
    Arc::try_unwrap(sandbox)
        .unwrap_or_else(|_| panic!("sandbox still shared"))
        .shutdown()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_merchant_cannot_read_or_watch_an_order_that_get_order_shows_in_full() {
    let sandbox = Sandbox::start().await;
    let buyer = json!({"name": "Li Lei", "phone": "13812345678", "email": "lilei@example.com",
                       "locale": "zh-CN", "time_zone": "Asia/Shanghai"});
    let (status, body) = sandbox
        .register(&json!({"shipments": [
            {"order_id": "O-M", "carrier": "sf", "waybill": "SFM-1", "buyer": buyer,
             "promised_delivery_at": "2030-01-02T18:00:00+08:00"},
            {"order_id": "O-M", "carrier": "yto", "waybill": "YTM-2", "buyer": buyer},
            {"order_id": "O-M", "carrier": "sf", "waybill": "SFM-R", "buyer": buyer,
             "is_return": true},
        ]}))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 3})));
    let t0 = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(30);
    for (i, status) in ["picked_up", "out_for_delivery"].iter().enumerate() {
        let at = t0 + chrono::Duration::minutes(i64::try_from(i).unwrap_or(0));
        let scan = json!({
            "carrier": "sf", "waybill": "SFM-1", "status": status,
            "occurred_at": at.to_rfc3339(), "description": status,
            "estimated_delivery_at": "2030-01-01T18:00:00+08:00"
        });
        let (code, body) = sandbox.post_generic(&scan).await;
        assert_eq!(code, 200, "{body}");
    }

    let grpc = sandbox.grpc().await;
    let order = trackstream_testkit::eventually(WAIT, "the order with both scans", || {
        let mut grpc = grpc.clone();
        async move {
            let order = grpc
                .get_order(authed(
                    GetOrderRequest {
                        order_id: "O-M".into(),
                    },
                    ACME_TOKEN,
                ))
                .await
                .ok()?
                .into_inner();
            (order.last_seq >= 2 && order.parcels.len() == 3).then_some(order)
        }
    })
    .await;
    let summary: Vec<(String, i32, bool, usize)> = order
        .parcels
        .iter()
        .map(|p| {
            let s = p.shipment.clone().unwrap_or_default();
            (s.waybill, p.current_status, s.is_return, p.timeline.len())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("SFM-1".to_owned(), Status::OutForDelivery as i32, false, 2),
            ("YTM-2".to_owned(), Status::Pending as i32, false, 0),
            ("SFM-R".to_owned(), Status::Pending as i32, true, 0),
        ]
    );
    let first = &order.parcels[0];
    let shipment = first.shipment.clone().unwrap_or_default();
    assert_eq!(
        shipment.promised_delivery_at.map(|t| t.seconds),
        Some(utc("2030-01-02T18:00:00+08:00").timestamp())
    );
    assert_eq!(
        first.estimated_delivery_at.map(|t| t.seconds),
        Some(utc("2030-01-01T18:00:00+08:00").timestamp())
    );
    let buyer = shipment.buyer.unwrap_or_default();
    assert_eq!(
        (buyer.phone.as_str(), buyer.email.as_str()),
        ("138****5678", "l***@example.com")
    );
    assert_eq!(order.merchant_id, "m-acme");

    // The other merchant: NOT_FOUND for reads and watches, exactly like an order
    // that does not exist; no alerts of another merchant; no anonymous access.
    let mut grpc = grpc.clone();
    for order_id in ["O-M", "O-NOPE"] {
        let token = if order_id == "O-M" {
            OTHER_TOKEN
        } else {
            ACME_TOKEN
        };
        let read = grpc
            .get_order(authed(
                GetOrderRequest {
                    order_id: order_id.into(),
                },
                token,
            ))
            .await
            .expect_err("not visible");
        assert_eq!(read.code(), tonic::Code::NotFound, "{order_id}");
        let watched = grpc
            .watch_order(watch(order_id, 0, token))
            .await
            .expect_err("not visible");
        assert_eq!(watched.code(), tonic::Code::NotFound, "{order_id}");
    }
    let alerts = grpc
        .watch_alerts(authed(
            WatchAlertsRequest {
                merchant_id: "m-acme".into(),
                min_severity: Severity::Info as i32,
            },
            OTHER_TOKEN,
        ))
        .await
        .expect_err("another merchant's alerts");
    assert_eq!(alerts.code(), tonic::Code::PermissionDenied);
    let anonymous = grpc
        .get_order(GetOrderRequest {
            order_id: "O-M".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    // Order ids are unique only within a shop: the other merchant's own "O-M"
    // is a different order, with its own parcels and sequence.
    let (status, body) = sandbox
        .register_as(
            OTHER_TOKEN,
            &json!({"shipments": [{"order_id": "O-M", "carrier": "zto", "waybill": "ZTM-9"}]}),
        )
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));
    let scan = json!({"carrier": "zto", "waybill": "ZTM-9", "status": "picked_up",
                      "occurred_at": t0.to_rfc3339()});
    let (code, body) = sandbox.post_generic(&scan).await;
    assert_eq!(code, 200, "{body}");
    let theirs = trackstream_testkit::eventually(WAIT, "the other merchant's O-M", || {
        let mut grpc = grpc.clone();
        async move {
            let order = grpc
                .get_order(authed(
                    GetOrderRequest {
                        order_id: "O-M".into(),
                    },
                    OTHER_TOKEN,
                ))
                .await
                .ok()?
                .into_inner();
            (order.last_seq >= 1).then_some(order)
        }
    })
    .await;
    let waybills = |order: &trackstream_proto::v1::Order| -> Vec<String> {
        order
            .parcels
            .iter()
            .filter_map(|p| p.shipment.as_ref().map(|s| s.waybill.clone()))
            .collect()
    };
    assert_eq!(
        (
            theirs.merchant_id.as_str(),
            theirs.last_seq,
            waybills(&theirs)
        ),
        ("m-other", 1, vec!["ZTM-9".to_owned()])
    );
    let ours = grpc
        .get_order(authed(
            GetOrderRequest {
                order_id: "O-M".into(),
            },
            ACME_TOKEN,
        ))
        .await
        .expect("acme's order")
        .into_inner();
    assert_eq!(
        (ours.last_seq, waybills(&ours)),
        (2, vec!["SFM-1".to_owned(), "YTM-2".into(), "SFM-R".into()]),
        "the other shop's order left acme's untouched"
    );
    sandbox.shutdown().await;
}
