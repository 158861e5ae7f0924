//! When an incident opens, grows and resolves: a pure function of what the
//! store holds for one carrier × place, evaluated at an event time.
//!
//! Every decision is on event times (alerts' `effective_at`, scans'
//! `occurred_at`), so a backlog replayed through the detector opens the same
//! incidents, at the same instants and with the same ids, as the live run did.
//!
//! - **open** (detected): the parcels stuck at the place at time `t` — an
//!   alert that holds a parcel up opened at most `stale_after` before `t`, not
//!   moved by `t`, not in an earlier incident — number at least
//!   `needed = max(floor, factor × the baseline's daily peak of parcels stuck
//!   at once, min_share × active, factor × baseline share × active)`. The incident
//!   opens at the instant the `needed`-th of them got stuck (not when the
//!   detector happened to look; an earlier stall read later moves that
//!   instant back), and its id is a hash of carrier, place and the instant
//!   it was first published with (stable for the incident's life; a replay
//!   in the same order gives the same ids);
//! - **grow**: parcels stuck at the place after it opened join it; crossing
//!   `escalate_at` × the opening count escalates it (severity critical);
//! - **resolve**: once `resolve_share` of its parcels moved again, at the
//!   instant the last of those moved.
//! - **declared** incidents (an operator's "closed until …") open at once with
//!   every parcel active in the area, then grow and resolve the same way (or
//!   are lifted).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use trackstream_proto::v1::{IncidentReason, IncidentSource, IncidentState, Reason};

use crate::config::IncidentsConfig;

/// A parcel held up at a place, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Member {
    /// Waybill key (`carrier:waybill`).
    pub waybill: String,
    /// Merchant and order of the parcel ("" when not registered yet).
    pub merchant: String,
    /// Order id.
    pub order: String,
    /// The alert that made it a member ("" for a parcel a declared incident
    /// linked without one).
    pub alert_id: String,
    /// The alert's rule.
    pub rule: String,
    /// The alert's reason (`Reason`).
    pub reason: i32,
    /// When it got stuck (ms, event time).
    pub since: i64,
    /// When it moved again (ms; 0 = not yet).
    pub moved: i64,
    /// The incident it is linked to ("" = none).
    pub incident: String,
}

impl Member {
    fn stuck_at(&self, t: i64, stale_ms: i64) -> bool {
        self.since <= t
            && self.since > t.saturating_sub(stale_ms)
            && (self.moved == 0 || self.moved > t)
    }
}

/// An incident as stored (JSON) between evaluations.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Stored {
    /// Stable id.
    pub id: String,
    /// `IncidentState` of the latest change.
    pub state: i32,
    /// Escalation tier.
    pub tier: u32,
    /// `IncidentSource`.
    pub source: i32,
    /// `IncidentReason`.
    pub reason: i32,
    /// Event times (ms).
    pub opened_at: i64,
    /// When the latest change took effect.
    pub effective_at: i64,
    /// 0 while open.
    pub resolved_at: i64,
    /// Declared: the announced end (ms, 0 = none).
    pub until: i64,
    /// The count it opened at (the tiers' base).
    pub needed: u32,
    /// Parcels linked, and how many of them moved.
    pub affected: u32,
    /// Linked parcels that moved again.
    pub moved: u32,
    /// Active parcels at the place, and the stuck share, when it last changed.
    pub active: u32,
    /// affected / active.
    pub share: f64,
    /// The place's trailing baseline share.
    pub baseline_share: f64,
    /// Expected extra delay (hours, 0 = unknown).
    pub expected_delay_hours: u32,
    /// Increases with every change.
    pub version: u32,
}

impl Stored {
    /// Whether the incident still holds parcels up.
    pub fn open(&self) -> bool {
        self.state != IncidentState::Resolved as i32 && !self.id.is_empty()
    }
}

/// The place's normal over the trailing baseline days: the most parcels
/// stuck there at once on a day (outside incidents), averaged, and the share
/// of the parcels seen there that got stuck.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    /// Mean of the daily peaks of parcels stuck at once.
    pub peak: f64,
    /// Stalls opened per parcel seen.
    pub share: f64,
}

