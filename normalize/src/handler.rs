//! The batch handler: raw items → canonical events or dead letters.
//!
//! Each `scans.raw` record goes through its provider's adapter; every event's
//! free text is capped ([`crate::bounds`]), then an event is dead-lettered
//! instead of written when it is dated too far in the future
//! ([`crate::skew`], cause `future_dated`) or when its record would exceed
//! `kafka.max_record_bytes` (cause `output_too_large`). Either way the input
//! record is the letter (one per cause), and the other events of the same
//! input are written: the letter is there for a replay once the cause is
//! fixed, and replaying re-derives the written events with their same ids,
//! which downstream drops. Writing goes through [`crate::write`], which also
//! dead-letters inputs whose outputs the broker refuses permanently.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use trackstream_carriers::{NormalizeError, ProviderSettings};
use trackstream_proto::v1::{Provider, RawScan, Reason};
use trackstream_proto::{keys, topics};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord, Producer};

use crate::Config;
use crate::bounds::TextCaps;
use crate::recent::RecentEvents;
use crate::skew::{FutureDated, SkewCheck};
use crate::write::{InputOutputs, Output, WriteError, Writer, Written};

type Labels = Vec<(&'static str, String)>;

/// Normalizes batches of `scans.raw` records.
pub struct Normalizer {
    carriers: trackstream_carriers::Registry,
    providers: BTreeMap<String, ProviderSettings>,
    writer: Writer,
    caps: TextCaps,
    skew: SkewCheck,
    max_future_skew: std::time::Duration,
    events: Family<Labels, Counter>,
    unknown_codes: Family<Labels, Counter>,
    /// Ids this instance wrote recently (resent snapshots are not written again).
    recent: Mutex<RecentEvents>,
    resent: Counter,
}

/// A canonical event ready for `tracking.events`, with its id for dedup.
pub struct CanonicalEvent {
    /// The event's stable id (same scan, same id, however often it is pushed).
    pub event_id: String,
    /// The record to write.
    pub record: OutRecord,
}

/// What one raw record became. A record can yield both: a future-dated or
/// oversized scan dead-letters its input while the input's other scans are
/// written.
#[derive(Default)]
pub struct Normalized {
    /// Canonical events for `tracking.events`.
    pub events: Vec<CanonicalEvent>,
    /// Dead letters for `scans.dlq` (the input record, one per cause).
    pub letters: Vec<OutRecord>,
}

/// A batch normalized and ready to write.
pub struct Prepared<'a> {
    /// Outputs per input record, in batch order.
    pub inputs: Vec<InputOutputs<'a>>,
    /// Events to write.
    pub events: u64,
    /// Letters to write.
    pub letters: u64,
    /// Events not written again because they were written recently.
    pub resent: u64,
}

impl Normalizer {
    /// A normalizer writing through `producer`, with `config`'s provider
    /// settings and future skew.
    pub fn new(producer: Producer, config: &Config, registry: &mut Registry) -> Self {
        let normalizer = Normalizer {
            carriers: trackstream_carriers::Registry::builtin(),
            providers: config.providers.clone(),
            writer: Writer::register(producer, registry),
            caps: TextCaps::register(registry),
            skew: SkewCheck::new(config.max_future_skew),
            max_future_skew: config.max_future_skew,
            events: Family::default(),
            unknown_codes: Family::default(),
            recent: Mutex::new(RecentEvents::new(0)),
            resent: Counter::default(),
        };
        registry.register(
            "events",
            "Canonical events normalized, by provider (resent ones included: see resent_events)",
            normalizer.events.clone(),
        );
        registry.register(
            "unknown_codes",
            "Events whose provider code is not in our tables (kept with reason UNKNOWN), by provider",
            normalizer.unknown_codes.clone(),
        );
        registry.register(
            "resent_events",
            "Events not written again because this instance wrote them recently (resent snapshots)",
            normalizer.resent.clone(),
        );
        normalizer
    }

