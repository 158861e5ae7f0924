//! notifier configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::collections::BTreeMap;

use serde::Deserialize;
use trackstream_runtime::config::{AdminConfig, KafkaConfig, RedisConfig};
use trackstream_runtime::merchants::MerchantConfig;

/// Everything the notifier reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka; `group_id` (default `trackstream-notifier`) is the group that sends
    /// buyer messages once per group. Live fan-out uses a per-instance group.
    pub kafka: KafkaConfig,
    /// Redis (order history written by the detector, message dedup).
    pub redis: RedisConfig,
    /// `/healthz` + `/metrics` listener and logging.
    pub admin: AdminConfig,
    /// The gRPC API.
    pub grpc: GrpcConfig,
    /// Merchants and their bearer tokens (every gRPC call is scoped to one).
    pub merchants: Vec<MerchantConfig>,
    /// Buyer messages.
    pub messages: MessagesConfig,
}

/// gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address. Default `127.0.0.1:50051`.
    pub listen: String,
    /// Updates buffered per watcher before it is cut off with a resume point.
    /// Default 256.
    pub watch_buffer: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: "127.0.0.1:50051".into(),
            watch_buffer: 256,
        }
    }
}

/// One template: title and body with `{placeholders}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Message title.
    pub title: String,
    /// Message body.
    pub body: String,
}

/// Buyer message settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesConfig {
    /// Locale when the shipment has none. Default `zh-CN`.
    pub default_locale: String,
    /// Per-merchant overrides: merchant id → locale → milestone name → template.
    pub overrides: BTreeMap<String, BTreeMap<String, BTreeMap<String, Template>>>,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            default_locale: "zh-CN".into(),
            overrides: BTreeMap::new(),
        }
    }
}
