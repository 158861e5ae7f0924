//! Where the detector's outputs go: Kafka in production, memory in tests and
//! benches.
//!
//! The detector only needs "write these records and return once they are
//! durable", plus the size limit records must fit. Behind a trait, the whole
//! batch path (dedup, fold, commit, outbox, sequence numbers, dead letters) runs
//! unchanged against real Redis without a broker, which is how the equivalence
//! tests and the throughput bench drive it.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use trackstream_runtime::kafka::{OutRecord, Producer, SendError};

/// Why a sink did not acknowledge records, typed by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Sending the same records again cannot succeed (a record over the size
    /// limit, a record the broker refuses): the caller sets aside what caused
    /// it (a dead letter) and moves on.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The sink did not answer or failed for now: retry the batch with backoff.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl SinkError {
    /// True when retrying the same records cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SinkError::Permanent(_))
    }
}

impl From<SendError> for SinkError {
    fn from(err: SendError) -> Self {
        if err.is_permanent() {
            SinkError::Permanent(err.to_string())
        } else {
            SinkError::Unavailable(err.to_string())
        }
    }
}

/// An acknowledging destination for output records.
pub trait Sink: Send + Sync + 'static {
    /// Writes `records` in order and returns once every one is acknowledged.
    fn send_all(
        &self,
        records: Vec<OutRecord>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The largest record it accepts ([`OutRecord::encoded_len`]); outputs are
    /// checked against it before they enter the outbox, so an output that can
    /// never be produced never gates a partition.
    fn max_record_bytes(&self) -> usize;
}

impl Sink for Producer {
    async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), SinkError> {
        Producer::send_all(self, records)
            .await
            .map_err(SinkError::from)
    }

    fn max_record_bytes(&self) -> usize {
        Producer::max_record_bytes(self)
    }
}

/// An in-memory sink that records what it acknowledged and when; it can be told
/// to fail (retriably), and it refuses records over its size limit (permanently)
/// like the producer does, to exercise the outbox and the dead letters.
#[derive(Debug)]
pub struct MemorySink {
    records: Mutex<Vec<(Instant, OutRecord)>>,
    failing: AtomicBool,
    max_record_bytes: AtomicUsize,
}

impl Default for MemorySink {
    fn default() -> Self {
        MemorySink {
            records: Mutex::default(),
            failing: AtomicBool::new(false),
            // The producer's default (`kafka.max_record_bytes`).
            max_record_bytes: AtomicUsize::new(1_000_000),
        }
    }
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following send fail retriably (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Sets the size limit (default 1 000 000 bytes, the producer's default).
    pub fn set_max_record_bytes(&self, limit: usize) {
        self.max_record_bytes.store(limit, Ordering::SeqCst);
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
        if self.failing.load(Ordering::SeqCst) {
            return Err(SinkError::Unavailable("memory sink told to fail".into()));
        }
        let limit = self.max_record_bytes();
        if let Some(record) = records.iter().find(|r| r.encoded_len() > limit) {
            return Err(SinkError::Permanent(format!(
                "record for {} is {} bytes, over the {limit}-byte limit",
                record.topic,
                record.encoded_len()
            )));
        }
        let now = Instant::now();
        let mut held = self
            .records
            .lock()
            .map_err(|_| SinkError::Unavailable("memory sink poisoned".into()))?;
        held.extend(records.into_iter().map(|r| (now, r)));
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        self.max_record_bytes.load(Ordering::SeqCst)
    }
}
