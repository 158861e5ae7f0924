//! Scale-out: two detector instances share one Redis and split the partitions,
//! consuming concurrently through a modelled consumer group (per-partition logs
//! and committed offsets, stored only after a batch succeeded). One instance
//! dies after committing a batch to Redis but before producing it — the worst
//! moment: its outputs exist only in the outbox — and the survivor takes its
//! partitions over as a rebalance would (outbox flushed on assignment, consumption
//! resumed at the committed offsets, timers fired). Nothing is lost, and every
//! repeat is the identical `(alert_id, state, tier)`.
//!
//! The consumer group is modelled here so the worst moment (between the Redis
//! commit and the produce) can be hit exactly; the detector's own part of a
//! rebalance — ownership of timers, outbox takeover, idempotent replay — is what
//! this test proves. The same hand-over through the real broker's consumer group,
//! with a SIGKILLed process, is `rebalance.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::service::Detector;
use trackstream_detector::sink::MemorySink;
use trackstream_proto::v1::Alert;
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::kafka::Inbound;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::RedisServer;

const PARTITIONS: i32 = 4;

/// Per-partition logs and the group's committed offsets.
struct Group {
    logs: BTreeMap<i32, Vec<Inbound>>,
    committed: std::sync::Mutex<BTreeMap<i32, usize>>,
}

impl Group {
    /// The next batch of up to `max` records from `owned` partitions, taken
    /// round-robin from their committed offsets (what a fresh fetch returns).
    fn poll(&self, owned: &[i32], max: usize, rng: &mut Lcg) -> Vec<Inbound> {
        let committed = self.committed.lock().expect("lock").clone();
        let mut batch = Vec::new();
        let take = 1 + usize::try_from(rng.below(max as u64)).expect("fits");
        let mut cursor: BTreeMap<i32, usize> = owned
            .iter()
            .map(|p| (*p, committed.get(p).copied().unwrap_or(0)))
            .collect();
        while batch.len() < take {
            let mut progressed = false;
            for p in owned {
                let at = cursor.entry(*p).or_default();
                if let Some(record) = self.logs.get(p).and_then(|l| l.get(*at)) {
                    batch.push(record.clone());
                    *at += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        batch
    }

    /// Stores offsets after the batch's effects are durable.
    fn commit(&self, batch: &[Inbound]) {
        let mut committed = self.committed.lock().expect("lock");
        for record in batch {
            let at = committed.entry(record.partition).or_default();
            *at += 1;
        }
    }

    fn done(&self, owned: &[i32]) -> bool {
        let committed = self.committed.lock().expect("lock");
        owned
            .iter()
            .all(|p| committed.get(p).copied().unwrap_or(0) >= self.logs.get(p).map_or(0, Vec::len))
    }
}

/// Consumes `owned` until done (or `stop_after` batches), firing owned timers
/// after each batch, as the service's two loops do.
async fn consume(
    detector: &Detector<MemorySink>,
    group: &Group,
    owned: &[i32],
    seed: u64,
    stop_after: Option<usize>,
) {
    let mut rng = Lcg(seed);
    let mut batches = 0;
    while !group.done(owned) && stop_after.is_none_or(|n| batches < n) {
        let batch = group.poll(owned, 25, &mut rng);
        detector.apply_batch(&batch).await.expect("batch applies");
        group.commit(&batch);
        for p in owned {
            detector.drain_timers(*p).await.expect("timers fire");
        }
        batches += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_one_dying_mid_batch_loses_nothing() {
    let server = RedisServer::start().await.expect("redis-server");
    let connect = || async {
        RedisConn::connect(&RedisConfig {
            url: server.url(),
            cluster_nodes: Vec::new(),
        })
        .await
        .expect("redis connects")
    };
    let rules = RulesConfig::default();
    let parcels = world(96, PARTITIONS, "G");
    let end = world_end(&parcels);
    let (want_alerts, want_updates) = expected(&rules, &parcels, end);
    let mut rng = Lcg(99);
    let mut records = stream(&parcels, Arrival::RegistrationAfterFirstScan, &mut rng);
    records.extend(heartbeats(PARTITIONS, end));
    let mut logs: BTreeMap<i32, Vec<Inbound>> = BTreeMap::new();
    for record in records {
        logs.entry(record.partition).or_default().push(record);
    }
    let group = Group {
        logs,
        committed: Default::default(),
    };
    let a = detector(connect().await, &rules, event_clock(0));
    let b = detector(connect().await, &rules, event_clock(0));

    // Both instances at work concurrently, each on its half.
    tokio::join!(
        consume(&a, &group, &[0, 1], 1, Some(12)),
        consume(&b, &group, &[2, 3], 2, Some(12)),
    );
    let a_before = a.sink().take();
    assert!(
        decode_records(&a_before).0.len() > 5,
        "a emitted alerts before dying"
    );
    // a's next batch commits to Redis, then its produce fails and it dies:
    // the offsets stay where they were, the outputs sit in the outbox.
    let fatal = group.poll(&[0, 1], 25, &mut rng);
    a.sink().set_failing(true);
    assert!(a.apply_batch(&fatal).await.is_err(), "a dies mid-batch");
    drop(a);

    // Rebalance: b owns everything; it flushes the outboxes it gained first.
    let mut recovered = 0;
    for p in [0, 1] {
        recovered += b.flush_outbox(p).await.expect("outbox flush");
    }
    assert!(recovered > 0, "a's last outputs were only in its outbox");
    consume(&b, &group, &[0, 1, 2, 3], 3, None).await;

    let mut records = a_before;
    records.extend(b.sink().take());
    let (alerts, updates) = decode_records(&records);
    assert_sequences(&updates);
    assert_same_alerts(&alert_set(&alerts), &want_alerts, &parcels, "scale-out");
    assert_eq!(
        updates.iter().map(update_key).collect::<BTreeSet<_>>(),
        want_updates
    );
    let mut first: BTreeMap<AlertKey, Alert> = BTreeMap::new();
    for alert in alerts {
        let previous = first
            .entry(alert_key(&alert))
            .or_insert_with(|| alert.clone());
        assert_eq!(
            (previous.rule.as_str(), previous.episode, previous.severity),
            (alert.rule.as_str(), alert.episode, alert.severity),
            "a repeat is the same alert"
        );
    }
}
