//! Attacks on the edge (see `main.rs`): HTTP connection hygiene on ingest's
//! public listener, replay windows of signed provider timestamps, and startup
//! validation of merchant tokens and ids.
//!
//! The hygiene tests run against ingest's listener with short
//! [`ListenerLimits`] set through `[http.limits]` (`HttpConfig::limits`), so a
//! slow client is cut within a second or two; the deadlines below only bound how
//! long a test polls, they assert no timing.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trackstream_carriers::{AccountSecret, ProviderSettings, aftership};
use trackstream_runtime::config::ListenerLimits;
use trackstream_runtime::merchants::{MerchantConfig, MerchantDirectory};
use trackstream_sandbox::{Configs, Sandbox};

/// The limits ingest's listener runs with in these tests.
fn limits() -> ListenerLimits {
    ListenerLimits {
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        max_connections: 16,
    }
}

/// Applies [`limits`] to ingest's public listener.
fn short_limits(configs: &mut Configs) {
    configs.ingest.http.limits = limits();
}

/// Like [`short_limits`], with a long idle timeout: the cap test holds its
/// connections idle while it checks that the extra ones wait.
fn capped(configs: &mut Configs) {
    configs.ingest.http.limits = ListenerLimits {
        idle_timeout: Duration::from_secs(120),
        ..limits()
    };
}

/// Longest any connection may live past a limit before the test fails.
fn deadline(limit: Duration) -> Duration {
    limit * 2 + Duration::from_secs(20)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Reads until the server closes the connection (or it resets); returns what
/// was read. Panics if it stays open past `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut text = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut text)).await;
    assert!(read.is_ok(), "connection still open after {within:?}");
    String::from_utf8_lossy(&text).into_owned()
}

fn registration(order: &str, waybill: &str) -> serde_json::Value {
    json!({"order_id": order, "carrier": "SF", "waybill": waybill,
           "buyer": {"name": "Li Lei", "phone": "13812345678", "locale": "en"}})
}

#[tokio::test]
async fn slow_headers_are_closed_while_normal_requests_succeed() {
    let sandbox = Sandbox::start_with(short_limits).await;
    let addr = sandbox.ingest_addr;
    // A slowloris: many connections, each with half a request header.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(addr).await;
        stream
            .write_all(b"POST /v1/shipments HTTP/1.1\r\nhost: ingest\r\ncontent-le")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        slow.push(stream);
    }
    // The listener still serves everyone else.
    let (status, body) = sandbox.register(&registration("O-SLOW-1", "SFSLOW1")).await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));
    // Every slow connection is closed, without an answer.
    let within = deadline(limits().header_read_timeout);
    for stream in &mut slow {
        assert_eq!(read_until_closed(stream, within).await, "");
    }
    let (status, _) = sandbox.register(&registration("O-SLOW-2", "SFSLOW2")).await;
    assert_eq!(status, 200);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let sandbox = Sandbox::start_with(short_limits).await;
    let mut stream = connect(sandbox.ingest_addr).await;
    let body = registration("O-IDLE-1", "SFIDLE1").to_string();
    let request = format!(
        "POST /v1/shipments HTTP/1.1\r\nhost: ingest\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        trackstream_sandbox::ACME_TOKEN,
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    // The response comes on a kept-alive connection, which then sits idle
    // until the server closes it.
    let text = read_until_closed(&mut stream, deadline(limits().idle_timeout)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#"{"accepted":1}"#), "{text}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_others_close() {
    let sandbox = Sandbox::start_with(capped).await;
    let addr = sandbox.ingest_addr;
    let cap = limits().max_connections;
    // Fill the cap with connections that each completed one request, so every
    // one of them is known to be accepted and held (keep-alive).
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut stream = connect(addr).await;
        stream
            .write_all(b"POST /v1/shipments HTTP/1.1\r\nhost: ingest\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut first = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut first))
            .await
            .unwrap_or_else(|_| panic!("held connection not served"))
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(&first, b"HTTP/1.1 401");
        held.push(stream);
    }
    // N more connect (the kernel queues them) but are not served...
    let mut extra = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(addr).await;
        stream
            .write_all(b"POST /v1/shipments HTTP/1.1\r\nhost: ingest\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        extra.push(stream);
    }
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), extra[0].read(&mut byte)).await;
    assert!(early.is_err(), "served over the cap: {early:?}");
    // ...until held connections close; then each is served.
    held.truncate(cap - extra.len());
    for stream in &mut extra {
        let text = read_until_closed(stream, Duration::from_secs(30)).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    }
    drop(held);
    sandbox.shutdown().await;
}

