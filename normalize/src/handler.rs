//! The batch handler: raw items → canonical events or dead letters.

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use trackstream_carriers::{NormalizeError, ProviderSettings};
use trackstream_proto::v1::{Provider, RawScan, Reason};
use trackstream_proto::{keys, topics};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord, Producer};

type Labels = Vec<(&'static str, String)>;

/// Normalizes batches of `scans.raw` records.
pub struct Normalizer {
    carriers: trackstream_carriers::Registry,
    providers: BTreeMap<String, ProviderSettings>,
    producer: Producer,
    events: Family<Labels, Counter>,
    unknown_codes: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
}

/// What one raw record became.
pub enum Normalized {
    /// Canonical events for `tracking.events`.
    Events(Vec<OutRecord>),
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
        };
        registry.register(
            "events",
            "Canonical events written, by provider",
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
        normalizer
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
                        OutRecord::new(
                            topics::TRACKING_EVENTS,
                            keys::waybill_key(&event.carrier, &event.waybill),
                            event.encode_to_vec(),
                        )
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
        for record in batch {
            match self.normalize(record) {
                Normalized::Events(events) => out.extend(events),
                Normalized::DeadLetter(letter) => out.push(letter),
            }
        }
        self.producer
            .send_all(out)
            .await
            .map_err(|err| HandlerError(format!("writing events: {err}")))
    }
}