    /// Remembers up to `capacity` written event ids per generation so a resent
    /// snapshot's old scans are not written again (see [`crate::recent`]).
    /// Without it every event is written, as the replay command wants.
    pub fn remembering(mut self, capacity: usize) -> Self {
        self.recent = Mutex::new(RecentEvents::new(capacity));
        self
    }

    /// Normalizes one record (pure apart from metrics and logs; used by the
    /// re-normalize command too).
    pub fn normalize(&self, record: &Inbound) -> Normalized {
        self.normalize_at(record, Utc::now())
    }

    /// [`Normalizer::normalize`] with the wall clock given (the skew reference
    /// of a record without `received_at`).
    pub fn normalize_at(&self, record: &Inbound, now: DateTime<Utc>) -> Normalized {
        let letter = |cause: &'static str, detail: &str| Normalized {
            events: Vec::new(),
            letters: vec![self.writer.letters().letter(record, cause, detail)],
        };
        let raw = match RawScan::decode(record.payload.as_slice()) {
            Ok(raw) => raw,
            Err(err) => return letter("undecodable", &format!("not a RawScan: {err}")),
        };
        let provider = Provider::try_from(raw.provider).unwrap_or(Provider::Unspecified);
        let span = tracing::info_span!("normalize", waybill = %raw.waybill, carrier = %raw.carrier, ingest_id = %raw.ingest_id);
        let _entered = span.enter();
        let Some(adapter) = self.carriers.by_provider(provider) else {
            let err = NormalizeError::UnknownProvider(raw.provider);
            return letter("unknown_provider", &err.to_string());
        };
        let default_settings = ProviderSettings::default();
        let settings = self
            .providers
            .get(adapter.route())
            .unwrap_or(&default_settings);
        let events = match adapter.normalize(&raw, settings) {
            Ok(events) => events,
            Err(err) => return letter("unparseable", &err.to_string()),
        };
        let route = adapter.route();
        let total = events.len();
        let mut out = Normalized::default();
        let mut future: Vec<(String, FutureDated)> = Vec::new();
        let mut too_large: Vec<(String, String)> = Vec::new();
        for mut event in events {
            self.caps.apply(&mut event);
            if let Err(dated) = self.skew.check(&event, now) {
                future.push((event.event_id, dated));
                continue;
            }
            let record = OutRecord::new(
                topics::TRACKING_EVENTS,
                keys::waybill_key(&event.carrier, &event.waybill),
                event.encode_to_vec(),
            );
            if let Err(err) = self.writer.producer().check_size(&record) {
                too_large.push((event.event_id, err.to_string()));
                continue;
            }
            if event.reason == Reason::Unknown as i32 {
                self.unknown_codes
                    .get_or_create(&vec![("provider", route.to_owned())])
                    .inc();
                tracing::warn!(provider = route, raw_code = %event.raw_code, "unknown provider code kept with reason UNKNOWN");
            }
            self.events
                .get_or_create(&vec![("provider", route.to_owned())])
                .inc();
            out.events.push(CanonicalEvent {
                record,
                event_id: event.event_id,
            });
        }
        if let Some((event_id, dated)) = future.first() {
            let detail = format!(
                "{} of {total} scans dated more than {:?} after received_at; first: event {event_id} \
                 occurred_at {} is {}s after {}",
                future.len(),
                self.max_future_skew,
                dated.occurred_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                dated.ahead().num_seconds(),
                dated.reference.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
            out.letters.push(
                self.writer
                    .letters()
                    .letter(record, "future_dated", &detail),
            );
        }
        if let Some((event_id, err)) = too_large.first() {
            let detail = format!(
                "{} of {total} events too large; first: event {event_id}: {err}",
                too_large.len()
            );
            out.letters.push(
                self.writer
                    .letters()
                    .letter(record, "output_too_large", &detail),
            );
        }
        out
    }