const AFTERSHIP_SECRET: &str = "whsec-security-edge";

fn with_aftership(configs: &mut Configs) {
    short_limits(configs);
    configs.ingest.providers.insert(
        "aftership".into(),
        ProviderSettings {
            secrets: vec![AccountSecret {
                account: "as-prod".into(),
                secret: AFTERSHIP_SECRET.into(),
            }],
            ..Default::default()
        },
    );
}

fn aftership_push(waybill: &str, ts: i64) -> Vec<u8> {
    json!({"event": "tracking_update", "event_id": format!("ev-{waybill}-{ts}"), "ts": ts,
           "msg": {"slug": "ups", "tracking_number": waybill, "tag": "InTransit",
                   "checkpoints": [{"checkpoint_time": "2026-11-20T09:00:00-05:00",
                                    "tag": "InTransit", "subtag": "InTransit_001",
                                    "message": "Arrived at facility"}]}})
    .to_string()
    .into_bytes()
}

async fn post_aftership(sandbox: &Sandbox, body: Vec<u8>) -> (u16, serde_json::Value) {
    let signature = aftership::sign(&body, AFTERSHIP_SECRET);
    sandbox
        .post(
            "/v1/webhooks/aftership",
            &[
                ("content-type", "application/json".into()),
                ("aftership-hmac-sha256", signature),
            ],
            body,
        )
        .await
}

#[tokio::test]
async fn replayed_aftership_push_outside_the_window_is_refused() {
    let sandbox = Sandbox::start_with(with_aftership).await;
    let now = chrono::Utc::now().timestamp();
    // Captured an hour ago and replayed now: correctly signed, but stale.
    let (status, body) = post_aftership(&sandbox, aftership_push("1ZREPLAY", now - 3_600)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("ts"), "{body}");
    // Dated ahead of our clock beyond the tolerance: refused too.
    let (status, _) = post_aftership(&sandbox, aftership_push("1ZAHEAD", now + 3_600)).await;
    assert_eq!(status, 401);
    // Inside the window: accepted and written.
    let (status, body) = post_aftership(&sandbox, aftership_push("1ZFRESH", now)).await;
    assert_eq!(status, 200, "{body}");
    let mut raw = sandbox.reader(trackstream_proto::topics::SCANS_RAW);
    let records = raw
        .until(
            Duration::from_secs(30),
            "the fresh push on scans.raw",
            |r| r.iter().any(|r| r.key.ends_with(":1ZFRESH")),
        )
        .await;
    assert!(
        !records
            .iter()
            .any(|r| r.key.contains("1ZREPLAY") || r.key.contains("1ZAHEAD")),
        "a refused push was written"
    );
    sandbox.shutdown().await;
}

fn merchant(id: &str, tokens: &[&str]) -> MerchantConfig {
    MerchantConfig {
        id: id.into(),
        name: id.into(),
        tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
    }
}

#[test]
fn duplicate_and_empty_secrets_are_refused_at_startup_with_the_key_named() {
    const A: &str = "merchant-a-token-0001";
    const B: &str = "merchant-b-token-0002";
    let cases = [
        (
            vec![
                merchant("a", &[A]),
                merchant("b", &[B]),
                merchant("c", &[A]),
            ],
            "merchants[2].tokens[0] duplicates merchants[0].tokens[0]",
        ),
        (
            vec![merchant("a", &[A]), merchant("a", &[B])],
            "merchants[1].id duplicates merchants[0].id",
        ),
        (
            vec![merchant("a", &[A]), merchant("b", &[""])],
            "merchants[1].tokens[0] is empty",
        ),
        (vec![merchant("", &[A])], "merchants[0].id is empty"),
        (
            vec![merchant("a", &["short"])],
            "merchants[0].tokens[0] is 5 bytes",
        ),
    ];
    for (merchants, expected) in cases {
        let err = MerchantDirectory::try_new(merchants)
            .err()
            .map(|e| trackstream_runtime::Error::from(e).to_string())
            .unwrap_or_else(|| panic!("accepted; expected {expected}"));
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(A) && !err.contains(B), "token printed: {err}");
    }
}
