//! `trackstream repartition` against a real Redis: the command moves a
//! waybill's state, history and timer to its partition under the new count
//! and prints what it did; a dry run writes nothing. (The move itself, through
//! whole detector runs on a server and a Cluster, is tested in
//! `detector/tests/repartition.rs`.)

use std::time::Duration;

use serde_json::Value;
use trackstream_detector::store::{history_key, state_key, timers_key};
use trackstream_runtime::kafka::partition::partition_for;
use trackstream_testkit::binary;
use trackstream_testkit::processes::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_trackstream");
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartition_moves_a_waybill_to_its_new_partition_and_reports_it() {
    let redis = RedisServer::start().await.expect("redis-server");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    // A waybill whose partition changes from 4 to 8 partitions.
    let waybill = (0..)
        .map(|i| format!("sf:SF{i:08}"))
        .find(|k| partition_for(k.as_bytes(), 4) != partition_for(k.as_bytes(), 8))
        .expect("some key moves");
    let (old, new) = (
        partition_for(waybill.as_bytes(), 4),
        partition_for(waybill.as_bytes(), 8),
    );
    redis::pipe()
        .hset(state_key(old, &waybill), "v", 3)
        .hset(history_key(old, &waybill), "e1", "event")
        .zadd(timers_key(old), format!("{waybill}|st"), 42)
        .query_async::<()>(&mut conn)
        .await
        .expect("seeded");
    let env = [("REDIS_URL", redis.url())];

    let dry = binary::run(
        BIN,
        &["repartition", "--from", "4", "--to", "8", "--dry-run"],
        &env,
        WAIT,
    )
    .await;
    assert_eq!(dry.code, Some(0), "{dry:?}");
    let summary: Value = serde_json::from_str(dry.stdout.trim()).expect("one JSON line");
    assert_eq!(summary["waybills_moved"], 1, "{summary}");
    let still: i64 = redis::cmd("EXISTS")
        .arg(state_key(old, &waybill))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(still, 1, "a dry run writes nothing");

    let ran = binary::run(
        BIN,
        &["repartition", "--from", "4", "--to", "8"],
        &env,
        WAIT,
    )
    .await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let summary: Value = serde_json::from_str(ran.stdout.trim()).expect("one JSON line");
    assert_eq!(
        (
            &summary["waybills"],
            &summary["keys_moved"],
            &summary["timers_moved"]
        ),
        (&Value::from(1), &Value::from(2), &Value::from(1)),
        "{summary}"
    );
    let version: Option<i64> = redis::cmd("HGET")
        .arg(state_key(new, &waybill))
        .arg("v")
        .query_async(&mut conn)
        .await
        .expect("hget");
    assert_eq!(version, Some(3), "the state under its new partition");
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg(timers_key(new))
        .arg(format!("{waybill}|st"))
        .query_async(&mut conn)
        .await
        .expect("zscore");
    assert_eq!(score, Some(42.0), "the deadline under its new partition");

    let refused = binary::run(
        BIN,
        &["repartition", "--from", "8", "--to", "8"],
        &env,
        WAIT,
    )
    .await;
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("must be positive and differ"),
        "{refused:?}"
    );
}
