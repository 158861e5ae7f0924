//! End-to-end (issue 16 item 4): buyer messages through the whole stack do not
//! depend on processing lag. The sandbox's notifier follows the pushes live;
//! afterwards a second notifier (its own Redis and consumer group, the same
//! settings) starts on the same topics and works through them as one backlog.
//! Both write `buyer.notifications`; their messages are told apart by title
//! only (`live` / `backlog`) and must agree record by record: ids, milestones,
//! waybills, body (merchant, order, waybills, carrier, location, reason, what
//! next, masked contact), masked contact, locale, channels, creation time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use prost::Message;
use serde_json::json;
use trackstream_notifier::clock::SystemClock;
use trackstream_notifier::config::{MessagesConfig, Template};
use trackstream_notifier::outbox;
use trackstream_proto::topics;
use trackstream_proto::v1::BuyerNotification;
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_sandbox::Sandbox;
use trackstream_testkit::kafka::TopicReader;
use trackstream_testkit::processes::RedisServer;

const WAIT: Duration = Duration::from_secs(90);

/// Messages of `m-acme` in English with `title`, every placeholder in the body;
/// the staleness window on, a short catch-up settle (the pushes' events are
/// minutes old, so every message settles).
fn messages(title: &str) -> MessagesConfig {
    let template = Template {
        title: title.into(),
        body:
            "{merchant}|{order_id}|{waybill}|{count}|{carrier}|{location}|{reason}|{next}|{contact}"
                .into(),
    };
    let milestones = trackstream_notifier::templates::MILESTONES
        .into_iter()
        .map(|m| {
            (
                trackstream_notifier::templates::milestone_name(m),
                template.clone(),
            )
        })
        .collect();
    MessagesConfig {
        overrides: BTreeMap::from([(
            "m-acme".to_owned(),
            BTreeMap::from([("en".to_owned(), milestones)]),
        )]),
        supersede_window: Duration::from_secs(30 * 60),
        catch_up_settle: Duration::from_secs(2),
        flush_interval: Duration::from_millis(50),
        ..MessagesConfig::default()
    }
}

async fn register(sandbox: &Sandbox, order: &str, waybill: &str, phone: &str, email: &str) {
    let (status, body) = sandbox
        .register(&json!({
            "order_id": order, "carrier": "sf", "waybill": waybill,
            "buyer": {"name": "Li Lei", "phone": phone, "email": email, "locale": "en"}
        }))
        .await;
    assert_eq!(status, 200, "registering {waybill}: {body}");
}

async fn scan(sandbox: &Sandbox, waybill: &str, status: &str, at: DateTime<Utc>) {
    let (code, body) = sandbox
        .post_generic(&json!({
            "carrier": "sf", "waybill": waybill, "status": status,
            "occurred_at": at.to_rfc3339(), "description": status,
            "location": {"text": format!("{waybill} point"), "city": "Shenzhen", "country": "CN"}
        }))
        .await;
    assert_eq!(code, 200, "scan {waybill} {status}: {body}");
}

/// How many of `records` are messages titled `title`.
fn titled(records: &[trackstream_testkit::kafka::Record], title: &str) -> usize {
    records
        .iter()
        .filter_map(|r| BuyerNotification::decode(r.payload.as_slice()).ok())
        .filter(|m| m.title == title)
        .count()
}

