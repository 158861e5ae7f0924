//! Replay windows: a push whose *signed* send time is far from our clock is
//! refused, so a captured push cannot be replayed later (a parcel's old
//! "delivered" re-announced, or a reused waybill number handed an earlier
//! parcel's history).
//!
//! Only a time inside the signed bytes can be trusted, so only providers that
//! sign one are protected:
//!
//! | provider | signed time | protected |
//! |---|---|---|
//! | AfterShip | body `ts` (unix seconds; AfterShip: "the event occurred") | yes |
//! | Kdniao | `RequestData.PushTime` (zone-less China time) | yes |
//! | EasyPost | none sent at delivery (the body's `created_at` is the event's, kept on retries) | no |
//! | Kuaidi100 | none (`sign` = MD5(param + salt); `param` has only scan times) | no |
//! | 17TRACK | none (`sign` = SHA-256(body + "/" + key); no send time) | no |
//! | generic | none (HMAC over the body only) | no |
//!
//! For the unprotected ones a replay re-sends the same snapshot: the same
//! event ids, which normalize and the detector drop as duplicates; what stays
//! possible is replaying a push after its waybill expired (see SECURITY.md).
//!
//! The cost of the window: a provider that retries a failed push with its
//! original signed time (AfterShip retries for ~68 h) has retries older than the
//! tolerance refused. Both protected providers send whole snapshots, so the next
//! push for the parcel carries what was lost. Raise the tolerance for longer
//! outages.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{ProviderSettings, PushError};

/// How far a signed send time may be from our clock, either way (clock skew
/// plus delivery delay): 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The clock and tolerance a push's signed time is checked against. Adapters
/// take one per call, so tests pin the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    now: DateTime<Utc>,
    tolerance: Duration,
}

impl ReplayWindow {
    /// A window around `now`.
    pub fn new(now: DateTime<Utc>, tolerance: Duration) -> Self {
        ReplayWindow { now, tolerance }
    }

    /// The window for a provider's settings on the wall clock: its
    /// `replay_tolerance`, else [`DEFAULT_TOLERANCE`].
    pub fn for_settings(settings: &ProviderSettings) -> Self {
        let tolerance = settings.replay_tolerance.unwrap_or(DEFAULT_TOLERANCE);
        ReplayWindow::new(Utc::now(), tolerance)
    }

    /// Accepts `signed_at` (read from the signed field `field`) if it is within
    /// the tolerance of now; a missing or unreadable time is refused too, since
    /// the provider always sends it and a push without it cannot be dated.
    pub fn check(&self, field: &str, signed_at: Option<DateTime<Utc>>) -> Result<(), PushError> {
        let Some(signed_at) = signed_at else {
            return Err(PushError::unauthorized(format!(
                "{field} is missing or unreadable: the push cannot be dated, so a replay cannot be told apart"
            )));
        };
        let skew = (self.now - signed_at).abs();
        let tolerance = chrono::Duration::from_std(self.tolerance).unwrap_or(chrono::Duration::MAX);
        if skew > tolerance {
            let direction = if signed_at < self.now {
                "behind"
            } else {
                "ahead of"
            };
            return Err(PushError::unauthorized(format!(
                "{field} {} is {} s {direction} our clock (tolerance {} s): a replayed or delayed push",
                signed_at.to_rfc3339(),
                skew.num_seconds(),
                self.tolerance.as_secs()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(seconds, 0)
    }

    #[test]
    fn times_inside_the_tolerance_pass_either_way() {
        let now = at(1_800_000_000).unwrap_or_default();
        let window = ReplayWindow::new(now, Duration::from_secs(300));
        assert!(window.check("ts", at(1_800_000_000 - 300)).is_ok());
        assert!(window.check("ts", at(1_800_000_000 + 300)).is_ok());
        for outside in [1_800_000_000 - 301, 1_800_000_000 + 301] {
            let err = window.check("ts", at(outside));
            assert!(matches!(err, Err(PushError::Unauthorized(_))), "{err:?}");
        }
        let missing = window.check("ts", None);
        assert!(matches!(missing, Err(PushError::Unauthorized(_))));
    }

    #[test]
    fn the_reason_says_which_field_and_how_far() {
        let now = at(1_800_000_000).unwrap_or_default();
        let window = ReplayWindow::new(now, DEFAULT_TOLERANCE);
        let reason = window
            .check("ts", at(1_800_000_000 - 3_600))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(reason.contains("ts "), "{reason}");
        assert!(reason.contains("3600 s behind our clock"), "{reason}");
        assert!(reason.contains("tolerance 300 s"), "{reason}");
    }
}
