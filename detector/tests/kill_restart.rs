//! The detector binary against the real broker and Redis, SIGKILLed mid-stream
//! and restarted: no alert is lost and none is emitted in a way a consumer could
//! not de-duplicate — the alerts read back are exactly the clean run's
//! `(alert_id, state, tier)` set, and every repeat is the identical alert.
//! (Two instances sharing the work: `scale_out.rs`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use trackstream_detector::rules::RulesConfig;
use trackstream_harness::child::ChildProcess;
use trackstream_harness::kafka::{TopicReader, create_topics};
use trackstream_harness::processes::{Broker, RedisServer};
use trackstream_proto::time;
use trackstream_proto::topics;
use trackstream_proto::v1::{Alert, ShipmentUpdate};
use trackstream_runtime::config::KafkaConfig;
use trackstream_runtime::kafka::{OutRecord, Producer};

const PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(90);

struct Rig {
    redis: RedisServer,
    broker: Broker,
    dir: tempfile::TempDir,
    config: PathBuf,
    producer: Producer,
    parcels: Vec<Parcel>,
}

impl Rig {
    async fn start(parcels: usize, prefix: &str) -> Rig {
        let redis = RedisServer::start().await.expect("redis-server");
        let broker = Broker::start().await.expect("broker");
        let all: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, PARTITIONS)).collect();
        create_topics(&broker.bootstrap(), &all)
            .await
            .expect("topics");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("detector.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[kafka]
brokers = "{brokers}"
group_id = "detector-{prefix}"
batch_max = 20
batch_linger_ms = 5
produce_timeout_ms = 5000
[kafka.extra]
"session.timeout.ms" = "6000"
"topic.metadata.refresh.interval.ms" = "2000"
[redis]
url = "{redis}"
[admin]
log_format = "json"
log_level = "info"
[timers]
tick = "50ms"
"#,
                brokers = broker.bootstrap(),
                redis = redis.url(),
            ),
        )
        .expect("config written");
        let kafka = KafkaConfig {
            brokers: broker.bootstrap(),
            ..Default::default()
        };
        let producer = Producer::new(
            &kafka,
            "test-producer",
            &mut prometheus_client::registry::Registry::default(),
        )
        .expect("producer");
        Rig {
            redis,
            broker,
            dir,
            config,
            producer,
            parcels: world(parcels, PARTITIONS, prefix),
        }
    }

    /// Starts an instance (`--clock event`), logging to `<name>.log`.
    fn spawn(&self, name: &str) -> ChildProcess {
        self.spawn_with(name, &[])
    }

    /// Starts an instance with extra environment (config overrides).
    fn spawn_with(&self, name: &str, env: &[(&str, &str)]) -> ChildProcess {
        let binary = Path::new(env!("CARGO_BIN_EXE_trackstream-detector"));
        let config = self.config.to_string_lossy().into_owned();
        let mut all_env = vec![("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")];
        all_env.extend_from_slice(env);
        ChildProcess::spawn(
            name,
            binary,
            ["--config", config.as_str(), "--clock", "event"],
            &all_env,
            &self.dir.path().join(format!("{name}.log")),
        )
        .expect("detector binary starts")
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }

    async fn produce(&self, records: Vec<OutRecord>) {
        for chunk in records.chunks(500) {
            self.producer
                .send_all(chunk.to_vec())
                .await
                .unwrap_or_else(|e| panic!("produce: {e}\nbroker:\n{}", self.broker.log_tail(20)));
        }
    }

    /// Registrations first, and waits until the detector stored every one, so
    /// the scans that follow meet a registered parcel (the clean sequence:
    /// `shipments` and `tracking.events` are separate topics, read in no
    /// particular order relative to each other).
    async fn register_all(&self, running: &[&ChildProcess]) {
        let records = self
            .parcels
            .iter()
            .map(|p| {
                OutRecord::new(
                    topics::SHIPMENTS,
                    p.key.clone(),
                    prost::Message::encode_to_vec(&p.registration),
                )
            })
            .collect();
        self.produce(records).await;
        let mut conn = self.redis().await;
        let want = self.parcels.len();
        trackstream_harness::eventually(WAIT, "every registration stored", || {
            let mut conn = conn.clone();
            async move {
                let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(0)
                    .arg("MATCH")
                    .arg("*:wb:*")
                    .arg("COUNT")
                    .arg(100_000)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (keys.len() >= want).then_some(())
            }
        })
        .await;
        let _ = redis::cmd("PING").query_async::<String>(&mut conn).await;
        for child in running {
            assert!(
                !child.log().contains("\"level\":\"ERROR\""),
                "{} logged an error:\n{}",
                child.name(),
                child.log_tail(30)
            );
        }
    }

    /// Every scan, time-ordered across parcels, split at `split` (event time).
    fn scans(&self, split: i64) -> (Vec<OutRecord>, Vec<OutRecord>) {
        let mut events: Vec<_> = self
            .parcels
            .iter()
            .flat_map(|p| p.events.iter().map(move |e| (p, e)))
            .collect();
        events.sort_by_key(|(_, e)| time::millis(e.occurred_at.as_ref()));
        let record = |(p, e): &(&Parcel, &trackstream_proto::v1::TrackingEvent)| {
            OutRecord::new(
                topics::TRACKING_EVENTS,
                p.key.clone(),
                prost::Message::encode_to_vec(*e),
            )
        };
        let (before, after): (Vec<_>, Vec<_>) = events
            .iter()
            .partition(|(_, e)| time::millis(e.occurred_at.as_ref()) < split);
        (
            before.iter().map(record).collect(),
            after.iter().map(record).collect(),
        )
    }

    fn expected(&self) -> BTreeSet<AlertKey> {
        expected(
            &RulesConfig::default(),
            &self.parcels,
            world_end(&self.parcels),
        )
        .0
    }

    fn expected_updates(&self) -> BTreeSet<(i32, String)> {
        expected(
            &RulesConfig::default(),
            &self.parcels,
            world_end(&self.parcels),
        )
        .1
    }

    /// Scans applied so far (history entries across every parcel).
    async fn applied_scans(&self) -> usize {
        let mut conn = self.redis().await;
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg("*:ev:*")
            .arg("COUNT")
            .arg(100_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        let mut total = 0;
        for key in keys {
            let n: usize = redis::cmd("HLEN")
                .arg(key)
                .query_async(&mut conn)
                .await
                .expect("hlen");
            total += n;
        }
        total
    }
}

