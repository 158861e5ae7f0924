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
//! - **horizon**: anchor + `supersede_window` (for DELAYED at least anchor +
//!   `incident_grace`), or, for a non-urgent milestone whose anchor falls in
//!   the buyer's quiet hours, the end of that night (+ the order's spread) when
//!   that is later — how long a live run holds the message;
//! - **superseded**: a message of rank 1–3 (`outbox::rank`) is dropped when a
//!   higher-ranked milestone (not dead-lettered) was reached by *every* parcel of
//!   its composition at an event time before its horizon. Delivered (highest)
//!   and return received (apart) are never superseded. INCIDENT ranks with
//!   exception and out for delivery, so it takes over a DELAYED whose every
//!   parcel was linked to an incident within the grace — the stall's first
//!   alerts always come before the incident that groups them, hence the grace
//!   — but never an EXCEPTION (same rank), which names the carrier's own
//!   reason;
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
    /// Incident grace (event time), ms: the least horizon of a DELAYED
    /// message; 0 = none.
    pub incident_grace_ms: i64,
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
    let window = if milestone == Milestone::Delayed {
        rules.supersede_window_ms.max(rules.incident_grace_ms)
    } else {
        rules.supersede_window_ms
    };
    let stale = anchor.saturating_add(window);
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
    /// Whether the trigger parcel's registration had been read when its first
    /// update came. The detector sends an update only for a registered parcel, but
    /// the notifier reads `shipments` and `tracking.updates` on different
    /// partitions, so the update can come first: such a message waits the
    /// settle, as a catch-up does, rather than go out without a contact.
    pub registered: bool,
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
/// yet — and neither does one whose parcel's registration is not in yet.
/// Quiet hours may push it later still.
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
    let lagging = now_ms.saturating_sub(pending.at_ms) > rules.settle_ms || !pending.registered;
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
#[path = "decide_tests.rs"]
mod tests;
