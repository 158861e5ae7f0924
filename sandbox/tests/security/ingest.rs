//! Attacks on ingest (see `main.rs`): waybill takeover, provider accounts bound
//! to merchants, oversized fields, oversized records, admin paths on the public
//! port.
//!
//! "Nothing written" is shown with a marker: these sandboxes have one partition
//! per topic, so once a record written *after* the refused request is read, any
//! record of the refused request would have been read before it.

use std::time::Duration;

use serde_json::{Value, json};
use trackstream_carriers::AccountSecret;
use trackstream_proto::topics;
use trackstream_proto::v1::{RawScan, Shipment, ShipmentUpdate};
use trackstream_sandbox::{OTHER_TOKEN, Sandbox};
use trackstream_testkit::kafka::all;

const WAIT: Duration = Duration::from_secs(60);

/// A bound generic account: its pushes may touch only `m-acme`'s waybills.
const BOUND_ACCOUNT: &str = "acme-carrier";
const BOUND_SECRET: &str = "acme-carrier-secret";

fn scan(waybill: &str, status: &str, minutes_ago: i64) -> Value {
    let at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    json!({"carrier": "sf", "waybill": waybill, "status": status,
           "occurred_at": at.to_rfc3339(), "description": "hub"})
}

fn reason(body: &Value) -> String {
    body["reason"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_is_refused_with_409_and_the_owner_keeps_its_updates() {
    let sandbox = Sandbox::start_with(|c| c.partitions = 1).await;
    let (status, body) = sandbox
        .register(&json!({"order_id": "O-A", "carrier": "SF", "waybill": "TK1"}))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));

    // Another merchant registers the same waybill: 409, naming the item.
    let (status, body) = sandbox
        .register_as(
            OTHER_TOKEN,
            &json!({"order_id": "O-B", "carrier": "sf", "waybill": "TK1",
                    "buyer": {"phone": "13900000000"}}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    assert!(reason(&body).contains("shipments[0]") && reason(&body).contains("sf:TK1"));

    // All or nothing: a batch whose second item conflicts claims nothing.
    let (status, body) = sandbox
        .register_as(
            OTHER_TOKEN,
            &json!([{"order_id": "O-B2", "carrier": "sf", "waybill": "TK-FREE"},
                    {"order_id": "O-B3", "carrier": "sf", "waybill": "TK1"}]),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(reason(&body).contains("shipments[1]"), "{body}");
    assert_eq!(
        sandbox.owner_of("sf", "TK-FREE").await,
        None,
        "claim released"
    );
    assert_eq!(
        sandbox.owner_of("sf", "TK1").await.as_deref(),
        Some("m-acme")
    );

    // The owner may register again (updated content): 200.
    let (status, body) = sandbox
        .register(
            &json!({"order_id": "O-A", "carrier": "sf", "waybill": "TK1",
                          "service_level": "express"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A scan of the parcel updates A's order, never B's.
    let (status, body) = sandbox.post_generic(&scan("TK1", "in_transit", 5)).await;
    assert_eq!(status, 200, "{body}");
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    updates
        .until(WAIT, "A's order to get the scan", |r| {
            all::<ShipmentUpdate>(r, |u| {
                u.iter().any(|u| {
                    u.merchant_id == "m-acme"
                        && u.order_id == "O-A"
                        && u.event.as_ref().is_some_and(|e| e.waybill == "TK1")
                })
            })
        })
        .await;
    assert!(
        updates
            .decoded::<ShipmentUpdate>()
            .iter()
            .all(|u| u.merchant_id != "m-other"),
        "no update for the merchant whose registration was refused"
    );
    // Nothing of B's reached `shipments`: the marker is A's second
    // registration, written after both refusals.
    let mut shipments = sandbox.reader(topics::SHIPMENTS);
    shipments
        .until(WAIT, "A's two registrations", |r| {
            all::<Shipment>(r, |s| {
                s.iter().filter(|s| s.merchant_id == "m-acme").count() >= 2
            })
        })
        .await;
    assert!(
        shipments
            .decoded::<Shipment>()
            .iter()
            .all(|s| s.merchant_id == "m-acme"),
        "a refused registration wrote a record"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_provider_account_cannot_push_for_another_merchants_waybill() {
    let sandbox = Sandbox::start_with(|c| {
        c.partitions = 1;
        if let Some(generic) = c.ingest.providers.get_mut("generic") {
            generic.secrets.push(AccountSecret {
                account: BOUND_ACCOUNT.into(),
                secret: BOUND_SECRET.into(),
            });
            generic
                .bindings
                .push(trackstream_carriers::settings::Binding {
                    index: generic.secrets.len() - 1,
                    account: BOUND_ACCOUNT.into(),
                    merchants: vec!["m-acme".into()],
                });
        }
    })
    .await;
    let (status, _) = sandbox
        .register(&json!({"order_id": "O-A", "carrier": "sf", "waybill": "BA1"}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = sandbox
        .register_as(
            OTHER_TOKEN,
            &json!({"order_id": "O-B", "carrier": "sf", "waybill": "BB1"}),
        )
        .await;
    assert_eq!(status, 200);

    // Only the other merchant's waybill (or an unregistered one): 403.
    let (status, body) = sandbox
        .post_generic_as(BOUND_ACCOUNT, BOUND_SECRET, &scan("BB1", "delivered", 1))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    let (status, body) = sandbox
        .post_generic_as(
            BOUND_ACCOUNT,
            BOUND_SECRET,
            &scan("NOBODY1", "delivered", 1),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // Mixed: the bound merchant's item is written, the other one is not.
    let (status, body) = sandbox
        .post_generic_as(
            BOUND_ACCOUNT,
            BOUND_SECRET,
            &json!([scan("BA1", "in_transit", 3), scan("BB1", "delivered", 2)]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["refused"].clone()),
        (json!(1), json!(1))
    );

    // Marker: an unbound account's scan of BB1, written after every refusal.
    let (status, _) = sandbox.post_generic(&scan("BB1", "in_transit", 4)).await;
    assert_eq!(status, 200);
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "the marker scan of BB1", |r| {
        all::<RawScan>(r, |s| s.iter().any(|s| s.waybill == "BB1"))
    })
    .await;
    let scans = raw.decoded::<RawScan>();
    assert!(
        scans
            .iter()
            .any(|s| s.waybill == "BA1" && s.account == BOUND_ACCOUNT),
        "the bound merchant's item was written"
    );
    assert!(
        scans
            .iter()
            .filter(|s| s.account == BOUND_ACCOUNT)
            .all(|s| s.waybill == "BA1"),
        "a bound account wrote another merchant's (or nobody's) waybill"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_malformed_fields_are_refused_and_nothing_is_written() {
    let sandbox = Sandbox::start_with(|c| c.partitions = 1).await;
    let base = || json!({"order_id": "O-OV", "carrier": "sf", "waybill": "OV1"});
    let with = |path: &[&str], value: Value| {
        let mut shipment = base();
        let mut node = &mut shipment;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node[*part] = value.clone();
            } else {
                node = &mut node[*part];
            }
        }
        shipment
    };
    let long = |n: usize| Value::from("7".repeat(n));
    let cases = [
        (with(&["order_id"], long(129)), "shipments[0].order_id"),
        (with(&["order_id"], json!("O}1")), "shipments[0].order_id"),
        (with(&["carrier"], long(33)), "shipments[0].carrier"),
        (with(&["waybill"], long(65)), "shipments[0].waybill"),
        (with(&["waybill"], json!("sf:OV2")), "shipments[0].waybill"),
        (
            with(&["service_level"], long(33)),
            "shipments[0].service_level",
        ),
        (
            with(&["buyer", "name"], Value::from("n".repeat(201))),
            "shipments[0].buyer.name",
        ),
        (
            with(&["buyer", "phone"], long(33)),
            "shipments[0].buyer.phone",
        ),
        (
            with(
                &["buyer", "email"],
                Value::from(format!("{}@x.cn", "e".repeat(260))),
            ),
            "shipments[0].buyer.email",
        ),
        (
            with(&["buyer", "locale"], Value::from("l".repeat(36))),
            "shipments[0].buyer.locale",
        ),
        (
            with(&["buyer", "time_zone"], Value::from("Z".repeat(65))),
            "shipments[0].buyer.time_zone",
        ),
        (
            with(&["promised_delivery_at"], long(41)),
            "shipments[0].promised_delivery_at",
        ),
        (
            with(&["registered_at"], long(41)),
            "shipments[0].registered_at",
        ),
    ];
    for (shipment, field) in cases {
        let (status, body) = sandbox.register(&shipment).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"], "bad_request", "{field}");
        assert!(reason(&body).starts_with(field), "{field}: {body}");
    }
    // Webhook items: an invalid or oversized waybill / carrier names the item.
    let mut long_waybill = scan("OV1", "in_transit", 1);
    long_waybill["waybill"] = long(65);
    let mut bad_carrier = scan("OV1", "in_transit", 1);
    bad_carrier["carrier"] = json!("s{f}");
    for (push, field) in [
        (
            json!([scan("OV1", "in_transit", 2), long_waybill]),
            "items[1].waybill",
        ),
        (json!([bad_carrier]), "items[0].carrier"),
    ] {
        let (status, body) = sandbox.post_generic(&push).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(reason(&body).starts_with(field), "{field}: {body}");
    }
    assert_eq!(sandbox.owner_of("sf", "OV1").await, None, "nothing claimed");

    // Markers, written after every refusal.
    let (status, _) = sandbox.register(&base()).await;
    assert_eq!(status, 200);
    let (status, _) = sandbox.post_generic(&scan("OV1", "in_transit", 3)).await;
    assert_eq!(status, 200);
    let mut shipments = sandbox.reader(topics::SHIPMENTS);
    let records = shipments
        .until(WAIT, "the marker registration", |r| !r.is_empty())
        .await;
    assert_eq!(records.len(), 1, "only the marker registration was written");
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    let records = raw.until(WAIT, "the marker scan", |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1, "only the marker scan was written");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_is_413_nothing_is_written_and_the_next_request_succeeds() {
    // Every field within its limit, but the record over a (lowered) record limit.
    let sandbox = Sandbox::start_with(|c| {
        c.partitions = 1;
        c.ingest.kafka.max_record_bytes = 600;
    })
    .await;
    let big = json!({"order_id": "O-BIG", "carrier": "sf", "waybill": "BIG1",
        "buyer": {"name": "n".repeat(200), "email": format!("{}@example.com", "e".repeat(240)),
                  "phone": "13812345678", "locale": "zh-CN", "time_zone": "Asia/Shanghai"}});
    let (status, body) = sandbox
        .register(&json!([{"order_id": "O-S", "carrier": "sf", "waybill": "BIG0"}, big]))
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    assert!(reason(&body).starts_with("shipments[1]"), "{body}");
    assert_eq!(
        sandbox.owner_of("sf", "BIG0").await,
        None,
        "nothing claimed"
    );

    let mut push = scan("BIG1", "in_transit", 2);
    push["description"] = Value::from("d".repeat(700));
    let (status, body) = sandbox.post_generic(&push).await;
    assert_eq!(status, 413, "{body}");
    assert!(reason(&body).starts_with("items[0]"), "{body}");

    // The producer was not rebuilt or wedged: the next requests go through.
    let (status, body) = sandbox
        .register(&json!({"order_id": "O-S", "carrier": "sf", "waybill": "BIG0"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sandbox.post_generic(&scan("BIG1", "in_transit", 1)).await;
    assert_eq!(status, 200, "{body}");
    let mut shipments = sandbox.reader(topics::SHIPMENTS);
    let records = shipments
        .until(WAIT, "the marker registration", |r| !r.is_empty())
        .await;
    assert_eq!(records.len(), 1, "only the small registration was written");
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    let records = raw.until(WAIT, "the marker scan", |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1, "only the small scan was written");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_are_404_on_the_public_port_and_the_api_is_described() {
    let sandbox = Sandbox::start().await;
    let http = reqwest::Client::new();
    for path in ["/metrics", "/healthz"] {
        let response = http
            .get(format!("http://{}{path}", sandbox.ingest_addr))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status().as_u16(), 404, "{path}");
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(body["error"], "not_found", "{path}: JSON error shape");
    }
    // They are still served, on the admin listener.
    let admin = format!("http://{}", sandbox.ingest_admin_addr);
    let health = http
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET admin healthz: {e}"));
    assert_eq!(health.status().as_u16(), 200);
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET admin metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("trackstream_ingest_ownership_conflicts"),
        "{metrics}"
    );
    let document: Value = http
        .get(format!("http://{}/v1/openapi.json", sandbox.ingest_addr))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET openapi: {e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/v1/shipments"]["post"]["responses"]["409"].is_object());
    sandbox.shutdown().await;
}

/// The claims work on Redis Cluster too, where each waybill's claim has its own
/// slot (a cross-slot pipeline would be refused): a batch is claimed, a
/// conflicting batch is refused and its new claims are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_claims_work_on_redis_cluster() {
    let cluster = trackstream_testkit::cluster::RedisCluster::start()
        .await
        .unwrap_or_else(|e| panic!("redis cluster: {e}"));
    let nodes = cluster.urls();
    let sandbox = Sandbox::start_with(|c| c.ingest.redis.cluster_nodes = nodes).await;
    let batch: Vec<Value> = (0..8)
        .map(|i| json!({"order_id": format!("O-C{i}"), "carrier": "sf", "waybill": format!("CL{i}")}))
        .collect();
    let (status, body) = sandbox.register(&Value::Array(batch)).await;
    assert_eq!((status, body), (200, json!({"accepted": 8})));
    let (status, body) = sandbox
        .register_as(
            OTHER_TOKEN,
            &json!([{"order_id": "O-X", "carrier": "sf", "waybill": "CL-NEW"},
                    {"order_id": "O-Y", "carrier": "sf", "waybill": "CL5"}]),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(reason(&body).contains("shipments[1]"), "{body}");
    // CL-NEW's claim was released: the first merchant can take it.
    let (status, body) = sandbox
        .register(&json!({"order_id": "O-Z", "carrier": "sf", "waybill": "CL-NEW"}))
        .await;
    assert_eq!(status, 200, "{body}");
    sandbox.shutdown().await;
}
