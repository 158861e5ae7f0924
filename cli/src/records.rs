//! Reading one topic from a chosen point, for `tail` and `dlq`.
//!
//! The reader assigns partitions by hand and never commits, so it is invisible to
//! the services' consumer groups and can be run any number of times. Without
//! `--follow` it stops once it has caught up with every partition (the
//! consumer's end-of-partition event) — not at the high watermark read at the
//! start, which some brokers (tansu) under-report for multi-record batches; a
//! partition empty at the start is not read. With `--follow` it waits for new
//! records until interrupted (or `--max` is reached).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trackstream_runtime::config::KafkaConfig;

/// Metadata, watermark and time lookups.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a bounded read waits for a record it knows exists before failing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where reading starts in every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The oldest retained record.
    Beginning,
    /// After the newest record (only new records; useful with `--follow`).
    End,
    /// The first record whose timestamp is at or after this instant.
    Time(DateTime<Utc>),
}

impl FromStr for From {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "beginning" | "earliest" => Ok(From::Beginning),
            "end" | "latest" => Ok(From::End),
            _ => DateTime::parse_from_rfc3339(text)
                .map(|t| From::Time(t.with_timezone(&Utc)))
                .map_err(|e| {
                    format!("{text:?}: expected beginning, end or an RFC 3339 time ({e})")
                }),
        }
    }
}

/// One record as read.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Broker or producer timestamp, epoch milliseconds.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Headers in order (values may be absent).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Value bytes (empty for a tombstone).
    pub payload: Vec<u8>,
}

impl Record {
    /// A header's value as UTF-8 (lossy); `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The key as UTF-8 (lossy), empty when absent.
    pub fn key_text(&self) -> String {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }

    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            payload: message.payload().unwrap_or_default().to_vec(),
        }
    }
}

/// An open reader of one topic.
pub struct Reader {
    consumer: StreamConsumer,
    /// Whether the read stops once every partition is caught up.
    bounded: bool,
    /// Partitions of a bounded read not yet caught up.
    open: BTreeSet<i32>,
    total: u64,
}

impl Reader {
    /// Opens `topic` at `from`; bounded at today's ends unless `follow`.
    pub async fn open(
        kafka: &KafkaConfig,
        topic: &str,
        from: From,
        follow: bool,
    ) -> anyhow::Result<Reader> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &kafka.brokers)
            .set("client.id", "trackstream-cli")
            // Never joined or committed (manual assignment); required by librdkafka.
            .set("group.id", format!("trackstream-cli-{:016x}", rand_id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("log_level", "3");
        for (key, value) in &kafka.extra {
            client.set(key, value);
        }
        let consumer: Arc<StreamConsumer> =
            Arc::new(client.create().context("creating a Kafka consumer")?);
        let planned = {
            let consumer = consumer.clone();
            let topic = topic.to_owned();
            tokio::task::spawn_blocking(move || plan(&consumer, &topic, from))
                .await
                .context("planning the read")??
        };
        let mut assignment = TopicPartitionList::new();
        let mut open = BTreeSet::new();
        let mut total = 0;
        for (partition, start, end) in planned {
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            if start < end {
                open.insert(partition);
                total += u64::try_from(end - start).unwrap_or(0);
            }
        }
        consumer
            .assign(&assignment)
            .context("assigning partitions")?;
        let consumer = Arc::into_inner(consumer).context("the planning task kept the consumer")?;
        Ok(Reader {
            consumer,
            bounded: !follow,
            open,
            total,
        })
    }

    /// About how many records a bounded read will return (0 when following), for
    /// progress bars.
    pub fn total(&self) -> u64 {
        if self.bounded { self.total } else { 0 }
    }

    /// The next record; `None` once a bounded read reached its ends.
    pub async fn next(&mut self) -> anyhow::Result<Option<Record>> {
        loop {
            if self.bounded && self.open.is_empty() {
                return Ok(None);
            }
            let received = if self.bounded {
                match tokio::time::timeout(IDLE_TIMEOUT, self.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_) => bail!(
                        "no record received for {IDLE_TIMEOUT:?} although partitions {:?} are not read to their end",
                        self.open
                    ),
                }
            } else {
                self.consumer.recv().await
            };
            match received {
                Ok(message) => {
                    if !self.bounded || self.open.contains(&message.partition()) {
                        return Ok(Some(Record::from_message(&message)));
                    }
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.open.remove(&partition);
                }
                Err(err) => eprintln!("kafka: {err} (retrying)"),
            }
        }
    }
}

/// `(partition, start, end)` for every partition of `topic` (blocking).
fn plan(
    consumer: &StreamConsumer,
    topic: &str,
    from: From,
) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .with_context(|| format!("reading metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {topic} not found (create it with `trackstream topics create`)");
    }
    let mut watermarks = BTreeMap::new();
    for partition in &partitions {
        let marks = consumer
            .fetch_watermarks(topic, *partition, LOOKUP_TIMEOUT)
            .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
        watermarks.insert(*partition, marks);
    }
    let by_time = match from {
        From::Time(at) => {
            let mut query = TopicPartitionList::new();
            for partition in &partitions {
                query.add_partition_offset(
                    topic,
                    *partition,
                    Offset::Offset(at.timestamp_millis()),
                )?;
            }
            consumer
                .offsets_for_times(query, LOOKUP_TIMEOUT)
                .context("looking up offsets by time")?
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(n) if n >= 0 => Some((e.partition(), n)),
                    _ => None,
                })
                .collect()
        }
        _ => BTreeMap::new(),
    };
    Ok(watermarks
        .into_iter()
        .map(|(partition, (low, high))| {
            let start = match from {
                From::Beginning => low,
                From::End => high,
                From::Time(_) => by_time
                    .get(&partition)
                    .copied()
                    .unwrap_or(high)
                    .clamp(low, high),
            };
            (partition, start, high)
        })
        .collect())
}

/// A random id for the throwaway group name, from the clock (no rand dependency
/// needed: uniqueness across concurrent CLI runs is all that matters).
fn rand_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    u64::try_from(nanos % u128::from(u64::MAX)).unwrap_or(0) ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_reads_names_and_times() {
        assert_eq!("beginning".parse(), Ok(From::Beginning));
        assert_eq!("end".parse(), Ok(From::End));
        let at = DateTime::parse_from_rfc3339("2026-11-20T08:00:00+08:00")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!("2026-11-20T08:00:00+08:00".parse().ok(), at.map(From::Time));
        assert!(
            "yesterday"
                .parse::<From>()
                .is_err_and(|e| e.contains("RFC 3339"))
        );
    }
}