/// Waits until `reader` holds every expected alert, then checks there is no
/// other and that every repeat is the same alert.
async fn assert_alerts(
    reader: &mut TopicReader,
    want: &BTreeSet<AlertKey>,
    parcels: &[Parcel],
    logs: &[&ChildProcess],
) {
    let done = |records: &[trackstream_harness::kafka::Record]| {
        trackstream_harness::kafka::all::<Alert>(records, |a| alert_set(a).is_superset(want))
    };
    let deadline = std::time::Instant::now() + WAIT;
    reader
        .until(WAIT + Duration::from_secs(5), "alerts", |r| {
            done(r) || std::time::Instant::now() > deadline
        })
        .await;
    if !done(&reader.records) {
        let tails: Vec<String> = logs
            .iter()
            .map(|c| {
                let log = c.log();
                let groups: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        l.contains("partitions") || l.contains("WARN") || l.contains("ERROR")
                    })
                    .collect();
                format!(
                    "--- {}:\n{}\n...\n{}",
                    c.name(),
                    groups.join("\n"),
                    c.log_tail(3)
                )
            })
            .collect();
        eprintln!("{}", tails.join("\n"));
    }
    let alerts: Vec<Alert> = reader.decoded();
    assert_same_alerts(&alert_set(&alerts), want, parcels, "alerts read back");
    let mut by_key: BTreeMap<AlertKey, Alert> = BTreeMap::new();
    for alert in alerts {
        if let Some(first) = by_key.get(&alert_key(&alert)) {
            let same = (&first.rule, first.episode, first.severity, &first.waybill)
                == (&alert.rule, alert.episode, alert.severity, &alert.waybill);
            assert!(same, "a repeat differs:\n{first:?}\n{alert:?}");
        } else {
            by_key.insert(alert_key(&alert), alert);
        }
    }
}

async fn assert_updates(rig: &Rig) {
    let mut reader = TopicReader::new(&rig.broker.bootstrap(), topics::TRACKING_UPDATES);
    let want = rig.expected_updates();
    reader
        .until(WAIT, "every update", |r| {
            trackstream_harness::kafka::all::<ShipmentUpdate>(r, |u| {
                u.iter()
                    .map(update_key)
                    .collect::<BTreeSet<_>>()
                    .is_superset(&want)
            })
        })
        .await;
    let updates: Vec<ShipmentUpdate> = reader.decoded();
    assert_eq!(
        updates.iter().map(update_key).collect::<BTreeSet<_>>(),
        want
    );
    // A re-emitted update carries the sequence number it had.
    assert_sequences(&updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_sigkilled_mid_stream_and_restarted_loses_no_alert() {
    let rig = Rig::start(400, "K").await;
    let mut first = rig.spawn("first");
    rig.register_all(&[&first]).await;
    let split = T0 + 150 * H;
    let (phase1, phase2) = rig.scans(split);
    let total = phase1.len() + phase2.len();
    rig.produce(phase1).await;
    let mut alerts = TopicReader::new(&rig.broker.bootstrap(), topics::TRACKING_ALERTS);
    alerts
        .until(WAIT, "the first alerts", |r| !r.is_empty())
        .await;
    let before = rig.applied_scans().await;
    rig.produce(phase2).await;
    // Kill as soon as the second phase is being applied.
    trackstream_harness::eventually(WAIT, "the second phase under way", || async {
        (rig.applied_scans().await > before).then_some(())
    })
    .await;
    first.kill();
    let at_kill = rig.applied_scans().await;
    assert!(
        at_kill < total,
        "killed mid-stream: {at_kill} of {total} scans applied"
    );
    // The restart replays the whole topic in a fresh consumer group: the
    // harshest restart (every scan again, none skipped). Rejoining the old group
    // would test tansu 0.6.0 rather than the detector: the killed instance was
    // the group's leader, and a new member joining before the dead leader is
    // evicted leaves tansu's group naming a leader that no longer exists, so it
    // never forms (docs/ARCHITECTURE.md, broker caveats). Handing a dead member's
    // partitions to a live one in the same group is `rebalance.rs`. Redis state,
    // dedup and the outbox carry over from the killed instance.
    let second = rig.spawn_with(
        "second",
        &[("TRACKSTREAM__KAFKA__GROUP_ID", "detector-K-restarted")],
    );
    assert_alerts(
        &mut alerts,
        &rig.expected(),
        &rig.parcels,
        &[&first, &second],
    )
    .await;
    assert_updates(&rig).await;
    assert_eq!(rig.applied_scans().await, total);
}
