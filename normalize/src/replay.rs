//! Re-normalize: read `scans.raw` again from a chosen point and run every record
//! through the adapters once more, writing to `tracking.events` (and `scans.dlq`)
//! exactly as the live service does. Operator guide: `docs/REPLAY.md`.
//!
//! ```text
//! trackstream-normalize --config normalize.toml replay --from 2026-11-20T00:00:00Z [--to 2026-11-21T00:00:00Z]
//! trackstream-normalize --config normalize.toml replay --offsets 0:1200,3:880 [--dry-run]
//! ```
//!
//! Why it is safe to run at any time:
//!
//! - it reads with a manual partition assignment and never commits, so the live
//!   normalize group's position is untouched and a replay can be repeated;
//! - it stops at a fixed end: the first record at or after `--to`, else the end of
//!   each partition *when the replay started*, so it terminates while ingest
//!   keeps writing;
//! - event ids are a hash of what identifies a scan (carrier, waybill, time, raw
//!   code, location), never of its mapping, so a replayed record yields the ids it
//!   yielded before and the detector — which deduplicates by event id — emits no
//!   second update or alert for them;
//! - it writes only after a batch is normalized and returns only once Kafka
//!   acknowledged it; on failure the error names the offsets to resume from.
//!
//! Records that still cannot be parsed are dead-lettered again, with the same
//! `dlq.source.*` headers, so a DLQ consumer can tell a repeat by its source
//! position.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use trackstream_proto::topics;
use trackstream_runtime::kafka::{Inbound, Producer};

use crate::Config;
/// The command line moved to [`crate::cli`]; re-exported so tests that drive a
/// replay by its command line keep their paths.
pub use crate::cli::{Command, parse_command};
use crate::handler::Normalizer;
use crate::write::WriteError;

/// How long a replay waits without receiving a record before giving up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of the metadata, watermark and offset lookups.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a replay starts in partitions without an explicit offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained record.
    Earliest,
    /// The first record whose timestamp is at or after this instant.
    Time(DateTime<Utc>),
}

/// What to replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Start of every partition not in `offsets`; `None` replays only those.
    pub from: Option<Start>,
    /// Explicit start offsets by partition (e.g. from a failed replay's error).
    pub offsets: BTreeMap<i32, i64>,
    /// Stop before the first record at or after this instant.
    pub to: Option<DateTime<Utc>>,
    /// Normalize and count, but write nothing.
    pub dry_run: bool,
}

/// One partition's replayed range, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionRange {
    /// Partition of `scans.raw`.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// First offset not read.
    pub end: i64,
}

/// What a replay did, printed by the binary as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Partitions with something to replay.
    pub partitions: Vec<PartitionRange>,
    /// Raw records read.
    pub records: u64,
    /// Events written to `tracking.events` (or that would be, in a dry run).
    pub events: u64,
    /// Records dead-lettered to `scans.dlq` again.
    pub dead_letters: u64,
}

/// Why a replay could not be set up or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The command line is wrong; the message says how.
    #[error("{0}")]
    Usage(String),
    /// Kafka refused a lookup or the consumer could not be created.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// `scans.raw` is missing or unreadable, or the producer could not start.
    #[error("{0}")]
    Setup(String),
    /// No record arrived for a while although the range is not finished.
    #[error(
        "no record received for {idle:?} before the end of the range; nothing after the \
         offsets below was written — resume with `replay --offsets {resume}`"
    )]
    Stalled {
        /// How long it waited.
        idle: Duration,
        /// `P:O,...` to resume from.
        resume: String,
    },
    /// Kafka did not acknowledge normalized records, or refused a dead letter.
    #[error("writing normalized records failed: {source}; resume with `replay --offsets {resume}`")]
    Produce {
        /// The write's error (boxed: it carries the producer's error).
        source: Box<WriteError>,
        /// `P:O,...` to resume from.
        resume: String,
    },
}

