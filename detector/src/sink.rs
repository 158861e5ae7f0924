//! Where the detector's outputs go: Kafka in production, memory in tests and
//! benches.
//!
//! The detector only needs "write these records and return once they are
//! durable". Behind a trait, the whole batch path (dedup, fold, commit, outbox,
//! sequence numbers) runs unchanged against real Redis without a broker, which is
//! how the equivalence tests and the throughput bench drive it.

use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use trackstream_runtime::kafka::{OutRecord, Producer};

/// Why a sink did not acknowledge records; the batch is retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// An acknowledging destination for output records.
pub trait Sink: Send + Sync + 'static {
    /// Writes `records` in order and returns once every one is acknowledged.
    fn send_all(
        &self,
        records: Vec<OutRecord>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl Sink for Producer {
    async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), SinkError> {
        Producer::send_all(self, records)
            .await
            .map_err(|e| SinkError(e.to_string()))
    }
}

/// An in-memory sink that records what it acknowledged and when; it can be told
/// to fail, to exercise the outbox.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<(Instant, OutRecord)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following send fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Removes and returns everything acknowledged so far, with the instant of
    /// acknowledgement.
    pub fn take_timed(&self) -> Vec<(Instant, OutRecord)> {
        self.records
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Removes and returns everything acknowledged so far.
    pub fn take(&self) -> Vec<OutRecord> {
        self.take_timed().into_iter().map(|(_, r)| r).collect()
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for MemorySink {
    async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), SinkError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SinkError("memory sink told to fail".into()));
        }
        let now = Instant::now();
        let mut held = self
            .records
            .lock()
            .map_err(|_| SinkError("memory sink poisoned".into()))?;
        held.extend(records.into_iter().map(|r| (now, r)));
        Ok(())
    }
}
