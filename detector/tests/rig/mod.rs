//! A rig for the process-level detector tests (`kill_restart.rs`,
//! `rebalance.rs`): real redis-server and broker on free ports, topics created,
//! a config file for the real `trackstream-detector` binary, a producer, and a
//! generated world of parcels with its clean-run model.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use trackstream_detector::rules::RulesConfig;
use trackstream_proto::time;
use trackstream_proto::topics;
use trackstream_proto::v1::TrackingEvent;
use trackstream_runtime::config::KafkaConfig;
use trackstream_runtime::kafka::{OutRecord, Producer};
use trackstream_testkit::child::ChildProcess;
use trackstream_testkit::kafka::create_topics;
use trackstream_testkit::processes::{Broker, RedisServer};

use crate::common::{AlertKey, Parcel, expected, world, world_end};

/// Partitions of every topic.
pub const PARTITIONS: i32 = 4;
/// Environment variable overriding the instances' `RUST_LOG`.
pub const LOG_ENV: &str = "DETECTOR_TEST_LOG";

pub struct Rig {
    pub redis: RedisServer,
    pub broker: Broker,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    producer: Producer,
    pub parcels: Vec<Parcel>,
}

impl Rig {
    /// Starts Redis and the broker, creates the topics, and generates
    /// `parcels` parcels; instances join group `detector-<prefix>`.
    pub async fn start(parcels: usize, prefix: &str) -> Rig {
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
batch_linger = "5ms"
produce_timeout = "5s"
[kafka.extra]
"session.timeout.ms" = "6000"
"topic.metadata.refresh.interval.ms" = "2000"
[redis]
url = "{redis}"
[admin]
listen = "127.0.0.1:0"
log_format = "json"
log_level = "info"
[timers]
tick = "50ms"
# These tests compare alerts with a model of the rules; predictions (and so
# `promise_at_risk`) come only from lane statistics a test seeds itself.
[lanes]
enabled = false
# Incidents read these alerts; they are tested on their own.
[incidents]
enabled = false
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

    /// Starts an instance (`--clock event`) with extra environment (config
    /// overrides), logging to `<name>.log` in the rig's directory.
    pub fn spawn(&self, name: &str, env: &[(&str, &str)]) -> ChildProcess {
        let binary = Path::new(env!("CARGO_BIN_EXE_trackstream-detector"));
        let config = self.config.to_string_lossy().into_owned();
        let log =
            std::env::var(LOG_ENV).unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into());
        let mut all_env = vec![("RUST_LOG", log.as_str())];
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

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }

    pub async fn produce(&self, records: Vec<OutRecord>) {
        for chunk in records.chunks(500) {
            self.producer
                .send_all(chunk.to_vec())
                .await
                .unwrap_or_else(|e| panic!("produce: {e}\nbroker:\n{}", self.broker.log_tail(20)));
        }
    }

    /// Registrations first, and waits (up to `wait`) until the detector stored
    /// every one, so the scans that follow meet a registered parcel (the clean
    /// sequence: `shipments` and `tracking.events` are separate topics, read in
    /// no particular order relative to each other). None of `running` may have
    /// logged an error.
    pub async fn register_all(&self, running: &[&ChildProcess], wait: Duration) {
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
        let want = self.parcels.len();
        trackstream_testkit::eventually(wait, "every registration stored", || async move {
            (self.keys("*:wb:*").await.len() >= want).then_some(())
        })
        .await;
        for child in running {
            assert!(
                !child.log().contains("\"level\":\"ERROR\""),
                "{} logged an error:\n{}",
                child.name(),
                child.log_tail(30)
            );
        }
    }

    /// Every scan, time-ordered across parcels, split at the event times in
    /// `splits` (ascending): `splits.len() + 1` phases.
    pub fn scans(&self, splits: &[i64]) -> Vec<Vec<OutRecord>> {
        let mut events: Vec<(&Parcel, &TrackingEvent)> = self
            .parcels
            .iter()
            .flat_map(|p| p.events.iter().map(move |e| (p, e)))
            .collect();
        events.sort_by_key(|(_, e)| time::millis(e.occurred_at.as_ref()));
        let mut phases: Vec<Vec<OutRecord>> = vec![Vec::new(); splits.len() + 1];
        for (p, e) in events {
            let at = time::millis(e.occurred_at.as_ref());
            let phase = splits.iter().take_while(|s| at >= **s).count();
            phases[phase].push(OutRecord::new(
                topics::TRACKING_EVENTS,
                p.key.clone(),
                prost::Message::encode_to_vec(e),
            ));
        }
        phases
    }

    /// The clean run's alerts and updates (the pure engine's model).
    pub fn expected(&self) -> (BTreeSet<AlertKey>, BTreeSet<(i32, String)>) {
        expected(
            &RulesConfig::default(),
            &self.parcels,
            world_end(&self.parcels),
        )
    }

    /// Keys matching `pattern` (one SCAN pass; the test keyspace is small).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.redis().await;
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        keys
    }

    /// Scans applied so far (history entries), per detector partition.
    pub async fn applied_by_partition(&self) -> BTreeMap<i32, usize> {
        let mut conn = self.redis().await;
        let mut applied = BTreeMap::new();
        for key in self.keys("*:ev:*").await {
            let n: usize = redis::cmd("HLEN")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("hlen");
            *applied.entry(partition_of(&key)).or_default() += n;
        }
        applied
    }

    /// Scans applied so far across every partition.
    pub async fn applied_scans(&self) -> usize {
        self.applied_by_partition().await.values().sum()
    }
}

/// The partition in a `{pP}:...` key (-1 if it has none).
fn partition_of(key: &str) -> i32 {
    key.strip_prefix("{p")
        .and_then(|rest| rest.split_once('}'))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or(-1)
}
