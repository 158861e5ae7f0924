use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use crate::Error;
use crate::config::KafkaConfig;

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: &'static str,
    /// Partitioning key.
    pub key: String,
    /// Encoded protobuf.
    pub payload: Vec<u8>,
    /// Headers (e.g. the dead-letter cause).
    pub headers: Vec<(&'static str, String)>,
}

impl OutRecord {
    /// The value of header `name`, if the record carries it (dead letters name
    /// their stage, cause and source in headers).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A record without headers.
    pub fn new(topic: &'static str, key: impl Into<String>, payload: Vec<u8>) -> Self {
        OutRecord {
            topic,
            key: key.into(),
            payload,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Bytes this record occupies in a produce request, counted the way the
    /// broker's `message.max.bytes` check sees it closely enough to decide
    /// before sending: key, value, headers, plus a fixed allowance for the
    /// record and batch framing.
    pub fn encoded_len(&self) -> usize {
        const FRAMING: usize = 128;
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 8)
            .sum();
        self.key.len() + self.payload.len() + headers + FRAMING
    }
}

/// Why records were not acknowledged, typed by what the caller should do.
///
/// - [`SendError::TooLarge`] and [`SendError::Rejected`] are **permanent**:
///   sending the same record again cannot succeed. ingest answers 413 / 4xx; a
///   consuming stage dead-letters the input record and moves on
///   ([`crate::dlq`]). Retrying them is what used to stall whole partitions.
/// - [`SendError::Unavailable`] is **retriable**: the broker did not answer in
///   time, or the client had to be rebuilt. ingest answers 503; a consuming stage
///   retries its batch with backoff.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// A record is over `kafka.max_record_bytes` (checked before anything of the
    /// call is sent), or the broker refused it as too large.
    #[error("record for {topic} is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Destination topic.
        topic: &'static str,
        /// The record's key (waybill or order key; never contact data).
        key: String,
        /// Its size as counted by [`OutRecord::encoded_len`] (0 when the broker
        /// refused it and the size is not known here).
        bytes: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The broker refused a record for a reason that retrying does not change
    /// (an invalid record, no authorization for the topic).
    #[error("kafka refused a record for {topic}: {source}")]
    Rejected {
        /// Destination topic.
        topic: &'static str,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Kafka did not acknowledge in time, is unreachable, or the client failed.
    #[error("kafka unavailable: {0}")]
    Unavailable(KafkaError),
}

impl SendError {
    /// True when sending the same records again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, SendError::Unavailable(_))
    }

    fn classify(topic: &'static str, key: &str, limit: usize, err: KafkaError) -> Self {
        match err.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge,
            ) => SendError::TooLarge {
                topic,
                key: key.to_owned(),
                bytes: 0,
                limit,
            },
            Some(
                RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic,
            ) => SendError::Rejected { topic, source: err },
            _ => SendError::Unavailable(err),
        }
    }
}

type TopicLabel = Vec<(&'static str, String)>;

/// The idempotent, `acks=all` producer. Cloning shares one librdkafka client.
///
/// If the broker rejects records with a non-transient error (e.g. it lost the
/// idempotent producer's sequence state) or librdkafka reports a fatal error, the
/// client is rebuilt so it gets a fresh producer id. Callers were told those
/// records failed, so nothing acknowledged is lost.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<RwLock<FutureProducer>>,
    config: Arc<ClientConfig>,
    last_reset: Arc<RwLock<Instant>>,
    produced: Family<TopicLabel, Counter>,
    failed: Family<TopicLabel, Counter>,
    too_large: Family<TopicLabel, Counter>,
    resets: Counter,
    max_record_bytes: usize,
}

impl Producer {
    /// Creates a producer. `message.timeout.ms` is `cfg.produce_timeout`: after it,
    /// an unacknowledged record fails, which ingest turns into a 503.
    pub fn new(cfg: &KafkaConfig, client_id: &str, registry: &mut Registry) -> Result<Self, Error> {
        let mut config = super::client_config(cfg, client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "none")
            .set(
                "message.timeout.ms",
                cfg.produce_timeout.as_millis().to_string(),
            )
            // Room for one maximal record plus request framing; records over
            // `max_record_bytes` never reach librdkafka (`send_all` checks first).
            .set(
                "message.max.bytes",
                cfg.max_record_bytes.saturating_add(64 * 1024).to_string(),
            );
        super::apply_extra(&mut config, cfg);
        let inner: FutureProducer = config.create()?;
        let produced = Family::<TopicLabel, Counter>::default();
        let failed = Family::<TopicLabel, Counter>::default();
        let resets = Counter::default();
        let too_large = Family::<TopicLabel, Counter>::default();
        registry.register(
            "kafka_records_too_large",
            "Records refused before sending because they exceed kafka.max_record_bytes, by topic",
            too_large.clone(),
        );
        registry.register(
            "kafka_producer_resets",
            "Producer clients rebuilt after non-transient delivery errors",
            resets.clone(),
        );
        registry.register(
            "kafka_produced_records",
            "Records acknowledged by Kafka, by topic",
            produced.clone(),
        );
        registry.register(
            "kafka_produce_failures",
            "Records Kafka did not acknowledge in time, by topic",
            failed.clone(),
        );
        Ok(Producer {
            inner: Arc::new(RwLock::new(inner)),
            config: Arc::new(config),
            last_reset: Arc::new(RwLock::new(Instant::now())),
            produced,
            failed,
            too_large,
            resets,
            max_record_bytes: cfg.max_record_bytes,
        })
    }

