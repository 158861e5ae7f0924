//! Writing a batch's outputs so that a record Kafka will never take costs its
//! own input a dead letter, not the partition its progress.
//!
//! The fast path writes every output of the batch in one `send_all`. If that
//! fails with a **retriable** error (broker unavailable), the batch is retried
//! by the consumer loop with backoff. If it fails with a **permanent** one (a
//! record the broker refuses, or one it finds too large although our size check
//! passed it — a broker `message.max.bytes` below ours), retrying the batch
//! would fail forever. The batch is then written again input by input, output
//! by output, in order (per-key order holds): an event refused permanently
//! dead-letters its input once, with cause `output_too_large` or
//! `output_rejected`; every other output is written. A letter the broker finds
//! too large is sent again without its value (`dlq.payload_dropped`). A letter
//! that cannot be written at all (no `scans.dlq`, no authorization) is an
//! operator's problem that retrying surfaces: the batch fails with
//! [`WriteError::LetterRefused`] and is retried, loudly, rather than losing
//! the record. The slow path costs one acknowledged round trip per output,
//! and only for a batch holding a refused record.
//!
//! Outputs written before a later failure are written again when the batch is
//! retried; downstream deduplicates them by event id.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use trackstream_proto::topics;
use trackstream_runtime::dlq::{DeadLetters, headers};
use trackstream_runtime::kafka::{Inbound, OutRecord, Producer, SendError};

/// One output record, with its event id when it is an event.
pub struct Output {
    /// What to write.
    pub record: OutRecord,
    /// The event id (`None` for a dead letter).
    pub event_id: Option<String>,
}

/// The outputs of one input record, in order.
pub struct InputOutputs<'a> {
    /// The `scans.raw` record they came from.
    pub input: &'a Inbound,
    /// Its events and letters.
    pub outputs: Vec<Output>,
}

/// What a write acknowledged.
#[derive(Debug, Default)]
pub struct Written {
    /// Ids of the events Kafka acknowledged.
    pub event_ids: Vec<String>,
    /// Letters added because an output was refused permanently.
    pub refused_inputs: u64,
}

/// Why a batch's outputs were not all written; the batch must be retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Kafka is unavailable: retry with backoff.
    #[error("kafka unavailable: {0}")]
    Unavailable(SendError),
    /// A dead letter was refused permanently (missing `scans.dlq`, no
    /// authorization): fix the deployment; retrying keeps the record safe.
    #[error("dead letter for {key} refused: {source}")]
    LetterRefused {
        /// Key of the input record.
        key: String,
        /// The producer's error.
        source: SendError,
    },
}

/// Writes batches through the producer, dead-lettering inputs whose outputs
/// Kafka refuses permanently.
#[derive(Clone)]
pub struct Writer {
    producer: Producer,
    letters: DeadLetters,
    slow_batches: Counter,
}

impl Writer {
    /// A writer registering `dead_letters{stage="normalize",cause}` (letters
    /// to `scans.dlq`) and `batches_written_one_by_one` in `registry`.
    pub fn register(producer: Producer, registry: &mut Registry) -> Self {
        let letters = DeadLetters::register(
            registry,
            topics::SCANS_DLQ,
            STAGE,
            producer.max_record_bytes(),
        );
        let slow_batches = Counter::default();
        registry.register(
            "batches_written_one_by_one",
            "Batches written output by output after Kafka refused one of their records permanently",
            slow_batches.clone(),
        );
        Writer {
            producer,
            letters,
            slow_batches,
        }
    }

    /// The dead-letter writer (stage `normalize`, topic `scans.dlq`).
    pub fn letters(&self) -> &DeadLetters {
        &self.letters
    }

    /// The producer (its size check decides `output_too_large` before sending).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Writes `batch`: in one call, or input by input after a permanent error.
    pub async fn write(&self, batch: Vec<InputOutputs<'_>>) -> Result<Written, WriteError> {
        write(&self.producer, &self.letters, &self.slow_batches, batch).await
    }
}

