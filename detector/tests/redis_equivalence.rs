//! The whole batch path (dedup, fold, Lua commit, outbox, sequence numbers,
//! timers) against a real redis-server, with the event-time clock and the timer
//! loop driven deterministically: duplicated, shuffled and late-registration
//! deliveries of the same scans yield exactly the clean run's alerts and updates.

mod common;

use std::collections::BTreeSet;

use common::*;
use trackstream_detector::rules::RulesConfig;
use trackstream_proto::v1::{Alert, ShipmentUpdate};
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::RedisServer;

const PARTITIONS: i32 = 4;
/// Shuffling a parcel's scans among the stream positions they occupy moves a
/// scan up to one parcel span (220 h) behind its position, while other parcels'
/// shuffled scans push the watermark up to one span ahead of it: the allowed
/// lateness must cover both for the guarantee ("no scan more than the lateness
/// behind the newest seen") to hold.
const LATENESS: i64 = 450 * H;

async fn connect(server: &RedisServer, db: u8) -> RedisConn {
    RedisConn::connect(&RedisConfig {
        url: format!("redis://127.0.0.1:{}/{db}", server.port),
        cluster_nodes: Vec::new(),
    })
    .await
    .expect("redis connects")
}

struct Run {
    alerts: Vec<Alert>,
    updates: Vec<ShipmentUpdate>,
}

impl Run {
    fn alert_set(&self) -> BTreeSet<AlertKey> {
        alert_set(&self.alerts)
    }
    fn update_set(&self) -> BTreeSet<(i32, String)> {
        self.updates.iter().map(update_key).collect()
    }
    fn assert_no_repeats(&self, what: &str) {
        let mut seen = BTreeSet::new();
        for a in &self.alerts {
            assert!(
                seen.insert(alert_key(a)),
                "{what}: alert {a:?} emitted twice"
            );
        }
        let mut seen = BTreeSet::new();
        for u in &self.updates {
            assert!(seen.insert(update_key(u)), "{what}: update emitted twice");
        }
    }
}

