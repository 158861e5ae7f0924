//! detector configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::time::Duration;

use serde::Deserialize;
use trackstream_runtime::config::{AdminConfig, KafkaConfig, RedisConfig, duration};

use crate::rules::RulesConfig;

/// Which clock fires deadlines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Wall clock (production).
    #[default]
    Wall,
    /// Per-partition event-time watermark: the latest `occurred_at` seen, minus
    /// `allowed_lateness` and 1 ms ([`event_clock`]). Replaying a week of
    /// scans in seconds yields the same alerts as living through it.
    Event,
}

/// Timer loop settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerConfig {
    /// `wall` (default) or `event`.
    pub clock: ClockMode,
    /// How often owned partitions are scanned for due deadlines (at least every
    /// 1 ms). Default `200ms`.
    #[serde(with = "duration")]
    pub tick: Duration,
    /// Event clock only: how far behind the watermark deadlines fire, to let
    /// slightly out-of-order scans arrive first. Default `0s`.
    #[serde(with = "duration")]
    pub allowed_lateness: Duration,
    /// Max deadlines fired per partition per tick. Default 1000.
    pub batch: usize,
    /// Wall clock only: after a waybill's inputs are applied, a deadline that
    /// no received scan follows waits at least this long before it fires.
    /// Normalize produces a carrier snapshot one record per scan, so when a
    /// snapshot is pushed late the detector can read its first, old scan,
    /// find the deadline computed from it already past, and — caught up for a
    /// moment — fire it just before the next scan resolves it (a false
    /// OPENED + RESOLVED pair). The grace lets the rest of the snapshot
    /// arrive. Default 5 s; `0s` disables. Ignored by the event clock, whose
    /// deadlines depend only on the scans (replays stay deterministic).
    #[serde(with = "duration")]
    pub grace: Duration,
}

/// The event clock of a partition whose newest scan is at `watermark` (ms):
/// deadlines at or before it fire and scans at or before it fold. It is one
/// millisecond short of `watermark − allowed_lateness` because a scan exactly
/// `allowed_lateness` behind the newest may still arrive, and it must fold in
/// the canonical order (time, progress rank, id) with any scan of the same
/// instant — not after one merely because it came later (with lateness 0, a
/// second same-instant scan arriving in the next batch folded after the first,
/// and the alerts depended on which came first).
pub fn event_clock(watermark: i64, allowed_lateness: Duration) -> i64 {
    watermark
        .saturating_sub(duration::millis(allowed_lateness))
        .saturating_sub(1)
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            clock: ClockMode::Wall,
            tick: Duration::from_millis(200),
            allowed_lateness: Duration::ZERO,
            batch: 1000,
            grace: Duration::from_secs(5),
        }
    }
}

/// How long a parcel's Redis data lives (see [`crate::lifecycle`]).
///
/// Expiries are absolute times computed from the **wall clock** at each commit
/// (`PEXPIREAT now + retention`), never from event time: replaying old scans
/// with `clock = "event"` refreshes what it writes to "now + retention" and so
/// cannot make fresh data expire.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long a parcel's state, history and ownership claim live after the
    /// last change once it reached a terminal status (delivered, returned,
    /// ...). A scan of the same waybill number after that is a new parcel.
    /// Default `30d`.
    #[serde(with = "duration")]
    pub after_terminal: Duration,
    /// How long a parcel that never ends lives after its last change (a lost
    /// parcel, a registration never scanned). Default `120d`.
    #[serde(with = "duration")]
    pub after_silence: Duration,
    /// How long an order's update log (`runtime::order_log`: sequence, ids,
    /// updates, merchant) lives after its last update; never less than the
    /// parcel retention of the update that refreshed it, so `WatchOrder` can
    /// replay everything the parcel still has. Default `120d`.
    #[serde(with = "duration")]
    pub order_log: Duration,
    /// Moves the clock expiries are computed from this far into the past.
    /// For tests (see keys expire without waiting) and for an operator who
    /// must shed old data at once; nothing else reads it. Default `0s`.
    #[serde(with = "duration")]
    pub backdate: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        RetentionConfig {
            after_terminal: Duration::from_secs(30 * DAY),
            after_silence: Duration::from_secs(120 * DAY),
            order_log: Duration::from_secs(120 * DAY),
            backdate: Duration::ZERO,
        }
    }
}

/// Everything the detector reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka; `group_id` defaults to `trackstream-detector`.
    pub kafka: KafkaConfig,
    /// Redis (standalone or cluster).
    pub redis: RedisConfig,
    /// `/healthz` + `/metrics` listener and logging.
    pub admin: AdminConfig,
    /// Detection rules and thresholds.
    pub rules: RulesConfig,
    /// Timer firing.
    pub timers: TimerConfig,
    /// Data lifecycle: when a parcel's keys expire.
    pub retention: RetentionConfig,
    /// Delivery predictions on updates and the `promise_at_risk` quantile.
    pub forecast: trackstream_lanes::forecast::ForecastConfig,
    /// The lane statistics consumer this process also runs (consumer group
    /// `<group>-lanes` over `tracking.updates`).
    pub lanes: trackstream_lanes::stream::StatsConfig,
    /// The incident detector this process also runs (consumer group
    /// `<group>-incidents` over `tracking.alerts`, `tracking.updates` and
    /// `incidents.declared`).
    pub incidents: trackstream_incidents::IncidentsConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configs_load_with_the_documented_defaults() {
        for text in [
            include_str!("../../deploy/local/config/detector.toml"),
            include_str!("../../deploy/docker/config/detector.toml"),
        ] {
            let config: Config = trackstream_runtime::config::load_from(text, Vec::new())
                .unwrap_or_else(|e| panic!("{e}"));
            let (timers, defaults) = (&config.timers, TimerConfig::default());
            assert_eq!(timers.tick, Duration::from_millis(200));
            assert_eq!((timers.tick, timers.grace), (defaults.tick, defaults.grace));
            let retention = &config.retention;
            assert_eq!(retention.after_terminal, Duration::from_secs(30 * 86_400));
            assert_eq!(
                retention.after_silence,
                RetentionConfig::default().after_silence
            );
            assert_eq!(retention.order_log, RetentionConfig::default().order_log);
            // The product defaults written out, plus an example override.
            let mut expected = RulesConfig::default();
            let hours = |h: &[u64]| h.iter().map(|h| Duration::from_secs(h * 3_600)).collect();
            expected.stalled_in_transit.overrides = vec![crate::rules::Override {
                carrier: Some("sf".into()),
                service_level: Some("express".into()),
                tiers: hours(&[12, 24, 36]),
            }];
            expected.promise_at_risk.severities = vec![trackstream_proto::v1::Severity::Warning];
            assert_eq!(config.rules, expected);
            assert_eq!(
                config.forecast,
                trackstream_lanes::forecast::ForecastConfig::default()
            );
            assert_eq!(
                config.lanes,
                trackstream_lanes::stream::StatsConfig::default()
            );
            assert_eq!(
                config.incidents,
                trackstream_incidents::IncidentsConfig::default()
            );
        }
    }

    #[test]
    fn old_keys_fail_naming_the_new_key() {
        let err = trackstream_runtime::config::load_from::<Config>(
            "[kafka]\nstatistics_interval_ms = 1000\n",
            Vec::new(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("use `kafka.statistics_interval = \"1s\"`"),
            "{err}"
        );
    }
}
