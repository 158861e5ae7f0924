//! A real broker crash: the broker (nisshi on durable SQLite storage) is
//! SIGKILLed while webhooks keep arriving, then started again on the same data.
//! The services are not restarted. Every webhook ingest acknowledged must reach
//! `tracking.updates` (ground truth by the scan's own text, which names it), and
//! none twice: a scan applied twice would show as a second update for it, or as
//! one order sequence number given twice.
//!
//! The link-cut tests (`pipeline.rs`, `providers.rs`) stay: they are the
//! network partition, where the broker process and its memory live on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use prost::Message;
use serde_json::json;
use trackstream_proto::topics;
use trackstream_proto::v1::ShipmentUpdate;
use trackstream_runtime::CancellationToken;
use trackstream_sandbox::{GENERIC_SECRET, Sandbox};
use trackstream_testkit::kafka::Record;
use trackstream_testkit::processes::BrokerKind;

const WAIT: Duration = Duration::from_secs(120);
const PARCELS: usize = 20;

/// What the driver saw: the scans acknowledged (by number) and how many posts
/// failed (503 while the broker was away).
#[derive(Default)]
struct Driven {
    acked: BTreeSet<usize>,
    failed: usize,
}

/// Posts one generic scan per waybill in turn, as fast as ingest answers,
/// until `stop`; scan `i` says `scan <i>` so its update can be found.
async fn drive(addr: std::net::SocketAddr, stop: CancellationToken, seen: Arc<Mutex<Driven>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let t0 = Utc::now().trunc_subsecs(0) - chrono::Duration::hours(1);
    for i in 0.. {
        if stop.is_cancelled() {
            break;
        }
        let body = json!({
            "carrier": "sf", "waybill": format!("BR-{}", i % PARCELS), "status": "in_transit",
            "occurred_at": (t0 + chrono::Duration::seconds(i as i64)).to_rfc3339(),
            "description": format!("scan {i}"),
            "location": {"text": "Hub", "city": "Shenzhen", "country": "CN"}
        })
        .to_string()
        .into_bytes();
        let signature = trackstream_carriers::generic::sign(&body, GENERIC_SECRET);
        let status = http
            .post(format!("http://{addr}/v1/webhooks/generic"))
            .header("x-trackstream-signature", signature)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let mut seen = seen.lock().expect("driver state");
        if status == 200 {
            seen.acked.insert(i);
        } else {
            seen.failed += 1;
        }
    }
}

/// How many updates name each scan text.
fn texts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut by_text = BTreeMap::new();
    for update in records
        .iter()
        .filter_map(|r| ShipmentUpdate::decode(r.payload.as_slice()).ok())
    {
        if let Some(event) = update.event {
            *by_text.entry(event.raw_text).or_insert(0) += 1;
        }
    }
    by_text
}

fn counts(seen: &Mutex<Driven>) -> (usize, usize) {
    let seen = seen.lock().expect("driver state");
    (seen.acked.len(), seen.failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_webhook_survives_a_broker_sigkill_and_restart_once() {
    let mut sandbox = Sandbox::start_durable_with(|_| {}).await;
    if sandbox.broker.kind() == BrokerKind::Tansu {
        // tansu 0.6.0's SQLite engine panics when clients reconnect after a
        // restart (docs/ARCHITECTURE.md, "Broker"): nothing to learn here.
        eprintln!("skipped: the broker is tansu, which cannot restart on its data");
        return;
    }
    let shipments: Vec<_> = (0..PARCELS)
        .map(|p| json!({"order_id": format!("BR-O-{p}"), "carrier": "SF", "waybill": format!("BR-{p}")}))
        .collect();
    let (status, body) = sandbox.register(&json!(shipments)).await;
    assert_eq!(status, 200, "{body}");

    let seen = Arc::new(Mutex::new(Driven::default()));
    let stop = CancellationToken::new();
    let driver = tokio::spawn(drive(sandbox.ingest_addr, stop.clone(), seen.clone()));

    trackstream_testkit::eventually(WAIT, "100 scans acknowledged before the crash", || {
        let seen = seen.clone();
        async move { (counts(&seen).0 >= 100).then_some(()) }
    })
    .await;
    sandbox.broker.kill();
    let (acked_before, failed_before) = counts(&seen);
    // Down long enough that ingest notices: at least one webhook refused.
    trackstream_testkit::eventually(WAIT, "a webhook refused while the broker is down", || {
        let seen = seen.clone();
        async move { (counts(&seen).1 > failed_before).then_some(()) }
    })
    .await;
    sandbox.broker.restart().await.expect("broker restarted");
    trackstream_testkit::eventually(
        WAIT,
        "100 more scans acknowledged after the restart",
        || {
            let seen = seen.clone();
            async move { (counts(&seen).0 >= acked_before + 100).then_some(()) }
        },
    )
    .await;
    stop.cancel();
    driver.await.expect("driver");
    let acked = seen.lock().expect("driver state").acked.clone();

    // Every acknowledged scan reaches tracking.updates (a lost one fails at
    // the deadline, the message says how many were read).
    let wanted: Vec<String> = acked.iter().map(|i| format!("scan {i}")).collect();
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    let all_there = updates
        .try_until(WAIT, |records| {
            let by_text = texts(records);
            wanted.iter().all(|t| by_text.contains_key(t))
        })
        .await;
    if !all_there {
        // Say where the missing scans stopped: a lost write, a stage that
        // stopped, or a reader that missed a partition.
        let by_text = texts(&updates.records);
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|t| !by_text.contains_key(*t))
            .collect();
        let mut partitions = BTreeMap::new();
        for record in &updates.records {
            *partitions.entry(record.partition).or_insert(0) += 1;
        }
        let mut raw = sandbox.reader(topics::SCANS_RAW);
        let mut events = sandbox.reader(topics::TRACKING_EVENTS);
        let _ = raw
            .try_until(Duration::from_secs(20), |r| r.len() >= wanted.len())
            .await;
        let _ = events
            .try_until(Duration::from_secs(20), |r| r.len() >= wanted.len())
            .await;
        panic!(
            "{} acknowledged scans have no update (acked {} before the crash, {} in all): {missing:?}; \
             updates read per partition {partitions:?}; scans.raw has {} records, tracking.events {}",
            missing.len(),
            acked_before,
            acked.len(),
            raw.records.len(),
            events.records.len(),
        );
    }
    let decoded: Vec<ShipmentUpdate> = updates.decoded();
    let by_text = texts(&updates.records);
    // None twice: one update per scan, one scan per order sequence number.
    let twice: Vec<(&String, &usize)> = by_text.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "scans with more than one update: {twice:?}"
    );
    let mut seqs = BTreeMap::new();
    for update in &decoded {
        *seqs.entry((&update.order_id, update.seq)).or_insert(0) += 1;
    }
    let reused: Vec<_> = seqs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        reused.is_empty(),
        "order sequence numbers given twice: {reused:?}"
    );
    sandbox.shutdown().await;
}