/// The `--offsets` argument that resumes the unfinished partitions.
fn resume(durable: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> String {
    let unfinished = durable
        .iter()
        .filter(|(p, o)| ends.get(p).is_some_and(|end| **o < *end))
        .map(|(p, o)| (*p, *o))
        .collect();
    format_offsets(&unfinished)
}

/// Formats positions as `--offsets` takes them.
pub(crate) fn format_offsets(positions: &BTreeMap<i32, i64>) -> String {
    positions
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn consumer(config: &Config) -> Result<StreamConsumer, KafkaError> {
    let mut client = ClientConfig::new();
    let group = config
        .kafka
        .group_id
        .clone()
        .unwrap_or_else(|| "trackstream-normalize".into());
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("client.id", "trackstream-normalize-replay")
        // Never joined or committed (manual assignment); required by librdkafka.
        .set("group.id", format!("{group}-replay"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (key, value) in &config.kafka.extra {
        client.set(key, value);
    }
    client.create()
}

/// Offsets of the first record at or after `at` in each partition; a partition
/// with no such record maps to its high watermark.
fn offsets_at(
    consumer: &StreamConsumer,
    partitions: &[i32],
    at: DateTime<Utc>,
    high: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let mut query = TopicPartitionList::new();
    for partition in partitions {
        query.add_partition_offset(
            topics::SCANS_RAW,
            *partition,
            Offset::Offset(at.timestamp_millis()),
        )?;
    }
    let found = consumer.offsets_for_times(query, LOOKUP_TIMEOUT)?;
    let mut offsets = BTreeMap::new();
    for element in found.elements() {
        let end = high.get(&element.partition()).copied().unwrap_or(0);
        let offset = match element.offset() {
            Offset::Offset(n) if n >= 0 => n.min(end),
            _ => end,
        };
        offsets.insert(element.partition(), offset);
    }
    Ok(offsets)
}

/// Decides each partition's `[start, end)` (blocking lookups).
fn plan(
    consumer: &StreamConsumer,
    options: &ReplayOptions,
) -> Result<Vec<PartitionRange>, ReplayError> {
    let metadata = consumer.fetch_metadata(Some(topics::SCANS_RAW), LOOKUP_TIMEOUT)?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topics::SCANS_RAW)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| ReplayError::Setup(format!("topic {} not found", topics::SCANS_RAW)))?;
    let partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
    if let Some(unknown) = options.offsets.keys().find(|p| !partitions.contains(p)) {
        return Err(ReplayError::Usage(format!(
            "--offsets names partition {unknown}, but {} has partitions {partitions:?}",
            topics::SCANS_RAW
        )));
    }
    let mut low = BTreeMap::new();
    let mut high = BTreeMap::new();
    for partition in &partitions {
        let (l, h) = consumer.fetch_watermarks(topics::SCANS_RAW, *partition, LOOKUP_TIMEOUT)?;
        low.insert(*partition, l);
        high.insert(*partition, h);
    }
    let from_time = match options.from {
        Some(Start::Time(at)) => Some(offsets_at(consumer, &partitions, at, &high)?),
        _ => None,
    };
    let ends = match options.to {
        Some(at) => offsets_at(consumer, &partitions, at, &high)?,
        None => high.clone(),
    };
    let mut ranges = Vec::new();
    for partition in partitions {
        let start = match (options.offsets.get(&partition), options.from, &from_time) {
            (Some(offset), _, _) => *offset,
            (None, Some(Start::Earliest), _) => low.get(&partition).copied().unwrap_or(0),
            (None, _, Some(by_time)) => by_time.get(&partition).copied().unwrap_or(0),
            (None, _, None) => continue,
        };
        let start = start.max(low.get(&partition).copied().unwrap_or(0));
        let end = ends.get(&partition).copied().unwrap_or(0);
        if start < end {
            ranges.push(PartitionRange {
                partition,
                start,
                end,
            });
        }
    }
    Ok(ranges)
}

/// Normalizes and writes one batch; advances `durable` only once Kafka
/// acknowledged it. Records whose outputs Kafka refuses for good are
/// dead-lettered as in the live service ([`crate::write`]).
async fn flush(
    normalizer: &Normalizer,
    batch: &mut Vec<Inbound>,
    progress: &mut Progress,
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    if batch.is_empty() {
        return Ok(());
    }
    let prepared = normalizer
        .prepare(batch, false)
        .map_err(|e| ReplayError::Setup(e.0))?;
    if summary.dry_run {
        summary.events += prepared.events;
        summary.dead_letters += prepared.letters;
    } else {
        let letters = prepared.letters;
        match normalizer.write(prepared).await {
            Ok(written) => {
                summary.events += written.event_ids.len() as u64;
                summary.dead_letters += letters + written.refused_inputs;
            }
            Err(source) => {
                return Err(ReplayError::Produce {
                    source: Box::new(source),
                    resume: resume(&progress.durable, &progress.ends),
                });
            }
        }
    }
    summary.records += batch.len() as u64;
    for record in batch.drain(..) {
        let next = progress.durable.entry(record.partition).or_insert(0);
        *next = (*next).max(record.offset + 1);
    }
    Ok(())
}

/// Per partition: the end of the range, and the first offset whose output is
/// not yet acknowledged.
struct Progress {
    ends: BTreeMap<i32, i64>,
    durable: BTreeMap<i32, i64>,
}

/// Replays the range `options` describes and returns what it did. Builds its own
/// consumer (manual assignment, no commits) and producer from `config.kafka`, and
/// normalizes with `config.providers`, so run it with the (fixed) normalize
/// config.
pub async fn run(config: &Config, options: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let consumer = Arc::new(consumer(config)?);
    let ranges = {
        let consumer = consumer.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || plan(&consumer, &options))
            .await
            .map_err(|e| ReplayError::Setup(format!("planning the replay: {e}")))??
    };
    let mut summary = ReplaySummary {
        dry_run: options.dry_run,
        partitions: ranges.clone(),
        ..ReplaySummary::default()
    };
    tracing::info!(?ranges, dry_run = options.dry_run, "replaying scans.raw");
    if ranges.is_empty() {
        return Ok(summary);
    }

    let mut registry = trackstream_runtime::telemetry::registry("normalize_replay");
    let producer = Producer::new(&config.kafka, "trackstream-normalize-replay", &mut registry)
        .map_err(|e| ReplayError::Setup(e.to_string()))?;
    let normalizer = Normalizer::new(producer, config, &mut registry);

    let mut assignment = TopicPartitionList::new();
    for range in &ranges {
        assignment.add_partition_offset(
            topics::SCANS_RAW,
            range.partition,
            Offset::Offset(range.start),
        )?;
    }
    consumer.assign(&assignment)?;

    let mut progress = Progress {
        ends: ranges.iter().map(|r| (r.partition, r.end)).collect(),
        durable: ranges.iter().map(|r| (r.partition, r.start)).collect(),
    };
    let mut open: BTreeSet<i32> = ranges.iter().map(|r| r.partition).collect();
    let batch_max = config.kafka.batch_max.max(1);
    let mut batch = Vec::with_capacity(batch_max);
    let mut last_progress = Instant::now();
    while !open.is_empty() {
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Ok(Ok(message)) => {
                last_progress = Instant::now();
                let partition = message.partition();
                let end = progress.ends.get(&partition).copied().unwrap_or(0);
                if open.contains(&partition) && message.offset() < end {
                    batch.push(Inbound::detach(&message));
                }
                if message.offset() + 1 >= end {
                    open.remove(&partition);
                }
            }
            // The end of the range is at or before the partition's end.
            Ok(Err(KafkaError::PartitionEOF(partition))) => {
                last_progress = Instant::now();
                open.remove(&partition);
            }
            Ok(Err(err)) => tracing::warn!(%err, "kafka consumer error during replay"),
            Err(_quiet) => {
                flush(&normalizer, &mut batch, &mut progress, &mut summary).await?;
                if last_progress.elapsed() > IDLE_TIMEOUT {
                    return Err(ReplayError::Stalled {
                        idle: IDLE_TIMEOUT,
                        resume: resume(&progress.durable, &progress.ends),
                    });
                }
            }
        }
        if batch.len() >= batch_max {
            flush(&normalizer, &mut batch, &mut progress, &mut summary).await?;
        }
    }
    flush(&normalizer, &mut batch, &mut progress, &mut summary).await?;
    tracing::info!(
        records = summary.records,
        events = summary.events,
        dead_letters = summary.dead_letters,
        "replay finished"
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_names_only_unfinished_partitions() {
        let durable = BTreeMap::from([(0, 10), (1, 4), (2, 9)]);
        let ends = BTreeMap::from([(0, 10), (1, 8), (2, 12)]);
        assert_eq!(resume(&durable, &ends), "1:4,2:9");
    }
}
