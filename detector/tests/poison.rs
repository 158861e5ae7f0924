//! Poison, lifecycle and bounded scripts against a real redis-server, without a
//! broker (memory sink; time moved by an injected wall clock, no sleeping):
//! outputs that can never be produced are dead-lettered in the batch path, the
//! timer path and the outbox while the partition moves on; keys expire from the
//! wall clock and a waybill seen again is a new parcel; a registration joining
//! 10 001 stored scans commits and emits every update once, across a retry.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use prost::Message;
use trackstream_detector::config::{ClockMode, RetentionConfig, TimerConfig};
use trackstream_detector::letters;
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::store;
use trackstream_proto::topics;
use trackstream_proto::v1::{Alert, Shipment, ShipmentUpdate, Status};
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::dlq::headers;
use trackstream_runtime::kafka::{Inbound, OutRecord};
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::RedisServer;

async fn connect(server: &RedisServer, db: u8) -> RedisConn {
    RedisConn::connect(&RedisConfig {
        url: format!("redis://127.0.0.1:{}/{db}", server.port),
        cluster_nodes: Vec::new(),
    })
    .await
    .expect("redis connects")
}

fn wall(clock: &Arc<AtomicI64>) -> trackstream_detector::service::WallClock {
    let clock = clock.clone();
    Arc::new(move || clock.load(Ordering::SeqCst))
}

/// A detector whose sink (and so its dead letters) takes records of at most
/// `limit` bytes, as a producer with `kafka.max_record_bytes = limit` would.
fn limited(
    conn: RedisConn,
    timers: TimerConfig,
    limit: usize,
) -> trackstream_detector::service::Detector<trackstream_detector::sink::MemorySink> {
    let sink = trackstream_detector::sink::MemorySink::new();
    sink.set_max_record_bytes(limit);
    trackstream_detector::service::Detector::new(
        trackstream_detector::engine::Engine::new(RulesConfig::default()),
        store::Store::new(conn),
        sink,
        timers,
        &mut prometheus_client::registry::Registry::default(),
    )
    // Scenarios are dated 2024: keep their keys (see `common::detector`).
    .with_retention(RetentionConfig {
        after_terminal: CENTURY,
        after_silence: CENTURY,
        order_log: CENTURY,
        backdate: std::time::Duration::ZERO,
    })
}

fn wall_timers() -> TimerConfig {
    TimerConfig {
        clock: ClockMode::Wall,
        grace: std::time::Duration::ZERO,
        ..TimerConfig::default()
    }
}

fn letters_of(records: &[OutRecord]) -> Vec<&OutRecord> {
    records
        .iter()
        .filter(|r| r.topic == topics::TRACKING_DLQ)
        .collect()
}

async fn exists(conn: &RedisConn, key: &str) -> bool {
    let mut conn = conn.clone();
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .expect("EXISTS")
        == 1
}

