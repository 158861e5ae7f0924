//! The gRPC tracking API against a real broker and Redis: WatchOrder across a
//! reconnect (whole pipeline), merchant scoping and GetOrder (whole pipeline),
//! slow-client cut-off (notifier fed directly), TLS with health and reflection.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use support::{Env, WAIT, shipment, update, utc, wait_serving};
use tokio::sync::{Notify, mpsc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use trackstream_harness::sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox, authed};
use trackstream_notifier::config::TlsConfig;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    Alert, AlertState, GetOrderRequest, Severity, ShipmentUpdate, Status, WatchAlertsRequest,
    WatchOrderRequest,
};

fn watch(order: &str, after_seq: u64, token: &str) -> tonic::Request<WatchOrderRequest> {
    authed(
        WatchOrderRequest {
            order_id: order.into(),
            after_seq,
        },
        token,
    )
}

async fn next(
    stream: &mut tonic::Streaming<ShipmentUpdate>,
) -> Result<Option<ShipmentUpdate>, tonic::Status> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no update within {WAIT:?}"))
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
    wait_serving(sandbox_channel(&sandbox).connect().await.unwrap()).await;
    let mut grpc = sandbox.grpc().await;
    // A registered order can be watched before its first scan.
    let mut first = trackstream_harness::eventually(WAIT, "the watch accepted", || {
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
        seen.push(next(&mut first).await.unwrap().expect("stream open"));
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
        seen.push(next(&mut second).await.unwrap().expect("stream open"));
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
    let order = trackstream_harness::eventually(WAIT, "the order with both scans", || {
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
    let theirs = trackstream_harness::eventually(WAIT, "the other merchant's O-M", || {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_with_a_resume_point_while_fast_ones_keep_up() {
    const ROUND: u64 = 8;
    let env = Env::start(utc("2025-03-10T12:00:00+08:00"), |config| {
        config.grpc.watch_buffer = 16;
    })
    .await;
    env.wait_live().await;
    let parcel = shipment("O-SLOW", "SF70", "m-acme");
    let padded = |n: u64| {
        let mut u = update(&parcel, Status::InTransit, n, &format!("slow-{n}"));
        if let Some(event) = u.event.as_mut() {
            event.raw_text = "x".repeat(8 * 1024);
        }
        u
    };
    env.record_update(padded(0)).await;

    // The fast client reads everything as it comes, on its own connection.
    let mut fast = env
        .client()
        .await
        .watch_order(watch("O-SLOW", 0, ACME_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let (fast_tx, mut fast_rx) = mpsc::unbounded_channel();
    let fast_reader = tokio::spawn(async move {
        loop {
            match fast.message().await {
                Ok(Some(u)) => {
                    if fast_tx.send(u.seq).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    });
    // The slow client, with a small HTTP/2 window, opens its watch and then does
    // not read.
    let slow_channel = Endpoint::from_shared(format!("http://{}", env.running.grpc_addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = TrackingServiceClient::new(slow_channel)
        .watch_order(watch("O-SLOW", 0, ACME_TOKEN))
        .await
        .unwrap()
        .into_inner();

    let mut total = 1;
    let mut fast_seen = vec![];
    let mut cut = false;
    for _round in 0..300 {
        for _ in 0..ROUND {
            total = env.record_update(padded(total)).await.seq;
        }
        while fast_seen.last() != Some(&total) {
            let seq = tokio::time::timeout(WAIT, fast_rx.recv())
                .await
                .expect("the fast watcher keeps up")
                .expect("the fast watcher's stream is healthy");
            fast_seen.push(seq);
        }
        if env
            .metric("trackstream_notifier_grpc_watch_cutoffs_total")
            .await
            >= 1.0
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow watcher was never cut off");
    assert_eq!(fast_seen, (1..=total).collect::<Vec<_>>());

    // The slow client gets a contiguous prefix, then the resume point.
    let mut slow_seen = vec![];
    let status = loop {
        match next(&mut slow).await {
            Ok(Some(u)) => slow_seen.push(u.seq),
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let resume: u64 = status
        .metadata()
        .get("resume-after-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("resume-after-seq metadata");
    let k = u64::try_from(slow_seen.len()).unwrap();
    assert!(k > 0 && k < total, "a strict prefix: {k} of {total}");
    assert_eq!(slow_seen, (1..=k).collect::<Vec<_>>());
    assert_eq!(resume, k, "resume right after the last update received");

    // Resuming from there misses and repeats nothing.
    let mut again = env
        .client()
        .await
        .watch_order(watch("O-SLOW", resume, ACME_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut resumed = vec![];
    while resumed.last() != Some(&total) {
        resumed.push(next(&mut again).await.unwrap().expect("open").seq);
    }
    assert_eq!(resumed, (resume + 1..=total).collect::<Vec<_>>());

    // The fast watcher is still live.
    let more = env.record_update(padded(total + 1)).await.seq;
    let seq = tokio::time::timeout(WAIT, fast_rx.recv()).await.unwrap();
    assert_eq!(seq, Some(more));
    assert!(!fast_reader.is_finished());
    env.shutdown().await;
    // Shutdown ends live streams with a resume point too.
    let ended = tokio::time::timeout(WAIT, fast_reader)
        .await
        .unwrap()
        .unwrap();
    let status = ended.expect_err("ended by shutdown with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status
            .metadata()
            .get("resume-after-seq")
            .and_then(|v| v.to_str().ok()),
        Some(more.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_api_health_and_reflection() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let env = Env::start(utc("2025-03-10T12:00:00+08:00"), |config| {
        config.grpc.tls = Some(TlsConfig {
            cert_path: fixtures.join("server.pem"),
            key_path: fixtures.join("server.key"),
            client_ca_path: None,
        });
    })
    .await;
    let port = env.running.grpc_addr.port();
    let ca = Certificate::from_pem(std::fs::read(fixtures.join("ca.pem")).unwrap());
    let channel: Channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    wait_serving(channel.clone()).await;

    // Reflection (what grpcurl uses instead of .proto files).
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "trackstream.v1.TrackingService".into(),
            )),
        },
    ]);
    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = match responses
        .message()
        .await
        .unwrap()
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    for service in ["trackstream.v1.TrackingService", "grpc.health.v1.Health"] {
        assert!(
            listed.iter().any(|s| s == service),
            "{service} in {listed:?}"
        );
    }
    match responses
        .message()
        .await
        .unwrap()
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }

    // The API itself, over TLS.
    let mut api = TrackingServiceClient::new(channel);
    let missing = api
        .get_order(authed(
            GetOrderRequest {
                order_id: "O-TLS".into(),
            },
            ACME_TOKEN,
        ))
        .await
        .expect_err("no such order");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Plaintext is refused.
    let plaintext = async {
        match TrackingServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Err(_) => true,
            Ok(mut client) => client
                .get_order(authed(
                    GetOrderRequest {
                        order_id: "O-TLS".into(),
                    },
                    ACME_TOKEN,
                ))
                .await
                .is_err(),
        }
    };
    let refused = tokio::time::timeout(Duration::from_secs(30), plaintext)
        .await
        .unwrap_or(true);
    assert!(refused, "a plaintext call must fail");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_alerts_and_get_order_show_only_the_merchants_alerts() {
    let env = Env::start(utc("2025-03-10T12:00:00+08:00"), |_| {}).await;
    env.wait_live().await;
    let parcel = shipment("O-AL", "SF80", "m-acme");
    env.record_update(update(&parcel, Status::InTransit, 1, "al-1"))
        .await;
    let watch_alerts = |token: &'static str, min: Severity| {
        let addr = env.running.grpc_addr;
        async move {
            support::client_of(addr)
                .await
                .watch_alerts(authed(
                    WatchAlertsRequest {
                        merchant_id: String::new(),
                        min_severity: min as i32,
                    },
                    token,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut acme = watch_alerts(ACME_TOKEN, Severity::Warning).await;
    let mut other = watch_alerts(OTHER_TOKEN, Severity::Info).await;
    let alert = |id: &str, merchant: &str, severity: Severity, state: AlertState| Alert {
        alert_id: id.into(),
        rule: "stalled_in_transit".into(),
        state: state as i32,
        severity: severity as i32,
        carrier: "sf".into(),
        waybill: "SF80".into(),
        order_id: if merchant == "m-acme" {
            "O-AL"
        } else {
            "O-ELSE"
        }
        .into(),
        merchant_id: merchant.into(),
        ..Alert::default()
    };
    // One partition (same key), so this order is the order they are handled in.
    for a in [
        alert("a-info", "m-acme", Severity::Info, AlertState::Opened),
        alert("a-crit", "m-acme", Severity::Critical, AlertState::Opened),
        alert("a-gone", "m-acme", Severity::Warning, AlertState::Opened),
        alert("a-gone", "m-acme", Severity::Warning, AlertState::Resolved),
        alert("o-1", "m-other", Severity::Info, AlertState::Opened),
    ] {
        env.produce(trackstream_proto::topics::TRACKING_ALERTS, "sf:SF80", &a)
            .await;
    }
    let mut received = vec![];
    while received.len() < 3 {
        let a = tokio::time::timeout(WAIT, acme.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        received.push((a.alert_id, a.state));
    }
    assert_eq!(
        received,
        [
            ("a-crit".to_owned(), AlertState::Opened as i32),
            ("a-gone".to_owned(), AlertState::Opened as i32),
            ("a-gone".to_owned(), AlertState::Resolved as i32),
        ],
        "at or above WARNING, this merchant's only"
    );
    let theirs = tokio::time::timeout(WAIT, other.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        theirs.alert_id, "o-1",
        "the other merchant sees only its own"
    );

    // Every alert indexed (three ids), and only then the open ones counted.
    let order = trackstream_harness::eventually(WAIT, "alerts indexed", || {
        let addr = env.running.grpc_addr;
        let mut conn = env.conn.clone();
        async move {
            let indexed: usize = redis::AsyncCommands::hlen(
                &mut conn,
                trackstream_runtime::order_log::key(
                    &trackstream_runtime::order_log::order_ref("m-acme", "O-AL"),
                    "alerts",
                ),
            )
            .await
            .ok()?;
            if indexed < 3 {
                return None;
            }
            let order = support::client_of(addr)
                .await
                .get_order(authed(
                    GetOrderRequest {
                        order_id: "O-AL".into(),
                    },
                    ACME_TOKEN,
                ))
                .await
                .ok()?
                .into_inner();
            (order.open_alerts.len() == 2).then_some(order)
        }
    })
    .await;
    let mut open: Vec<String> = order.open_alerts.into_iter().map(|a| a.alert_id).collect();
    open.sort();
    assert_eq!(open, ["a-crit", "a-info"], "resolved alerts are not open");
    env.shutdown().await;
}
