//! The detector binary against the real broker and Redis, fed the same world
//! twice: once live (registrations, then the scans in ten phases, each applied
//! before the next is produced, in batches of up to 20) and once as a backlog
//! (every registration and scan produced while no detector runs, then one
//! started with batches of up to 1 000, reading `shipments` and
//! `tracking.events` in whatever interleaving the consumer makes). Both runs
//! must put the same records on `tracking.updates`: per order, the same
//! sequence numbers carrying byte-identical updates — ids, statuses, `late`,
//! the registration, the refund trigger, and the delivery predictions made
//! from the same lane statistics (seeded before each run).

mod common;
mod rig;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use prost::Message as _;
use rig::Rig;
use trackstream_proto::topics;
use trackstream_proto::v1::{ShipmentUpdate, UpdateKind};
use trackstream_runtime::kafka::OutRecord;
use trackstream_testkit::child::ChildProcess;
use trackstream_testkit::kafka::TopicReader;

const WAIT: Duration = Duration::from_secs(120);
const PARCELS: usize = 200;

/// Reads `tracking.updates` until it holds every update of the clean model,
/// and returns them by `(order id, seq)`, checking a repeat is identical.
async fn updates(rig: &Rig, running: &ChildProcess) -> BTreeMap<(String, u64), ShipmentUpdate> {
    let want = rig.expected().1;
    let mut reader = TopicReader::new(&rig.broker.bootstrap(), topics::TRACKING_UPDATES);
    let done = |records: &[trackstream_testkit::kafka::Record]| {
        trackstream_testkit::kafka::all::<ShipmentUpdate>(records, |u| {
            u.iter()
                .map(update_key)
                .collect::<std::collections::BTreeSet<_>>()
                .is_superset(&want)
        })
    };
    reader.until(WAIT, "every update", done).await;
    let mut by_seq = BTreeMap::new();
    for update in reader.decoded::<ShipmentUpdate>() {
        let key = (update.order_id.clone(), update.seq);
        if let Some(first) = by_seq.get(&key) {
            assert_eq!(first, &update, "seq {key:?} carried two updates");
        }
        by_seq.insert(key, update);
    }
    assert!(
        !running.log().contains("\"level\":\"ERROR\""),
        "{} logged an error:\n{}",
        running.name(),
        running.log_tail(30)
    );
    by_seq
}

/// Lane statistics for every carrier of the world, over every day it spans
/// and the two weeks before: 60 deliveries a day, 20–50 h from pickup. Written
/// as a bucket of an instance `seed` without expiry (the world is dated 2024,
/// and the store expires a bucket after its day).
async fn seed_lanes(rig: &Rig) {
    use trackstream_lanes::book::DayStats;
    use trackstream_lanes::store::{Bucket, redis_key};
    use trackstream_lanes::{lane::Level, parcel, stage::Timeline};
    let mut stats = DayStats::default();
    for i in 0..60 {
        let transit = 20.0 + f64::from(i) / 2.0;
        stats.record(&Timeline {
            picked_up_at: Some(0.0),
            out_for_delivery_at: Some(transit - 4.0),
            delivered_at: Some(transit),
            ..Timeline::default()
        });
    }
    let bucket = serde_json::to_vec(&Bucket { upto: -1, stats }).expect("bucket");
    let first = parcel::day(T0 as f64 / H as f64) - 15;
    let last = parcel::day(world_end(&rig.parcels) as f64 / H as f64) + 1;
    let keys: std::collections::BTreeSet<String> = rig
        .parcels
        .iter()
        .map(|p| parcel::lane(&p.registration).key(Level::Carrier))
        .collect();
    let mut conn = rig.redis().await;
    for key in keys {
        for day in first..=last {
            let () = redis::cmd("HSET")
                .arg(redis_key(&key))
                .arg(format!("{day}/seed"))
                .arg(&bucket)
                .query_async(&mut conn)
                .await
                .expect("seeded");
        }
    }
}

