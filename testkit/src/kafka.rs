//! Kafka helpers for tests, the demo and the benchmarks: topic creation through
//! the admin API (any Kafka-protocol broker), and a reader of what services wrote.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use trackstream_runtime::config::KafkaConfig;
use trackstream_runtime::kafka::admin::{self, TopicSpec};

/// Whether the broker at `bootstrap` answers a metadata request.
pub async fn metadata_ok(bootstrap: &str) -> bool {
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "0")
            .create();
        consumer.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// Creates `topics` with their partition counts (one replica: one broker);
/// existing topics are fine. The production code path
/// (`runtime::kafka::admin`, behind `trackstream topics create`), so tests set
/// topics up the way operators do.
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> Result<(), String> {
    let cfg = KafkaConfig {
        brokers: bootstrap.to_owned(),
        ..KafkaConfig::default()
    };
    let specs: Vec<TopicSpec> = topics
        .iter()
        .map(|(name, partitions)| TopicSpec {
            name: (*name).to_owned(),
            partitions: *partitions,
            replication_factor: 1,
            config: Vec::new(),
        })
        .collect();
    admin::create_topics(&cfg, &specs)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Key as UTF-8 (lossy).
    pub key: String,
    /// Value bytes.
    pub payload: Vec<u8>,
    /// Headers as UTF-8 (lossy).
    pub headers: Vec<(String, String)>,
    /// Partition.
    pub partition: i32,
}

impl Record {
    /// The value of header `name`, if the record carries it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A broker with every pipeline topic at `partitions` partitions and
/// `per_topic` undecodable records waiting on each of `backlog_topics`: work
/// a service dead-letters record by record, which is all a readiness test
/// needs to tell "caught up" from "not yet".
pub async fn broker_with_undecodable_backlog(
    backlog_topics: &[&'static str],
    per_topic: usize,
    partitions: i32,
) -> crate::processes::Broker {
    use trackstream_runtime::kafka::OutRecord;
    let broker = crate::processes::Broker::start()
        .await
        .unwrap_or_else(|e| panic!("broker: {e}"));
    let all: Vec<(&str, i32)> = trackstream_proto::topics::ALL
        .iter()
        .map(|t| (*t, partitions))
        .collect();
    create_topics(&broker.bootstrap(), &all)
        .await
        .unwrap_or_else(|e| panic!("creating topics: {e}"));
    let backlog: Vec<OutRecord> = (0..per_topic)
        .flat_map(|i| {
            backlog_topics.iter().map(move |topic| {
                OutRecord::new(topic, format!("k:{i}"), b"\xffnot proto".to_vec())
            })
        })
        .collect();
    produce(&broker.bootstrap(), backlog).await;
    broker
}

/// Produces `records` with the pipeline's producer (acknowledged by the
/// broker before it returns), as a service or the operator CLI would.
pub async fn produce(bootstrap: &str, records: Vec<trackstream_runtime::kafka::OutRecord>) {
    let kafka = KafkaConfig {
        brokers: bootstrap.to_owned(),
        ..KafkaConfig::default()
    };
    let producer =
        trackstream_runtime::kafka::Producer::new(&kafka, "testkit", &mut Default::default())
            .unwrap_or_else(|e| panic!("producer: {e}"));
    producer
        .send_all(records)
        .await
        .unwrap_or_else(|e| panic!("producing: {e}"));
}

/// Reads a topic from the beginning, accumulating records so tests can wait
/// for conditions over everything seen so far.
///
/// The reader assigns itself every partition the topic has when it is created
/// (no consumer group to join): a group join races with the services' own
/// groups on the broker's coordinator, and a reader whose join stalled read
/// nothing for minutes (a hub-closure test saw 0 records in 180 s while the
/// incident had been published within seconds). Only a topic without
/// partitions yet is read through a group subscription.
pub struct TopicReader {
    consumer: StreamConsumer,
    /// Everything read so far, in arrival order.
    pub records: Vec<Record>,
}

impl TopicReader {
    /// Subscribes to `topic` on `bootstrap`.
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        let group = format!("reader-{:016x}", rand::random::<u64>());
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create()
            .unwrap_or_else(|e| panic!("creating reader for {topic}: {e}"));
        let partitions: Vec<i32> = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
            .and_then(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            })
            .unwrap_or_default();
        if partitions.is_empty() {
            consumer
                .subscribe(&[topic])
                .unwrap_or_else(|e| panic!("subscribing to {topic}: {e}"));
        } else {
            let mut assignment = rdkafka::TopicPartitionList::new();
            for partition in partitions {
                assignment
                    .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
                    .unwrap_or_else(|e| panic!("assigning {topic}/{partition}: {e}"));
            }
            consumer
                .assign(&assignment)
                .unwrap_or_else(|e| panic!("assigning {topic}: {e}"));
        }
        TopicReader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads until `done(records)` holds or `timeout` passes (then panics,
    /// naming `what`). Returns all records read so far.
    pub async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Record]) -> bool,
    ) -> &[Record] {
        assert!(
            self.try_until(timeout, done).await,
            "timed out after {timeout:?} waiting for {what}; read {} records",
            self.records.len()
        );
        &self.records
    }

    /// Reads until `done(records)` holds (`true`) or `timeout` passes
    /// (`false`), for a test that explains a timeout itself.
    pub async fn try_until(&mut self, timeout: Duration, done: impl Fn(&[Record]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.records) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Ok(Ok(message)) =
                tokio::time::timeout(left.min(Duration::from_millis(500)), self.consumer.recv())
                    .await
            {
                self.records.push(Record {
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers: message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    partition: message.partition(),
                });
            }
        }
        true
    }

    /// Records decoded as `T` (undecodable ones skipped).
    pub fn decoded<T: prost::Message + Default>(&self) -> Vec<T> {
        decode(&self.records)
    }
}

/// `records` decoded as `T` (undecodable ones skipped).
pub fn decode<T: prost::Message + Default>(records: &[Record]) -> Vec<T> {
    records
        .iter()
        .filter_map(|r| T::decode(r.payload.as_slice()).ok())
        .collect()
}

/// Decodes every record as `T` and applies `check`.
pub fn all<T: prost::Message + Default>(records: &[Record], check: impl Fn(&[T]) -> bool) -> bool {
    check(&decode::<T>(records))
}
