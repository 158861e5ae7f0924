//! The gRPC tracking API of a notifier fed directly, against a real broker and
//! Redis: slow-client cut-off, TLS with health and reflection, WatchAlerts and
//! GetOrder scoping. (WatchOrder over the whole pipeline is in
//! `sandbox/tests/watch.rs`.)
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{ACME_TOKEN, Env, OTHER_TOKEN, WAIT, shipment, update, utc, wait_serving};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use trackstream_notifier::config::TlsConfig;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    Alert, AlertState, GetOrderRequest, Severity, Status, WatchAlertsRequest,
};
use trackstream_testkit::grpc::{authed, next, watch};

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
        match next(&mut slow, WAIT).await {
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
        resumed.push(next(&mut again, WAIT).await.unwrap().expect("open").seq);
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
    let order = trackstream_testkit::eventually(WAIT, "alerts indexed", || {
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