/// One UTC day of a place's history, as the store counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Day {
    /// The day's first instant (ms).
    pub start: i64,
    /// Stalls opened there that day.
    pub opens: u64,
    /// Parcels seen there that day.
    pub seen: u64,
    /// The most parcels stuck there at once that day.
    pub peak: f64,
}

/// A day, in ms.
pub const DAY_MS: i64 = 86_400_000;

impl Baseline {
    /// The place's normal at `at` from its trailing `days`, leaving out the
    /// parcels this decision is about: those stuck now (a pile-up that began
    /// before midnight must not raise its own bar after it — the opening
    /// instant, and whether it opens at all, would move with the UTC time of
    /// day) and those linked to earlier incidents (an incident is not the
    /// place's normal). The store's per-day counts include them, so their
    /// stalls come off the day they opened on and their number off every
    /// day's peak they were stuck on. Taking off a parcel the peak's instant
    /// did not hold only lowers the bar, which the floor and the share
    /// bound; a day never goes below zero.
    pub fn of(cfg: &IncidentsConfig, days: &[Day], members: &[Member], at: i64) -> Baseline {
        let stale = IncidentsConfig::ms(cfg.stale_after);
        let excluded: Vec<&Member> = members
            .iter()
            .filter(|m| !m.alert_id.is_empty() && (!m.incident.is_empty() || m.stuck_at(at, stale)))
            .collect();
        let (mut opens, mut seen, mut peaks) = (0u64, 0u64, 0f64);
        for day in days {
            let end = day.start + DAY_MS;
            let opened_then = excluded
                .iter()
                .filter(|m| (day.start..end).contains(&m.since))
                .count() as u64;
            let stuck_then = excluded
                .iter()
                .filter(|m| {
                    m.since < end
                        && m.since > day.start.saturating_sub(stale)
                        && (m.moved == 0 || m.moved > day.start)
                })
                .count() as f64;
            opens += day.opens.saturating_sub(opened_then);
            seen += day.seen;
            peaks += (day.peak - stuck_then).max(0.0);
        }
        Baseline {
            peak: peaks / days.len().max(1) as f64,
            share: if seen == 0 {
                0.0
            } else {
                opens as f64 / seen as f64
            },
        }
    }
}

/// What the store holds for one carrier × place, at event time `at`.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// Carrier code.
    pub carrier: &'a str,
    /// Place key.
    pub place: &'a str,
    /// Evaluation instant (ms, event time).
    pub at: i64,
    /// The place's stuck (and declared-linked) parcels.
    pub members: &'a [Member],
    /// Parcels active at the place.
    pub active: u32,
    /// The place's normal.
    pub baseline: Baseline,
    /// The place's latest incident.
    pub current: Option<&'a Stored>,
}

/// A change: the incident as it now is, and the parcels newly linked to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The incident after the change (version already increased).
    pub incident: Stored,
    /// Waybill keys newly linked.
    pub link: Vec<String>,
}

/// The count an incident needs at a place with `active` parcels.
pub fn needed(cfg: &IncidentsConfig, active: u32, baseline: Baseline) -> u32 {
    let active = f64::from(active);
    let by_count = (cfg.baseline_factor * baseline.peak).ceil();
    let by_share = (cfg.min_share * active).ceil();
    let by_baseline_share = (cfg.baseline_factor * baseline.share * active).ceil();
    let most = by_count.max(by_share).max(by_baseline_share);
    // Saturating float → int: the counts are far below u32::MAX.
    cfg.floor.max(most.min(f64::from(u32::MAX)) as u32)
}

/// A stable incident id: carrier, place and the opening instant.
pub fn incident_id(carrier: &str, place: &str, opened_at: i64) -> String {
    let digest =
        sha2::Sha256::digest(format!("{carrier}\u{1f}{place}\u{1f}{opened_at}").as_bytes());
    format!("inc-{}", hex::encode(&digest[..8]))
}

/// The change, if any, that the view makes.
pub fn decide(cfg: &IncidentsConfig, view: &View<'_>) -> Option<Decision> {
    match view.current.filter(|c| c.open()) {
        Some(current) => grow(cfg, view, current),
        None => open(cfg, view),
    }
}

/// The parcels stuck at the place at `at` that no incident holds: what an
/// incident would open with, and what the baseline's daily peak counts.
pub fn stuck<'a>(cfg: &IncidentsConfig, members: &'a [Member], at: i64) -> Vec<&'a Member> {
    let stale = IncidentsConfig::ms(cfg.stale_after);
    members
        .iter()
        .filter(|m| m.incident.is_empty() && !m.alert_id.is_empty() && m.stuck_at(at, stale))
        .collect()
}

