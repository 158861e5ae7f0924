//! normalize configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::collections::BTreeMap;

use serde::Deserialize;
use trackstream_carriers::ProviderSettings;
use trackstream_runtime::config::{AdminConfig, KafkaConfig};

/// Everything normalize reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka; `group_id` defaults to `trackstream-normalize`.
    pub kafka: KafkaConfig,
    /// `/healthz` + `/metrics` listener and logging.
    pub admin: AdminConfig,
    /// Per-provider settings; normalize uses `time_zone` (zone of zone-less times).
    /// Providers without an entry use their built-in defaults.
    pub providers: BTreeMap<String, ProviderSettings>,
    /// How many written event ids to remember per generation (two generations
    /// are kept) so resent snapshots are not written again; 0 disables. See
    /// [`crate::recent`]. Default 500 000.
    pub recent_events: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            admin: AdminConfig::default(),
            providers: BTreeMap::new(),
            recent_events: 500_000,
        }
    }
}
