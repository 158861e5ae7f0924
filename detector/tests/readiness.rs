//! The detector's `/healthz` is honest about its consumer group: 503 while the
//! member holds no partitions (started while the broker is unreachable), 200
//! only once it holds them and has processed the backlog that was on them
//! (`tracking.events` and `shipments`) when it got them.

use std::time::Duration;

use trackstream_proto::topics;
use trackstream_runtime::CancellationToken;
use trackstream_runtime::config::{KafkaConfig, RedisConfig};
use trackstream_testkit::admin::{Readiness, gauge, sum};
use trackstream_testkit::kafka::broker_with_undecodable_backlog;
use trackstream_testkit::processes::RedisServer;

/// Deadline of every wait: a progress bound, not a speed claim.
const WAIT: Duration = Duration::from_secs(90);
/// Records waiting on each consumed topic before the detector starts.
const BACKLOG: usize = 1_000;
const GROUP: &str = "trackstream-detector";

fn consumed(metrics: &str) -> f64 {
    sum(metrics, "_consumer_records_total", "topic=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_holding_nothing_and_200_only_after_the_backlog() {
    let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let broker =
        broker_with_undecodable_backlog(&[topics::TRACKING_EVENTS, topics::SHIPMENTS], BACKLOG, 4)
            .await;
    let kafka = KafkaConfig {
        brokers: broker.bootstrap(),
        ..Default::default()
    };

    broker.cut();
    let mut config = trackstream_detector::Config {
        kafka,
        redis: RedisConfig {
            url: redis.url(),
            cluster_nodes: Vec::new(),
        },
        ..Default::default()
    };
    config.admin.listen = "127.0.0.1:0".into();
    let shutdown = CancellationToken::new();
    let running = trackstream_detector::start(config, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("detector: {e}"));
    let admin = running.admin_addr;

    let readiness = Readiness {
        admin,
        group: GROUP,
        // Its own group, the lane statistics consumer's and the incident
        // detector's.
        groups: 3,
        consumed,
        backlog: (2 * BACKLOG) as f64,
    };
    readiness.not_ready_while_cut(Duration::from_secs(3)).await;
    broker
        .restore()
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let metrics = readiness
        .ready_after_the_backlog(WAIT, "detector ready")
        .await;
    assert_eq!(
        gauge(&metrics, "_consumer_assigned_partitions", GROUP),
        Some(8.0),
        "alone in the group, it holds both topics' partitions"
    );

    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, running.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "detector stopped cleanly: {stopped:?}"
    );
}