fn registrations(rig: &Rig) -> Vec<OutRecord> {
    rig.parcels
        .iter()
        .map(|p| {
            OutRecord::new(
                topics::SHIPMENTS,
                p.key.clone(),
                p.registration.encode_to_vec(),
            )
        })
        .collect()
}

/// The live run: registrations stored first, then ten phases of scans, each
/// applied before the next is produced.
async fn live() -> BTreeMap<(String, u64), ShipmentUpdate> {
    let rig = Rig::start(PARCELS, "W").await;
    seed_lanes(&rig).await;
    let detector = rig.spawn("live", &[]);
    rig.register_all(&[&detector], WAIT).await;
    let end = world_end(&rig.parcels);
    let splits: Vec<i64> = (1..10).map(|i| T0 + (end - T0) * i / 10).collect();
    let mut applied = 0;
    for phase in rig.scans(&splits) {
        applied += phase.len();
        rig.produce(phase).await;
        trackstream_testkit::eventually(WAIT, "the phase applied", || async {
            (rig.applied_scans().await >= applied).then_some(())
        })
        .await;
    }
    updates(&rig, &detector).await
}

/// The backlog run: everything produced first, then a detector started.
async fn backlog() -> BTreeMap<(String, u64), ShipmentUpdate> {
    let rig = Rig::start(PARCELS, "W").await;
    seed_lanes(&rig).await;
    rig.produce(registrations(&rig)).await;
    for phase in rig.scans(&[]) {
        rig.produce(phase).await;
    }
    let detector = rig.spawn("backlog", &[("TRACKSTREAM__KAFKA__BATCH_MAX", "1000")]);
    updates(&rig, &detector).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_puts_the_live_runs_updates_on_tracking_updates() {
    let live = live().await;
    let backlog = backlog().await;
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        backlog.keys().collect::<Vec<_>>(),
        "the same sequence numbers per order"
    );
    for (key, update) in &live {
        assert_eq!(
            backlog.get(key).map(|u| u.encode_to_vec()),
            Some(update.encode_to_vec()),
            "update {key:?} differs:\nlive    {update:?}\nbacklog {:?}",
            backlog.get(key)
        );
    }
    // Predictions rode on the updates: every scan update of a parcel in
    // flight has one (the seeded carrier level: medium confidence), the
    // first is kept on every later update of its order, and a delivered
    // parcel's update has none.
    let mut first: BTreeMap<String, &trackstream_proto::v1::DeliveryPrediction> = BTreeMap::new();
    let mut predicted = 0;
    for update in backlog.values() {
        let delivered = update.current_status == trackstream_proto::v1::Status::Delivered as i32;
        if delivered {
            assert!(update.prediction.is_none(), "{update:?}");
        }
        if update.kind != UpdateKind::Scan as i32 || delivered {
            continue;
        }
        let Some(prediction) = update.prediction.as_ref() else {
            continue;
        };
        predicted += 1;
        assert_eq!(prediction.level, "carrier", "{prediction:?}");
        let made = trackstream_proto::time::millis(prediction.made_at.as_ref());
        assert!(
            trackstream_proto::time::millis(prediction.most_likely_at.as_ref()) >= made,
            "{prediction:?}"
        );
        let waybill = update.event.as_ref().map(|e| e.waybill.clone());
        let kept = first
            .entry(waybill.unwrap_or_default())
            .or_insert(prediction);
        assert_eq!(
            update.first_prediction,
            Some(trackstream_lanes::parcel::kept(kept)),
            "{update:?}"
        );
    }
    assert!(
        predicted > PARCELS,
        "predictions on most updates: {predicted}"
    );
    // The world's scans arrive in time order and end in a terminal status, so
    // each scan's update says the status of its own scan — never the status the
    // backlog ended in — and none is late.
    for update in backlog.values() {
        if update.kind == UpdateKind::Scan as i32 {
            assert_eq!(
                Some(update.current_status),
                update.event.as_ref().map(|e| e.status),
                "{update:?}"
            );
            assert!(!update.late, "{update:?}");
        }
    }
    assert!(
        backlog
            .values()
            .any(|u| u.kind == UpdateKind::ReturnReceived as i32),
        "the world has returns"
    );
}
