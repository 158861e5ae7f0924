//! The notifier's `/healthz` is honest about both of its consumer groups (the
//! shared messenger group and this instance's live follower): 503 while either
//! holds no partitions (started while the broker is unreachable), 200 only
//! once both hold theirs and the messenger has processed the backlog that was
//! on its partitions when it got them.

use std::net::SocketAddr;
use std::time::Duration;

use trackstream_proto::topics;
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::{OutRecord, Producer};
use trackstream_testkit::admin::{gauge, gauges, get, healthz, sum};
use trackstream_testkit::processes::{Broker, RedisServer};

/// Deadline of every wait: a progress bound, not a speed claim.
const WAIT: Duration = Duration::from_secs(90);
/// Records waiting on each messenger topic before the notifier starts.
const BACKLOG: usize = 500;
const GROUP: &str = "trackstream-notifier";

/// `/healthz` status and the `/metrics` text read right after it.
async fn probe(admin: SocketAddr) -> Option<(u16, String)> {
    let status = healthz(admin).await?;
    let (_, metrics) = get(admin, "/metrics").await?;
    Some((status, metrics))
}

/// Records the messenger group processed (not the live follower's, whose
/// metrics carry the `live_` prefix).
fn messenger_consumed(metrics: &str) -> f64 {
    sum(metrics, "notifier_consumer_records_total", "topic=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_waits_for_both_groups_and_the_messenger_backlog() {
    let redis = RedisServer::start().await.unwrap_or_else(|e| panic!("{e}"));
    let broker = Broker::start().await.unwrap_or_else(|e| panic!("{e}"));
    let topics: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, 4)).collect();
    trackstream_testkit::kafka::create_topics(&broker.bootstrap(), &topics)
        .await
        .unwrap_or_else(|e| panic!("creating topics: {e}"));
    let mut config = trackstream_notifier::Config::default();
    config.kafka.brokers = broker.bootstrap();
    config.redis.url = redis.url();
    config.admin.listen = "127.0.0.1:0".into();
    config.grpc.listen = "127.0.0.1:0".into();
    config.merchants = trackstream_testkit::merchants::two_merchants();
    // Undecodable records: each is dead-lettered, which is all the work we need.
    let producer = Producer::new(&config.kafka, "backlog", &mut Default::default())
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let backlog: Vec<OutRecord> = (0..BACKLOG)
        .flat_map(|i| {
            [
                topics::TRACKING_UPDATES,
                topics::TRACKING_ALERTS,
                topics::SHIPMENTS,
            ]
            .map(|topic| OutRecord::new(topic, format!("m-acme/O{i}"), b"\xffnot proto".to_vec()))
        })
        .collect();
    producer
        .send_all(backlog)
        .await
        .unwrap_or_else(|e| panic!("backlog: {e}"));

    broker.cut();
    let shutdown = CancellationToken::new();
    let running = trackstream_notifier::start(config, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("notifier: {e}"));
    let admin = running.admin_addr;

    let claimed = trackstream_testkit::within(Duration::from_secs(3), || async {
        let (status, metrics) = probe(admin).await?;
        let assigned = gauges(&metrics, "_consumer_assigned_partitions");
        assert_eq!(assigned.len(), 2, "one gauge per group: {assigned:?}");
        assert!(assigned.iter().all(|(_, n)| *n == 0.0), "{assigned:?}");
        (status != 503).then_some(status)
    })
    .await;
    assert_eq!(
        claimed, None,
        "answered other than 503 while holding nothing"
    );

    broker
        .restore()
        .await
        .unwrap_or_else(|e| panic!("restore: {e}"));
    let metrics = trackstream_testkit::eventually(WAIT, "notifier ready", || async {
        let (status, metrics) = probe(admin).await?;
        if gauge(&metrics, "notifier_consumer_ready", GROUP) == Some(1.0) {
            // The gauge is encoded before the counter and set after the batches.
            assert_eq!(
                messenger_consumed(&metrics),
                (3 * BACKLOG) as f64,
                "messenger ready before its backlog was processed"
            );
        }
        (status == 200).then_some(metrics)
    })
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
            .any(|(group, n)| group == GROUP && *n == 12.0),
        "the messenger holds all 12 partitions: {assigned:?}"
    );
    assert!(
        assigned
            .iter()
            .any(|(group, n)| group.starts_with("trackstream-notifier-live-") && *n == 8.0),
        "the live follower holds all 8 partitions: {assigned:?}"
    );
    assert_eq!(messenger_consumed(&metrics), (3 * BACKLOG) as f64);

    shutdown.cancel();
    let stopped = tokio::time::timeout(WAIT, running.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "notifier stopped cleanly: {stopped:?}"
    );
}