async fn run(
    server: &RedisServer,
    db: u8,
    lateness: i64,
    records: Vec<trackstream_runtime::kafka::Inbound>,
    seed: u64,
) -> Run {
    let rules = RulesConfig::default();
    let detector = detector(connect(server, db).await, &rules, event_clock(lateness));
    let mut rng = Lcg(seed);
    let out = drive(&detector, &batches(records, 40, &mut rng), PARTITIONS).await;
    let (alerts, updates) = decode_records(&out);
    assert_sequences(&updates);
    Run { alerts, updates }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_shuffled_and_late_registered_streams_yield_the_clean_alerts_and_updates() {
    let server = RedisServer::start().await.expect("redis-server");
    let rules = RulesConfig::default();
    let parcels = world(64, PARTITIONS, "E");
    let end = world_end(&parcels) + LATENESS;
    let (want_alerts, want_updates) = expected(&rules, &parcels, end);
    assert!(want_alerts.len() > 100, "the world exercises the rules");
    let mut rng = Lcg(11);
    let with_heartbeat = |mut records: Vec<_>| {
        records.extend(heartbeats(PARTITIONS, end));
        records
    };

    let clean = run(
        &server,
        0,
        0,
        with_heartbeat(stream(&parcels, Arrival::Clean, &mut rng)),
        1,
    )
    .await;
    clean.assert_no_repeats("clean");
    assert_same_alerts(
        &clean.alert_set(),
        &want_alerts,
        &parcels,
        "clean run = engine reference",
    );
    assert_eq!(clean.update_set(), want_updates);

    // Every record twice in a row, and the whole stream replayed afterwards.
    let once = stream(&parcels, Arrival::Clean, &mut rng);
    let mut twice: Vec<_> = once.iter().flat_map(|r| [r.clone(), r.clone()]).collect();
    twice.extend(once);
    let duplicated = run(&server, 1, 0, with_heartbeat(twice), 2).await;
    duplicated.assert_no_repeats("duplicated");
    assert_same_alerts(
        &duplicated.alert_set(),
        &want_alerts,
        &parcels,
        "duplicates",
    );
    assert_eq!(duplicated.update_set(), want_updates, "duplicates");

    let late_reg = run(
        &server,
        2,
        0,
        with_heartbeat(stream(
            &parcels,
            Arrival::RegistrationAfterFirstScan,
            &mut rng,
        )),
        3,
    )
    .await;
    assert_same_alerts(
        &late_reg.alert_set(),
        &want_alerts,
        &parcels,
        "late registration",
    );
    assert_eq!(late_reg.update_set(), want_updates, "late registration");

    let shuffled = run(
        &server,
        3,
        LATENESS,
        with_heartbeat(stream(&parcels, Arrival::ShuffledWithinWaybill, &mut rng)),
        4,
    )
    .await;
    shuffled.assert_no_repeats("shuffled");
    assert_same_alerts(
        &shuffled.alert_set(),
        &want_alerts,
        &parcels,
        "shuffled within waybill",
    );
    assert_eq!(
        shuffled.update_set(),
        want_updates,
        "shuffled within waybill"
    );

    let both = run(
        &server,
        4,
        LATENESS,
        with_heartbeat(stream(
            &parcels,
            Arrival::ShuffledRegistrationLast,
            &mut rng,
        )),
        5,
    )
    .await;
    assert_same_alerts(
        &both.alert_set(),
        &want_alerts,
        &parcels,
        "shuffled, registration last",
    );
    assert_eq!(
        both.update_set(),
        want_updates,
        "shuffled, registration last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_survive_a_failing_sink_in_the_outbox_with_the_same_ids_and_seqs() {
    let server = RedisServer::start().await.expect("redis-server");
    let rules = RulesConfig::default();
    let parcels = world(16, PARTITIONS, "F");
    let end = world_end(&parcels);
    let (want_alerts, want_updates) = expected(&rules, &parcels, end);
    let mut rng = Lcg(5);
    let mut records = stream(&parcels, Arrival::Clean, &mut rng);
    records.extend(heartbeats(PARTITIONS, end));
    let detector = detector(connect(&server, 0).await, &rules, event_clock(0));
    let mut failed = 0;
    for (i, batch) in batches(records, 20, &mut rng).iter().enumerate() {
        if i % 3 == 1 {
            // Kafka is down: the batch fails after its Redis commit…
            detector.sink().set_failing(true);
            if detector.apply_batch(batch).await.is_err() {
                failed += 1;
            }
            detector.sink().set_failing(false);
        }
        // …and the consumer retries it: duplicates now, outbox flushed first.
        detector.apply_batch(batch).await.expect("retry applies");
        for p in 0..PARTITIONS {
            detector.drain_timers(p).await.expect("timers fire");
        }
    }
    assert!(failed > 0, "the sink did fail some batches");
    let (alerts, updates) = decode_records(&detector.sink().take());
    assert_sequences(&updates);
    assert_eq!(alert_set(&alerts), want_alerts);
    assert_eq!(
        updates.iter().map(update_key).collect::<BTreeSet<_>>(),
        want_updates
    );
    for p in 0..PARTITIONS {
        assert_eq!(
            detector.flush_outbox(p).await.expect("flush"),
            0,
            "outbox of partition {p} drained"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_loop_fires_only_owned_partitions_and_picks_up_overdue_ones_on_assignment() {
    use std::collections::{BTreeMap, BTreeSet};
    use trackstream_proto::topics;
    use trackstream_proto::v1::Status;
    use trackstream_runtime::CancellationToken;

    let server = RedisServer::start().await.expect("redis-server");
    let rules = RulesConfig::default();
    let detector = std::sync::Arc::new(detector(connect(&server, 0).await, &rules, event_clock(0)));
    // Two stalls, one per partition, then heartbeats making both overdue.
    let a = scan("sf:A", Status::PickedUp, T0);
    let b = scan("sf:B", Status::PickedUp, T0);
    detector
        .apply_batch(&[event_record(0, &a), event_record(1, &b)])
        .await
        .expect("applies");
    detector
        .apply_batch(&heartbeats(2, T0 + 30 * H))
        .await
        .expect("applies");
    assert!(detector.sink().take().is_empty(), "nothing fired yet");

    let (assign, assignment) = tokio::sync::watch::channel(BTreeMap::new());
    let own = |partitions: &[i32]| {
        BTreeMap::from([(
            topics::TRACKING_EVENTS.to_owned(),
            partitions.iter().copied().collect::<BTreeSet<i32>>(),
        )])
    };
    let shutdown = CancellationToken::new();
    let timers = {
        let detector = detector.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { detector.run_timers(assignment, shutdown).await })
    };
    let mut seen: Vec<Alert> = Vec::new();
    let wait_for = async |waybill: &str, seen: &mut Vec<Alert>| {
        trackstream_testkit::eventually(
            std::time::Duration::from_secs(20),
            &format!("an alert for {waybill}"),
            || {
                seen.extend(decode_records(&detector.sink().take()).0);
                let found = seen.iter().any(|a| a.waybill == waybill);
                async move { found.then_some(()) }
            },
        )
        .await;
    };
    assign.send_replace(own(&[0]));
    wait_for("A", &mut seen).await;
    // Another overdue stall on partition 0: once it fired, the loop has made
    // full passes over what it owns, and partition 1 was not among them.
    detector
        .apply_batch(&[event_record(0, &scan("sf:C", Status::PickedUp, T0 + H))])
        .await
        .expect("applies");
    wait_for("C", &mut seen).await;
    assert!(
        seen.iter().all(|a| a.waybill != "B"),
        "partition 1 is not owned: its timers must not fire"
    );
    // Partition 1 assigned (0 revoked): its overdue stall fires at once.
    assign.send_replace(own(&[1]));
    wait_for("B", &mut seen).await;
    shutdown.cancel();
    timers.await.expect("timer loop stops");
    let per_waybill: BTreeMap<&str, usize> = seen.iter().fold(BTreeMap::new(), |mut m, a| {
        *m.entry(a.waybill.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        per_waybill,
        BTreeMap::from([("A", 1), ("B", 1), ("C", 1)]),
        "each stall opened exactly once"
    );
}

/// Two instances applying the same batches at once (as during a rebalance, when
/// the old owner finishes a batch the new one also reads): every waybill of a
/// batch is committed on its own compare-and-set inside the partition's commit
/// script, so the second instance's commits conflict, it reloads, finds the
/// events already applied, and emits nothing twice. Both share one connection,
/// so the order on the wire (both loads, then both commits) makes the conflict
/// certain rather than a matter of timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_on_the_same_waybills_conflict_retry_and_emit_each_output_once() {
    use trackstream_detector::engine::Engine;
    use trackstream_detector::service::Detector;
    use trackstream_detector::sink::MemorySink;
    use trackstream_detector::store::Store;

    let server = RedisServer::start().await.expect("redis-server");
    let rules = RulesConfig::default();
    let parcels = world(32, PARTITIONS, "K");
    let end = world_end(&parcels);
    let (want_alerts, want_updates) = expected(&rules, &parcels, end);
    let mut rng = Lcg(9);
    let mut records = stream(&parcels, Arrival::RegistrationAfterFirstScan, &mut rng);
    records.extend(heartbeats(PARTITIONS, end));
    let conn = connect(&server, 0).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let instance = |registry: &mut prometheus_client::registry::Registry| {
        Detector::new(
            Engine::new(rules.clone()),
            Store::new(conn.clone()),
            MemorySink::new(),
            event_clock(0),
            registry,
        )
    };
    let a = instance(registry.sub_registry_with_prefix("a"));
    let b = instance(registry.sub_registry_with_prefix("b"));
    for batch in batches(records, 25, &mut rng) {
        let (ra, rb) = tokio::join!(a.apply_batch(&batch), b.apply_batch(&batch));
        ra.expect("a applies");
        rb.expect("b applies");
        for p in 0..PARTITIONS {
            let (ra, rb) = tokio::join!(a.drain_timers(p), b.drain_timers(p));
            ra.expect("a fires");
            rb.expect("b fires");
        }
    }
    let mut out = a.sink().take();
    out.extend(b.sink().take());
    let (alerts, updates) = decode_records(&out);
    assert_sequences(&updates);
    assert_same_alerts(&alert_set(&alerts), &want_alerts, &parcels, "two instances");
    assert_eq!(alerts.len(), want_alerts.len(), "no alert emitted twice");
    assert_eq!(
        updates.iter().map(update_key).collect::<BTreeSet<_>>(),
        want_updates
    );
    assert_eq!(updates.len(), want_updates.len(), "no update emitted twice");
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).expect("encodes");
    let conflicts: u64 = metrics
        .lines()
        .filter(|l| l.contains("commit_conflicts_total "))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum();
    assert!(
        conflicts > 0,
        "no compare-and-set was ever lost:\n{metrics}"
    );
}

/// The commit script writes each update into its order's log with the
/// sequence number prepended as a protobuf varint; the bytes must decode to the
/// update with that `seq`, equal to the record produced, across varint widths
/// (counters primed just below 128 and 16 384).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_log_entries_decode_with_their_seq_across_varint_widths() {
    use prost::Message as _;
    use trackstream_proto::v1::Status;

    let server = RedisServer::start().await.expect("redis-server");
    let conn = connect(&server, 0).await;
    let detector = detector(conn, &RulesConfig::default(), event_clock(0));
    let mut raw = redis::Client::open(format!("redis://127.0.0.1:{}/0", server.port))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    for (key, order, primed) in [("sf:V1", "O-V1", 125_u64), ("sf:V2", "O-V2", 16_381)] {
        redis::cmd("SET")
            .arg(trackstream_detector::store::order_key(
                "m-acme", order, "seq",
            ))
            .arg(primed)
            .query_async::<()>(&mut raw)
            .await
            .expect("primes the counter");
        let mut batch = vec![registration_record(0, &shipment(key, order, T0))];
        for (i, status) in [
            Status::PickedUp,
            Status::InTransit,
            Status::InTransit,
            Status::OutForDelivery,
            Status::Delivered,
        ]
        .into_iter()
        .enumerate()
        {
            batch.push(event_record(0, &scan(key, status, T0 + (i as i64 + 1) * H)));
        }
        detector.apply_batch(&batch).await.expect("applies");
        let records = detector.sink().take();
        let payloads: Vec<Vec<u8>> = records
            .iter()
            .filter(|r| r.topic == trackstream_proto::topics::TRACKING_UPDATES)
            .map(|r| r.payload.clone())
            .collect();
        let (_, produced) = decode_records(&records);
        let seqs: Vec<u64> = produced.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, (primed + 1..=primed + 5).collect::<Vec<_>>());
        let log: Vec<(Vec<u8>, u64)> = redis::cmd("ZRANGE")
            .arg(trackstream_detector::store::order_key(
                "m-acme", order, "updates",
            ))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut raw)
            .await
            .expect("reads the log");
        assert_eq!(log.len(), 5);
        let stored: Vec<&Vec<u8>> = log.iter().map(|(bytes, _)| bytes).collect();
        assert_eq!(
            stored,
            payloads.iter().collect::<Vec<_>>(),
            "the log's entries are byte for byte the records produced"
        );
        for ((bytes, score), record) in log.iter().zip(&produced) {
            let stored = ShipmentUpdate::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(stored.seq, *score);
            assert_eq!(&stored, record, "the log holds what was produced");
        }
    }
}

/// Order ids are unique only within a merchant: two shops' order `10001` get
/// separate per-order sequences and logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_id_of_two_merchants_keeps_two_sequences() {
    use trackstream_proto::v1::Status;

    let server = RedisServer::start().await.expect("redis-server");
    let detector = detector(
        connect(&server, 0).await,
        &RulesConfig::default(),
        event_clock(0),
    );
    let mut acme = shipment("sf:M1", "10001", T0);
    acme.merchant_id = "m-acme".into();
    let mut other = shipment("sf:M2", "10001", T0);
    other.merchant_id = "m-other".into();
    let mut batch = vec![
        registration_record(0, &acme),
        registration_record(0, &other),
    ];
    for (i, status) in [Status::PickedUp, Status::InTransit]
        .into_iter()
        .enumerate()
    {
        let at = T0 + (i as i64 + 1) * H;
        batch.push(event_record(0, &scan("sf:M1", status, at)));
        batch.push(event_record(0, &scan("sf:M2", status, at)));
    }
    detector.apply_batch(&batch).await.expect("applies");
    let (_, produced) = decode_records(&detector.sink().take());
    let seqs_of = |merchant: &str| -> Vec<u64> {
        produced
            .iter()
            .filter(|u| u.merchant_id == merchant && u.order_id == "10001")
            .map(|u| u.seq)
            .collect()
    };
    assert_eq!(seqs_of("m-acme"), [1, 2]);
    assert_eq!(seqs_of("m-other"), [1, 2]);
}