/// The stage name on normalize's letters.
pub const STAGE: &str = "normalize";

async fn write(
    producer: &Producer,
    letters: &DeadLetters,
    slow_batches: &Counter,
    batch: Vec<InputOutputs<'_>>,
) -> Result<Written, WriteError> {
    let records: Vec<OutRecord> = batch
        .iter()
        .flat_map(|input| input.outputs.iter().map(|o| o.record.clone()))
        .collect();
    if records.is_empty() {
        return Ok(Written::default());
    }
    match producer.send_all(records).await {
        Ok(()) => Ok(Written {
            event_ids: batch
                .into_iter()
                .flat_map(|input| input.outputs.into_iter().filter_map(|o| o.event_id))
                .collect(),
            refused_inputs: 0,
        }),
        Err(err) if !err.is_permanent() => Err(WriteError::Unavailable(err)),
        Err(err) => {
            slow_batches.inc();
            tracing::warn!(%err, inputs = batch.len(),
                "a record of the batch was refused permanently; writing input by input");
            one_by_one(producer, letters, batch).await
        }
    }
}

async fn one_by_one(
    producer: &Producer,
    letters: &DeadLetters,
    batch: Vec<InputOutputs<'_>>,
) -> Result<Written, WriteError> {
    let mut written = Written::default();
    for InputOutputs { input, outputs } in batch {
        let key = input.key_str();
        let span = tracing::info_span!("write_input", key = %key,
            partition = input.partition, offset = input.offset);
        let _entered = span.enter();
        let mut refused = None;
        for output in outputs {
            match output.event_id {
                Some(event_id) => match producer.send(output.record).await {
                    Ok(()) => written.event_ids.push(event_id),
                    Err(err) if !err.is_permanent() => return Err(WriteError::Unavailable(err)),
                    // The input's other events are still written; the letter
                    // carries the whole input for a replay once the cause is fixed.
                    Err(err) => {
                        refused.get_or_insert(err);
                    }
                },
                None => send_letter(producer, output.record, &key).await?,
            }
        }
        if let Some(err) = refused {
            let cause = match err {
                SendError::TooLarge { .. } => "output_too_large",
                _ => "output_rejected",
            };
            let detail = match &err {
                // The size check passed it: the client's or broker's own limit
                // (`message.max.bytes`) is below `kafka.max_record_bytes`.
                SendError::TooLarge { bytes: 0, .. } => format!(
                    "refused by Kafka as too large (its message.max.bytes is below \
                     kafka.max_record_bytes): {err}"
                ),
                _ => format!("refused by Kafka: {err}"),
            };
            let letter = letters.letter(input, cause, &detail);
            send_letter(producer, letter, &key).await?;
            written.refused_inputs += 1;
        }
    }
    Ok(written)
}

/// Sends a letter; one the broker finds too large (its limit is below ours) is
/// sent again without its value, as [`DeadLetters`] does for letters over our
/// own limit: the source headers still find the input in `scans.raw`.
async fn send_letter(producer: &Producer, letter: OutRecord, key: &str) -> Result<(), WriteError> {
    let refused = |source| WriteError::LetterRefused {
        key: key.to_owned(),
        source,
    };
    match producer.send(letter.clone()).await {
        Ok(()) => Ok(()),
        Err(err) if !err.is_permanent() => Err(WriteError::Unavailable(err)),
        Err(SendError::TooLarge { .. }) if !letter.payload.is_empty() => {
            let mut bare = letter;
            bare.payload.clear();
            let bare = bare.with_header(headers::PAYLOAD_DROPPED, "true");
            tracing::warn!(
                key,
                "dead letter too large for the broker; sent without its value"
            );
            match producer.send(bare).await {
                Ok(()) => Ok(()),
                Err(err) if !err.is_permanent() => Err(WriteError::Unavailable(err)),
                Err(err) => Err(refused(err)),
            }
        }
        Err(err) => Err(refused(err)),
    }
}
