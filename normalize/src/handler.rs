//! The batch handler: raw items → canonical events or dead letters.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use trackstream_carriers::{NormalizeError, ProviderSettings};
use trackstream_proto::v1::{Provider, RawScan, Reason};
use trackstream_proto::{keys, topics};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord, Producer};

use crate::recent::RecentEvents;

type Labels = Vec<(&'static str, String)>;

/// Normalizes batches of `scans.raw` records.
pub struct Normalizer {
    carriers: trackstream_carriers::Registry,
    providers: BTreeMap<String, ProviderSettings>,
    producer: Producer,
    events: Family<Labels, Counter>,
    unknown_codes: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
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

/// What one raw record became.
pub enum Normalized {
    /// Canonical events for `tracking.events`.
    Events(Vec<CanonicalEvent>),
    /// A dead letter for `scans.dlq`, with the cause.
    DeadLetter(OutRecord),
}

impl Normalizer {
    /// A normalizer writing through `producer`.
    pub fn new(
        producer: Producer,
        providers: BTreeMap<String, ProviderSettings>,
        registry: &mut Registry,
    ) -> Self {
        let normalizer = Normalizer {
            carriers: trackstream_carriers::Registry::builtin(),
            providers,
            producer,
            events: Family::default(),
            unknown_codes: Family::default(),
            dead_letters: Family::default(),
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
            "dead_letters",
            "Raw records sent to scans.dlq, by cause",
            normalizer.dead_letters.clone(),
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

    /// Normalizes one record (pure apart from metrics; used by the re-normalize
    /// command too).
    pub fn normalize(&self, record: &Inbound) -> Normalized {
        let raw = match RawScan::decode(record.payload.as_slice()) {
            Ok(raw) => raw,
            Err(err) => {
                return self.dead_letter(record, "undecodable", &format!("not a RawScan: {err}"));
            }
        };
        let provider = Provider::try_from(raw.provider).unwrap_or(Provider::Unspecified);
        let span = tracing::info_span!("normalize", waybill = %raw.waybill, carrier = %raw.carrier, ingest_id = %raw.ingest_id);
        let _entered = span.enter();
        let Some(adapter) = self.carriers.by_provider(provider) else {
            let err = NormalizeError::UnknownProvider(raw.provider);
            return self.dead_letter(record, "unknown_provider", &err.to_string());
        };
        let default_settings = ProviderSettings::default();
        let settings = self
            .providers
            .get(adapter.route())
            .unwrap_or(&default_settings);
        match adapter.normalize(&raw, settings) {
            Ok(events) => {
                let route = adapter.route();
                let records = events
                    .into_iter()
                    .map(|event| {
                        if event.reason == Reason::Unknown as i32 {
                            self.unknown_codes.get_or_create(&vec![("provider", route.to_owned())]).inc();
                            tracing::warn!(provider = route, raw_code = %event.raw_code, "unknown provider code kept with reason UNKNOWN");
                        }
                        self.events.get_or_create(&vec![("provider", route.to_owned())]).inc();
                        CanonicalEvent {
                            record: OutRecord::new(
                                topics::TRACKING_EVENTS,
                                keys::waybill_key(&event.carrier, &event.waybill),
                                event.encode_to_vec(),
                            ),
                            event_id: event.event_id,
                        }
                    })
                    .collect();
                Normalized::Events(records)
            }
            Err(err) => self.dead_letter(record, "unparseable", &err.to_string()),
        }
    }

    fn dead_letter(&self, record: &Inbound, cause: &'static str, detail: &str) -> Normalized {
        self.dead_letters
            .get_or_create(&vec![("cause", cause.to_owned())])
            .inc();
        tracing::warn!(
            cause,
            detail,
            partition = record.partition,
            offset = record.offset,
            "raw record dead-lettered"
        );
        Normalized::DeadLetter(
            OutRecord::new(topics::SCANS_DLQ, record.key_str(), record.payload.clone())
                .with_header("dlq.cause", cause)
                .with_header("dlq.detail", detail)
                .with_header("dlq.source.topic", record.topic.clone())
                .with_header("dlq.source.partition", record.partition.to_string())
                .with_header("dlq.source.offset", record.offset.to_string()),
        )
    }
}

impl BatchHandler for Normalizer {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let mut out = Vec::with_capacity(batch.len() * 4);
        let mut written: HashSet<String> = HashSet::new();
        let mut resent = 0u64;
        {
            let recent = self
                .recent
                .lock()
                .map_err(|_| HandlerError("recent-events lock poisoned".into()))?;
            for record in batch {
                match self.normalize(record) {
                    Normalized::Events(events) => {
                        for event in events {
                            if recent.contains(&event.event_id) || written.contains(&event.event_id)
                            {
                                resent += 1;
                                continue;
                            }
                            written.insert(event.event_id);
                            out.push(event.record);
                        }
                    }
                    Normalized::DeadLetter(letter) => out.push(letter),
                }
            }
        }
        self.producer
            .send_all(out)
            .await
            .map_err(|err| HandlerError(format!("writing events: {err}")))?;
        // Only what the broker acknowledged is remembered: a failed batch is
        // retried in full.
        if let Ok(mut recent) = self.recent.lock() {
            for event_id in &written {
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
    use trackstream_proto::v1::{Status, TrackingEvent};
    use trackstream_runtime::config::KafkaConfig;

    /// A normalizer whose producer is never used (normalize() is pure).
    fn normalizer() -> (Normalizer, Registry) {
        let mut registry = Registry::default();
        let mut producer_registry = Registry::default();
        let producer = Producer::new(&KafkaConfig::default(), "test", &mut producer_registry)
            .unwrap_or_else(|e| panic!("producer: {e}"));
        let normalizer = Normalizer::new(producer, BTreeMap::new(), &mut registry);
        (normalizer, registry)
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

    fn metrics(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        text
    }

    #[test]
    fn an_unknown_code_is_kept_with_reason_unknown_and_counted() {
        let (normalizer, registry) = normalizer();
        let record = inbound(kdniao_raw(
            r#"{"ShipperCode":"SF","LogisticCode":"SF1","State":"4","Traces":[
                {"AcceptTime":"2026-11-20 09:00:00","AcceptStation":"新异常","Location":"深圳市","Action":"499"}]}"#,
        ));
        let Normalized::Events(events) = normalizer.normalize(&record) else {
            panic!("an unknown code must not be dead-lettered");
        };
        let records: Vec<OutRecord> = events.into_iter().map(|e| e.record).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (records[0].topic, records[0].key.as_str()),
            (topics::TRACKING_EVENTS, "sf:SF1")
        );
        let event = TrackingEvent::decode(records[0].payload.as_slice())
            .unwrap_or_else(|e| panic!("decode: {e}"));
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
            let Normalized::DeadLetter(letter) = normalizer.normalize(&record) else {
                panic!("{cause}: expected a dead letter");
            };
            assert_eq!(letter.topic, topics::SCANS_DLQ);
            assert_eq!(letter.key, "sf:SF1");
            assert_eq!(letter.payload, payload, "{cause}: the original bytes");
            let header = |name: &str| {
                letter
                    .headers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert_eq!(header("dlq.cause"), cause);
            assert!(
                header("dlq.detail").contains(detail),
                "{}",
                header("dlq.detail")
            );
            assert_eq!(header("dlq.source.topic"), topics::SCANS_RAW);
            assert_eq!(header("dlq.source.partition"), "2");
            assert_eq!(header("dlq.source.offset"), "41");
        }
        let text = metrics(&registry);
        for cause in ["unparseable", "undecodable", "unknown_provider"] {
            assert!(
                text.contains(&format!("dead_letters_total{{cause=\"{cause}\"}} 1")),
                "{text}"
            );
        }
    }
}
