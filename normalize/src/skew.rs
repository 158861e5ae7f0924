//! Time sanity: a scan dated too far after its push was received is not
//! written.
//!
//! A scan cannot happen after it was reported. One that claims to (a carrier's
//! clock or zone bug, a local time read in the wrong zone, or a forged push)
//! would be the newest scan the detector ever saw for its parcel: every real
//! scan after it would be folded as `late` and never move the parcel or message
//! the buyer, and a future "delivered" would be announced at once. So a scan
//! whose `occurred_at` lies more than `max_future_skew` after its record's
//! `received_at` is dead-lettered with cause `future_dated`, while the other
//! scans of the same push are written. Dead-lettering rather than clamping keeps
//! the event stream true: a clamped time would be a guess, and it would change
//! the event id. Once the cause is fixed (e.g. `providers.<route>.time_zone`),
//! a replay (`docs/REPLAY.md`) re-normalizes the record.
//!
//! The reference is `received_at` (set by ingest when the push arrived), so a
//! replay judges a record exactly as the live service did; a record without one
//! is judged against the wall clock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use trackstream_proto::time::from_proto;
use trackstream_proto::v1::TrackingEvent;

/// How far in the future an event is, when that is more than the allowed skew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutureDated {
    /// The event's time.
    pub occurred_at: DateTime<Utc>,
    /// What it was judged against (`received_at`, else the wall clock).
    pub reference: DateTime<Utc>,
}

impl FutureDated {
    /// `occurred_at - reference`.
    pub fn ahead(&self) -> TimeDelta {
        self.occurred_at - self.reference
    }
}

/// The allowed skew; zero disables the check.
#[derive(Debug, Clone, Copy)]
pub struct SkewCheck {
    max: Option<TimeDelta>,
}

impl SkewCheck {
    /// A check allowing `max` (`Duration::ZERO` disables it).
    pub fn new(max: Duration) -> Self {
        SkewCheck {
            max: (!max.is_zero()).then(|| TimeDelta::from_std(max).unwrap_or(TimeDelta::MAX)),
        }
    }

    /// `Err` when `event` is dated more than the skew after its reference time.
    pub fn check(&self, event: &TrackingEvent, now: DateTime<Utc>) -> Result<(), FutureDated> {
        let Some(max) = self.max else {
            return Ok(());
        };
        let Some(occurred_at) = event.occurred_at.as_ref().and_then(from_proto) else {
            return Ok(());
        };
        let reference = event
            .received_at
            .as_ref()
            .and_then(from_proto)
            .unwrap_or(now);
        if occurred_at.signed_duration_since(reference) > max {
            return Err(FutureDated {
                occurred_at,
                reference,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackstream_proto::time::to_proto;

    fn event(occurred_at: DateTime<Utc>, received_at: Option<DateTime<Utc>>) -> TrackingEvent {
        TrackingEvent {
            occurred_at: Some(to_proto(occurred_at)),
            received_at: received_at.map(to_proto),
            ..TrackingEvent::default()
        }
    }

    #[test]
    fn only_scans_beyond_the_skew_after_received_at_are_future_dated() {
        let received = Utc::now() - TimeDelta::days(10);
        let check = SkewCheck::new(Duration::from_secs(900));
        let now = Utc::now();
        // Old scans and small drift pass; the judgement is against received_at,
        // not the wall clock (a replay ten days later judges the same).
        assert!(
            check
                .check(&event(received - TimeDelta::hours(5), Some(received)), now)
                .is_ok()
        );
        assert!(
            check
                .check(
                    &event(received + TimeDelta::minutes(15), Some(received)),
                    now
                )
                .is_ok()
        );
        let eight_hours = check.check(&event(received + TimeDelta::hours(8), Some(received)), now);
        assert_eq!(eight_hours.map_err(|f| f.ahead()), Err(TimeDelta::hours(8)));
        // Without received_at, the wall clock is the reference.
        assert!(
            check
                .check(&event(now + TimeDelta::hours(1), None), now)
                .is_err()
        );
        assert!(check.check(&event(now, None), now).is_ok());
        // Zero disables.
        let off = SkewCheck::new(Duration::ZERO);
        assert!(
            off.check(&event(received + TimeDelta::days(30), Some(received)), now)
                .is_ok()
        );
    }
}
