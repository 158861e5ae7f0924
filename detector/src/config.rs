//! detector configuration (TOML + `TRACKSTREAM__...` env overrides).

use serde::Deserialize;
use trackstream_runtime::config::{AdminConfig, KafkaConfig, RedisConfig};

use crate::rules::{Millis, RulesConfig};

/// Which clock fires deadlines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Wall clock (production).
    #[default]
    Wall,
    /// Per-partition event-time watermark: the latest `occurred_at` seen, minus
    /// `allowed_lateness`. Replaying a week of scans in seconds yields the same
    /// alerts as living through it.
    Event,
}

/// Timer loop settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerConfig {
    /// `wall` (default) or `event`.
    pub clock: ClockMode,
    /// How often owned partitions are scanned for due deadlines. Default 200 ms.
    pub tick: Millis,
    /// Event clock only: how far behind the watermark deadlines fire, to let
    /// slightly out-of-order scans arrive first. Default 0.
    pub allowed_lateness: Millis,
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
    pub grace: Millis,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            clock: ClockMode::Wall,
            tick: Millis(200),
            allowed_lateness: Millis(0),
            batch: 1000,
            grace: Millis(5_000),
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
}
