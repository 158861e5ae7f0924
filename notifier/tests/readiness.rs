//! The notifier's `/healthz` is honest about both of its consumer groups (the
//! shared messenger group and this instance's live follower): 503 while either
//! holds no partitions (started while the broker is unreachable), 200 only
//! once both hold theirs and the messenger has processed the backlog that was
//! on its partitions when it got them.

use std::time::Duration;

use trackstream_proto::topics;
use trackstream_runtime::CancellationToken;
use trackstream_testkit::admin::{Readiness, gauges, sum};
use trackstream_testkit::kafka::broker_with_undecodable_backlog;
use trackstream_testkit::processes::RedisServer;

/// Deadline of every wait: a progress bound, not a speed claim.
const WAIT: Duration = Duration::from_secs(90);
/// Records waiting on each messenger topic before the notifier starts.
const BACKLOG: usize = 500;
const GROUP: &str = "trackstream-notifier";

/// Records the messenger group processed (not the live follower's, whose
/// metrics carry the `live_` prefix).
fn messenger_consumed(metrics: &str) -> f64 {
    sum(metrics, "notifier_consumer_records_total", "topic=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_waits_for_both_groups_and_the_messenger_backlog() {
    let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let broker = broker_with_undecodable_backlog(
        &[
            topics::TRACKING_UPDATES,
            topics::TRACKING_ALERTS,
            topics::SHIPMENTS,
        ],
        BACKLOG,
        4,
    )
    .await;
    let mut config = trackstream_notifier::Config::default();
    config.kafka.brokers = broker.bootstrap();
    config.redis.url = redis.url();
    config.admin.listen = "127.0.0.1:0".into();
    config.grpc.listen = "127.0.0.1:0".into();
    config.merchants = trackstream_testkit::merchants::two_merchants();

    broker.cut();
    let shutdown = CancellationToken::new();
    let running = trackstream_notifier::start(config, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("notifier: {e}"));
    let admin = running.admin_addr;

    let readiness = Readiness {
        admin,
        group: GROUP,
        groups: 2,
        consumed: messenger_consumed,
        backlog: (3 * BACKLOG) as f64,
    };
    readiness.not_ready_while_cut(Duration::from_secs(3)).await;
    broker
        .restore()
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let metrics = readiness
        .ready_after_the_backlog(WAIT, "notifier ready")
        .await;
    let ready = gauges(&metrics, "_consumer_ready");
    assert_eq!(ready.len(), 2, "{ready:?}");
    assert!(
        ready.iter().all(|(_, r)| *r == 1.0),
        "200 with a group not ready: {ready:?}"
    );
    let assigned = gauges(&metrics, "_consumer_assigned_partitions");
    assert!(
        assigned
            .iter()
            .any(|(group, n)| group == GROUP && *n == 16.0),
        "the messenger holds all 16 partitions (updates, alerts, shipments, incidents): {assigned:?}"
    );
    assert!(
        assigned
            .iter()
            .any(|(group, n)| group.starts_with("trackstream-notifier-live-") && *n == 12.0),
        "the live follower holds all 12 partitions (updates, alerts, incidents): {assigned:?}"
    );

    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, running.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "notifier stopped cleanly: {stopped:?}"
    );
}
