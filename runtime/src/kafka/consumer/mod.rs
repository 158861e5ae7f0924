//! The at-least-once consumer loop ([`ConsumerLoop`]): batches, offset storing
//! after the handler's effects are durable, rebalance handling, the assignment
//! check against coordinators that leave partitions unowned, and per-partition
//! progress for the detector's timers.
//!
//! Layout, one concern a file:
//! - this file: the types a service sees (records, the handler trait, where a
//!   new group starts, the assignment watch);
//! - `subscribe`: building the librdkafka consumer and its metrics;
//! - `run_loop`: fetch a batch, hand it to the handler, store offsets;
//! - `rebalance`: the librdkafka callbacks (assign, revoke, commit, statistics);
//! - `assignment`: the check against coordinators that leave partitions unowned;
//! - `progress`: per-partition "caught up" tracking for the detector's timers;
//! - `readiness`: whether this member holds its share and has caught up, the
//!   gate of the service's `/healthz`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use tokio::sync::watch;

mod assignment;
mod progress;
mod readiness;
mod rebalance;
mod run_loop;
mod subscribe;

pub use progress::Progress;
pub use run_loop::ConsumerLoop;

/// A consumed record, owned so a batch can outlive the poll that fetched it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value (empty for a tombstone).
    pub payload: Vec<u8>,
    /// Record headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Inbound {
    /// Copies a fetched message out of the consumer's buffer (key, payload,
    /// headers with absent values as empty), so it can live in a batch after
    /// the next poll. Used by the consumer loop and by one-off readers such as
    /// normalize's replay.
    pub fn detach(message: &rdkafka::message::BorrowedMessage<'_>) -> Inbound {
        use rdkafka::message::{Headers as _, Message as _};
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Inbound {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}

impl Inbound {
    /// The key as UTF-8, lossy (keys are ours and ASCII in practice).
    pub fn key_str(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }
}

/// Why a batch failed. Transient failures are retried with the same batch; offsets
/// are not stored until it succeeds.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// The service-specific part of a consumer: apply one batch's effects and return
/// only when they are durable (Kafka acknowledged, Redis written). Records it cannot
/// process are its own to dead-letter; an `Err` means "retry this batch".
pub trait BatchHandler: Send + Sync + 'static {
    /// Processes `batch` (records in partition order).
    fn handle(&self, batch: &[Inbound]) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Where a consumer group without committed offsets starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// From the oldest retained record.
    Earliest,
    /// From records produced after joining.
    Latest,
}

/// The partitions this instance owns, per topic; updated on every rebalance. The
/// detector fires timers only for partitions in here.
pub type Assignment = watch::Receiver<BTreeMap<String, BTreeSet<i32>>>;
