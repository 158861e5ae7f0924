//! Growing the topics' partition count: the detector's per-partition state is
//! moved to where the producers' `murmur2` partitioner will send each
//! waybill's records (`store::repartition`), and the pipeline continues as if
//! nothing happened — against a real Redis and a real three-master Redis
//! Cluster, and the partitioner checked against a real broker.
//!
//! The scenario: a world of parcels runs its first half on 4 partitions, the
//! detector stops, its state is moved to 8 partitions, and a fresh detector
//! runs the second half with every record on its new partition. Every alert
//! and every update must be the clean run's — registrations, histories, armed
//! deadlines and sequence numbers carried over. The same scenario without the
//! move is run too and must lose updates: what the test checks is sensitive
//! to the move.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::store::repartition::{RepartitionError, repartition};
use trackstream_proto::topics;
use trackstream_runtime::config::{KafkaConfig, RedisConfig};
use trackstream_runtime::kafka::partition::partition_for;
use trackstream_runtime::kafka::{Inbound, OutRecord, Producer};
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::cluster::RedisCluster;
use trackstream_testkit::processes::{Broker, RedisServer};

const BEFORE: i32 = 4;
const AFTER: i32 = 8;

/// Where each record goes with `partitions` partitions.
fn placed(records: &[Inbound], partitions: i32) -> Vec<Inbound> {
    records
        .iter()
        .map(|r| Inbound {
            partition: partition_for(r.key.as_deref().unwrap_or_default(), partitions),
            ..r.clone()
        })
        .collect()
}

/// Runs the world's first half on [`BEFORE`] partitions, then (after the move
/// when `moved`) the second half on [`AFTER`]; returns the alert set and the
/// update keys.
async fn run(
    redis: RedisConfig,
    nodes: Vec<String>,
    moved: bool,
) -> (
    BTreeSet<AlertKey>,
    BTreeSet<(i32, String)>,
    Vec<trackstream_proto::v1::ShipmentUpdate>,
) {
    let rules = RulesConfig::default();
    let parcels = world(96, BEFORE, "RP");
    let end = world_end(&parcels);
    let mut rng = Lcg(7);
    let records = stream(&parcels, Arrival::Clean, &mut rng);
    let (first, second) = records.split_at(records.len() / 2);
    let first_keys: BTreeSet<&[u8]> = first.iter().filter_map(|r| r.key.as_deref()).collect();
    let conn = RedisConn::connect(&redis).await.expect("redis connects");

    let before = detector(conn.clone(), &rules, event_clock(0));
    let first = batches(placed(first, BEFORE), 20, &mut rng);
    let mut outputs = drive(&before, &first, BEFORE).await;
    drop(before);

    if moved {
        let report = repartition(&conn, &nodes, BEFORE, AFTER, false)
            .await
            .expect("repartition");
        assert_eq!(
            report.waybills,
            first_keys.len() as u64,
            "every parcel of the first half"
        );
        assert!(
            report.waybills_moved * 4 > report.waybills
                && report.waybills_moved * 4 < report.waybills * 3,
            "about half change partition: {report:?}"
        );
        assert_eq!(report.keys_moved, 2 * report.waybills_moved, "{report:?}");
        assert!(report.timers_moved > 0, "armed deadlines move: {report:?}");
        // Idempotent: a second run finds nothing left to move.
        let again = repartition(&conn, &nodes, BEFORE, AFTER, false)
            .await
            .expect("repartition again");
        assert_eq!((again.waybills_moved, again.timers_moved), (0, 0));
    }

    let after = detector(conn, &rules, event_clock(0));
    let mut second = placed(second, AFTER);
    second.extend(heartbeats(AFTER, end));
    let second = batches(second, 20, &mut rng);
    outputs.extend(drive(&after, &second, AFTER).await);
    let (alerts, updates) = decode_records(&outputs);
    let keys = updates.iter().map(update_key).collect();
    (alert_set(&alerts), keys, updates)
}

