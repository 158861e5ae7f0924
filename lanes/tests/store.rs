//! The lanes statistics in a real Redis and a real three-master Redis
//! Cluster: two instances' buckets merge into one window, the window is the
//! whole days before the day asked about, and a busy lane's key stays within
//! its documented memory bound.

use trackstream_lanes::book::DayStats;
use trackstream_lanes::stage::{Stage, Timeline};
use trackstream_lanes::store::{LaneStore, redis_key};
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::cluster::RedisCluster;
use trackstream_testkit::processes::RedisServer;

/// The documented bound of one lane key holding 15 days of one instance's
/// buckets of a busy lane (docs/ARCHITECTURE.md, "lanes").
const KEY_BOUND_BYTES: u64 = 96 * 1024;
/// The bound of the same key when its deliveries are counted by 8 partitions
/// (`docs/ARCHITECTURE.md`, lanes).
const SPREAD_BOUND_BYTES: u64 = 8 * KEY_BOUND_BYTES;

/// Today, in days since the Unix epoch (buckets expire `keep_days` after
/// their day, so the tests write recent days).
fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// A day of `n` deliveries with spread-out, heavy-tailed durations.
fn day_of(n: u32, seed: u32) -> DayStats {
    let mut stats = DayStats::default();
    for i in 0..n {
        let x = f64::from((i * 7919 + seed * 104_729) % 1000) / 1000.0;
        let transit = 20.0 + 60.0 * x + if i % 17 == 0 { 150.0 * x } else { 0.0 };
        stats.record(&Timeline {
            ordered_at: Some(0.0),
            picked_up_at: Some(4.0 + 20.0 * x),
            out_for_delivery_at: Some(24.0 + transit),
            delivered_at: Some(26.0 + transit + 6.0 * x),
            promised_at: Some(96.0),
            failed_attempts: u32::from(i % 25 == 0),
            exception: i % 33 == 0,
            first_p50: Some(50.0 + 10.0 * x),
            first_p90: Some(70.0 + 10.0 * x),
            provider_estimate: (i % 2 == 0).then_some(60.0),
        });
    }
    stats
}

async fn two_instances_merge_and_windows_are_the_days_before(config: RedisConfig) {
    let conn = RedisConn::connect(&config).await.expect("redis");
    let (a, b) = (
        LaneStore::new(conn.clone(), "a", 15),
        LaneStore::new(conn.clone(), "b", 15),
    );
    let key = "lane|zto|standard|Zhejiang/Hangzhou|Sichuan/Chengdu";
    let base = today() - 9;
    for day in base..base + 10 {
        a.write(key, day, &day_of(100, 1), 0)
            .await
            .expect("write a");
        b.write(key, day, &day_of(50, 2), 0).await.expect("write b");
    }
    // A retry writes the same bytes: no double count.
    a.write(key, base + 9, &day_of(100, 1), 0)
        .await
        .expect("retry");
    let window = a.window(key, base + 10, 3).await.expect("window");
    assert_eq!(
        window.deliveries,
        3 * 150,
        "the 3 days before, both instances"
    );
    assert_eq!(window.stage(Stage::Transit).count(), 450);
    let mut expected = DayStats::default();
    for _ in 0..3 {
        expected.merge(&day_of(100, 1));
        expected.merge(&day_of(50, 2));
    }
    assert_eq!(
        window.stage(Stage::PickupToDelivered).quantile(0.9),
        expected.stage(Stage::PickupToDelivered).quantile(0.9),
        "merged in Redis = merged in memory"
    );
    assert_eq!(
        b.window(key, base + 5, 14).await.expect("w").deliveries,
        5 * 150
    );
    assert_eq!(
        a.window("lane|nobody", base + 10, 3)
            .await
            .expect("w")
            .deliveries,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_merge_across_instances_on_a_server_and_a_cluster() {
    let server = RedisServer::start().await.expect("redis-server");
    two_instances_merge_and_windows_are_the_days_before(RedisConfig {
        url: server.url(),
        cluster_nodes: Vec::new(),
    })
    .await;
    let cluster = RedisCluster::start().await.expect("cluster");
    two_instances_merge_and_windows_are_the_days_before(RedisConfig {
        url: String::new(),
        cluster_nodes: cluster.urls(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lane_key_stays_within_its_bound_and_old_days_go() {
    let server = RedisServer::start().await.expect("redis-server");
    let config = RedisConfig {
        url: server.url(),
        cluster_nodes: Vec::new(),
    };
    let conn = RedisConn::connect(&config).await.expect("redis");
    let store = LaneStore::new(conn.clone(), "a", 15);
    let key = "c|zto";
    // 40 days of 2 000 deliveries a day, up to today: only the last 15 stay.
    let base = today() - 39;
    for day in 0..40 {
        store
            .write(key, base + day, &day_of(2_000, day as u32), 0)
            .await
            .expect("write");
    }
    let mut raw = conn.clone();
    let fields: u64 = redis::cmd("HLEN")
        .arg(redis_key(key))
        .query_async(&mut raw)
        .await
        .expect("hlen");
    assert_eq!(fields, 15, "the days that left the window were dropped");
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(redis_key(key))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut raw)
        .await
        .expect("memory usage");
    println!("lane key with 15 days of 2 000 deliveries a day: {bytes} bytes");
    assert!(
        bytes <= KEY_BOUND_BYTES,
        "{bytes} bytes over the documented {KEY_BOUND_BYTES}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(redis_key(key))
        .query_async(&mut raw)
        .await
        .expect("pttl");
    assert!(ttl > 0, "the key expires");

    // The stream writes one field per day and partition of tracking.updates
    // (8 by default): the same deliveries spread over 8 partitions.
    let spread = "c|spread";
    for day in 0..15 {
        for partition in 0..8u32 {
            store
                .as_instance(format!("p{partition}"))
                .write(
                    spread,
                    today() - day,
                    &day_of(250, day as u32 * 8 + partition),
                    0,
                )
                .await
                .expect("write");
        }
    }
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(redis_key(spread))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut raw)
        .await
        .expect("memory usage");
    println!("the same over 8 partitions: {bytes} bytes");
    assert!(
        bytes <= SPREAD_BOUND_BYTES,
        "{bytes} bytes over the documented {SPREAD_BOUND_BYTES}"
    );
}
