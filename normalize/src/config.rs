//! normalize configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use trackstream_carriers::ProviderSettings;
use trackstream_runtime::config::{AdminConfig, KafkaConfig};

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
    /// `15m`, `1h`); `0s` disables the check. Default 15 m.
    pub max_future_skew: Span,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            admin: AdminConfig::default(),
            providers: BTreeMap::new(),
            recent_events: 500_000,
            max_future_skew: Span(Duration::from_secs(15 * 60)),
        }
    }
}

/// A duration written with a unit, as the detector's config writes them:
/// `500ms`, `90s`, `15m`, `1h`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_span(&text)
            .map(Span)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `500ms`, `90s`, `15m`, `1h`, `2d` (`runtime::config::parse_duration_ms`;
/// a negative duration cannot be written: the grammar has no sign).
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let ms = trackstream_runtime::config::parse_duration_ms(text)?;
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| format!("duration {text:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_need_a_unit_and_the_skew_defaults_to_fifteen_minutes() {
        assert_eq!(parse_span("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_span(" 90s "), Ok(Duration::from_secs(90)));
        assert_eq!(parse_span("0s"), Ok(Duration::ZERO));
        assert!(parse_span("15").is_err_and(|e| e.contains("unit")));
        assert!(parse_span("m").is_err_and(|e| e.contains("no number")));
        assert!(parse_span("3w").is_err_and(|e| e.contains("unknown unit")));
        assert_eq!(
            Config::default().max_future_skew,
            Span(Duration::from_secs(900))
        );
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
        assert_eq!(config.max_future_skew, Span(Duration::from_secs(7_200)));
        let config =
            load("", &[("TRACKSTREAM__MAX_FUTURE_SKEW", "30m")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.max_future_skew, Span(Duration::from_secs(1_800)));
        assert!(load("max_future_skew = 5", &[]).is_err());
    }

    #[test]
    fn the_shipped_configs_parse() {
        for text in [
            include_str!("../../deploy/local/config/normalize.toml"),
            include_str!("../../deploy/docker/config/normalize.toml"),
        ] {
            let config = trackstream_runtime::config::load_from::<Config>(text, Vec::new())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.max_future_skew, Span(Duration::from_secs(900)));
        }
    }
}
