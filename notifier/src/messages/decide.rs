//! What a held message says, decided on the events' own times.
//!
//! Every decision about a held message — which parcels it lists, whether a later
//! milestone makes it moot, whose contact and locale it uses — is a function of
//! the event times of what reached the order's milestones and of stable keys,
//! never of when the notifier processed them or what arrived in one batch. That
//! is what makes a catch-up after a restart send what a live run sends (issue 16
//! item 4). Wall-clock time only decides *when* a decided message goes out
//! (`hold`: burst windows in a live run, quiet hours, the catch-up settle).
//!
//! The rules, for a message of milestone `M` of one order:
//! - **anchor**: the earliest event time at which a parcel reached `M`;
//! - **composition**: the parcels that reached `M` no later than anchor +
//!   `burst_window`; a parcel reaching it later is not in the message and gets
//!   none of its own (one message per milestone per order), as in a live run
//!   where the window had closed;
//! - **horizon**: anchor + `supersede_window`, or, for a non-urgent milestone
//!   whose anchor falls in the buyer's quiet hours, the end of that night (+ the
//!   order's spread) when that is later — how long a live run holds the message;
//! - **superseded**: a message of rank 1–3 (`outbox::rank`) is dropped when a
//!   higher-ranked milestone (not dead-lettered) was reached by *every* parcel of
//!   its composition at an event time before its horizon. Delivered (highest)
//!   and return received (apart) are never superseded;
//! - **lead parcel**: the lowest waybill key of the composition. Its
//!   registration gives the locale, time zone and merchant name, and its contact
//!   is the one used (else the next listed parcel's, else the lowest-keyed
//!   registration of the order with one). The lowest key, not the earliest
//!   registered: it is known as soon as the parcels are, is the same on every
//!   instance and in every batching, and does not move when a merchant
//!   re-registers a parcel (which rewrites `registered_at`, ingest's wall clock).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use trackstream_proto::v1::Milestone;

use crate::outbox::rank;
use crate::quiet::QuietHours;

/// The settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Burst window (event time), ms.
    pub burst_window_ms: i64,
    /// Staleness window (event time), ms; 0 = only quiet hours supersede.
    pub supersede_window_ms: i64,
    /// Quiet hours, when configured.
    pub quiet: Option<QuietHours>,
    /// Catch-up settle (wall clock), ms.
    pub settle_ms: i64,
}

/// The earliest event time among `times` (waybill key → ms).
pub fn anchor(times: &BTreeMap<String, i64>) -> Option<i64> {
    times.values().copied().min()
}

/// The parcels of the message, sorted by waybill key: those that reached the
/// milestone within the burst window after the anchor.
pub fn composition(rules: &Rules, times: &BTreeMap<String, i64>) -> Vec<String> {
    let Some(anchor) = anchor(times) else {
        return Vec::new();
    };
    let end = anchor.saturating_add(rules.burst_window_ms);
    // BTreeMap: already sorted by key.
    times
        .iter()
        .filter(|(_, at)| **at <= end)
        .map(|(key, _)| key.clone())
        .collect()
}

/// Whether a message of `milestone` can be superseded at all.
pub fn supersedable(milestone: Milestone) -> bool {
    matches!(rank(milestone), 1..=3)
}

/// Until when (event time, ms) a later milestone supersedes a message of
/// `milestone` anchored at `anchor` for a buyer in `zone`.
pub fn horizon(rules: &Rules, milestone: Milestone, anchor: i64, zone: Tz, order_ref: &str) -> i64 {
    if !supersedable(milestone) {
        return anchor;
    }
    let stale = anchor.saturating_add(rules.supersede_window_ms);
    let night = DateTime::<Utc>::from_timestamp_millis(anchor)
        .and_then(|at| {
            rules
                .quiet
                .as_ref()
                .and_then(|q| q.release_at(at, zone, milestone, order_ref))
        })
        .map_or(anchor, |end| end.timestamp_millis());
    stale.max(night)
}

/// A higher milestone of the same order, as the decision sees it.
#[derive(Debug, Clone)]
pub struct Higher {
    /// The milestone.
    pub milestone: Milestone,
    /// Its state (`held`, `sent`, `dead`, …), if it exists.
    pub state: Option<String>,
    /// Waybill key → earliest event time each parcel reached it.
    pub times: BTreeMap<String, i64>,
}

