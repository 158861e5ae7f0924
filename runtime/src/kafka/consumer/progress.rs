//! Per-partition progress: whether a consumer has processed everything the
//! broker holds on a partition, from batch bookkeeping and librdkafka's lag
//! statistics. The detector fires deadlines only on caught-up partitions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::statistics::Statistics;

use super::Inbound;

#[derive(Default)]
struct PartitionProgress {
    /// A batch holding records of this partition is being processed.
    in_flight: bool,
    /// When the last batch holding records of this partition finished.
    last_batch_done: Option<Instant>,
    /// Lag from the latest librdkafka statistics, and when they were taken.
    lag: Option<(i64, Instant)>,
}

/// Whether a consumer has processed everything the broker holds on a partition.
///
/// The detector fires a partition's wall-clock deadlines only when it is caught
/// up: a backlog may hold the scan that cancels the deadline (a carrier snapshot
/// whose scans are split across batches, a push that arrived late), and firing
/// before reading it would raise a false alarm.
#[derive(Clone, Default)]
pub struct Progress {
    partitions: Arc<Mutex<HashMap<(String, i32), PartitionProgress>>>,
}

impl Progress {
    /// True when no batch of `topic`/`partition` is in flight and statistics taken
    /// after the last batch finished show no lag.
    pub fn caught_up(&self, topic: &str, partition: i32) -> bool {
        let Ok(partitions) = self.partitions.lock() else {
            return false;
        };
        let Some(progress) = partitions.get(&(topic.to_owned(), partition)) else {
            return false;
        };
        match progress.lag {
            Some((lag, at)) => {
                !progress.in_flight
                    && lag <= 0
                    && progress.last_batch_done.is_none_or(|done| at > done)
            }
            None => false,
        }
    }

    pub(super) fn set_in_flight(&self, batch: &[Inbound], in_flight: bool) {
        let Ok(mut partitions) = self.partitions.lock() else {
            return;
        };
        let now = Instant::now();
        for record in batch {
            let entry = partitions
                .entry((record.topic.clone(), record.partition))
                .or_default();
            entry.in_flight = in_flight;
            if !in_flight {
                entry.last_batch_done = Some(now);
            }
        }
    }

    pub(super) fn record_stats(&self, statistics: &Statistics) {
        for (topic, stats) in &statistics.topics {
            for (id, partition) in &stats.partitions {
                // Negative ids are librdkafka's internal "unassigned" partition.
                if *id >= 0 {
                    self.record_lag(topic, *id, partition.consumer_lag, partition.hi_offset);
                }
            }
        }
    }

    /// Records a lag reading; `consumer_lag` -1 means "no offset known yet",
    /// which counts as caught up only when the partition is empty.
    pub(super) fn record_lag(
        &self,
        topic: &str,
        partition: i32,
        consumer_lag: i64,
        hi_offset: i64,
    ) {
        let lag = match (consumer_lag, hi_offset) {
            (lag, _) if lag >= 0 => lag,
            (_, hi) if hi <= 0 => 0,
            (_, hi) => hi,
        };
        if let Ok(mut partitions) = self.partitions.lock() {
            partitions
                .entry((topic.to_owned(), partition))
                .or_default()
                .lag = Some((lag, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32) -> Inbound {
        Inbound {
            topic: "t".into(),
            partition,
            offset: 0,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn caught_up_needs_fresh_zero_lag_after_the_last_batch() {
        let progress = Progress::default();
        assert!(!progress.caught_up("t", 0), "no statistics yet");
        progress.record_lag("t", 0, 0, 10);
        assert!(progress.caught_up("t", 0));

        progress.set_in_flight(&[record(0)], true);
        progress.record_lag("t", 0, 0, 10);
        assert!(!progress.caught_up("t", 0), "a batch is in flight");
        progress.set_in_flight(&[record(0)], false);
        assert!(!progress.caught_up("t", 0), "statistics predate the batch");
        progress.record_lag("t", 0, 3, 13);
        assert!(!progress.caught_up("t", 0), "records still waiting");
        progress.record_lag("t", 0, 0, 13);
        assert!(progress.caught_up("t", 0));

        progress.record_lag("t", 1, -1, 0);
        assert!(
            progress.caught_up("t", 1),
            "an empty partition is caught up"
        );
        progress.record_lag("t", 2, -1, 5);
        assert!(
            !progress.caught_up("t", 2),
            "unknown position on a non-empty partition"
        );
    }
}
