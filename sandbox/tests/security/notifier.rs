//! Attacks on notifier (see `main.rs`): merchant-scoped message ids and keys, one
//! unproducible message never starves its shard, the per-merchant watcher quota,
//! an order's notifier state expiring with the order (injectable clock), and no
//! raw buyer contact on `buyer.notifications` or over gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prost::Message;
use serde_json::json;
use trackstream_notifier::clock::ManualClock;
use trackstream_notifier::config::Template;
use trackstream_notifier::outbox;
use trackstream_proto::topics;
use trackstream_proto::v1::{
    BuyerNotification, Channel, GetOrderRequest, Milestone, WatchAlertsRequest, WatchOrderRequest,
};
use trackstream_runtime::dlq::headers;
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox, authed};
use trackstream_testkit::kafka::Record;
use trackstream_testkit::processes::RedisServer;

const WAIT: Duration = Duration::from_secs(90);
const PHONE: &str = "13812345678";
const EMAIL: &str = "lilei@example.com";

/// Registers `order`/`waybill` as the merchant of `token`, buyer reachable by
/// phone and e-mail, English.
async fn register(sandbox: &Sandbox, token: &str, order: &str, waybill: &str) {
    let (status, body) = sandbox
        .register_as(
            token,
            &json!({
                "order_id": order, "carrier": "sf", "waybill": waybill,
                "buyer": {"name": "Li Lei", "phone": PHONE, "email": EMAIL, "locale": "en"}
            }),
        )
        .await;
    assert_eq!(status, 200, "registering {order}/{waybill}: {body}");
}

/// Posts one generic scan of `waybill` with `status`, `ago` seconds in the past.
async fn scan(sandbox: &Sandbox, waybill: &str, status: &str, ago: i64) {
    let at = Utc::now() - chrono::Duration::seconds(ago);
    let (code, body) = sandbox
        .post_generic(&json!({
            "carrier": "sf", "waybill": waybill, "status": status,
            "occurred_at": at.to_rfc3339(), "description": status,
            "location": {"text": "Shenzhen hub", "city": "Shenzhen", "country": "CN"}
        }))
        .await;
    assert_eq!(code, 200, "scan {waybill} {status}: {body}");
}

fn decoded(records: &[Record]) -> Vec<(String, BuyerNotification)> {
    records
        .iter()
        .filter_map(|r| {
            BuyerNotification::decode(r.payload.as_slice())
                .ok()
                .map(|m| (r.key.clone(), m))
        })
        .collect()
}

