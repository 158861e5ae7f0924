//! The librdkafka callbacks of a consumer: publish the assignment on every
//! rebalance (watch, readiness state, `consumer_assigned_partitions` gauge),
//! commit on revoke, log commits, and feed statistics to [`Progress`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::Progress;
use super::readiness;

pub(super) struct RebalanceContext {
    pub(super) assignment: watch::Sender<BTreeMap<String, BTreeSet<i32>>>,
    pub(super) progress: Progress,
    /// Partitions assigned whose first record has not been seen yet, so the
    /// offset each owner resumed at is logged once per assignment (the evidence
    /// needed to tell a skipped range from a partition nobody owns).
    pub(super) resuming: Arc<Mutex<BTreeSet<(String, i32)>>>,
    /// Readiness inputs: every assignment change starts a new generation.
    pub(super) readiness: Arc<Mutex<readiness::State>>,
    /// Partitions held now (`consumer_assigned_partitions{group}`).
    pub(super) assigned_gauge: Gauge,
}

impl RebalanceContext {
    /// Records what this member holds now in the readiness state and gauge.
    fn hold(&self, held: BTreeSet<(String, i32)>) {
        self.assigned_gauge
            .set(i64::try_from(held.len()).unwrap_or(i64::MAX));
        if let Ok(mut state) = self.readiness.lock() {
            state.assigned(held);
        }
    }
}

/// `topic/partition` pairs, sorted and comma-separated: a stable, greppable
/// form of an assignment for logs (`detector/tests/rebalance.rs` parses it).
fn describe(tpl: &TopicPartitionList) -> String {
    let mut parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    parts.sort();
    parts.join(",")
}

/// `topic/partition@offset` pairs, for commit logs.
pub(super) fn describe_offsets(tpl: &TopicPartitionList) -> String {
    let mut parts: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            other => format!("{}/{}@{other:?}", e.topic(), e.partition()),
        })
        .collect();
    parts.sort();
    parts.join(",")
}

impl ClientContext for RebalanceContext {
    fn stats(&self, statistics: Statistics) {
        self.progress.record_stats(&statistics);
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Stop partition-owned work (timers) before the partitions move on.
            self.assignment.send_replace(BTreeMap::new());
            self.hold(BTreeSet::new());
            // Commit what was stored so the next owner starts where we stopped.
            if tpl.count() > 0
                && let Err(err) = consumer.commit_consumer_state(CommitMode::Sync)
            {
                tracing::debug!(%err, "commit on revoke (nothing stored is fine)");
            }
            tracing::info!(partitions = %describe(tpl), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut owned: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
            for element in tpl.elements() {
                owned
                    .entry(element.topic().to_owned())
                    .or_default()
                    .insert(element.partition());
            }
            if let Ok(mut resuming) = self.resuming.lock() {
                resuming.clear();
                resuming.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
            }
            tracing::info!(partitions = %describe(tpl), "partitions assigned");
            self.hold(
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect(),
            );
            self.assignment.send_replace(owned);
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe_offsets(offsets), "offsets committed"),
            // Nothing stored since the last commit: not a failure.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(err) => {
                tracing::warn!(%err, offsets = %describe_offsets(offsets), "offset commit failed");
            }
        }
    }
}
