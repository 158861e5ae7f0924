//! The detector binary against the real broker and Redis, SIGKILLed mid-stream
//! and restarted: no alert is lost and none is emitted in a way a consumer could
//! not de-duplicate — the alerts read back are exactly the clean run's
//! `(alert_id, state, tier)` set, and every repeat is the identical alert.
//! (Two instances sharing the work: `scale_out.rs`.)

mod common;
mod rig;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use rig::Rig;
use trackstream_proto::topics;
use trackstream_proto::v1::{Alert, ShipmentUpdate};
use trackstream_testkit::child::ChildProcess;
use trackstream_testkit::kafka::TopicReader;

const WAIT: Duration = Duration::from_secs(90);

/// Waits until `reader` holds every expected alert, then checks there is no
/// other and that every repeat is the same alert.
async fn assert_alerts(
    reader: &mut TopicReader,
    want: &BTreeSet<AlertKey>,
    parcels: &[Parcel],
    logs: &[&ChildProcess],
) {
    let done = |records: &[trackstream_testkit::kafka::Record]| {
        trackstream_testkit::kafka::all::<Alert>(records, |a| alert_set(a).is_superset(want))
    };
    let deadline = std::time::Instant::now() + WAIT;
    reader
        .until(WAIT + Duration::from_secs(5), "alerts", |r| {
            done(r) || std::time::Instant::now() > deadline
        })
        .await;
    if !done(&reader.records) {
        let tails: Vec<String> = logs
            .iter()
            .map(|c| {
                let log = c.log();
                let groups: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("partitions") || l.contains("WARN") || l.contains("ERROR")
                    })
                    .collect();
                format!(
                    "--- {}:\n{}\n...\n{}",
                    c.name(),
                    groups.join("\n"),
                    c.log_tail(3)
                )
            })
            .collect();
        eprintln!("{}", tails.join("\n"));
    }
    let alerts: Vec<Alert> = reader.decoded();
    assert_same_alerts(&alert_set(&alerts), want, parcels, "alerts read back");
    let mut by_key: BTreeMap<AlertKey, Alert> = BTreeMap::new();
    for alert in alerts {
        if let Some(first) = by_key.get(&alert_key(&alert)) {
            let same = (&first.rule, first.episode, first.severity, &first.waybill)
                == (&alert.rule, alert.episode, alert.severity, &alert.waybill);
            assert!(same, "a repeat differs:\n{first:?}\n{alert:?}");
        } else {
            by_key.insert(alert_key(&alert), alert);
        }
    }
}

async fn assert_updates(rig: &Rig) {
    let mut reader = TopicReader::new(&rig.broker.bootstrap(), topics::TRACKING_UPDATES);
    let want = rig.expected().1;
    reader
        .until(WAIT, "every update", |r| {
            trackstream_testkit::kafka::all::<ShipmentUpdate>(r, |u| {
                u.iter()
                    .map(update_key)
                    .collect::<BTreeSet<_>>()
                    .is_superset(&want)
            })
        })
        .await;
    let updates: Vec<ShipmentUpdate> = reader.decoded();
    assert_eq!(
        updates.iter().map(update_key).collect::<BTreeSet<_>>(),
        want
    );
    // A re-emitted update carries the sequence number it had.
    assert_sequences(&updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_sigkilled_mid_stream_and_restarted_loses_no_alert() {
    let rig = Rig::start(400, "K").await;
    let mut first = rig.spawn("first", &[]);
    rig.register_all(&[&first], WAIT).await;
    let mut phases = rig.scans(&[T0 + 150 * H]).into_iter();
    let (phase1, phase2) = (
        phases.next().unwrap_or_default(),
        phases.next().unwrap_or_default(),
    );
    let total = phase1.len() + phase2.len();
    rig.produce(phase1).await;
    let mut alerts = TopicReader::new(&rig.broker.bootstrap(), topics::TRACKING_ALERTS);
    alerts
        .until(WAIT, "the first alerts", |r| !r.is_empty())
        .await;
    let before = rig.applied_scans().await;
    rig.produce(phase2).await;
    // Kill as soon as the second phase is being applied.
    trackstream_testkit::eventually(WAIT, "the second phase under way", || async {
        (rig.applied_scans().await > before).then_some(())
    })
    .await;
    first.kill();
    let at_kill = rig.applied_scans().await;
    assert!(
        at_kill < total,
        "killed mid-stream: {at_kill} of {total} scans applied"
    );
    // The restart replays the whole topic in a fresh consumer group: the
    // harshest restart (every scan again, none skipped). Rejoining the old group
    // would test tansu 0.6.0 rather than the detector: the killed instance was
    // the group's leader, and a new member joining before the dead leader is
    // evicted leaves tansu's group naming a leader that no longer exists, so it
    // never forms (docs/ARCHITECTURE.md, broker caveats). Handing a dead member's
    // partitions to a live one in the same group is `rebalance.rs`. Redis state,
    // dedup and the outbox carry over from the killed instance.
    let second = rig.spawn(
        "second",
        &[("TRACKSTREAM__KAFKA__GROUP_ID", "detector-K-restarted")],
    );
    assert_alerts(
        &mut alerts,
        &rig.expected().0,
        &rig.parcels,
        &[&first, &second],
    )
    .await;
    assert_updates(&rig).await;
    assert_eq!(rig.applied_scans().await, total);
}
