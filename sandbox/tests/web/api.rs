//! The JSON API and its event streams, without a browser.

use chrono::Utc;
use serde_json::{Value, json};
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox};

use crate::support::{self, Client, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_answers_one_404_for_every_miss_and_is_rate_limited_per_order() {
    let sandbox = Sandbox::start_with(|c| {
        if let Some(web) = c.notifier.web.as_mut() {
            web.lookups_per_order = 4;
        }
    })
    .await;
    support::register(&sandbox, ACME_TOKEN, "L-1", "SFL1", "13812345678").await;
    support::register(&sandbox, OTHER_TOKEN, "L-9", "SFL9", "13812345678").await;
    let client = Client::new(&sandbox);
    let lookup = |order: &str, digits: &str| json!({"order_id": order, "phone_last4": digits});
    // The registration reaches the notifier asynchronously; the merchant's own
    // view says when (a lookup is not polled: every try counts).
    client
        .until(
            "/api/v1/merchant/orders/L-1",
            Some(ACME_TOKEN),
            "L-1 registered",
            |_| true,
        )
        .await;
    client
        .until(
            "/api/v1/merchant/orders/L-9",
            Some(OTHER_TOKEN),
            "L-9 registered",
            |_| true,
        )
        .await;
    let lookup_at = |order: &'static str, digits: &'static str| {
        let client = &client;
        async move {
            client
                .post("/api/v1/shops/m-acme/lookup", &lookup(order, digits))
                .await
        }
    };
    let (status, _, found) = lookup_at("L-1", "5678").await;
    assert_eq!(status, 200, "{found}");
    let url = found["url"].as_str().unwrap_or_default();
    assert!(url.starts_with("/t/"), "{found}");
    let (status, view) = client
        .get(
            &format!("/api/v1{}", url.replacen("/t/", "/track/", 1)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    let orders: Vec<&str> = support::order_ids(&view["orders"]);
    assert_eq!(orders, ["L-1"], "a lookup opens that order only");

    // Wrong digits, another shop's order, an unknown order: one answer.
    let (wrong, _, wrong_body) = lookup_at("L-1", "0000").await;
    let (foreign, _, foreign_body) = lookup_at("L-9", "5678").await;
    let (unknown, _, unknown_body) = lookup_at("L-2", "5678").await;
    assert_eq!((wrong, foreign, unknown), (404, 404, 404));
    assert_eq!(wrong_body["error"], "not_found");
    assert_eq!(wrong_body, foreign_body);
    assert_eq!(wrong_body, unknown_body);

    // Two more guesses make L-1's 4 attempts of this window; the fifth is
    // refused before the digits are checked, right digits or not.
    for digits in ["1111", "2222"] {
        assert_eq!(lookup_at("L-1", digits).await.0, 404);
    }
    let (status, retry, body) = lookup_at("L-1", "5678").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_requests")),
        "{body}"
    );
    assert!(
        retry
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
    );
    // Another order of the same client is still looked up.
    assert_eq!(lookup_at("L-2", "5678").await.0, 404);

    // Malformed input is a 400 with a reason, never a lookup.
    for bad in [
        json!({"order_id": "L-1", "phone_last4": "56a8"}),
        json!({"order_id": "", "phone_last4": "5678"}),
        json!({"order": 1}),
    ] {
        let (status, _, body) = client.post("/api/v1/shops/m-acme/lookup", &bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
    }
    let (status, _, _) = client
        .post("/api/v1/shops/m-nobody/lookup", &lookup("L-1", "5678"))
        .await;
    assert_eq!(status, 404);
    sandbox.shutdown().await;
}

/// Reads an event stream until `count` events of `name` came; their (id, data).
async fn read_events(
    client: &Client,
    path: &str,
    last_event_id: Option<u64>,
    name: &str,
    count: usize,
) -> Vec<(String, Value)> {
    let mut request = client.raw().get(format!("{}{path}", client.base));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let mut response = request.send().await.expect("stream");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < count {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let chunk = tokio::time::timeout(left, response.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{path}: {} of {count} {name} events: {buffer}",
                    events.len()
                )
            })
            .expect("chunk")
            .expect("the stream stays open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_owned())
            };
            if field("event:").as_deref() == Some(name) {
                let data = serde_json::from_str(&field("data:").unwrap_or_default())
                    .unwrap_or(Value::Null);
                events.push((field("id:").unwrap_or_default(), data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opens_its_buyers_orders_only_and_its_streams_resume_by_sequence() {
    let sandbox = Sandbox::start().await;
    let now = Utc::now();
    let hours = |h: i64| now - chrono::Duration::hours(h);
    support::register(&sandbox, ACME_TOKEN, "S-1", "SFS1", "13812345678").await;
    support::register(&sandbox, ACME_TOKEN, "S-2", "SFS2", "13700000000").await;
    support::register(&sandbox, OTHER_TOKEN, "S-9", "SFS9", "13812345678").await;
    for (waybill, status, at) in [
        ("SFS1", "picked_up", hours(5)),
        ("SFS1", "in_transit", hours(3)),
        ("SFS2", "picked_up", hours(3)),
        ("SFS9", "picked_up", hours(3)),
    ] {
        support::push(&sandbox, &support::scan(waybill, status, at, "深圳市")).await;
    }
    let (_, link) = support::message_link(&sandbox, "S-1").await;
    let token = link.rsplit('/').next().unwrap_or_default().to_owned();
    let client = Client::new(&sandbox);
    let view = client
        .until(
            &format!("/api/v1/track/{token}"),
            None,
            "both scans of S-1",
            |v| {
                v["orders"][0]["parcels"][0]["events"]
                    .as_array()
                    .is_some_and(|e| e.len() == 2)
            },
        )
        .await;
    let orders: Vec<&str> = support::order_ids(&view["orders"]);
    assert_eq!(
        orders,
        ["S-1"],
        "not another buyer's order, not another shop's"
    );
    assert_eq!(view["shop"]["id"], "m-acme");
    assert!(!view.to_string().contains("13812345678"), "{view}");
    assert_eq!(view["orders"][0]["contact_masked"], "138****5678");

    // Another buyer's order and another shop's order: not through this link.
    for order in ["S-2", "S-9", "nope"] {
        let (status, body) = client
            .get(
                &format!("/api/v1/track/{token}/orders/{order}/events"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("not_found")),
            "{order}: {body}"
        );
    }
    // A tampered link opens nothing.
    let tampered = format!("{}x", token);
    let (status, body) = client.get(&format!("/api/v1/track/{tampered}"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("link_invalid")),
        "{body}"
    );

    // The stream replays the order from the start, then resumes after the
    // sequence number the browser last saw (Last-Event-ID).
    let path = format!("/api/v1/track/{token}/orders/S-1/events");
    let all = read_events(&client, &path, None, "update", 2).await;
    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
    assert_eq!(all[1].1["event"]["status"], "IN_TRANSIT");
    let resumed = read_events(&client, &path, Some(1), "update", 1).await;
    assert_eq!(resumed[0].0, "2");
    // Live: a new scan arrives on an open stream after the replay.
    let live = {
        let client = Client::new(&sandbox);
        let path = format!("{path}?after_seq=2");
        tokio::spawn(async move { read_events(&client, &path, None, "update", 1).await })
    };
    // The stream subscribes before replaying, so a scan pushed now is seen
    // either as history or live, never lost.
    support::push(
        &sandbox,
        &support::scan("SFS1", "out_for_delivery", hours(1), "杭州市"),
    )
    .await;
    let live = live.await.expect("stream task");
    assert_eq!(
        (live[0].0.as_str(), &live[0].1["status"]),
        ("3", &json!("OUT_FOR_DELIVERY"))
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_signs_in_by_token_and_finds_orders_by_exact_keys_only() {
    let sandbox = Sandbox::start().await;
    support::register(&sandbox, ACME_TOKEN, "K-1", "SFK1", "13812345678").await;
    support::register(&sandbox, OTHER_TOKEN, "K-9", "SFK9", "13812345678").await;
    let client = Client::new(&sandbox);
    let (status, body) = client.get("/api/v1/merchant", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, body) = client
        .get("/api/v1/merchant", Some("wrong-token-wrong-token"))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, me) = client.get("/api/v1/merchant", Some(ACME_TOKEN)).await;
    assert_eq!((status, me["id"].as_str()), (200, Some("m-acme")), "{me}");

    let search = |q: &str| {
        format!(
            "/api/v1/merchant/search?q={}",
            q.replace('+', "%2B").replace(' ', "%20")
        )
    };
    // Registrations reach the notifier asynchronously.
    let found = client
        .until(
            &search("+86 138 1234 5678"),
            Some(ACME_TOKEN),
            "the phone search",
            |found| found["query_kind"] == "phone",
        )
        .await;
    assert_eq!(
        support::order_ids(&found["results"]),
        ["K-1"],
        "only the caller's orders: {found}"
    );
    assert_eq!(found["results"][0]["contact_masked"], "138****5678");
    for (q, kind, ids) in [
        ("SFK1", "waybill", vec!["K-1"]),
        ("K-1", "order", vec!["K-1"]),
        ("13812345679", "none", vec![]),
        ("1381234", "none", vec![]),
        ("K-9", "none", vec![]),
        ("SFK9", "none", vec![]),
    ] {
        let (status, found) = client.get(&search(q), Some(ACME_TOKEN)).await;
        let got: Vec<&str> = support::order_ids(&found["results"]);
        assert_eq!(
            (status, found["query_kind"].as_str(), got),
            (200, Some(kind), ids),
            "{q}: {found}"
        );
    }
    let (status, _) = client
        .get("/api/v1/merchant/orders/K-9", Some(ACME_TOKEN))
        .await;
    assert_eq!(status, 404, "another shop's order");
    let (status, order) = client
        .get("/api/v1/merchant/orders/K-1", Some(ACME_TOKEN))
        .await;
    assert_eq!(status, 200, "{order}");
    assert!(!order.to_string().contains("13812345678"), "{order}");
    // A carrier exception opens an alert on the merchant's board, and only there.
    let now = Utc::now();
    support::push(&sandbox, &support::scan("SFK1", "exception", now, "深圳市")).await;
    let board = client
        .until(
            "/api/v1/merchant/alerts?min_severity=WARNING",
            Some(ACME_TOKEN),
            "the alert on the board",
            |board| !board["alerts"].as_array().is_none_or(Vec::is_empty),
        )
        .await;
    let waybills: Vec<&str> = board["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["waybill"].as_str())
        .collect();
    assert_eq!(waybills, ["SFK1"], "{board}");
    let (_, theirs) = client
        .get("/api/v1/merchant/alerts", Some(OTHER_TOKEN))
        .await;
    assert_eq!(theirs["alerts"], json!([]), "another shop's board");

    // A scan normalize sets aside (dated a day ahead) counts on its owner's
    // console, not on the other shop's.
    support::push(
        &sandbox,
        &support::scan(
            "SFK1",
            "in_transit",
            now + chrono::Duration::days(1),
            "深圳市",
        ),
    )
    .await;
    let letters = client
        .until(
            "/api/v1/merchant/deadletters",
            Some(ACME_TOKEN),
            "the dead letter counted",
            |letters| letters["total"] != 0,
        )
        .await;
    assert_eq!(
        letters["by_cause"],
        json!([{"stage": "normalize", "cause": "future_dated", "count": 1}]),
        "{letters}"
    );
    let (_, theirs) = client
        .get("/api/v1/merchant/deadletters", Some(OTHER_TOKEN))
        .await;
    assert_eq!(theirs["total"], 0, "{theirs}");

    for path in [
        "/api/v1/merchant/alerts",
        "/api/v1/merchant/incidents",
        "/api/v1/merchant/scorecards",
        "/api/v1/merchant/deadletters",
    ] {
        let (status, body) = client.get(path, Some(ACME_TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = client
        .get(
            "/api/v1/merchant/alerts?min_severity=LOUD",
            Some(ACME_TOKEN),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    // The OpenAPI document describes every API route the service serves.
    let (status, spec) = client.get("/api/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{spec}"
    );
    for route in [
        "/api/v1/track/{token}",
        "/api/v1/track/{token}/orders/{order_id}/events",
        "/api/v1/shops/{merchant_id}",
        "/api/v1/shops/{merchant_id}/logo",
        "/api/v1/shops/{merchant_id}/lookup",
        "/api/v1/merchant",
        "/api/v1/merchant/orders/{order_id}",
        "/api/v1/merchant/search",
        "/api/v1/merchant/alerts",
        "/api/v1/merchant/alerts/events",
        "/api/v1/merchant/incidents",
        "/api/v1/merchant/scorecards",
        "/api/v1/merchant/deadletters",
    ] {
        assert!(
            spec["paths"].get(route).is_some(),
            "{route} is not in the OpenAPI document"
        );
    }
    sandbox.shutdown().await;
}