fn standalone(server: &RedisServer) -> (RedisConfig, Vec<String>) {
    (
        RedisConfig {
            url: server.url(),
            cluster_nodes: Vec::new(),
        },
        vec![server.url()],
    )
}

fn expected_run() -> (BTreeSet<AlertKey>, BTreeSet<(i32, String)>) {
    let parcels = world(96, BEFORE, "RP");
    expected(&RulesConfig::default(), &parcels, world_end(&parcels))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_move_a_grown_partition_count_continues_every_parcel() {
    let server = RedisServer::start().await.expect("redis-server");
    let (config, nodes) = standalone(&server);
    let (alerts, updates, all) = run(config, nodes, true).await;
    let (want_alerts, want_updates) = expected_run();
    assert_sequences(&all);
    assert_eq!(alerts, want_alerts, "alerts as in one uninterrupted run");
    assert_eq!(updates, want_updates, "updates as in one uninterrupted run");

    // Without the move, the grown count loses what moved partitions.
    let server = RedisServer::start().await.expect("redis-server");
    let (config, nodes) = standalone(&server);
    let (_, unmoved, _) = run(config, nodes, false).await;
    assert!(
        unmoved.len() < want_updates.len(),
        "without the move parcels lose their registration and updates ({} of {})",
        unmoved.len(),
        want_updates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_move_works_across_a_redis_cluster() {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let config = RedisConfig {
        url: String::new(),
        cluster_nodes: cluster.urls(),
    };
    let (alerts, updates, all) = run(config, cluster.urls(), true).await;
    let (want_alerts, want_updates) = expected_run();
    assert_sequences(&all);
    assert_eq!(alerts, want_alerts);
    assert_eq!(updates, want_updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_refuses_while_an_outbox_holds_outputs_and_bad_counts() {
    let server = RedisServer::start().await.expect("redis-server");
    let (config, nodes) = standalone(&server);
    let conn = RedisConn::connect(&config).await.expect("redis connects");
    let mut raw = conn.clone();
    redis::cmd("HSET")
        .arg(trackstream_detector::store::outbox_key(2))
        .arg("u:1")
        .arg("pending")
        .query_async::<()>(&mut raw)
        .await
        .expect("hset");
    match repartition(&conn, &nodes, BEFORE, AFTER, false).await {
        Err(RepartitionError::OutboxNotEmpty {
            partition: 2,
            entries: 1,
        }) => {}
        other => panic!("expected the outbox refusal, got {other:?}"),
    }
    assert!(matches!(
        repartition(&conn, &nodes, 8, 8, false).await,
        Err(RepartitionError::Counts { .. })
    ));
}

/// The partition the move computes is where the pipeline's own producer puts a
/// key on a real broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_for_agrees_with_the_producer_on_a_real_broker() {
    let broker = Broker::start().await.expect("broker");
    trackstream_testkit::kafka::create_topics(&broker.bootstrap(), &[(topics::SHIPMENTS, 7)])
        .await
        .expect("topic");
    let config = KafkaConfig {
        brokers: broker.bootstrap(),
        ..KafkaConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let producer = Producer::new(&config, "partition-test", &mut registry).expect("producer");
    let keys: Vec<String> = (0..200).map(|i| format!("zto:ZT{i:09}")).collect();
    let records = keys
        .iter()
        .map(|k| OutRecord::new(topics::SHIPMENTS, k.clone(), k.clone().into_bytes()))
        .collect();
    producer.send_all(records).await.expect("produced");
    let mut reader =
        trackstream_testkit::kafka::TopicReader::new(&broker.bootstrap(), topics::SHIPMENTS);
    let records = reader
        .until(Duration::from_secs(60), "every record", |r| {
            r.len() >= keys.len()
        })
        .await;
    for record in records {
        assert_eq!(
            record.partition,
            partition_for(record.key.as_bytes(), 7),
            "{}",
            record.key
        );
    }
}