/// Waits until nothing is scheduled in the notifier state at `redis_url`;
/// returns how many of the test's messages it marked sent.
async fn drained(redis_url: &str) -> usize {
    let conn = RedisConn::connect(&trackstream_runtime::config::RedisConfig {
        url: redis_url.to_owned(),
        cluster_nodes: Vec::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("redis: {e}"));
    trackstream_testkit::eventually(WAIT, "every held message decided", || {
        let mut conn = conn.clone();
        async move {
            for shard in 0..outbox::SHARDS {
                let n: usize = redis::cmd("ZCARD")
                    .arg(outbox::shard_key(shard))
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                if n > 0 {
                    return None;
                }
            }
            let mut sent = 0;
            for order in ["E-MULTI", "E-STALE"] {
                let states: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(order_log::key(&order_log::order_ref("m-acme", order), "ms"))
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                sent += states.values().filter(|s| *s == "sent").count();
            }
            Some(sent)
        }
    })
    .await
}

/// The messages titled `title`, by notification id (panics on a duplicate).
fn by_title(reader: &TopicReader, title: &str) -> BTreeMap<String, BuyerNotification> {
    let mut out = BTreeMap::new();
    for message in reader.decoded::<BuyerNotification>() {
        if message.title == title {
            let id = message.notification_id.clone();
            assert!(
                out.insert(id.clone(), message).is_none(),
                "{title}: {id} twice"
            );
        }
    }
    out
}

const EXPECTED: [&str; 3] = [
    "m-acme/E-MULTI:delivered",
    "m-acme/E-MULTI:shipped",
    "m-acme/E-STALE:delivered",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_through_the_whole_stack_sends_what_the_live_notifier_sent() {
    let sandbox = Sandbox::start_with(|c| c.notifier.messages = messages("live")).await;
    // Three parcels of one order, three contacts: SFE1 (lowest key) leads.
    register(&sandbox, "E-MULTI", "SFE1", "13811110001", "").await;
    register(&sandbox, "E-MULTI", "SFE2", "13822220002", "").await;
    register(&sandbox, "E-MULTI", "SFE3", "", "wang@example.com").await;
    register(&sandbox, "E-STALE", "SFS1", "13833330003", "").await;

    let t = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(40);
    let minutes = chrono::Duration::minutes;
    // Shipped together (within the 10 min burst), SFE2 first.
    scan(&sandbox, "SFE2", "picked_up", t).await;
    scan(&sandbox, "SFE3", "picked_up", t + minutes(1)).await;
    scan(&sandbox, "SFE1", "picked_up", t + minutes(3)).await;
    // Shipped, out for delivery 10 min later, delivered 5 min after that:
    // only the delivery is news (30 min staleness window).
    scan(&sandbox, "SFS1", "picked_up", t).await;
    scan(&sandbox, "SFS1", "out_for_delivery", t + minutes(10)).await;
    scan(&sandbox, "SFS1", "delivered", t + minutes(15)).await;
    // Delivered: SFE1 and SFE3 within the burst, SFE2 18 min after SFE1.
    scan(&sandbox, "SFE1", "delivered", t + minutes(20)).await;
    scan(&sandbox, "SFE3", "delivered", t + minutes(22)).await;
    scan(&sandbox, "SFE2", "delivered", t + minutes(38)).await;

    let mut reader = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    reader
        .until(WAIT, "the live messages", |records| {
            titled(records, "live") >= EXPECTED.len()
        })
        .await;
    let live_sent = drained(&sandbox.redis.url()).await;

    // The backlog: a notifier of its own group and Redis, started now.
    let own_redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let mut config = trackstream_notifier::Config::default();
    config.kafka.brokers = sandbox.bootstrap();
    config.kafka.batch_linger = Duration::from_millis(2);
    config.kafka.group_id = Some("notifier-backlog".into());
    config.redis.url = own_redis.url();
    config.admin.listen = "127.0.0.1:0".into();
    config.grpc.listen = "127.0.0.1:0".into();
    config.merchants = trackstream_testkit::merchants::two_merchants();
    config.messages = messages("backlog");
    // The same link secrets: the backlog must send the same links too.
    config.web = Some(trackstream_sandbox::web_config());
    let shutdown = trackstream_runtime::CancellationToken::new();
    let running =
        trackstream_notifier::start_with_clock(config, Arc::new(SystemClock), shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("notifier: {e}"));
    reader
        .until(WAIT, "the backlog's messages", |records| {
            titled(records, "backlog") >= EXPECTED.len()
        })
        .await;
    let backlog_sent = drained(&own_redis.url()).await;
    // Every message each notifier marked sent, read.
    reader
        .until(WAIT, "every sent message", |records| {
            titled(records, "live") >= live_sent && titled(records, "backlog") >= backlog_sent
        })
        .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), running.task).await;

    let live = by_title(&reader, "live");
    let backlog = by_title(&reader, "backlog");
    assert_eq!(live.keys().collect::<Vec<_>>(), EXPECTED);
    assert_eq!(backlog.keys().collect::<Vec<_>>(), EXPECTED);
    for (id, message) in &live {
        let strip = |m: &BuyerNotification| BuyerNotification {
            title: String::new(),
            deliver_at: None,
            ..m.clone()
        };
        assert_eq!(strip(message), strip(&backlog[id]), "{id}");
    }
    let shipped = &live["m-acme/E-MULTI:shipped"];
    assert_eq!(shipped.waybills, ["SFE1", "SFE2", "SFE3"]);
    assert_eq!(shipped.contact_masked, "138****0001", "the lead parcel's");
    assert_eq!(
        live["m-acme/E-MULTI:delivered"].waybills,
        ["SFE1", "SFE3"],
        "SFE2 was delivered after the burst window"
    );
    sandbox.shutdown().await;
}