    /// Normalizes `batch`; with `skip_recent`, events this instance wrote
    /// recently (or earlier in the batch) are left out.
    pub fn prepare<'a>(
        &self,
        batch: &'a [Inbound],
        skip_recent: bool,
    ) -> Result<Prepared<'a>, HandlerError> {
        let recent = self
            .recent
            .lock()
            .map_err(|_| HandlerError("recent-events lock poisoned".into()))?;
        let mut written: HashSet<String> = HashSet::new();
        let now = Utc::now();
        let mut prepared = Prepared {
            inputs: Vec::with_capacity(batch.len()),
            events: 0,
            letters: 0,
            resent: 0,
        };
        for input in batch {
            let normalized = self.normalize_at(input, now);
            let mut outputs =
                Vec::with_capacity(normalized.events.len() + normalized.letters.len());
            for event in normalized.events {
                if skip_recent
                    && (recent.contains(&event.event_id) || !written.insert(event.event_id.clone()))
                {
                    prepared.resent += 1;
                    continue;
                }
                prepared.events += 1;
                outputs.push(Output {
                    record: event.record,
                    event_id: Some(event.event_id),
                });
            }
            prepared.letters += normalized.letters.len() as u64;
            outputs.extend(normalized.letters.into_iter().map(|record| Output {
                record,
                event_id: None,
            }));
            prepared.inputs.push(InputOutputs { input, outputs });
        }
        Ok(prepared)
    }

    /// Writes a prepared batch (see [`crate::write`]).
    pub async fn write(&self, prepared: Prepared<'_>) -> Result<Written, WriteError> {
        self.writer.write(prepared.inputs).await
    }
}

