//! Wall clock against a real redis-server, time moved by an injected clock (no
//! sleeping): a carrier snapshot pushed days late reaches the detector one
//! record per scan, with the timer loop running between the records. The
//! deadline computed from the snapshot's first scan is long past, but the
//! per-waybill grace (`timers.grace`) keeps it from firing before the next scan
//! moves the parcel on — no OPENED + RESOLVED pair. A deadline still past when
//! the grace ends fires, with its real time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use trackstream_detector::config::{ClockMode, TimerConfig};
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::service::Detector;
use trackstream_detector::sink::MemorySink;
use trackstream_proto::time;
use trackstream_proto::v1::{AlertState, Status};
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::RedisServer;

const GRACE: i64 = 5_000;
const NOW: i64 = T0 + 72 * H;

async fn wall_detector(
    server: &RedisServer,
    db: u8,
    clock: Arc<AtomicI64>,
) -> Detector<MemorySink> {
    let conn = RedisConn::connect(&RedisConfig {
        url: format!("redis://127.0.0.1:{}/{db}", server.port),
        cluster_nodes: Vec::new(),
    })
    .await
    .expect("redis connects");
    let timers = TimerConfig {
        clock: ClockMode::Wall,
        grace: millis(GRACE),
        ..TimerConfig::default()
    };
    detector(conn, &RulesConfig::default(), timers)
        .with_wall_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
}

/// Applies one batch, then runs the timer loop's work for the partition (as a
/// caught-up consumer would between two records); returns the alert states.
async fn step(
    detector: &Detector<MemorySink>,
    batch: &[trackstream_runtime::kafka::Inbound],
) -> Vec<(String, i32)> {
    detector.apply_batch(batch).await.expect("batch applies");
    detector.drain_timers(0).await.expect("timers fire");
    let (alerts, _) = decode_records(&detector.sink().take());
    alerts.into_iter().map(|a| (a.rule, a.state)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_snapshot_read_one_record_at_a_time_raises_no_false_stall() {
    let server = RedisServer::start().await.expect("redis-server");
    let clock = Arc::new(AtomicI64::new(NOW));
    let detector = wall_detector(&server, 0, clock.clone()).await;
    let key = "sf:LATE1";
    step(
        &detector,
        &[registration_record(0, &shipment(key, "O-LATE1", T0))],
    )
    .await;
    let snapshot = [
        (Status::PickedUp, T0),
        (Status::InTransit, T0 + 20 * H),
        (Status::InTransit, T0 + 40 * H),
        (Status::OutForDelivery, T0 + 60 * H),
    ];
    for (i, (status, at)) in snapshot.into_iter().enumerate() {
        // 100 ms between records; each one's stall deadline (scan + 24 h) is
        // already past when it is read.
        clock.store(
            NOW + i64::try_from(i).expect("small") * 100,
            Ordering::SeqCst,
        );
        let alerts = step(&detector, &[event_record(0, &scan(key, status, at))]).await;
        assert_eq!(alerts, [], "record {i} raised an alert");
    }
    // Well after the grace: the parcel is out for delivery (36 h rule, not due).
    clock.store(NOW + 60_000, Ordering::SeqCst);
    assert_eq!(step(&detector, &[]).await, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_deadline_fires_with_its_real_time_once_the_grace_is_over() {
    let server = RedisServer::start().await.expect("redis-server");
    let clock = Arc::new(AtomicI64::new(NOW));
    let detector = wall_detector(&server, 1, clock.clone()).await;
    let key = "sf:LATE2";
    let alerts = step(
        &detector,
        &[
            registration_record(0, &shipment(key, "O-LATE2", NOW - 31 * H)),
            event_record(0, &scan(key, Status::InTransit, NOW - 30 * H)),
        ],
    )
    .await;
    assert_eq!(alerts, []);
    clock.store(NOW + GRACE - 1, Ordering::SeqCst);
    assert_eq!(step(&detector, &[]).await, [], "still within the grace");
    clock.store(NOW + GRACE, Ordering::SeqCst);
    detector.drain_timers(0).await.expect("timers fire");
    let (alerts, _) = decode_records(&detector.sink().take());
    assert_eq!(
        alerts
            .iter()
            .map(|a| (a.rule.as_str(), a.state))
            .collect::<Vec<_>>(),
        [("stalled_in_transit", AlertState::Opened as i32)]
    );
    assert_eq!(
        alerts[0].effective_at,
        Some(time::from_millis(NOW - 6 * H)),
        "the alert carries the rule's deadline, not the end of the grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_zero_fires_a_past_deadline_at_once() {
    let server = RedisServer::start().await.expect("redis-server");
    let clock = Arc::new(AtomicI64::new(NOW));
    let conn = RedisConn::connect(&RedisConfig {
        url: format!("redis://127.0.0.1:{}/2", server.port),
        cluster_nodes: Vec::new(),
    })
    .await
    .expect("redis connects");
    let timers = TimerConfig {
        clock: ClockMode::Wall,
        grace: std::time::Duration::ZERO,
        ..TimerConfig::default()
    };
    let detector = detector(conn, &RulesConfig::default(), timers)
        .with_wall_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
    let key = "sf:LATE3";
    let alerts = step(
        &detector,
        &[event_record(0, &scan(key, Status::InTransit, NOW - 30 * H))],
    )
    .await;
    assert_eq!(
        alerts,
        [("stalled_in_transit".to_owned(), AlertState::Opened as i32)]
    );
}