fn has_message(records: &[Record], merchant: &str, order: &str, milestone: Milestone) -> bool {
    decoded(records).iter().any(|(_, m)| {
        m.merchant_id == merchant && m.order_id == order && m.milestone == milestone as i32
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_id_in_two_shops_gives_two_notification_ids_and_keys() {
    let sandbox = Sandbox::start().await;
    register(&sandbox, ACME_TOKEN, "10001", "SFIDA1").await;
    register(&sandbox, OTHER_TOKEN, "10001", "SFIDB1").await;
    scan(&sandbox, "SFIDA1", "picked_up", 60).await;
    scan(&sandbox, "SFIDB1", "picked_up", 60).await;

    let mut reader = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    let records = reader
        .until(WAIT, "order 10001's message from both shops", |r| {
            has_message(r, "m-acme", "10001", Milestone::Shipped)
                && has_message(r, "m-other", "10001", Milestone::Shipped)
        })
        .await;
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (key, message) in decoded(records) {
        if message.order_id == "10001" {
            seen.insert(
                message.merchant_id.clone(),
                (key, message.notification_id.clone()),
            );
        }
    }
    assert_eq!(
        seen.get("m-acme"),
        Some(&("m-acme/10001".to_owned(), "m-acme/10001:shipped".to_owned()))
    );
    assert_eq!(
        seen.get("m-other"),
        Some(&(
            "m-other/10001".to_owned(),
            "m-other/10001:shipped".to_owned()
        ))
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_dead_lettered_while_its_shards_other_messages_flow() {
    // m-other's "shipped" template renders a message far over the notifier's
    // record limit; every other message is well under it.
    let sandbox = Sandbox::start_with(|c| {
        c.notifier.kafka.max_record_bytes = 4_000;
        c.notifier.messages.overrides.insert(
            "m-other".into(),
            BTreeMap::from([(
                "en".into(),
                BTreeMap::from([(
                    "shipped".into(),
                    Template {
                        title: "Shipped".into(),
                        body: format!("{} {{order_id}}", "long text ".repeat(1_000)),
                    },
                )]),
            )]),
        );
    })
    .await;
    let big = order_log::order_ref("m-other", "O-BIG");
    let shard = outbox::shard_key_of(&big);
    // Acme orders scheduled in the same shard as the poisoned one.
    let neighbours: Vec<String> = (0..)
        .map(|i| format!("O-NB-{i}"))
        .filter(|o| outbox::shard_key_of(&order_log::order_ref("m-acme", o)) == shard)
        .take(3)
        .collect();
    register(&sandbox, OTHER_TOKEN, "O-BIG", "SFBIG1").await;
    for (i, order) in neighbours.iter().enumerate() {
        register(&sandbox, ACME_TOKEN, order, &format!("SFNB{i}")).await;
    }
    scan(&sandbox, "SFBIG1", "picked_up", 120).await;
    for i in 0..neighbours.len() {
        scan(&sandbox, &format!("SFNB{i}"), "picked_up", 120).await;
    }

    let mut letters = sandbox.reader(topics::TRACKING_DLQ);
    let letter_of_big = |r: &Record| {
        r.key == big
            && r.headers
                .iter()
                .any(|(n, v)| n == headers::STAGE && v == "notifier")
    };
    let records = letters
        .until(WAIT, "the oversized message's dead letter", |r| {
            r.iter().any(letter_of_big)
        })
        .await;
    let letter = records
        .iter()
        .find(|r| letter_of_big(r))
        .cloned()
        .unwrap_or_else(|| panic!("no letter"));
    let header = |name: &str| letter.header(name).map(str::to_owned);
    assert_eq!(header(headers::CAUSE).as_deref(), Some("output_too_large"));
    assert_eq!(
        header(headers::SOURCE_TOPIC).as_deref(),
        Some(topics::BUYER_NOTIFICATIONS)
    );
    assert_eq!(header(headers::PAYLOAD_DROPPED).as_deref(), Some("true"));

    // The shard's other messages went out, and later ones keep going out.
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    messages
        .until(WAIT, "the neighbours' shipped messages", |r| {
            neighbours
                .iter()
                .all(|o| has_message(r, "m-acme", o, Milestone::Shipped))
        })
        .await;
    for i in 0..neighbours.len() {
        scan(&sandbox, &format!("SFNB{i}"), "delivered", 60).await;
    }
    let records = messages
        .until(WAIT, "the neighbours' delivered messages", |r| {
            neighbours
                .iter()
                .all(|o| has_message(r, "m-acme", o, Milestone::Delivered))
        })
        .await;
    assert!(
        !has_message(records, "m-other", "O-BIG", Milestone::Shipped),
        "the oversized message never reached the gateway's topic"
    );
    let sent = decoded(records)
        .iter()
        .filter(|(_, m)| m.merchant_id == "m-acme" && m.milestone == Milestone::Shipped as i32)
        .count();
    assert_eq!(sent, neighbours.len(), "each neighbour's message once");

    // Marked done, not retried: one letter, and the state says dead.
    let letters_now = letters
        .until(WAIT, "the letter", |r| r.iter().any(letter_of_big))
        .await;
    assert_eq!(letters_now.iter().filter(|r| letter_of_big(r)).count(), 1);
    let mut conn = redis_conn(&sandbox.redis.url()).await;
    let state: Option<String> = redis::cmd("HGET")
        .arg(order_log::key(&big, "ms"))
        .arg(Milestone::Shipped.as_str_name())
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("redis: {e}"));
    assert_eq!(state.as_deref(), Some("dead"));
    sandbox.shutdown().await;
}

async fn redis_conn(url: &str) -> RedisConn {
    RedisConn::connect(&trackstream_runtime::config::RedisConfig {
        url: url.to_owned(),
        cluster_nodes: Vec::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("redis: {e}"))
}

/// Waits until `order` of the merchant of `token` is visible over gRPC.
async fn wait_order(sandbox: &Sandbox, token: &str, order: &str) {
    let grpc = sandbox.grpc().await;
    trackstream_testkit::eventually(WAIT, "the order to exist", || {
        let mut grpc = grpc.clone();
        let request = authed(
            GetOrderRequest {
                order_id: order.to_owned(),
            },
            token,
        );
        async move {
            grpc.get_order(request)
                .await
                .ok()
                .filter(|o| o.get_ref().last_seq >= 1)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_at_its_watcher_quota_is_refused_while_another_still_watches() {
    let sandbox = Sandbox::start_with(|c| {
        c.notifier.grpc.max_watchers_per_merchant = Some(2);
    })
    .await;
    register(&sandbox, ACME_TOKEN, "O-Q-A", "SFQA1").await;
    register(&sandbox, OTHER_TOKEN, "O-Q-B", "SFQB1").await;
    scan(&sandbox, "SFQA1", "picked_up", 60).await;
    scan(&sandbox, "SFQB1", "picked_up", 60).await;
    wait_order(&sandbox, ACME_TOKEN, "O-Q-A").await;
    wait_order(&sandbox, OTHER_TOKEN, "O-Q-B").await;

    let mut grpc = sandbox.grpc().await;
    let watch = |order: &str, token: &str| {
        authed(
            WatchOrderRequest {
                order_id: order.to_owned(),
                after_seq: 0,
            },
            token,
        )
    };
    // Acme fills its quota with one order watch and one alert watch.
    let first = grpc
        .watch_order(watch("O-Q-A", ACME_TOKEN))
        .await
        .unwrap_or_else(|e| panic!("first watch: {e}"));
    let alerts = grpc
        .watch_alerts(authed(WatchAlertsRequest::default(), ACME_TOKEN))
        .await
        .unwrap_or_else(|e| panic!("alert watch: {e}"));
    let refused = grpc
        .watch_order(watch("O-Q-A", ACME_TOKEN))
        .await
        .err()
        .unwrap_or_else(|| panic!("a third watch of acme was accepted"));
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("max_watchers_per_merchant"),
        "names the quota: {}",
        refused.message()
    );
    let refused_alerts = grpc
        .watch_alerts(authed(WatchAlertsRequest::default(), ACME_TOKEN))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(refused_alerts, Some(tonic::Code::ResourceExhausted));

    // The other merchant is not affected.
    let mut other = grpc
        .watch_order(watch("O-Q-B", OTHER_TOKEN))
        .await
        .unwrap_or_else(|e| panic!("other merchant refused: {e}"))
        .into_inner();
    let update = tokio::time::timeout(WAIT, other.message())
        .await
        .unwrap_or_else(|_| panic!("no update for the other merchant"));
    assert!(matches!(update, Ok(Some(_))), "{update:?}");

    // A stream that ends gives its slot back.
    drop(first);
    trackstream_testkit::eventually(WAIT, "acme's slot to be released", || {
        let mut grpc = grpc.clone();
        async move { grpc.watch_order(watch("O-Q-A", ACME_TOKEN)).await.ok() }
    })
    .await;
    drop(alerts);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_orders_notifier_keys_expire_after_retention() {
    // The sandbox runs on the wall clock; a second notifier with its own Redis
    // and a manual clock standing 31 days in the past follows the same topics,
    // so `retention.after_terminal` (30 days) has passed for Redis the moment
    // the order is delivered.
    let sandbox = Sandbox::start().await;
    let own_redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let mut config = trackstream_notifier::Config::default();
    config.kafka.brokers = sandbox.bootstrap();
    config.kafka.batch_linger = std::time::Duration::from_millis(2);
    config.kafka.group_id = Some("notifier-manual-clock".into());
    config.redis.url = own_redis.url();
    config.admin.listen = "127.0.0.1:0".into();
    config.grpc.listen = "127.0.0.1:0".into();
    config.merchants = vec![trackstream_runtime::merchants::MerchantConfig {
        id: "m-acme".into(),
        name: "Acme Live".into(),
        tokens: vec!["manual-clock-token".into()],
    }];
    // Its messages are told apart from the sandbox notifier's by their title.
    config.messages.overrides.insert(
        "m-acme".into(),
        BTreeMap::from([(
            "en".into(),
            BTreeMap::from([(
                "delivered".into(),
                Template {
                    title: "manual-clock instance".into(),
                    body: "Order {order_id} delivered".into(),
                },
            )]),
        )]),
    );
    let start = Utc::now() - chrono::Duration::days(31);
    let clock = ManualClock::new(start);
    let shutdown = trackstream_runtime::CancellationToken::new();
    let running =
        trackstream_notifier::start_with_clock(config, Arc::new(clock.clone()), shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("notifier: {e}"));

    let order = order_log::order_ref("m-acme", "O-EXP");
    register(&sandbox, ACME_TOKEN, "O-EXP", "SFEXP1").await;
    scan(&sandbox, "SFEXP1", "picked_up", 120).await;

    let mut conn = redis_conn(&own_redis.url()).await;
    let parcels = order_log::key(&order, "parcels");
    let ms = order_log::key(&order, "ms");
    // In transit: every key lives until a long silence (120 days) from the clock.
    let silence_at = start.timestamp_millis() + 120 * 86_400_000;
    trackstream_testkit::eventually(WAIT, "the shipped message sent, keys timed", || {
        let mut conn = conn.clone();
        let (parcels, ms) = (parcels.clone(), ms.clone());
        async move {
            let (sent, parcel_at, ms_at): (Option<String>, i64, i64) = redis::pipe()
                .hget(&ms, Milestone::Shipped.as_str_name())
                .cmd("PEXPIRETIME")
                .arg(&parcels)
                .cmd("PEXPIRETIME")
                .arg(&ms)
                .query_async(&mut conn)
                .await
                .ok()?;
            (sent.as_deref() == Some("sent") && parcel_at == silence_at && ms_at == silence_at)
                .then_some(())
        }
    })
    .await;
    // The raw contact is in the registration kept in `:parcels`, and in no
    // other key of the order.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{o:{order}}}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("redis: {e}"));
    for key in &keys {
        // Every notifier key of an order is a hash.
        let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("redis: {key}: {e}"));
        let raw = fields
            .iter()
            .any(|f| contains(f, PHONE.as_bytes()) || contains(f, EMAIL.as_bytes()));
        assert_eq!(raw, *key == parcels, "raw contact in {key}");
    }

    scan(&sandbox, "SFEXP1", "delivered", 60).await;
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    messages
        .until(WAIT, "the manual-clock instance's delivered message", |r| {
            decoded(r)
                .iter()
                .any(|(_, m)| m.order_id == "O-EXP" && m.title == "manual-clock instance")
        })
        .await;
    trackstream_testkit::eventually(WAIT, "every notifier key of the order gone", || {
        let mut conn = conn.clone();
        let keys = outbox::order_keys(&order);
        async move {
            let existing: i64 = redis::cmd("EXISTS")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .ok()?;
            (existing == 0).then_some(())
        }
    })
    .await;

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), running.task).await {
        Ok(Ok(Ok(()))) => {}
        other => panic!("manual-clock notifier did not stop cleanly: {other:?}"),
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_contact_on_buyer_notifications_or_over_grpc() {
    let sandbox = Sandbox::start().await;
    register(&sandbox, ACME_TOKEN, "O-PII", "SFPII1").await;
    scan(&sandbox, "SFPII1", "picked_up", 120).await;
    scan(&sandbox, "SFPII1", "delivered", 60).await;

    let mut reader = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    let records = reader
        .until(WAIT, "O-PII's messages", |r| {
            has_message(r, "m-acme", "O-PII", Milestone::Shipped)
                && has_message(r, "m-acme", "O-PII", Milestone::Delivered)
        })
        .await;
    for record in records {
        for raw in [PHONE, "1234-5678", "12345678", EMAIL, "lilei@", "Li Lei"] {
            let raw = raw.as_bytes();
            assert!(
                !contains(&record.payload, raw)
                    && !contains(record.key.as_bytes(), raw)
                    && !record
                        .headers
                        .iter()
                        .any(|(n, v)| contains(n.as_bytes(), raw) || contains(v.as_bytes(), raw)),
                "raw contact {:?} on buyer.notifications",
                String::from_utf8_lossy(raw)
            );
        }
    }
    // What the gateway gets to deliver: the masked contact for display and the
    // channels the registered contact allows; it resolves the recipient of
    // (merchant_id, order_id) with the merchant.
    let delivered = decoded(records)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.order_id == "O-PII" && m.milestone == Milestone::Delivered as i32)
        .unwrap_or_else(|| panic!("no delivered message"));
    assert_eq!(delivered.contact_masked, "138****5678");
    assert!(delivered.channels.contains(&(Channel::Sms as i32)));
    assert!(delivered.channels.contains(&(Channel::Email as i32)));

    let mut grpc = sandbox.grpc().await;
    let order = grpc
        .get_order(authed(
            GetOrderRequest {
                order_id: "O-PII".into(),
            },
            ACME_TOKEN,
        ))
        .await
        .unwrap_or_else(|e| panic!("get order: {e}"))
        .into_inner();
    let bytes = order.encode_to_vec();
    for raw in [PHONE, EMAIL, "Li Lei"] {
        assert!(
            !contains(&bytes, raw.as_bytes()),
            "raw contact {raw:?} in GetOrder"
        );
    }
    let buyer = order
        .parcels
        .first()
        .and_then(|p| p.shipment.as_ref())
        .and_then(|s| s.buyer.clone())
        .unwrap_or_default();
    assert_eq!(
        (
            buyer.name.as_str(),
            buyer.phone.as_str(),
            buyer.email.as_str()
        ),
        ("L*", "138****5678", "l***@example.com")
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused_before_any_read() {
    let sandbox = Sandbox::start().await;
    let mut grpc = sandbox.grpc().await;
    let get = |order_id: String| authed(GetOrderRequest { order_id }, ACME_TOKEN);
    // Over `grpc.max_request_bytes` (16 KiB): refused while decoding, with
    // tonic's status for a message over the decoding limit.
    let huge = grpc
        .get_order(get("9".repeat(20_000)))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(huge, Some(tonic::Code::OutOfRange));
    // Under it, but not an order id: INVALID_ARGUMENT naming the field.
    for bad in [
        String::new(),
        "9".repeat(200),
        "O-1\u{0}".to_owned(),
        " O-1".to_owned(),
        "a\nb".to_owned(),
    ] {
        let status = grpc
            .get_order(get(bad.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(
            status.message().contains("order_id"),
            "{}",
            status.message()
        );
        let watch = grpc
            .watch_order(authed(
                WatchOrderRequest {
                    order_id: bad.clone(),
                    after_seq: 0,
                },
                ACME_TOKEN,
            ))
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(watch, Some(tonic::Code::InvalidArgument), "{bad:?}");
    }
    // The connection still serves a well-formed call.
    let missing = grpc
        .get_order(get("O-NOPE".into()))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(missing, Some(tonic::Code::NotFound));
    sandbox.shutdown().await;
}