fn open(cfg: &IncidentsConfig, view: &View<'_>) -> Option<Decision> {
    let mut stuck = stuck(cfg, view.members, view.at);
    let active = view
        .active
        .max(u32::try_from(stuck.len()).unwrap_or(u32::MAX));
    let needed = needed(cfg, active, view.baseline);
    let count = u32::try_from(stuck.len()).unwrap_or(u32::MAX);
    if count < needed {
        return None;
    }
    stuck.sort_by(|a, b| (a.since, &a.waybill).cmp(&(b.since, &b.waybill)));
    let index = usize::try_from(needed)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    let opened_at = stuck.get(index).map_or(view.at, |m| m.since);
    let reason = infer_reason(stuck.iter().copied());
    let mut incident = Stored {
        id: incident_id(view.carrier, view.place, opened_at),
        state: IncidentState::Opened as i32,
        source: IncidentSource::Detected as i32,
        reason: reason as i32,
        opened_at,
        effective_at: opened_at,
        needed,
        affected: count,
        baseline_share: view.baseline.share,
        version: view.current.map_or(0, |c| c.version),
        ..Stored::default()
    };
    incident.tier = tier(cfg, count, needed);
    measure(&mut incident, active);
    incident.version += 1;
    Some(Decision {
        link: stuck.iter().map(|m| m.waybill.clone()).collect(),
        incident,
    })
}

fn grow(cfg: &IncidentsConfig, view: &View<'_>, current: &Stored) -> Option<Decision> {
    let stale = IncidentsConfig::ms(cfg.stale_after);
    let declared = current.source == IncidentSource::Declared as i32;
    let link: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.incident.is_empty())
        .filter(|m| declared || !m.alert_id.is_empty())
        .filter(|m| {
            m.since >= current.opened_at.saturating_sub(stale)
                && m.stuck_at(view.at.max(m.since), stale)
        })
        .filter(|m| m.moved == 0 || m.moved > current.opened_at)
        .map(|m| m.waybill.clone())
        .collect();
    let linked: Vec<&Member> = view
        .members
        .iter()
        .filter(|m| m.incident == current.id || link.contains(&m.waybill))
        .collect();
    let affected = u32::try_from(linked.len()).unwrap_or(u32::MAX);
    let mut moved: Vec<i64> = linked
        .iter()
        .filter(|m| m.moved > 0 && m.moved <= view.at)
        .map(|m| m.moved)
        .collect();
    moved.sort_unstable();
    let mut next = current.clone();
    // Parcels can arrive out of event-time order (a backlog, or partitions
    // read at different paces): the incident opened when its `needed`-th
    // parcel got stuck, which a late-read earlier stall moves back. The id
    // stays the one it was first published under.
    if !declared {
        let mut since: Vec<i64> = linked.iter().map(|m| m.since).collect();
        since.sort_unstable();
        let index = usize::try_from(current.needed)
            .unwrap_or(usize::MAX)
            .saturating_sub(1);
        if let Some(at) = since
            .get(index)
            .copied()
            .filter(|at| *at < current.opened_at)
        {
            next.opened_at = at;
        }
    }
    next.affected = affected;
    next.moved = u32::try_from(moved.len()).unwrap_or(u32::MAX);
    measure(&mut next, view.active.max(affected));
    let needed_moved = (cfg.resolve_share * f64::from(affected)).ceil().max(1.0) as usize;
    if affected > 0 && moved.len() >= needed_moved {
        next.state = IncidentState::Resolved as i32;
        next.resolved_at = moved.get(needed_moved - 1).copied().unwrap_or(view.at);
        next.effective_at = next.resolved_at;
    } else {
        let tier = if declared {
            current.tier
        } else {
            tier(cfg, affected, current.needed).max(current.tier)
        };
        if tier > current.tier {
            next.state = IncidentState::Escalated as i32;
            next.tier = tier;
            next.effective_at = view.at.max(current.effective_at);
        } else if next.affected != current.affected
            || next.moved != current.moved
            || next.opened_at != current.opened_at
        {
            next.state = IncidentState::Updated as i32;
            next.effective_at = view.at.max(current.effective_at);
        } else {
            return None;
        }
    }
    next.version += 1;
    Some(Decision {
        incident: next,
        link,
    })
}

