//! normalize configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use trackstream_carriers::ProviderSettings;
use trackstream_runtime::config::{AdminConfig, KafkaConfig, duration};

/// Everything normalize reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka; `group_id` defaults to `trackstream-normalize`. Events over
    /// `kafka.max_record_bytes` are dead-lettered (`output_too_large`).
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
    /// How far after its push's `received_at` a scan's `occurred_at` may lie
    /// before the scan is dead-lettered (cause `future_dated`) instead of being
    /// written: a scan from the future would make every later real scan `late`
    /// downstream (see [`crate::skew`]). Handheld scanners drift by minutes; a
    /// carrier's zone bug is 30 minutes or whole hours, so the default catches
    /// those while the detector absorbs small drift. Written with a unit (`90s`,
    /// `15m`, `1h`); `0s` disables the check. Default `15m`.
    #[serde(with = "duration")]
    pub max_future_skew: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            admin: AdminConfig::default(),
            providers: BTreeMap::new(),
            recent_events: 500_000,
            max_future_skew: Duration::from_secs(15 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_defaults_to_fifteen_minutes() {
        assert_eq!(Config::default().max_future_skew, Duration::from_secs(900));
    }

    #[test]
    fn the_skew_is_read_from_toml() {
        let load = |text: &str, env: &[(&str, &str)]| {
            trackstream_runtime::config::load_from::<Config>(
                text,
                env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
        };
        let config = load("max_future_skew = \"2h\"", &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.max_future_skew, Duration::from_secs(7_200));
        let config =
            load("", &[("TRACKSTREAM__MAX_FUTURE_SKEW", "30m")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.max_future_skew, Duration::from_secs(1_800));
        assert!(load("max_future_skew = 5", &[]).is_err());
        assert!(
            load("max_future_skew = \"15\"", &[]).is_err(),
            "a unit is required"
        );
    }

    #[test]
    fn the_shipped_configs_parse() {
        for text in [
            include_str!("../../deploy/local/config/normalize.toml"),
            include_str!("../../deploy/docker/config/normalize.toml"),
        ] {
            let config = trackstream_runtime::config::load_from::<Config>(text, Vec::new())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.max_future_skew, Duration::from_secs(900));
        }
    }
}
