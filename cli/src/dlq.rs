//! `trackstream dlq list|redrive`: dead letters on `scans.dlq` and
//! `tracking.dlq` (see `trackstream_runtime::dlq` for their headers).
//!
//! `redrive` produces each selected letter's key and value back to its source
//! topic (`dlq.source.topic`; only pipeline topics), with the idempotent
//! `acks=all` producer the services use, and adds `dlq.redriven.from =
//! <dlq topic>/<partition>/<offset>` so a reader can tell a redriven record.
//!
//! **Re-running is safe.** A letter is the unchanged input record, and every
//! stage is idempotent on its input: event ids are a hash of what identifies a
//! scan, the detector deduplicates by event id, registrations upsert by waybill.
//! Redriving a letter twice therefore yields no second update or alert. To avoid
//! re-sending anyway, run the next time with `--from <started_at of the previous
//! summary>`: letters written after a run started (including ones dead-lettered
//! again by that redrive) have later timestamps, and earlier ones were handled.

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use trackstream_proto::topics;
use trackstream_runtime::dlq::headers;
use trackstream_runtime::kafka::{OutRecord, Producer};

use crate::Kafka;
use crate::records::{From, Reader, Record};

/// Header a redriven record carries: where its letter was.
pub const REDRIVEN_FROM: &str = "dlq.redriven.from";

/// Redrives this long show a progress bar (on a terminal).
const PROGRESS_ABOVE: u64 = 100;

/// `dlq ...`.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print dead letters as JSON lines (headers and decoded value).
    List(Selection),
    /// Produce selected dead letters back to their source topic, then print a
    /// JSON summary. Safe to re-run (see `--from`).
    Redrive(Selection),
}

/// Which letters: a dead-letter topic, a range and filters (all must match).
#[derive(Args)]
pub struct Selection {
    #[command(flatten)]
    kafka: Kafka,
    /// The dead-letter topic.
    #[arg(long, default_value = topics::TRACKING_DLQ, value_parser = [topics::SCANS_DLQ, topics::TRACKING_DLQ])]
    topic: String,
    /// Where to start: `beginning`, `end` or an RFC 3339 time. Reading stops once
    /// every partition is caught up.
    #[arg(long, default_value = "beginning")]
    from: From,
    /// Only letters of this stage (`dlq.stage`: normalize, detector,
    /// detector.timers, notifier).
    #[arg(long)]
    stage: Option<String>,
    /// Only letters with this cause (`dlq.cause`, e.g. undecodable).
    #[arg(long)]
    cause: Option<String>,
    /// Only letters read from this topic (`dlq.source.topic`).
    #[arg(long)]
    source: Option<String>,
    /// Only letters whose record key is this (`carrier:waybill`).
    #[arg(long)]
    key: Option<String>,
    /// Only letters whose detail contains this text.
    #[arg(long)]
    detail: Option<String>,
    /// Stop after this many selected letters.
    #[arg(long)]
    max: Option<u64>,
}

impl Selection {
    fn matches(&self, letter: &Record) -> bool {
        let equal = |wanted: &Option<String>, header: &str| {
            wanted
                .as_ref()
                .is_none_or(|w| letter.header(header).as_deref() == Some(w.as_str()))
        };
        equal(&self.stage, headers::STAGE)
            && equal(&self.cause, headers::CAUSE)
            && equal(&self.source, headers::SOURCE_TOPIC)
            && self.key.as_ref().is_none_or(|k| letter.key_text() == *k)
            && self.detail.as_ref().is_none_or(|d| {
                letter
                    .header(headers::DETAIL)
                    .is_some_and(|detail| detail.contains(d.as_str()))
            })
    }
}

/// Runs a `dlq` command.
pub async fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(selection) => list(selection).await,
        DlqCommand::Redrive(selection) => redrive(selection).await,
    }
}

async fn list(selection: Selection) -> anyhow::Result<()> {
    let mut reader = Reader::open(
        &selection.kafka.config(),
        &selection.topic,
        selection.from,
        false,
    )
    .await?;
    let mut listed = 0;
    while selection.max.is_none_or(|max| listed < max) {
        let Some(letter) = reader.next().await? else {
            break;
        };
        if selection.matches(&letter) {
            crate::emit(format_args!("{}", crate::decode::record_json(&letter)))?;
            listed += 1;
        }
    }
    Ok(())
}