impl BatchHandler for Normalizer {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let prepared = self.prepare(batch, true)?;
        let resent = prepared.resent;
        let written = self
            .write(prepared)
            .await
            .map_err(|err| HandlerError(format!("writing events: {err}")))?;
        // Only what the broker acknowledged is remembered: a failed batch is
        // retried in full.
        if let Ok(mut recent) = self.recent.lock() {
            for event_id in &written.event_ids {
                recent.insert(event_id);
            }
        }
        if resent > 0 {
            self.resent.inc_by(resent);
            tracing::debug!(resent, "resent events not written again");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use trackstream_proto::time::to_proto;
    use trackstream_proto::v1::{Status, TrackingEvent};
    use trackstream_runtime::config::KafkaConfig;
    use trackstream_runtime::dlq::headers;

    /// A normalizer whose producer is never used (normalize() is pure).
    fn normalizer_with(max_record_bytes: usize) -> (Normalizer, Registry) {
        let mut registry = Registry::default();
        let mut producer_registry = Registry::default();
        let kafka = KafkaConfig {
            max_record_bytes,
            ..KafkaConfig::default()
        };
        let producer = Producer::new(&kafka, "test", &mut producer_registry)
            .unwrap_or_else(|e| panic!("producer: {e}"));
        let normalizer = Normalizer::new(producer, &Config::default(), &mut registry);
        (normalizer, registry)
    }

    fn normalizer() -> (Normalizer, Registry) {
        normalizer_with(1_000_000)
    }

    fn inbound(payload: Vec<u8>) -> Inbound {
        Inbound {
            topic: topics::SCANS_RAW.to_owned(),
            partition: 2,
            offset: 41,
            key: Some(b"sf:SF1".to_vec()),
            payload,
            headers: Vec::new(),
        }
    }

    fn kdniao_raw(payload: &str) -> Vec<u8> {
        RawScan {
            ingest_id: "i-1".into(),
            provider: Provider::Kdniao as i32,
            carrier: "sf".into(),
            waybill: "SF1".into(),
            payload: payload.as_bytes().to_vec(),
            ..RawScan::default()
        }
        .encode_to_vec()
    }

    fn generic_raw(scans: &serde_json::Value, received_at: DateTime<Utc>) -> Vec<u8> {
        RawScan {
            ingest_id: "i-2".into(),
            provider: Provider::Generic as i32,
            carrier: "sf".into(),
            waybill: "SF1".into(),
            payload: scans.to_string().into_bytes(),
            received_at: Some(to_proto(received_at)),
            ..RawScan::default()
        }
        .encode_to_vec()
    }

    fn scan(status: &str, at: DateTime<Utc>, text: &str) -> serde_json::Value {
        serde_json::json!({"carrier": "sf", "waybill": "SF1", "status": status,
            "occurred_at": at.to_rfc3339(), "description": text})
    }

    fn metrics(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        text
    }

    fn header<'a>(letter: &'a OutRecord, name: &str) -> &'a str {
        letter.header(name).unwrap_or_default()
    }

    fn decoded(events: &[CanonicalEvent]) -> Vec<TrackingEvent> {
        events
            .iter()
            .map(|e| {
                TrackingEvent::decode(e.record.payload.as_slice())
                    .unwrap_or_else(|e| panic!("decode: {e}"))
            })
            .collect()
    }

    #[test]
    fn an_unknown_code_is_kept_with_reason_unknown_and_counted() {
        let (normalizer, registry) = normalizer();
        let record = inbound(kdniao_raw(
            r#"{"ShipperCode":"SF","LogisticCode":"SF1","State":"4","Traces":[
                {"AcceptTime":"2026-11-20 09:00:00","AcceptStation":"新异常","Location":"深圳市","Action":"499"}]}"#,
        ));
        let normalized = normalizer.normalize(&record);
        assert!(
            normalized.letters.is_empty(),
            "an unknown code must not be dead-lettered"
        );
        let records: Vec<&OutRecord> = normalized.events.iter().map(|e| &e.record).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].topic, records[0].key.as_str()),
            (topics::TRACKING_EVENTS, "sf:SF1")
        );
        let event = &decoded(&normalized.events)[0];
        assert_eq!(event.raw_code, "499");
        assert_eq!(event.raw_text, "新异常");
        assert_eq!(event.reason, Reason::Unknown as i32);
        // The coarse code (leading 4: problem) gives a safe status.
        assert_eq!(event.status, Status::Exception as i32);
        let text = metrics(&registry);
        assert!(
            text.contains(r#"unknown_codes_total{provider="kdniao"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"events_total{provider="kdniao"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn unparseable_and_undecodable_records_are_dead_lettered_unchanged_with_their_cause() {
        let (normalizer, registry) = normalizer();
        let cases = [
            (kdniao_raw("{\"Traces\": [oops"), "unparseable", "kdniao"),
            (b"\xff\xfenot a protobuf".to_vec(), "undecodable", "RawScan"),
            (
                RawScan {
                    provider: 99,
                    ..RawScan::default()
                }
                .encode_to_vec(),
                "unknown_provider",
                "99",
            ),
        ];
        for (payload, cause, detail) in cases {
            let record = inbound(payload.clone());
            let normalized = normalizer.normalize(&record);
            assert!(normalized.events.is_empty(), "{cause}");
            let [letter] = normalized.letters.as_slice() else {
                panic!("{cause}: expected one dead letter");
            };
            assert_eq!(letter.topic, topics::SCANS_DLQ);
            assert_eq!(letter.key, "sf:SF1");
            assert_eq!(letter.payload, payload, "{cause}: the original bytes");
            assert_eq!(header(letter, headers::CAUSE), cause);
            assert_eq!(header(letter, headers::STAGE), "normalize");
            assert!(
                header(letter, headers::DETAIL).contains(detail),
                "{}",
                header(letter, headers::DETAIL)
            );
            assert_eq!(header(letter, headers::SOURCE_TOPIC), topics::SCANS_RAW);
            assert_eq!(header(letter, headers::SOURCE_PARTITION), "2");
            assert_eq!(header(letter, headers::SOURCE_OFFSET), "41");
        }
        let text = metrics(&registry);
        for cause in ["unparseable", "undecodable", "unknown_provider"] {
            assert!(
                text.contains(&format!(
                    "dead_letters_total{{stage=\"normalize\",cause=\"{cause}\"}} 1"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn a_future_dated_scan_is_dead_lettered_and_the_other_scans_of_the_push_are_written() {
        let (normalizer, registry) = normalizer();
        let received = Utc::now() - TimeDelta::days(3);
        let push = serde_json::json!([
            scan("picked_up", received - TimeDelta::hours(2), "Picked up"),
            scan(
                "delivered",
                received + TimeDelta::hours(8),
                "Delivered (zone bug)"
            ),
            scan(
                "in_transit",
                received + TimeDelta::minutes(5),
                "Left hub (drift)"
            ),
        ]);
        let record = inbound(generic_raw(&push, received));
        let normalized = normalizer.normalize(&record);
        let statuses: Vec<i32> = decoded(&normalized.events)
            .iter()
            .map(|e| e.status)
            .collect();
        assert_eq!(
            statuses,
            [Status::PickedUp as i32, Status::InTransit as i32],
            "five minutes of drift is written; eight hours is not"
        );
        let [letter] = normalized.letters.as_slice() else {
            panic!("one letter expected, got {}", normalized.letters.len());
        };
        assert_eq!(header(letter, headers::CAUSE), "future_dated");
        assert_eq!(
            letter.payload, record.payload,
            "the whole input, for a replay"
        );
        let detail = header(letter, headers::DETAIL);
        assert!(
            detail.contains("1 of 3 scans") && detail.contains("28800s"),
            "{detail}"
        );
        assert!(
            metrics(&registry)
                .contains(r#"dead_letters_total{stage="normalize",cause="future_dated"} 1"#)
        );
    }

    #[test]
    fn an_event_over_the_record_limit_is_dead_lettered_and_free_text_is_capped() {
        let (normalizer, registry) = normalizer_with(1_500);
        let received = Utc::now();
        let long = "长".repeat(2_000);
        // Capped at 512 B per field, the location alone is 3 × 510 B: over 1 500.
        let mut big = scan("in_transit", received - TimeDelta::hours(1), &long);
        big["location"] = serde_json::json!({"text": long, "city": long, "region": long});
        let push = serde_json::json!([
            scan("picked_up", received - TimeDelta::hours(2), &long),
            big
        ]);
        let record = inbound(generic_raw(&push, received));
        let normalized = normalizer.normalize(&record);
        let events = decoded(&normalized.events);
        assert_eq!(events.len(), 1, "the small event is written");
        assert_eq!(events[0].raw_text.len(), 510, "cut on a char boundary");
        assert!(normalized.events[0].record.encoded_len() <= 1_500);
        let [letter] = normalized.letters.as_slice() else {
            panic!("one letter expected, got {}", normalized.letters.len());
        };
        assert_eq!(header(letter, headers::CAUSE), "output_too_large");
        assert!(
            header(letter, headers::DETAIL).contains("1 of 2 events"),
            "{}",
            header(letter, headers::DETAIL)
        );
        // The input is bigger than the limit too: the letter keeps only headers.
        assert_eq!(header(letter, headers::PAYLOAD_DROPPED), "true");
        let text = metrics(&registry);
        assert!(
            text.contains(r#"free_text_truncated_total{field="raw_text"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn kdniao_location_copied_into_two_fields_stays_bounded() {
        let (normalizer, _registry) = normalizer();
        let location = "深圳".repeat(1_000);
        let payload = format!(
            r#"{{"ShipperCode":"SF","LogisticCode":"SF1","State":"2","Traces":[
                {{"AcceptTime":"2026-11-20 09:00:00","AcceptStation":"到达","Location":"{location}"}}]}}"#
        );
        let normalized = normalizer.normalize(&inbound(kdniao_raw(&payload)));
        let events = decoded(&normalized.events);
        let location = events[0].location.clone().unwrap_or_default();
        assert_eq!((location.text.len(), location.city.len()), (510, 510));
        assert!(normalized.events[0].record.encoded_len() < 2_000);
    }

    #[test]
    fn prepare_skips_events_written_earlier_in_the_batch_only_when_asked() {
        let (normalizer, _registry) = normalizer();
        let normalizer = normalizer.remembering(100);
        let received = Utc::now();
        let push = serde_json::json!([scan("picked_up", received, "Picked up")]);
        let batch = [
            inbound(generic_raw(&push, received)),
            inbound(generic_raw(&push, received)),
        ];
        let live = normalizer
            .prepare(&batch, true)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((live.events, live.resent, live.letters), (1, 1, 0));
        let replay = normalizer
            .prepare(&batch, false)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((replay.events, replay.resent), (2, 0));
    }
}
