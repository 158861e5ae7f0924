//! Unit tests of the event-time rules (`decide`).
use super::*;
use crate::config::QuietHoursConfig;

const MIN: i64 = 60_000;

fn rules(supersede_minutes: i64, quiet: bool) -> Rules {
    Rules {
        burst_window_ms: 10 * MIN,
        supersede_window_ms: supersede_minutes * MIN,
        settle_ms: 10_000,
        incident_grace_ms: 0,
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

fn pending(milestone: Milestone, anchor_ms: i64, at_ms: i64, complete: bool) -> Pending<'static> {
    Pending {
        milestone,
        order_ref: "O",
        zone: Tz::UTC,
        anchor_ms,
        at_ms,
        complete,
        registered: true,
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

#[test]
fn a_message_whose_registration_is_not_in_yet_waits_the_settle_not_the_window() {
    let r = rules(30, false);
    let t = ms("2025-03-10T10:00:00Z");
    // Complete and final, live: it would go at once with its registration in.
    let mut early = pending(Milestone::Delivered, t, t, true);
    early.registered = false;
    assert_eq!(
        due(&r, &early, at(t), None),
        (at(t + 10_000), Wait::CatchUpSettle)
    );
    // Still waiting for other parcels: the window, which is longer, stands.
    let mut first = pending(Milestone::Delivered, t, t, false);
    first.registered = false;
    assert_eq!(
        due(&r, &first, at(t), None),
        (at(t + 10 * MIN), Wait::BurstWindow)
    );
}

#[test]
fn an_incident_within_the_grace_takes_over_a_delayed_message_but_never_an_exception() {
    let r = Rules {
        incident_grace_ms: 120 * MIN,
        ..rules(0, false)
    };
    let t = ms("2025-03-10T10:00:00Z");
    // The DELAYED horizon is the grace; other milestones are unaffected.
    assert_eq!(
        horizon(&r, Milestone::Delayed, t, Tz::UTC, "O"),
        t + 120 * MIN
    );
    assert_eq!(horizon(&r, Milestone::Shipped, t, Tz::UTC, "O"), t);
    assert_eq!(horizon(&r, Milestone::Exception, t, Tz::UTC, "O"), t);
    // A longer staleness window still wins.
    let wide = Rules {
        supersede_window_ms: 180 * MIN,
        ..r.clone()
    };
    assert_eq!(
        horizon(&wide, Milestone::Delayed, t, Tz::UTC, "O"),
        t + 180 * MIN
    );
    let composed = vec!["sf:A".to_owned(), "sf:B".to_owned()];
    let delayed_horizon = horizon(&r, Milestone::Delayed, t, Tz::UTC, "O");
    let both = higher(
        Milestone::Incident,
        "held",
        &[("sf:A", t + 30 * MIN), ("sf:B", t + 90 * MIN)],
    );
    assert_eq!(
        superseded_by(
            Milestone::Delayed,
            &composed,
            delayed_horizon,
            std::slice::from_ref(&both)
        ),
        Some(Milestone::Incident),
        "every parcel linked within the grace"
    );
    let one = higher(Milestone::Incident, "sent", &[("sf:A", t + 30 * MIN)]);
    assert_eq!(
        superseded_by(Milestone::Delayed, &composed, delayed_horizon, &[one]),
        None,
        "B is in no incident: the DELAYED message stands"
    );
    let after = higher(
        Milestone::Incident,
        "sent",
        &[("sf:A", t + 30 * MIN), ("sf:B", t + 120 * MIN)],
    );
    assert_eq!(
        superseded_by(Milestone::Delayed, &composed, delayed_horizon, &[after]),
        None,
        "B's incident came at the end of the grace, not before"
    );
    let dead = higher(
        Milestone::Incident,
        "dead",
        &[("sf:A", t + MIN), ("sf:B", t + MIN)],
    );
    assert_eq!(
        superseded_by(Milestone::Delayed, &composed, delayed_horizon, &[dead]),
        None
    );
    assert_eq!(
        superseded_by(
            Milestone::Exception,
            &composed,
            t + 120 * MIN,
            std::slice::from_ref(&both)
        ),
        None,
        "an exception names the carrier's reason: an incident never replaces it"
    );
    // Without the grace a live DELAYED goes at once; with it, it waits.
    let live = pending(Milestone::Delayed, t, t, true);
    assert_eq!(due(&rules(0, false), &live, at(t), None), (at(t), Wait::No));
    assert_eq!(
        due(&r, &live, at(t), None),
        (at(t + 120 * MIN), Wait::Horizon)
    );
}
