//! ingest configuration (TOML + `TRACKSTREAM__...` env overrides; see
//! `trackstream_runtime::config`).

use std::collections::BTreeMap;

use serde::Deserialize;
use trackstream_carriers::ProviderSettings;
use trackstream_runtime::config::{AdminConfig, KafkaConfig};
use trackstream_runtime::merchants::MerchantConfig;

/// Everything ingest reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public HTTP API.
    pub http: HttpConfig,
    /// Kafka connection; `produce_timeout_ms` bounds how long a webhook waits
    /// for Kafka before answering 503.
    pub kafka: KafkaConfig,
    /// `/healthz` + `/metrics` listener and logging.
    pub admin: AdminConfig,
    /// Per-provider secrets and zones, keyed by route (`kdniao`, `generic`, ...).
    /// A provider without an entry rejects every push (no secret, no trust).
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Merchants allowed to register shipments, with their bearer tokens.
    pub merchants: Vec<MerchantConfig>,
}

/// The public HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Largest accepted request body; larger ones get 413. Default 1 MiB (Kdniao
    /// batches of hundreds of waybills stay well under it).
    pub body_limit_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 1024 * 1024,
        }
    }
}