/// An operator's declaration at the place: a new declared incident linking
/// every parcel active there (`active_parcels`, already members), or — when
/// one is open — the open incident becomes declared, with the operator's
/// reason and end.
pub fn declare(view: &View<'_>, reason: IncidentReason, until: i64) -> Decision {
    let mut incident = match view.current.filter(|c| c.open()) {
        Some(current) => {
            let mut next = current.clone();
            next.state = IncidentState::Updated as i32;
            next.effective_at = view.at.max(current.effective_at);
            next
        }
        None => Stored {
            id: incident_id(view.carrier, view.place, view.at),
            state: IncidentState::Opened as i32,
            opened_at: view.at,
            effective_at: view.at,
            version: view.current.map_or(0, |c| c.version),
            baseline_share: view.baseline.share,
            ..Stored::default()
        },
    };
    incident.source = IncidentSource::Declared as i32;
    incident.reason = reason as i32;
    incident.until = until;
    incident.expected_delay_hours = hours_between(incident.opened_at, until);
    let link: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.incident.is_empty() && (m.moved == 0 || m.moved > view.at))
        .map(|m| m.waybill.clone())
        .collect();
    let already = view
        .members
        .iter()
        .filter(|m| !m.incident.is_empty() && m.incident == incident.id)
        .count();
    incident.affected = u32::try_from(link.len() + already).unwrap_or(u32::MAX);
    incident.needed = incident.needed.max(1);
    let active = view.active.max(incident.affected);
    measure(&mut incident, active);
    incident.version += 1;
    Decision { incident, link }
}

/// How long the resolved `incident` held its parcels that moved again
/// (median of moved − stuck since, in whole hours); `None` without moves.
/// Kept per carrier and place, it is the next incident's expected delay.
pub fn held_hours(members: &[Member], incident: &Stored) -> Option<u32> {
    let mut held: Vec<i64> = members
        .iter()
        .filter(|m| m.incident == incident.id && m.moved > m.since)
        .map(|m| m.moved - m.since)
        .collect();
    if held.is_empty() {
        return None;
    }
    held.sort_unstable();
    let median = held[held.len() / 2];
    u32::try_from((median + 1_800_000) / 3_600_000)
        .ok()
        .filter(|h| *h > 0)
}

/// The operator lifts a declared incident: resolved now.
pub fn lift(current: &Stored, at: i64) -> Option<Decision> {
    if !current.open() {
        return None;
    }
    let mut next = current.clone();
    next.state = IncidentState::Resolved as i32;
    next.resolved_at = at.max(current.opened_at);
    next.effective_at = next.resolved_at;
    next.version += 1;
    Some(Decision {
        incident: next,
        link: Vec::new(),
    })
}

fn tier(cfg: &IncidentsConfig, count: u32, needed: u32) -> u32 {
    let ratio = f64::from(count) / f64::from(needed.max(1));
    u32::try_from(cfg.escalate_at.iter().filter(|m| ratio >= **m).count()).unwrap_or(u32::MAX)
}

fn measure(incident: &mut Stored, active: u32) {
    incident.active = active;
    incident.share = if active == 0 {
        0.0
    } else {
        f64::from(incident.affected) / f64::from(active)
    };
}

fn hours_between(from: i64, until: i64) -> u32 {
    if until <= from {
        return 0;
    }
    u32::try_from((until - from + 3_599_999) / 3_600_000).unwrap_or(u32::MAX)
}

/// The reason the parcels' own scans give: weather when most of them say so,
/// else unknown (an operator can declare the cause).
fn infer_reason<'a>(members: impl Iterator<Item = &'a Member>) -> IncidentReason {
    let mut reasons: BTreeMap<i32, usize> = BTreeMap::new();
    let mut total = 0;
    for member in members {
        *reasons.entry(member.reason).or_default() += 1;
        total += 1;
    }
    let weather = reasons.get(&(Reason::Weather as i32)).copied().unwrap_or(0);
    if total > 0 && weather * 2 > total {
        IncidentReason::Weather
    } else {
        IncidentReason::Unknown
    }
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