/// The higher milestone that supersedes a message whose parcels are
/// `composed`, with horizon `horizon`; `None` when it stands. The highest
/// qualifying milestone is named (for the log line).
pub fn superseded_by(
    milestone: Milestone,
    composed: &[String],
    horizon: i64,
    higher: &[Higher],
) -> Option<Milestone> {
    if !supersedable(milestone) || composed.is_empty() {
        return None;
    }
    higher
        .iter()
        .filter(|h| rank(h.milestone) > rank(milestone))
        .filter(|h| h.state.as_deref().is_some_and(|s| s != "dead"))
        .filter(|h| {
            composed
                .iter()
                .all(|key| h.times.get(key).is_some_and(|at| *at < horizon))
        })
        .max_by_key(|h| rank(h.milestone))
        .map(|h| h.milestone)
}

/// A held message, as [`due`] sees it when a parcel joins it.
#[derive(Debug, Clone)]
pub struct Pending<'a> {
    /// Its milestone.
    pub milestone: Milestone,
    /// Its order ref (quiet-hours spread).
    pub order_ref: &'a str,
    /// The buyer's zone.
    pub zone: Tz,
    /// Earliest event time of its parcels, ms.
    pub anchor_ms: i64,
    /// Event time of the trigger being held, ms.
    pub at_ms: i64,
    /// Whether every known parcel of the order reached the milestone.
    pub complete: bool,
}

/// Why a message waits before it is decided (the `why` of the
/// `buyer_messages_held` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// It does not: decided and sent at once.
    No,
    /// Other parcels of the order may still join (burst window).
    BurstWindow,
    /// A later milestone may still supersede it (horizon).
    Horizon,
    /// Its decision point has passed: the rest of a backlog is applied first.
    CatchUpSettle,
    /// The buyer's night (wall clock).
    QuietHours,
}

impl Wait {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::No => "",
            Wait::BurstWindow => "burst_window",
            Wait::Horizon => "supersede_horizon",
            Wait::CatchUpSettle => "catch_up_settle",
            Wait::QuietHours => "quiet_hours",
        }
    }
}

/// When (wall clock) a held message may be decided and sent, seen from a
/// trigger processed at `now`; `release` is the end of the buyer's quiet hours
/// when `now` is in them.
///
/// Its decision can change until an event-time point: the end of the burst
/// window (unless every known parcel is in) and the end of its horizon. A live
/// run holds it until then; the hold still to go is that point minus the later
/// of now and the trigger's event time (a clock behind the events counts from
/// the event). When that is nothing or less — a catch-up, or events that came
/// in late — it waits the settle, so the rest of the backlog is applied first.
/// Only a message that cannot change (complete, not supersedable) of an event
/// no older than the settle goes at once: an older one may be part of a
/// backlog whose other parcels (registrations on other partitions) are not in
/// yet. Quiet hours may push it later still.
pub fn due(
    rules: &Rules,
    pending: &Pending<'_>,
    now: DateTime<Utc>,
    release: Option<DateTime<Utc>>,
) -> (DateTime<Utc>, Wait) {
    let now_ms = now.timestamp_millis();
    let merge_end = if pending.complete {
        pending.anchor_ms
    } else {
        pending.anchor_ms.saturating_add(rules.burst_window_ms)
    };
    let horizon = horizon(
        rules,
        pending.milestone,
        pending.anchor_ms,
        pending.zone,
        pending.order_ref,
    );
    let decided_at = merge_end.max(horizon);
    let lagging = now_ms.saturating_sub(pending.at_ms) > rules.settle_ms;
    let (due, wait) = if decided_at <= pending.anchor_ms && !lagging {
        (now, Wait::No)
    } else {
        let still = decided_at.saturating_sub(pending.at_ms.max(now_ms));
        if still > rules.settle_ms {
            let wait = if merge_end >= horizon {
                Wait::BurstWindow
            } else {
                Wait::Horizon
            };
            (now + chrono::Duration::milliseconds(still), wait)
        } else {
            (
                now + chrono::Duration::milliseconds(rules.settle_ms),
                Wait::CatchUpSettle,
            )
        }
    };
    match release {
        Some(release) if release > due => (release, Wait::QuietHours),
        _ => (due, wait),
    }
}

