//! Kafka: the idempotent producer every service writes with, and the at-least-once
//! consumer loop every consuming service runs.
//!
//! The delivery contract (DESIGN.md): a producer call returns only when the broker
//! acknowledged the record (`acks=all`, idempotence on); a consumer stores a
//! record's offset only after the handler's effects for its whole batch are
//! acknowledged, so a crash replays, never skips.

pub mod admin;
mod consumer;
pub mod partition;
mod producer;

pub use consumer::{
    Assignment, BatchHandler, ConsumerLoop, HandlerError, Inbound, Progress, StartAt,
};
pub use producer::{OutRecord, Producer, SendError};
pub use rdkafka::error::KafkaError;

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Base librdkafka properties for any client of `cfg`.
pub(crate) fn client_config(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &cfg.brokers)
        .set("client.id", client_id)
        // Same partitioner as the Java client, so keys land on the same partition
        // whichever client produced them (co-partitioning depends on it).
        .set("partitioner", "murmur2_random");
    config
}

/// Applies the user's extra properties last, so they can override anything.
pub(crate) fn apply_extra(config: &mut ClientConfig, cfg: &KafkaConfig) {
    for (key, value) in &cfg.extra {
        config.set(key, value);
    }
}