    /// The largest record this producer sends (`kafka.max_record_bytes`).
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Checks one record against `kafka.max_record_bytes` without sending it, so
    /// a stage can dead-letter exactly the input whose output is too large.
    pub fn check_size(&self, record: &OutRecord) -> Result<(), SendError> {
        let bytes = record.encoded_len();
        if bytes > self.max_record_bytes {
            self.too_large.get_or_create(&label(record.topic)).inc();
            return Err(SendError::TooLarge {
                topic: record.topic,
                key: record.key.clone(),
                bytes,
                limit: self.max_record_bytes,
            });
        }
        Ok(())
    }

    fn client(&self) -> Option<FutureProducer> {
        self.inner.read().ok().map(|p| p.clone())
    }

    /// Rebuilds the client after a non-transient failure (at most once a second):
    /// a broker that lost the idempotent producer's state rejects its records
    /// forever (librdkafka reports them as unknown broker errors, not fatal).
    fn maybe_reset(&self, err: &KafkaError, producer: &FutureProducer) {
        let transient = matches!(
            err,
            KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::QueueFull
            )
        );
        let fatal = producer.client().fatal_error();
        if transient && fatal.is_none() {
            return;
        }
        let Ok(mut last) = self.last_reset.write() else {
            return;
        };
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => {
                if let Ok(mut inner) = self.inner.write() {
                    *inner = fresh;
                }
                *last = Instant::now();
                self.resets.inc();
                tracing::warn!(%err, ?fatal, "producer rebuilt after a non-transient error");
            }
            Err(create_err) => tracing::error!(%create_err, "cannot rebuild producer"),
        }
    }

    /// Writes one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: OutRecord) -> Result<(), SendError> {
        self.send_all(vec![record]).await
    }

    /// Writes records (enqueued in order, so per-key order holds) and waits until
    /// every one is acknowledged. Fails if any is not.
    ///
    /// Every record is checked against `kafka.max_record_bytes` first: if one is
    /// over, nothing is sent and the error is [`SendError::TooLarge`]. A permanent
    /// refusal by the broker does not rebuild the client (the client is fine; the
    /// record is not).
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), SendError> {
        for record in &records {
            self.check_size(record)?;
        }
        let Some(producer) = self.client() else {
            return Err(SendError::Unavailable(KafkaError::Canceled));
        };
        match self.send_with(&producer, records).await {
            Ok(()) => Ok(()),
            Err((topic, key, err)) => {
                let err = SendError::classify(topic, &key, self.max_record_bytes, err);
                if let SendError::Unavailable(inner) = &err {
                    self.maybe_reset(inner, &producer);
                }
                Err(err)
            }
        }
    }

    async fn send_with(
        &self,
        producer: &FutureProducer,
        records: Vec<OutRecord>,
    ) -> Result<(), (&'static str, String, KafkaError)> {
        let mut pending = Vec::with_capacity(records.len());
        for record in &records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (name, value) in &record.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut future_record = FutureRecord::to(record.topic)
                .key(record.key.as_bytes())
                .payload(record.payload.as_slice())
                .headers(headers);
            let delivery = loop {
                match producer.send_result(future_record) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                        // Local queue full: let librdkafka drain, then retry.
                        future_record = rec;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((err, _)) => {
                        self.failed.get_or_create(&label(record.topic)).inc();
                        return Err((record.topic, record.key.clone(), err));
                    }
                }
            };
            pending.push((record.topic, record.key.as_str(), delivery));
        }
        let mut first_error = None;
        for (topic, key, delivery) in pending {
            let outcome = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((err, _))) => Err(err),
                Err(_canceled) => Err(KafkaError::Canceled),
            };
            match outcome {
                Ok(()) => {
                    self.produced.get_or_create(&label(topic)).inc();
                }
                Err(err) => {
                    self.failed.get_or_create(&label(topic)).inc();
                    first_error.get_or_insert((topic, key.to_owned(), err));
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits for queued records to be delivered, for shutdown.
    pub fn flush(&self, timeout: Duration) {
        let Some(producer) = self.client() else {
            return;
        };
        if let Err(err) = producer.flush(timeout) {
            tracing::warn!(%err, "producer flush did not complete");
        }
    }
}

fn label(topic: &'static str) -> TopicLabel {
    vec![("topic", topic.to_owned())]
}
