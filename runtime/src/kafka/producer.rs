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
    resets: Counter,
}

impl Producer {
    /// Creates a producer. `message.timeout.ms` is `cfg.produce_timeout_ms`: after it,
    /// an unacknowledged record fails, which ingest turns into a 503.
    pub fn new(cfg: &KafkaConfig, client_id: &str, registry: &mut Registry) -> Result<Self, Error> {
        let mut config = super::client_config(cfg, client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "none")
            .set("message.timeout.ms", cfg.produce_timeout_ms.to_string());
        super::apply_extra(&mut config, cfg);
        let inner: FutureProducer = config.create()?;
        let produced = Family::<TopicLabel, Counter>::default();
        let failed = Family::<TopicLabel, Counter>::default();
        let resets = Counter::default();
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
            resets,
        })
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
    pub async fn send(&self, record: OutRecord) -> Result<(), KafkaError> {
        self.send_all(vec![record]).await
    }

    /// Writes records (enqueued in order, so per-key order holds) and waits until
    /// every one is acknowledged. Fails if any is not.
    pub async fn send_all(&self, records: Vec<OutRecord>) -> Result<(), KafkaError> {
        let Some(producer) = self.client() else {
            return Err(KafkaError::Canceled);
        };
        let result = self.send_with(&producer, records).await;
        if let Err(err) = &result {
            self.maybe_reset(err, &producer);
        }
        result
    }

    async fn send_with(
        &self,
        producer: &FutureProducer,
        records: Vec<OutRecord>,
    ) -> Result<(), KafkaError> {
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
                        return Err(err);
                    }
                }
            };
            pending.push((record.topic, delivery));
        }
        let mut first_error = None;
        for (topic, delivery) in pending {
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
                    first_error.get_or_insert(err);
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
