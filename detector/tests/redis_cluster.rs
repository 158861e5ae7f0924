//! The detector against a real three-master Redis Cluster: every Lua script and
//! multi-key command stays in one slot (partition and order hash tags), keys
//! spread over the masters, and the alerts are exactly the clean run's.

mod common;

use std::collections::BTreeSet;

use common::*;
use trackstream_detector::rules::RulesConfig;
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::cluster::RedisCluster;

const PARTITIONS: i32 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_unchanged_on_a_three_node_redis_cluster() {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let conn = RedisConn::connect(&RedisConfig {
        url: String::new(),
        cluster_nodes: cluster.urls(),
    })
    .await
    .expect("cluster connects");
    assert!(matches!(conn, RedisConn::Cluster(_)));
    let rules = RulesConfig::default();
    let parcels = world(48, PARTITIONS, "C");
    let end = world_end(&parcels);
    let (want_alerts, want_updates) = expected(&rules, &parcels, end);

    let mut rng = Lcg(21);
    let once = stream(&parcels, Arrival::RegistrationAfterFirstScan, &mut rng);
    // Delivered twice: dedup must hold across the cluster too.
    let mut records: Vec<_> = once.iter().flat_map(|r| [r.clone(), r.clone()]).collect();
    records.extend(heartbeats(PARTITIONS, end));
    let detector = detector(conn, &rules, event_clock(0));
    let out = drive(&detector, &batches(records, 30, &mut rng), PARTITIONS).await;
    let (alerts, updates) = decode_records(&out);
    assert_sequences(&updates);
    assert_same_alerts(&alert_set(&alerts), &want_alerts, &parcels, "cluster");
    assert_eq!(alerts.len(), want_alerts.len(), "no alert emitted twice");
    assert_eq!(
        updates.iter().map(update_key).collect::<BTreeSet<_>>(),
        want_updates
    );

    // The state really is spread over the masters.
    let mut holding = 0;
    for url in cluster.urls() {
        let client = redis::Client::open(url).expect("url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("node connects");
        let keys: i64 = redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("dbsize");
        holding += usize::from(keys > 0);
    }
    assert_eq!(holding, 3, "every master holds some of the keys");
}