/// The lead parcel: the lowest waybill key of the composition.
pub fn lead(composed: &[String]) -> Option<&str> {
    composed.first().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuietHoursConfig;

    const MIN: i64 = 60_000;

    fn rules(supersede_minutes: i64, quiet: bool) -> Rules {
        Rules {
            burst_window_ms: 10 * MIN,
            supersede_window_ms: supersede_minutes * MIN,
            settle_ms: 10_000,
            quiet: quiet.then(|| {
                QuietHours::from_config(&QuietHoursConfig {
                    spread: std::time::Duration::ZERO,
                    ..QuietHoursConfig::default()
                })
                .unwrap_or_else(|e| panic!("{e}"))
            }),
        }
    }

    fn times(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect()
    }

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn composition_is_the_burst_after_the_earliest_parcel_whatever_the_arrival_order() {
        let r = rules(0, false);
        // The same three arrivals, in any order, give the same map and message.
        let t = times(&[("sf:B", 5 * MIN), ("sf:C", 12 * MIN), ("sf:A", 0)]);
        assert_eq!(composition(&r, &t), ["sf:A", "sf:B"], "C is 12 min after A");
        // Without A, the burst starts at B and C is within it.
        let t = times(&[("sf:B", 5 * MIN), ("sf:C", 12 * MIN)]);
        assert_eq!(composition(&r, &t), ["sf:B", "sf:C"]);
        assert_eq!(anchor(&t), Some(5 * MIN));
        assert!(composition(&r, &BTreeMap::new()).is_empty());
        // Exactly at the window's end is in.
        let t = times(&[("sf:A", 0), ("sf:B", 10 * MIN)]);
        assert_eq!(composition(&r, &t).len(), 2);
    }

    #[test]
    fn the_lead_parcel_is_the_lowest_waybill_key() {
        let r = rules(0, false);
        let t = times(&[("yto:Y1", 0), ("sf:S9", MIN), ("sf:S10", 2 * MIN)]);
        let composed = composition(&r, &t);
        assert_eq!(lead(&composed), Some("sf:S10"), "byte order of the key");
        assert_eq!(lead(&[]), None);
    }

    #[test]
    fn the_horizon_is_the_staleness_window_or_the_end_of_the_buyers_night() {
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap_or(Tz::UTC);
        let day = ms("2025-03-10T14:00:00+08:00");
        let night = ms("2025-03-10T23:00:00+08:00");
        let morning = ms("2025-03-11T08:00:00+08:00");
        let off = rules(0, false);
        assert_eq!(horizon(&off, Milestone::Shipped, day, shanghai, "O"), day);
        let stale = rules(30, false);
        assert_eq!(
            horizon(&stale, Milestone::Shipped, day, shanghai, "O"),
            day + 30 * MIN
        );
        let quiet = rules(30, true);
        // Daytime event: the quiet hours do not apply, whatever the wall clock.
        assert_eq!(
            horizon(&quiet, Milestone::Shipped, day, shanghai, "O"),
            day + 30 * MIN
        );
        assert_eq!(
            horizon(&quiet, Milestone::Shipped, night, shanghai, "O"),
            morning
        );
        // Urgent milestones are not held at night, so only staleness counts.
        assert_eq!(
            horizon(&quiet, Milestone::OutForDelivery, night, shanghai, "O"),
            night + 30 * MIN
        );
        // Delivered is never superseded.
        assert_eq!(
            horizon(&quiet, Milestone::Delivered, night, shanghai, "O"),
            night
        );
    }

    fn higher(milestone: Milestone, state: &str, pairs: &[(&str, i64)]) -> Higher {
        Higher {
            milestone,
            state: Some(state.to_owned()),
            times: times(pairs),
        }
    }

    #[test]
    fn a_higher_milestone_supersedes_only_when_every_parcel_reached_it_before_the_horizon() {
        let composed = vec!["sf:A".to_owned(), "sf:B".to_owned()];
        let horizon = 60 * MIN;
        let both = higher(
            Milestone::Delivered,
            "held",
            &[("sf:A", 30 * MIN), ("sf:B", 59 * MIN)],
        );
        assert_eq!(
            superseded_by(
                Milestone::Shipped,
                &composed,
                horizon,
                std::slice::from_ref(&both)
            ),
            Some(Milestone::Delivered),
            "held or sent alike: the state of processing does not matter"
        );
        let one_late = higher(
            Milestone::Delivered,
            "sent",
            &[("sf:A", 30 * MIN), ("sf:B", 60 * MIN)],
        );
        assert_eq!(
            superseded_by(Milestone::Shipped, &composed, horizon, &[one_late]),
            None,
            "B reached it at the horizon, not before"
        );
        let partial = higher(Milestone::Delivered, "sent", &[("sf:A", MIN)]);
        assert_eq!(
            superseded_by(Milestone::Shipped, &composed, horizon, &[partial]),
            None
        );
        let dead = higher(
            Milestone::Delivered,
            "dead",
            &[("sf:A", MIN), ("sf:B", MIN)],
        );
        assert_eq!(
            superseded_by(Milestone::Shipped, &composed, horizon, &[dead]),
            None,
            "a dead-lettered message told the buyer nothing"
        );
        let same_rank = higher(
            Milestone::Exception,
            "sent",
            &[("sf:A", MIN), ("sf:B", MIN)],
        );
        assert_eq!(
            superseded_by(Milestone::OutForDelivery, &composed, horizon, &[same_rank]),
            None
        );
        assert_eq!(
            superseded_by(Milestone::Delivered, &composed, horizon, &[both]),
            None
        );
    }

    fn pending(
        milestone: Milestone,
        anchor_ms: i64,
        at_ms: i64,
        complete: bool,
    ) -> Pending<'static> {
        Pending {
            milestone,
            order_ref: "O",
            zone: Tz::UTC,
            anchor_ms,
            at_ms,
            complete,
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    #[test]
    fn live_a_message_waits_until_its_decision_can_no_longer_change() {
        let r = rules(30, false);
        let t = ms("2025-03-10T10:00:00Z");
        // Complete and final: at once.
        let delivered = pending(Milestone::Delivered, t, t, true);
        assert_eq!(due(&r, &delivered, at(t), None), (at(t), Wait::No));
        // Complete but supersedable: until the staleness window ends.
        let shipped = pending(Milestone::Shipped, t, t, true);
        assert_eq!(
            due(&r, &shipped, at(t), None),
            (at(t + 30 * MIN), Wait::Horizon)
        );
        // Waiting for other parcels: the burst window, counted from the first.
        let first = pending(Milestone::Delivered, t, t, false);
        assert_eq!(
            due(&r, &first, at(t), None),
            (at(t + 10 * MIN), Wait::BurstWindow)
        );
        let second = pending(Milestone::Delivered, t, t + 4 * MIN, false);
        assert_eq!(
            due(&r, &second, at(t + 4 * MIN), None).0,
            at(t + 10 * MIN),
            "the window is the first parcel's"
        );
        // A clock behind the events (tests, skew) counts from the event.
        assert_eq!(due(&r, &first, at(t - 60 * MIN), None).0, at(t - 50 * MIN));
        // Quiet hours push it to the morning.
        let morning = at(t + 600 * MIN);
        assert_eq!(
            due(&r, &delivered, at(t), Some(morning)),
            (morning, Wait::QuietHours)
        );
    }

    #[test]
    fn a_catch_up_settles_before_deciding_whatever_could_still_change() {
        let r = rules(30, false);
        let t = ms("2025-03-10T10:00:00Z");
        let now = t + 3 * 86_400_000;
        let settled = at(now + 10_000);
        for message in [
            pending(Milestone::Shipped, t, t, true),
            pending(Milestone::Delivered, t, t, false),
            // Even complete and final: the order's other parcels may not be
            // known yet.
            pending(Milestone::Delivered, t, t, true),
        ] {
            assert_eq!(
                due(&r, &message, at(now), None),
                (settled, Wait::CatchUpSettle),
                "{message:?}"
            );
        }
        // An event within the settle is live.
        let fresh = pending(Milestone::Delivered, now - 5_000, now - 5_000, true);
        assert_eq!(due(&r, &fresh, at(now), None), (at(now), Wait::No));
    }
}
