//! Quiet hours: when a non-urgent buyer message may be sent.
//!
//! Inside the window (in the buyer's own time zone) a non-urgent message is held
//! by the notifier and released when the window ends, plus a stable per-order
//! offset within `spread` so a morning's backlog does not reach the
//! gateway as one spike. Urgent milestones (configurable; by default out for
//! delivery and exception) are sent at any hour, because waiting would make them
//! useless: the courier comes today, or the buyer has to act now.

use std::collections::BTreeSet;

use chrono::{DateTime, Days, LocalResult, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use trackstream_proto::v1::Milestone;

use crate::config::QuietHoursConfig;
use crate::templates;

/// Why a quiet-hours configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuietHoursError {
    /// `start` or `end` is not `HH:MM`.
    #[error("quiet_hours.{0} {1:?} is not HH:MM")]
    Time(&'static str, String),
    /// An `urgent` entry is not a milestone name.
    #[error("quiet_hours.urgent: unknown milestone {0:?}")]
    Milestone(String),
}

/// Parsed quiet hours.
#[derive(Debug, Clone)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
    urgent: BTreeSet<i32>,
    spread_secs: u64,
}

impl QuietHours {
    /// Parses and validates the configuration (at startup, so a typo fails fast).
    pub fn from_config(config: &QuietHoursConfig) -> Result<Self, QuietHoursError> {
        let parse = |field: &'static str, text: &str| {
            NaiveTime::parse_from_str(text.trim(), "%H:%M")
                .map_err(|_| QuietHoursError::Time(field, text.to_owned()))
        };
        let urgent = config
            .urgent
            .iter()
            .map(|name| {
                templates::milestone_from_name(name)
                    .map(|m| m as i32)
                    .ok_or_else(|| QuietHoursError::Milestone(name.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(QuietHours {
            start: parse("start", &config.start)?,
            end: parse("end", &config.end)?,
            urgent,
            spread_secs: config.spread.as_secs(),
        })
    }

    /// Whether `milestone` is sent even inside quiet hours.
    pub fn is_urgent(&self, milestone: Milestone) -> bool {
        self.urgent.contains(&(milestone as i32))
    }

    /// When a message for `milestone` of `order_id`, ready at `now`, may be sent
    /// to a buyer in `zone`: `None` for "now", else the end of the quiet window
    /// plus the order's stable spread offset.
    pub fn release_at(
        &self,
        now: DateTime<Utc>,
        zone: Tz,
        milestone: Milestone,
        order_id: &str,
    ) -> Option<DateTime<Utc>> {
        if self.is_urgent(milestone) || self.start == self.end {
            return None;
        }
        let local = now.with_timezone(&zone);
        let t = local.time();
        let quiet = if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        };
        if !quiet {
            return None;
        }
        let date = if t < self.end {
            local.date_naive()
        } else {
            local.date_naive().checked_add_days(Days::new(1))?
        };
        let naive = date.and_time(self.end);
        let end = match zone.from_local_datetime(&naive) {
            LocalResult::Single(at) => at,
            LocalResult::Ambiguous(earliest, _) => earliest,
            // The end falls into a DST gap: the first instant after it.
            LocalResult::None => zone
                .from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()?,
        };
        let offset = if self.spread_secs == 0 {
            0
        } else {
            stable_hash(order_id) % self.spread_secs
        };
        let offset = i64::try_from(offset).unwrap_or(0);
        Some(end.with_timezone(&Utc) + chrono::Duration::seconds(offset))
    }
}

/// The buyer's zone: `name` when it is a valid IANA zone, else `default`.
pub fn zone(name: &str, default: Tz) -> Tz {
    name.trim().parse().unwrap_or(default)
}

/// FNV-1a: a hash that is the same on every instance and every release, for
/// placements that must not move (spread offsets, schedule shards).
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(start: &str, end: &str, spread_minutes: u64) -> QuietHours {
        QuietHours::from_config(&QuietHoursConfig {
            start: start.into(),
            end: end.into(),
            spread: std::time::Duration::from_secs(spread_minutes * 60),
            ..QuietHoursConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn night_in_the_buyers_zone_defers_to_that_mornings_end() {
        let q = hours("22:00", "08:00", 0);
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap_or(Tz::UTC);
        // 23:30 in Shanghai → 08:00 the next day there.
        assert_eq!(
            q.release_at(
                utc("2025-03-10T23:30:00+08:00"),
                shanghai,
                Milestone::Shipped,
                "O"
            ),
            Some(utc("2025-03-11T08:00:00+08:00"))
        );
        // 03:00 → 08:00 the same day.
        assert_eq!(
            q.release_at(
                utc("2025-03-11T03:00:00+08:00"),
                shanghai,
                Milestone::Delivered,
                "O"
            ),
            Some(utc("2025-03-11T08:00:00+08:00"))
        );
        // Daytime, and the end itself, are not quiet.
        for day in ["2025-03-11T08:00:00+08:00", "2025-03-11T21:59:59+08:00"] {
            assert_eq!(
                q.release_at(utc(day), shanghai, Milestone::Shipped, "O"),
                None
            );
        }
        // The same instant is daytime for a buyer in New York.
        let new_york: Tz = "America/New_York".parse().unwrap_or(Tz::UTC);
        assert_eq!(
            q.release_at(
                utc("2025-03-10T23:30:00+08:00"),
                new_york,
                Milestone::Shipped,
                "O"
            ),
            None
        );
    }

    #[test]
    fn urgent_milestones_ignore_quiet_hours_and_windows_need_not_wrap() {
        let q = hours("22:00", "08:00", 0);
        let at = utc("2025-03-10T23:30:00+00:00");
        assert_eq!(
            q.release_at(at, Tz::UTC, Milestone::OutForDelivery, "O"),
            None
        );
        assert_eq!(q.release_at(at, Tz::UTC, Milestone::Exception, "O"), None);
        let siesta = hours("13:00", "15:00", 0);
        assert_eq!(
            siesta.release_at(
                utc("2025-03-10T14:00:00Z"),
                Tz::UTC,
                Milestone::Shipped,
                "O"
            ),
            Some(utc("2025-03-10T15:00:00Z"))
        );
        assert_eq!(
            siesta.release_at(at, Tz::UTC, Milestone::Shipped, "O"),
            None
        );
    }

    #[test]
    fn the_spread_offset_is_stable_per_order_and_within_bounds() {
        let q = hours("22:00", "08:00", 30);
        let at = utc("2025-03-10T23:30:00Z");
        let end = utc("2025-03-11T08:00:00Z");
        for order in ["O-1", "O-2", "O-3", "another"] {
            let first = q.release_at(at, Tz::UTC, Milestone::Shipped, order);
            let again = q.release_at(
                at + chrono::Duration::hours(1),
                Tz::UTC,
                Milestone::Delivered,
                order,
            );
            assert_eq!(first, again, "{order}: same slot every time");
            let release = first.unwrap_or(end);
            assert!(release >= end && release < end + chrono::Duration::minutes(30));
        }
    }

    #[test]
    fn an_end_inside_a_dst_gap_moves_to_the_first_instant_after_it() {
        // New York springs forward 2025-03-09 02:00 → 03:00.
        let q = hours("23:00", "02:30", 0);
        let new_york: Tz = "America/New_York".parse().unwrap_or(Tz::UTC);
        assert_eq!(
            q.release_at(
                utc("2025-03-09T00:30:00-05:00"),
                new_york,
                Milestone::Shipped,
                "O"
            ),
            Some(utc("2025-03-09T03:30:00-04:00"))
        );
    }

    #[test]
    fn bad_configuration_is_rejected_with_its_field() {
        let bad = QuietHours::from_config(&QuietHoursConfig {
            start: "25:00".into(),
            ..QuietHoursConfig::default()
        });
        assert!(matches!(bad, Err(QuietHoursError::Time("start", _))));
        let bad = QuietHours::from_config(&QuietHoursConfig {
            urgent: vec!["teleported".into()],
            ..QuietHoursConfig::default()
        });
        assert!(matches!(bad, Err(QuietHoursError::Milestone(_))));
        assert_eq!(zone("Not/AZone", Tz::UTC), Tz::UTC);
        assert_eq!(zone("Asia/Tokyo", Tz::UTC), chrono_tz::Asia::Tokyo);
    }
}
