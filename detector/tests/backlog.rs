//! The detector binary against the real broker and Redis, fed the same world
//! twice: once live (registrations, then the scans in ten phases, each applied
//! before the next is produced, in batches of up to 20) and once as a backlog
//! (every registration and scan produced while no detector runs, then one
//! started with batches of up to 1 000, reading `shipments` and
//! `tracking.events` in whatever interleaving the consumer makes). Both runs
//! must put the same records on `tracking.updates`: per order, the same
//! sequence numbers carrying byte-identical updates — ids, statuses, `late`,
//! the registration, the refund trigger.

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
