//! The pages in headless Chromium, on a real stack: the checks themselves are
//! `web/browser/buyer.mjs` and `console.mjs` (playwright-core); these tests
//! build the world they look at — orders registered and scanned through
//! ingest, a link taken from a real buyer message, signed webhooks for the
//! scripts to fire while a page is open — and run them.

use std::path::PathBuf;

use chrono::Utc;
use serde_json::json;
use trackstream_proto::topics;
use trackstream_proto::v1::Alert;
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox, WEB_LINK_SECRET, WEB_PHONE_PEPPER};
use trackstream_web::links::{Link, Scope};

use crate::support::{self, Client, WAIT};

const PHONE: &str = "13812345678";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where a test's screenshots are kept (CI keeps `target/browser-artifacts`).
fn artifacts(test: &str) -> PathBuf {
    let dir = repo().join("target/browser-artifacts").join(test);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Runs `web/browser/<script>` with `env`; fails the test with its output
/// unless every check passed.
async fn run(script: &str, env: Vec<(&str, String)>) {
    let dir = repo().join("web/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "web/browser has no npm packages: run deploy/local/install-deps.sh (deploy/local/test.sh does)"
    );
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(240),
        tokio::process::Command::new("node")
            .arg(script)
            .current_dir(&dir)
            .envs(env)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{script} did not finish within 4 minutes"))
    .unwrap_or_else(|e| panic!("running node {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{script}:\n{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buyer_page_opened_from_a_real_message_shows_the_timeline_live_in_two_languages() {
    let sandbox = Sandbox::start().await;
    let now = Utc::now();
    let hours = |h: i64| now - chrono::Duration::hours(h);
    // One buyer, two orders in acme's shop and one in the other shop.
    support::register(&sandbox, ACME_TOKEN, "W-1001", "SFW1001A", PHONE).await;
    support::register(&sandbox, ACME_TOKEN, "W-1002", "SFW1002A", PHONE).await;
    support::register(&sandbox, OTHER_TOKEN, "W-9001", "SFW9001A", PHONE).await;
    for (waybill, status, at, city) in [
        ("SFW1001A", "picked_up", hours(5), "深圳市"),
        ("SFW1001A", "in_transit", hours(3), "广州市"),
        ("SFW1001A", "out_for_delivery", hours(1), "杭州市"),
        ("SFW1002A", "picked_up", hours(2), "深圳市"),
        ("SFW9001A", "picked_up", hours(2), "深圳市"),
    ] {
        support::push(&sandbox, &support::scan(waybill, status, at, city)).await;
    }
    let (message, link) = support::message_link(&sandbox, "W-1001").await;
    assert!(
        message.body.ends_with(&message.tracking_url),
        "{}",
        message.body
    );
    assert!(!message.body.contains(PHONE) && !message.tracking_url.contains(PHONE));

    // The page is opened once the pipeline has stored every scan.
    let token = link.rsplit('/').next().unwrap_or_default().to_owned();
    let client = Client::new(&sandbox);
    let expected = vec![
        (
            "W-1002".to_owned(),
            vec![("SFW1002A".to_owned(), vec!["PICKED_UP".to_owned()])],
        ),
        (
            "W-1001".to_owned(),
            vec![(
                "SFW1001A".to_owned(),
                ["OUT_FOR_DELIVERY", "IN_TRANSIT", "PICKED_UP"]
                    .map(str::to_owned)
                    .to_vec(),
            )],
        ),
    ];
    client
        .until(
            &format!("/api/v1/track/{token}"),
            None,
            "the buyer view",
            |view| support::timelines(view) == expected,
        )
        .await;

    let dir = artifacts("buyer");
    let live_scan = support::webhook_file(
        &sandbox,
        &dir,
        "scan.json",
        &support::scan(
            "SFW1001A",
            "delivered",
            now - chrono::Duration::minutes(2),
            "杭州市",
        ),
    );
    let links = trackstream_web::Links::new(&trackstream_web::WebConfig {
        link_secret: WEB_LINK_SECRET.into(),
        phone_pepper: WEB_PHONE_PEPPER.into(),
        ..trackstream_web::WebConfig::default()
    });
    let expired = links
        .sign(&Link {
            merchant_id: "m-acme".into(),
            scope: Scope::Buyer(links.phone_key(PHONE).expect("a phone")),
            expires_at: now.timestamp() - 60,
        })
        .expect("signed");
    // The same payload under a MAC of another secret: not ours.
    let forged = format!(
        "{}.{}",
        token.split('.').next().unwrap_or_default(),
        "A".repeat(22)
    );
    let expect_orders = json!([
        {"order_id": "W-1002", "parcels": [{"waybill": "SFW1002A", "statuses": ["PICKED_UP"]}]},
        {"order_id": "W-1001", "parcels": [{"waybill": "SFW1001A",
            "statuses": ["OUT_FOR_DELIVERY", "IN_TRANSIT", "PICKED_UP"]}]}
    ]);
    run(
        "buyer.mjs",
        vec![
            ("BASE_URL", client.base.clone()),
            ("BUYER_LINK", link),
            ("EXPECT_ORDERS", expect_orders.to_string()),
            ("SCAN_REQUEST", live_scan),
            (
                "SCAN_EXPECT",
                json!({"waybill": "SFW1001A", "status": "DELIVERED"}).to_string(),
            ),
            (
                "BAD_LINKS",
                json!([
                    {"url": format!("/t/{forged}"), "kind": "invalid"},
                    {"url": format!("/t/{expired}"), "kind": "expired"}
                ])
                .to_string(),
            ),
            (
                "FORBIDDEN_TEXT",
                json!(["W-9001", "SFW9001A", PHONE]).to_string(),
            ),
            ("LOOKUP_URL", format!("{}/s/m-acme", client.base)),
            ("LOOKUP_ORDER_ID", "W-1002".into()),
            ("LOOKUP_LAST4", "5678".into()),
            ("ARTIFACTS", dir.display().to_string()),
        ],
    )
    .await;
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_new_alert_live_and_finds_an_order_by_the_buyers_phone() {
    let sandbox = Sandbox::start().await;
    let now = Utc::now();
    let ago = |m: i64| now - chrono::Duration::minutes(m);
    support::register(&sandbox, ACME_TOKEN, "C-2001", "SFC2001A", "13900001111").await;
    support::register(&sandbox, ACME_TOKEN, "C-2002", "SFC2002A", "13900002222").await;
    support::register(&sandbox, OTHER_TOKEN, "C-9001", "SFC9001X", "13900001111").await;
    for waybill in ["SFC2001A", "SFC2002A", "SFC9001X"] {
        support::push(
            &sandbox,
            &support::scan(waybill, "picked_up", ago(90), "深圳市"),
        )
        .await;
    }
    // The other shop's parcel has an open alert before the console opens: it
    // must never show on acme's board.
    let mut alerts = sandbox.reader(topics::TRACKING_ALERTS);
    support::push(
        &sandbox,
        &support::scan("SFC9001X", "exception", ago(60), "深圳市"),
    )
    .await;
    alerts
        .until(WAIT, "the other shop's alert", |r| {
            trackstream_testkit::kafka::all(r, |a: &[Alert]| {
                a.iter().any(|a| a.waybill == "SFC9001X")
            })
        })
        .await;
    let client = Client::new(&sandbox);

    let dir = artifacts("console");
    let alert_scan = support::webhook_file(
        &sandbox,
        &dir,
        "exception.json",
        &support::scan("SFC2001A", "exception", ago(5), "广州市"),
    );
    run(
        "console.mjs",
        vec![
            ("BASE_URL", client.base.clone()),
            ("MERCHANT_TOKEN", ACME_TOKEN.into()),
            ("WRONG_TOKEN", "not-a-merchant-token-at-all".into()),
            ("ALERT_REQUEST", alert_scan),
            ("ALERT_EXPECT", json!({"waybill": "SFC2001A"}).to_string()),
            ("PHONE", "+86 139 0000 1111".into()),
            ("PHONE_ORDER_ID", "C-2001".into()),
            (
                "FORBIDDEN_TEXT",
                json!(["SFC9001X", "C-9001", "13900001111"]).to_string(),
            ),
            ("ARTIFACTS", dir.display().to_string()),
        ],
    )
    .await;
    sandbox.shutdown().await;
}
