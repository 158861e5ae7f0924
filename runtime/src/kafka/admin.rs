//! Topic administration through the Kafka admin API, so the same code creates the
//! pipeline's topics on tansu locally, in the test sandbox and on Apache Kafka in
//! production (the `trackstream topics create` command).
//!
//! Creation is idempotent: a topic that already exists is reported as such and left
//! alone (its partitions and settings are not changed — that is a deliberate
//! operator decision, never a side effect of re-running a setup script). What *is*
//! checked on existing topics is co-partitioning: `shipments` and
//! `tracking.events` must have the same partition count, because the detector
//! joins them by partition (DESIGN.md); a mismatch is an error that names both
//! counts.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use trackstream_proto::topics;

use crate::config::KafkaConfig;

/// How long the broker may take to create the topics (and answer metadata).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Production-safe defaults: enough partitions to scale the detector out, three
/// replicas so one broker can be lost and one be under maintenance, and
/// `min.insync.replicas = 2` so an `acks=all` write survives a broker loss.
pub const DEFAULT_PARTITIONS: i32 = 8;
/// See [`DEFAULT_PARTITIONS`].
pub const DEFAULT_REPLICATION_FACTOR: i32 = 3;
/// See [`DEFAULT_PARTITIONS`].
pub const DEFAULT_MIN_INSYNC_REPLICAS: i32 = 2;

/// How to lay out one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// Topic-level configs (`min.insync.replicas`, `retention.ms`, ...).
    pub config: Vec<(String, String)>,
}

/// The layout of every pipeline topic ([`topics::ALL`]): all with the same
/// partition count, which keeps `shipments` and `tracking.events`
/// co-partitioned. `min.insync.replicas` is capped at the replication factor (a
/// single-broker stack passes replication 1 and gets no `min.insync.replicas`,
/// which a broker would refuse as unsatisfiable).
pub fn pipeline_topics(
    partitions: i32,
    replication_factor: i32,
    min_insync_replicas: i32,
) -> Vec<TopicSpec> {
    let min_insync = min_insync_replicas.min(replication_factor);
    topics::ALL
        .iter()
        .map(|name| TopicSpec {
            name: (*name).to_owned(),
            partitions,
            replication_factor,
            config: {
                let mut config = Vec::new();
                if min_insync > 1 {
                    config.push(("min.insync.replicas".to_owned(), min_insync.to_string()));
                }
                // The latest scorecard per lane is all a dashboard needs.
                if *name == topics::TRACKING_LANES {
                    config.push(("cleanup.policy".to_owned(), "compact".to_owned()));
                }
                config
            },
        })
        .collect()
}

/// What happened to one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The topic was created.
    Created,
    /// The topic existed already and was left as it is.
    Existed,
}

/// Why topics could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The admin client could not be created or the request failed as a whole
    /// (broker unreachable, timeout).
    #[error("kafka admin: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker refused one topic.
    #[error("creating topic {topic}: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error code.
        code: RDKafkaErrorCode,
    },
    /// Existing topics that must be co-partitioned are not.
    #[error(
        "{} has {shipments} partitions but {} has {events}; they must be equal \
         (co-partitioning), fix one by hand (see docs/OPERATIONS.md)",
        topics::SHIPMENTS,
        topics::TRACKING_EVENTS
    )]
    NotCoPartitioned {
        /// Partitions of `shipments`.
        shipments: usize,
        /// Partitions of `tracking.events`.
        events: usize,
    },
    /// A blocking lookup task failed.
    #[error("kafka admin task: {0}")]
    Task(String),
}

/// Creates `specs` on the brokers of `cfg` (its `extra` properties — security
/// settings — apply). Existing topics are fine; returns each topic's outcome in
/// `specs` order, then checks that `shipments` and `tracking.events` are
/// co-partitioned.
pub async fn create_topics(
    cfg: &KafkaConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(String, Outcome)>, AdminError> {
    let mut client = super::client_config(cfg, "trackstream-admin");
    super::apply_extra(&mut client, cfg);
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.config.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
        )
        .await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(topic) => outcomes.push((topic, Outcome::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((topic, Outcome::Existed));
            }
            Err((topic, code)) => return Err(AdminError::Refused { topic, code }),
        }
    }
    check_co_partitioned(cfg).await?;
    Ok(outcomes)
}

/// Partition counts of `names` (0 for a topic the broker does not know).
pub async fn partition_counts(cfg: &KafkaConfig, names: &[&str]) -> Result<Vec<usize>, AdminError> {
    let mut client = super::client_config(cfg, "trackstream-admin");
    super::apply_extra(&mut client, cfg);
    let consumer: BaseConsumer = client.create()?;
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer.fetch_metadata(None, ADMIN_TIMEOUT)?;
        Ok(names
            .iter()
            .map(|name| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map_or(0, |t| t.partitions().len())
            })
            .collect())
    })
    .await
    .map_err(|e| AdminError::Task(e.to_string()))?
}

async fn check_co_partitioned(cfg: &KafkaConfig) -> Result<(), AdminError> {
    let counts = partition_counts(cfg, &[topics::SHIPMENTS, topics::TRACKING_EVENTS]).await?;
    match counts.as_slice() {
        [shipments, events] if shipments != events && *shipments > 0 && *events > 0 => {
            Err(AdminError::NotCoPartitioned {
                shipments: *shipments,
                events: *events,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_topic_gets_the_same_layout_and_a_satisfiable_min_insync() {
        let specs = pipeline_topics(8, 3, 2);
        assert_eq!(specs.len(), topics::ALL.len());
        assert!(
            specs
                .iter()
                .all(|s| s.partitions == 8 && s.replication_factor == 3)
        );
        let insync = ("min.insync.replicas".to_owned(), "2".to_owned());
        let compact = ("cleanup.policy".to_owned(), "compact".to_owned());
        for spec in &specs {
            // Only the lanes' scorecards are compacted: every other topic is
            // a log of events.
            if spec.name == topics::TRACKING_LANES {
                assert_eq!(spec.config, [insync.clone(), compact.clone()]);
            } else {
                assert_eq!(spec.config, std::slice::from_ref(&insync), "{}", spec.name);
            }
        }
        // A single-broker stack: no min.insync.replicas the broker would refuse.
        assert!(
            pipeline_topics(4, 1, 2)
                .iter()
                .all(|s| s.config.iter().all(|(k, _)| k != "min.insync.replicas"))
        );
        assert!(
            pipeline_topics(4, 2, 3)
                .iter()
                .all(|s| s.config.first() == Some(&insync))
        );
    }
}
