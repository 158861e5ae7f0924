//! The incident detector's settings, with their documented defaults.

use std::time::Duration;

use serde::Deserialize;

/// `[incidents]` in the detector's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentsConfig {
    /// Off switch (default on).
    pub enabled: bool,
    /// Absolute floor: an incident never opens with fewer stuck parcels at the
    /// place (default 20). One stalled parcel is the parcel's problem; twenty
    /// at one hub at once are the hub's.
    pub floor: u32,
    /// Least share of the place's active parcels that must be stuck (default
    /// 0.05).
    pub min_share: f64,
    /// How far above the place's own trailing baseline the count and the share
    /// must be (default 3: three times the stalls a normal day opens there, and
    /// three times the normal share).
    pub baseline_factor: f64,
    /// Full days before the current one the baseline averages (default 7).
    pub baseline_days: i64,
    /// A parcel is active at a place when its newest scan there is at most this
    /// old (event time; default `72h`: longer than every stall threshold, so a
    /// stalled parcel still counts among the place's active ones).
    #[serde(with = "trackstream_runtime::config::duration")]
    pub active_window: Duration,
    /// A stuck parcel stops counting towards a new incident after this long
    /// (event time; default `7d`): a parcel lost for a week is not part of
    /// today's closure.
    #[serde(with = "trackstream_runtime::config::duration")]
    pub stale_after: Duration,
    /// Escalation tiers, as multiples of the count the incident opened at
    /// (default `[2.0, 4.0]`).
    pub escalate_at: Vec<f64>,
    /// The incident resolves once this share of its parcels moved again
    /// (default 0.75: "most").
    pub resolve_share: f64,
    /// At most this many parcels listed in one merchant's record (default
    /// 2 000; `affected` always has the full count).
    pub max_parcels_per_record: usize,
    /// How often records whose publishing was interrupted (a crash between the
    /// Redis write and the broker's acknowledgement) are published again
    /// (default `5s`).
    #[serde(with = "trackstream_runtime::config::duration")]
    pub republish_interval: Duration,
    /// How long a place's incident data lives in Redis after its last change
    /// (default `14d`).
    #[serde(with = "trackstream_runtime::config::duration")]
    pub keep: Duration,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            enabled: true,
            floor: 20,
            min_share: 0.05,
            baseline_factor: 3.0,
            baseline_days: 7,
            active_window: Duration::from_secs(72 * 3600),
            stale_after: Duration::from_secs(7 * 86_400),
            escalate_at: vec![2.0, 4.0],
            resolve_share: 0.75,
            max_parcels_per_record: 2_000,
            republish_interval: Duration::from_secs(5),
            keep: Duration::from_secs(14 * 86_400),
        }
    }
}

impl IncidentsConfig {
    /// Rejects settings that would make the detector meaningless.
    pub fn validate(&self) -> Result<(), String> {
        if self.floor < 2 {
            return Err(
                "incidents.floor must be at least 2 (one stuck parcel is not an incident)".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.min_share) {
            return Err("incidents.min_share must be within 0..=1".into());
        }
        if !(self.resolve_share > 0.0 && self.resolve_share <= 1.0) {
            return Err("incidents.resolve_share must be within (0, 1]".into());
        }
        if self.baseline_factor < 1.0 || !(1..=60).contains(&self.baseline_days) {
            return Err("incidents.baseline_factor must be ≥ 1 and baseline_days 1..=60".into());
        }
        if self.escalate_at.windows(2).any(|w| w[0] >= w[1])
            || self.escalate_at.iter().any(|m| *m <= 1.0)
        {
            return Err("incidents.escalate_at must be increasing multiples above 1".into());
        }
        Ok(())
    }

    pub(crate) fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}