/// Where a letter goes back to, or why it cannot.
fn destination(letter: &Record) -> Result<&'static str, &'static str> {
    if letter.header(headers::PAYLOAD_DROPPED).is_some() {
        return Err("payload_dropped");
    }
    let source = letter
        .header(headers::SOURCE_TOPIC)
        .ok_or("no_source_topic")?;
    topics::ALL
        .iter()
        .find(|t| **t == source && !t.ends_with(".dlq"))
        .copied()
        .ok_or("source_not_a_pipeline_topic")
}

async fn redrive(selection: Selection) -> anyhow::Result<()> {
    let started_at = Utc::now();
    let kafka = selection.kafka.config();
    let mut reader = Reader::open(&kafka, &selection.topic, selection.from, false).await?;
    let mut registry = trackstream_runtime::telemetry::registry("trackstream_cli");
    let producer = Producer::new(&kafka, "trackstream-cli-redrive", &mut registry)
        .context("creating the producer")?;
    let bar = if reader.total() > PROGRESS_ABOVE {
        ProgressBar::new(reader.total())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} letters read ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut read, mut redriven) = (0u64, 0u64);
    let mut skipped = serde_json::Map::new();
    while selection.max.is_none_or(|max| redriven < max) {
        let Some(letter) = reader.next().await? else {
            break;
        };
        read += 1;
        bar.inc(1);
        if !selection.matches(&letter) {
            continue;
        }
        let topic = match destination(&letter) {
            Ok(topic) => topic,
            Err(reason) => {
                let count = skipped.entry(reason).or_insert(json!(0));
                *count = json!(count.as_u64().unwrap_or(0) + 1);
                continue;
            }
        };
        let from = format!("{}/{}/{}", letter.topic, letter.partition, letter.offset);
        let record = OutRecord::new(topic, letter.key_text(), letter.payload)
            .with_header(REDRIVEN_FROM, from.clone());
        if let Err(err) = producer.send(record).await {
            bar.abandon();
            bail!(
                "producing {from} to {topic} failed: {err}; {redriven} letters were redriven \
                 before it — re-running is safe (see `trackstream dlq redrive --help`)"
            );
        }
        redriven += 1;
    }
    bar.finish_and_clear();
    crate::emit(format_args!(
        "{}",
        json!({
            "topic": selection.topic,
            "started_at": started_at.to_rfc3339(),
            "read": read,
            "redriven": redriven,
            "skipped": skipped,
        })
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)]) -> Record {
        Record {
            topic: topics::TRACKING_DLQ.into(),
            partition: 0,
            offset: 3,
            timestamp: None,
            key: Some(b"sf:SF1".to_vec()),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), Some(v.as_bytes().to_vec())))
                .collect(),
            payload: b"x".to_vec(),
        }
    }

    #[test]
    fn every_given_filter_must_match() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            selection: Selection,
        }
        let select = |args: &[&str]| {
            Wrap::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))
                .map(|w| w.selection)
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        };
        let letter = letter(&[
            (headers::STAGE, "notifier"),
            (headers::CAUSE, "output_too_large"),
            (headers::DETAIL, "record of 2 MB over the 1 MB limit"),
            (headers::SOURCE_TOPIC, topics::TRACKING_UPDATES),
        ]);
        assert!(select(&[]).matches(&letter));
        assert!(select(&["--stage", "notifier", "--cause", "output_too_large"]).matches(&letter));
        assert!(select(&["--key", "sf:SF1", "--detail", "over the"]).matches(&letter));
        assert!(select(&["--source", topics::TRACKING_UPDATES]).matches(&letter));
        assert!(!select(&["--stage", "notifier", "--cause", "undecodable"]).matches(&letter));
        assert!(!select(&["--key", "sf:SF2"]).matches(&letter));
        assert!(!select(&["--detail", "timeout"]).matches(&letter));
    }

    #[test]
    fn letters_go_back_to_pipeline_topics_only() {
        let ok = letter(&[(headers::SOURCE_TOPIC, topics::TRACKING_EVENTS)]);
        assert_eq!(destination(&ok), Ok(topics::TRACKING_EVENTS));
        assert_eq!(destination(&letter(&[])), Err("no_source_topic"));
        let elsewhere = letter(&[(headers::SOURCE_TOPIC, "payments")]);
        assert_eq!(destination(&elsewhere), Err("source_not_a_pipeline_topic"));
        let looped = letter(&[(headers::SOURCE_TOPIC, topics::TRACKING_DLQ)]);
        assert_eq!(destination(&looped), Err("source_not_a_pipeline_topic"));
        let dropped = letter(&[
            (headers::SOURCE_TOPIC, topics::TRACKING_EVENTS),
            (headers::PAYLOAD_DROPPED, "true"),
        ]);
        assert_eq!(destination(&dropped), Err("payload_dropped"));
    }
}
