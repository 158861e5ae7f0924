//! Dead letters: the one way a consuming stage sets aside an input record it can
//! never process, so one poison record never stalls a partition.
//!
//! A stage that meets a **permanent** error for one input record — undecodable,
//! an output over `kafka.max_record_bytes`, a record the broker refuses, a Redis
//! script error caused by the record's data — builds a letter with
//! [`DeadLetters::letter`], produces it with its other outputs, and lets the
//! consumer store the offset as usual. Retriable errors (broker or Redis
//! unavailable) are never dead-lettered: the batch is retried with backoff.
//!
//! A letter is the input record unchanged (same key, same bytes), so it can be
//! replayed into its topic once the cause is fixed, plus headers:
//!
//! | header | value |
//! |---|---|
//! | `dlq.stage` | the stage that gave up (`normalize`, `detector`, `detector.timers`, `notifier`) |
//! | `dlq.cause` | a short machine-readable cause (`undecodable`, `output_too_large`, ...) |
//! | `dlq.detail` | a human-readable detail, at most [`MAX_DETAIL_BYTES`], never contact data |
//! | `dlq.source.topic` / `.partition` / `.offset` | where the input was read |
//!
//! When even the letter would be over the size limit (an input near the limit
//! plus headers), its value is left empty and `dlq.payload_dropped` says so: the
//! source coordinates still find the original in its topic while it is retained.
//!
//! Every letter is logged (warn, with stage, cause and key) and counted in
//! `dead_letters{stage, cause}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::kafka::{Inbound, OutRecord};

/// Header names, fixed so readers and tests cannot drift from writers.
pub mod headers {
    /// The stage that dead-lettered the record.
    pub const STAGE: &str = "dlq.stage";
    /// Machine-readable cause.
    pub const CAUSE: &str = "dlq.cause";
    /// Human-readable detail.
    pub const DETAIL: &str = "dlq.detail";
    /// Topic the input was read from.
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    /// Its partition.
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    /// Its offset.
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// Present (`true`) when the value was dropped to fit the size limit.
    pub const PAYLOAD_DROPPED: &str = "dlq.payload_dropped";
}

/// Longest `dlq.detail` kept; details quote error messages, which can echo input.
pub const MAX_DETAIL_BYTES: usize = 1024;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    stage: String,
    cause: String,
}

/// A stage's dead-letter writer: where its letters go, and their counter.
#[derive(Clone)]
pub struct DeadLetters {
    topic: &'static str,
    stage: &'static str,
    max_record_bytes: usize,
    counted: Family<Labels, Counter>,
}

impl DeadLetters {
    /// A writer for `stage`'s letters to `topic`, registering `dead_letters` in
    /// `registry`. `max_record_bytes` is the producer's limit
    /// (`Producer::max_record_bytes`).
    pub fn register(
        registry: &mut Registry,
        topic: &'static str,
        stage: &'static str,
        max_record_bytes: usize,
    ) -> Self {
        let counted = Family::<Labels, Counter>::default();
        registry.register(
            "dead_letters",
            "Input records set aside on a dead-letter topic, by stage and cause",
            counted.clone(),
        );
        DeadLetters {
            topic,
            stage,
            max_record_bytes,
            counted,
        }
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &'static str {
        self.topic
    }

    /// Builds the letter for `record`, logs it and counts it.
    pub fn letter(&self, record: &Inbound, cause: &'static str, detail: &str) -> OutRecord {
        self.letter_as(self.stage, record, cause, detail)
    }

    /// Like [`DeadLetters::letter`], for a sub-stage (e.g. `detector.timers`).
    pub fn letter_as(
        &self,
        stage: &'static str,
        record: &Inbound,
        cause: &'static str,
        detail: &str,
    ) -> OutRecord {
        let key = record.key_str();
        let detail = truncate(detail, MAX_DETAIL_BYTES);
        tracing::warn!(stage, cause, %detail, key = %key, topic = %record.topic,
            partition = record.partition, offset = record.offset, "record dead-lettered");
        self.counted
            .get_or_create(&Labels {
                stage: stage.to_owned(),
                cause: cause.to_owned(),
            })
            .inc();
        let mut letter = OutRecord::new(self.topic, key, record.payload.clone())
            .with_header(headers::STAGE, stage)
            .with_header(headers::CAUSE, cause)
            .with_header(headers::DETAIL, detail)
            .with_header(headers::SOURCE_TOPIC, record.topic.clone())
            .with_header(headers::SOURCE_PARTITION, record.partition.to_string())
            .with_header(headers::SOURCE_OFFSET, record.offset.to_string());
        if letter.encoded_len() > self.max_record_bytes {
            letter.payload.clear();
            letter = letter.with_header(headers::PAYLOAD_DROPPED, "true");
        }
        letter
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(payload: Vec<u8>) -> Inbound {
        Inbound {
            topic: "tracking.events".into(),
            partition: 3,
            offset: 17,
            key: Some(b"sf:SF1".to_vec()),
            payload,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_letter_keeps_the_record_and_names_stage_cause_and_source() {
        let mut registry = Registry::default();
        let letters = DeadLetters::register(&mut registry, "tracking.dlq", "detector", 10_000);
        let letter = letters.letter(&inbound(b"abc".to_vec()), "undecodable", "bad bytes");
        assert_eq!(letter.topic, "tracking.dlq");
        assert_eq!(letter.key, "sf:SF1");
        assert_eq!(letter.payload, b"abc");
        assert_eq!(letter.header(headers::STAGE), Some("detector"));
        assert_eq!(letter.header(headers::CAUSE), Some("undecodable"));
        assert_eq!(letter.header(headers::SOURCE_OFFSET), Some("17"));
        assert_eq!(letter.header(headers::PAYLOAD_DROPPED), None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        assert!(
            text.contains(r#"dead_letters_total{stage="detector",cause="undecodable"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn an_oversized_letter_drops_its_value_and_details_are_capped() {
        let mut registry = Registry::default();
        let letters = DeadLetters::register(&mut registry, "tracking.dlq", "notifier", 1_000);
        let long = "é".repeat(2_000);
        let letter = letters.letter(&inbound(vec![7; 5_000]), "output_too_large", &long);
        assert!(letter.payload.is_empty());
        assert_eq!(letter.header(headers::PAYLOAD_DROPPED), Some("true"));
        let detail = letter.header(headers::DETAIL).unwrap_or_default();
        assert!(detail.len() <= MAX_DETAIL_BYTES && !detail.is_empty());
    }
}