async fn hlen(conn: &RedisConn, key: &str) -> i64 {
    let mut conn = conn.clone();
    redis::cmd("HLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("HLEN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_update_dead_letters_its_input_and_other_waybills_flow() {
    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let clock = Arc::new(AtomicI64::new(T0 + H));
    let detector = limited(conn.clone(), wall_timers(), 2_000).with_wall_clock(wall(&clock));
    let big = Shipment {
        merchant_name: "x".repeat(3_000),
        ..shipment("sf:BIG", "O-BIG", T0)
    };
    let batch = vec![
        registration_record(0, &big),
        registration_record(0, &shipment("sf:OK", "O-OK", T0)),
        event_record(0, &scan("sf:BIG", Status::PickedUp, T0 + 60_000)),
        event_record(0, &scan("sf:OK", Status::PickedUp, T0 + 60_000)),
    ];
    detector
        .apply_batch(&batch)
        .await
        .expect("the batch applies");
    let out = detector.sink().take();
    let letters = letters_of(&out);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].key, "sf:BIG");
    assert_eq!(
        letters[0].header(headers::CAUSE),
        Some(letters::cause::OUTPUT_TOO_LARGE)
    );
    assert_eq!(
        letters[0].header(headers::SOURCE_TOPIC),
        Some(topics::SHIPMENTS),
        "the registration made the update large"
    );
    // The registration is itself over the limit: the letter keeps its place
    // (source coordinates), not its bytes.
    assert_eq!(letters[0].header(headers::PAYLOAD_DROPPED), Some("true"));
    let outputs: Vec<OutRecord> = out
        .iter()
        .filter(|r| r.topic != topics::TRACKING_DLQ)
        .cloned()
        .collect();
    let (_, updates) = decode_records(&outputs);
    let orders: Vec<&str> = updates.iter().map(|u| u.order_id.as_str()).collect();
    assert_eq!(orders, ["O-OK"], "the healthy parcel's update flows");
    assert_eq!(
        hlen(&conn, &store::outbox_key(0)).await,
        0,
        "nothing gates the partition"
    );
    // The oversized parcel's scan was still applied (only its registration was set aside).
    assert!(exists(&conn, &store::history_key(0, "sf:BIG")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_and_outbox_entries_are_dead_lettered() {
    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let detector = limited(conn.clone(), wall_timers(), 2_000);
    let garbage = Inbound {
        topic: topics::TRACKING_EVENTS.into(),
        partition: 1,
        offset: 7,
        key: Some(b"sf:BAD".to_vec()),
        payload: vec![0xff; 9],
        headers: Vec::new(),
    };
    let good = event_record(1, &scan("sf:GOOD", Status::PickedUp, T0));
    detector
        .apply_batch(&[garbage, good])
        .await
        .expect("the batch applies");
    // An outbox entry nothing can decode, and one over the size limit.
    let mut raw = conn.clone();
    let huge = Alert {
        waybill: "W".into(),
        carrier: "sf".into(),
        summary: "S".repeat(5_000),
        ..Default::default()
    };
    let mut entry = vec![b'a'];
    entry.extend(huge.encode_to_vec());
    redis::cmd("HSET")
        .arg(store::outbox_key(1))
        .arg("junk")
        .arg(vec![0x00u8, 1, 2])
        // The field an alert's outbox entry has: `a:<alert id>:<state>:<tier>`.
        .arg("a::0:0")
        .arg(entry)
        .query_async::<()>(&mut raw)
        .await
        .expect("HSET");
    detector.flush_outbox(1).await.expect("the outbox flushes");
    assert_eq!(
        hlen(&conn, &store::outbox_key(1)).await,
        0,
        "both entries removed"
    );
    let out = detector.sink().take();
    let causes: Vec<(&str, Option<&str>)> = letters_of(&out)
        .iter()
        .map(|l| (l.key.as_str(), l.header(headers::CAUSE)))
        .collect();
    assert!(
        causes.contains(&("sf:BAD", Some(letters::cause::UNDECODABLE))),
        "{causes:?}"
    );
    assert!(
        causes.contains(&("junk", Some(letters::cause::UNDECODABLE))),
        "{causes:?}"
    );
    assert!(
        causes
            .iter()
            .any(|(_, c)| *c == Some(letters::cause::OUTPUT_TOO_LARGE)),
        "{causes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fired_oversized_alert_is_dead_lettered_and_the_timer_loop_moves_on() {
    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let clock = Arc::new(AtomicI64::new(T0));
    let detector = limited(conn.clone(), wall_timers(), 1_500).with_wall_clock(wall(&clock));
    let long = format!("sf:{}", "L".repeat(600));
    detector
        .apply_batch(&[
            event_record(0, &scan(&long, Status::InTransit, T0)),
            event_record(0, &scan("sf:SHORT", Status::InTransit, T0)),
        ])
        .await
        .expect("the batch applies");
    assert!(detector.sink().take().is_empty());
    clock.store(T0 + 100 * H, Ordering::SeqCst);
    detector.drain_timers(0).await.expect("timers fire");
    let out = detector.sink().take();
    let letters = letters_of(&out);
    assert!(
        !letters.is_empty(),
        "{:?}",
        out.iter()
            .map(|r| (r.topic, r.key.len()))
            .collect::<Vec<_>>()
    );
    assert!(letters.iter().all(|l| l.key == long
        && l.header(headers::STAGE) == Some(letters::STAGE_TIMERS)
        && l.header(headers::SOURCE_TOPIC) == Some(letters::SOURCE_TIMERS)
        && l.header(headers::CAUSE) == Some(letters::cause::OUTPUT_TOO_LARGE)));
    let outputs: Vec<OutRecord> = out
        .iter()
        .filter(|r| r.topic != topics::TRACKING_DLQ)
        .cloned()
        .collect();
    let (alerts, _) = decode_records(&outputs);
    assert!(!alerts.is_empty(), "the short waybill's alerts fire");
    assert!(alerts.iter().all(|a| a.waybill == "SHORT"));
    assert_eq!(hlen(&conn, &store::outbox_key(0)).await, 0);
    // Nothing is left due: the loop is not stuck on the oversized alert.
    assert_eq!(detector.drain_timers(0).await.expect("timers fire"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_from_the_wall_clock_and_a_waybill_seen_again_is_a_new_parcel() {
    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let now = chrono::Utc::now().timestamp_millis();
    // A clock 200 days back: everything it writes is past even the 120-day
    // retention of a parcel that never ends.
    let clock = Arc::new(AtomicI64::new(now - 200 * 24 * H));
    let detector = detector(conn.clone(), &RulesConfig::default(), wall_timers())
        .with_wall_clock(wall(&clock))
        .with_retention(RetentionConfig::default());
    let at = clock.load(Ordering::SeqCst);
    let key = "sf:EXP";
    detector
        .apply_batch(&[
            registration_record(0, &shipment(key, "O-1", at)),
            event_record(0, &scan(key, Status::PickedUp, at)),
            event_record(0, &scan(key, Status::InTransit, at + 1_000)),
        ])
        .await
        .expect("the batch applies");
    assert_eq!(detector.sink().take().len(), 2, "updates still produced");
    assert!(
        !exists(&conn, &store::state_key(0, key)).await,
        "state expired at once"
    );
    assert!(
        !exists(&conn, &store::history_key(0, key)).await,
        "history expired at once"
    );
    let order = store::order_key("m-acme", "O-1", "updates");
    assert!(!exists(&conn, &order).await, "order log expired at once");
    // Its timer member is still in the partition's set; when due, it is dropped.
    let mut raw = conn.clone();
    let armed: i64 = redis::cmd("ZCARD")
        .arg(store::timers_key(0))
        .query_async(&mut raw)
        .await
        .expect("ZCARD");
    assert!(armed > 0);
    clock.store(now + 200 * 24 * H, Ordering::SeqCst);
    detector.drain_timers(0).await.expect("timers fire");
    assert!(
        detector.sink().take().is_empty(),
        "nothing fires for an expired parcel"
    );
    let armed: i64 = redis::cmd("ZCARD")
        .arg(store::timers_key(0))
        .query_async(&mut raw)
        .await
        .expect("ZCARD");
    assert_eq!(armed, 0, "expired members dropped");

    // The number again, with the real clock: a new parcel.
    clock.store(now, Ordering::SeqCst);
    detector
        .apply_batch(&[
            registration_record(0, &shipment(key, "O-2", now)),
            event_record(0, &scan(key, Status::PickedUp, now)),
        ])
        .await
        .expect("the batch applies");
    let (_, updates) = decode_records(&detector.sink().take());
    assert_eq!(updates.len(), 1, "no inherited history");
    assert_eq!((updates[0].order_id.as_str(), updates[0].seq), ("O-2", 1));
    assert_eq!(updates[0].current_status, Status::PickedUp as i32);
    let mut raw = conn.clone();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store::state_key(0, key))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(ttl > 100 * 24 * H, "a fresh parcel lives 120 days: {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_clock_replay_of_old_scans_does_not_expire_what_it_writes() {
    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let detector = detector(conn.clone(), &RulesConfig::default(), event_clock(0))
        .with_retention(RetentionConfig::default());
    // Scans dated 2024, delivered: expiry still counts from the wall clock.
    let key = "sf:REPLAY";
    detector
        .apply_batch(&[
            event_record(0, &scan(key, Status::PickedUp, T0)),
            event_record(0, &scan(key, Status::Delivered, T0 + H)),
        ])
        .await
        .expect("the batch applies");
    let mut raw = conn.clone();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store::state_key(0, key))
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(
        ttl > 29 * 24 * H,
        "kept 30 days from now, not from 2024: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_joining_10_001_stored_scans_emits_every_update_once_across_a_retry() {
    const SCANS: i64 = 10_001;
    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let clock = Arc::new(AtomicI64::new(T0 + SCANS * 60_000 + H));
    let detector = detector(conn.clone(), &RulesConfig::default(), wall_timers())
        .with_wall_clock(wall(&clock));
    let key = "sf:MANY";
    let scans: Vec<Inbound> = (0..SCANS)
        .map(|i| event_record(0, &scan(key, Status::InTransit, T0 + i * 60_000)))
        .collect();
    for batch in scans.chunks(1_000) {
        detector.apply_batch(batch).await.expect("scans apply");
    }
    assert_eq!(hlen(&conn, &store::history_key(0, key)).await, SCANS);
    detector.sink().take();
    let registration = [registration_record(0, &shipment(key, "O-MANY", T0))];
    // The first attempt commits but cannot produce; the consumer retries it.
    detector.sink().set_failing(true);
    assert!(detector.apply_batch(&registration).await.is_err());
    detector.sink().set_failing(false);
    detector
        .apply_batch(&registration)
        .await
        .expect("the retry applies");
    let (_, updates) = decode_records(&detector.sink().take());
    let mut seqs: Vec<u64> = updates
        .iter()
        .filter(|u| u.order_id == "O-MANY")
        .map(|u: &ShipmentUpdate| u.seq)
        .collect();
    seqs.sort_unstable();
    let want: Vec<u64> = (1..=SCANS as u64).collect();
    assert!(
        seqs == want,
        "every update once with consecutive seqs (got {})",
        seqs.len()
    );
    assert_eq!(hlen(&conn, &store::outbox_key(0)).await, 0);
}
