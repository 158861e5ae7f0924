use super::*;

const H: i64 = 3_600_000;

fn stuck(n: usize, from: i64, every: i64) -> Vec<Member> {
    (0..n)
        .map(|i| Member {
            waybill: format!("zto:W{i:05}"),
            merchant: "m-acme".into(),
            order: format!("o-{i}"),
            alert_id: format!("zto:W{i:05}:st:1"),
            rule: "stalled_in_transit".into(),
            since: from + i as i64 * every,
            ..Member::default()
        })
        .collect()
}

fn view<'a>(members: &'a [Member], at: i64, active: u32, current: Option<&'a Stored>) -> View<'a> {
    View {
        carrier: "zto",
        place: "浙江省/杭州市",
        at,
        members,
        active,
        baseline: Baseline::default(),
        current,
    }
}

#[test]
fn an_incident_opens_when_the_needed_parcel_got_stuck_not_when_we_looked() {
    let cfg = IncidentsConfig::default();
    let members = stuck(19, 0, 60_000);
    assert_eq!(
        decide(&cfg, &view(&members, 10 * H, 200, None)),
        None,
        "19 < floor 20"
    );
    let members = stuck(50, 0, 60_000);
    let decision = decide(&cfg, &view(&members, 10 * H, 200, None)).expect("opens");
    let incident = &decision.incident;
    assert_eq!(incident.state, IncidentState::Opened as i32);
    // The 20th parcel got stuck at minute 19: that is when it opened.
    assert_eq!(incident.opened_at, 19 * 60_000);
    assert_eq!(incident.needed, 20);
    assert_eq!(incident.affected, 50);
    assert_eq!(decision.link.len(), 50);
    // 50 ≥ 2 × 20: already past the first tier.
    assert_eq!(incident.tier, 1);
    // The same inputs, seen later or in another batching: the same incident.
    let again = decide(&cfg, &view(&members, 30 * H, 200, None)).expect("opens");
    assert_eq!(again.incident.id, incident.id);
    assert_eq!(again.incident.opened_at, incident.opened_at);
}

#[test]
fn a_busy_place_needs_its_share_and_more_than_its_normal() {
    let cfg = IncidentsConfig::default();
    let members = stuck(40, 0, 1_000);
    // 40 stuck of 2 000 active: 2 % < 5 %.
    assert_eq!(decide(&cfg, &view(&members, H, 2_000, None)), None);
    // A place that normally has up to 15 parcels stuck at once needs 45.
    let mut v = view(&members, H, 400, None);
    v.baseline = Baseline {
        peak: 15.0,
        share: 0.01,
    };
    assert_eq!(needed(&cfg, 400, v.baseline), 45);
    assert_eq!(decide(&cfg, &v), None);
}

#[test]
fn stale_or_moved_parcels_do_not_open_one() {
    let cfg = IncidentsConfig::default();
    let mut members = stuck(30, 0, 1_000);
    for m in members.iter_mut().take(15) {
        m.moved = 2 * H;
    }
    assert_eq!(
        decide(&cfg, &view(&members, 3 * H, 100, None)),
        None,
        "15 still stuck"
    );
    // Stuck 8 days ago: not part of today's problem.
    let members = stuck(30, 0, 1_000);
    assert_eq!(decide(&cfg, &view(&members, 8 * 24 * H, 100, None)), None);
}

#[test]
fn it_grows_escalates_and_resolves_when_most_parcels_moved() {
    let cfg = IncidentsConfig::default();
    let mut members = stuck(20, 0, 60_000);
    let opened = decide(&cfg, &view(&members, H, 100, None))
        .expect("opens")
        .incident;
    assert_eq!(opened.tier, 0);
    for m in &mut members {
        m.incident.clone_from(&opened.id);
    }
    let mut later = stuck(40, 2 * H, 1_000);
    later.drain(..20);
    members.extend(later);
    let grown = decide(&cfg, &view(&members, 3 * H, 100, Some(&opened))).expect("grows");
    assert_eq!(grown.incident.state, IncidentState::Escalated as i32);
    assert_eq!(grown.incident.tier, 1);
    assert_eq!(grown.incident.affected, 40);
    assert_eq!(grown.link.len(), 20);
    assert_eq!(grown.incident.version, opened.version + 1);
    for m in &mut members {
        m.incident.clone_from(&opened.id);
    }
    // 29 of 40 moved (< 75 %): still open, updated.
    for (i, m) in members.iter_mut().enumerate().take(29) {
        m.moved = 5 * H + i as i64;
    }
    let update = decide(&cfg, &view(&members, 6 * H, 100, Some(&grown.incident))).expect("moves");
    assert_eq!(update.incident.state, IncidentState::Updated as i32);
    assert_eq!(update.incident.moved, 29);
    members[29].moved = 7 * H;
    let resolved =
        decide(&cfg, &view(&members, 8 * H, 100, Some(&update.incident))).expect("resolves");
    assert_eq!(resolved.incident.state, IncidentState::Resolved as i32);
    assert_eq!(
        resolved.incident.resolved_at,
        7 * H,
        "when the 30th of 40 moved"
    );
    // Nothing changes: no emission.
    assert_eq!(
        decide(&cfg, &view(&members, 9 * H, 100, Some(&resolved.incident))),
        None
    );
}

#[test]
fn a_declaration_links_the_area_and_takes_over_an_open_incident() {
    let mut members = stuck(5, 0, 1_000);
    for m in &mut members[..3] {
        m.alert_id.clear();
    }
    let declared = declare(
        &view(&members, 2 * H, 50, None),
        IncidentReason::Weather,
        50 * H,
    );
    assert_eq!(declared.incident.source, IncidentSource::Declared as i32);
    assert_eq!(declared.incident.reason, IncidentReason::Weather as i32);
    assert_eq!(declared.incident.expected_delay_hours, 48);
    assert_eq!(declared.link.len(), 5);
    let lifted = lift(&declared.incident, 10 * H).expect("lifted");
    assert_eq!(lifted.incident.state, IncidentState::Resolved as i32);
    assert_eq!(lift(&lifted.incident, 11 * H), None);
}

#[test]
fn stalls_read_out_of_order_move_the_opening_back_not_the_id() {
    let cfg = IncidentsConfig::default();
    // The 20 latest stalls are read first (a backlog in reverse order).
    let mut members = stuck(40, 0, 60_000);
    let (early, late) = members.split_at_mut(20);
    let opened = decide(&cfg, &view(late, 2 * H, 100, None))
        .expect("opens")
        .incident;
    assert_eq!(opened.opened_at, 39 * 60_000);
    for m in late.iter_mut() {
        m.incident.clone_from(&opened.id);
    }
    let _ = early;
    let grown = decide(&cfg, &view(&members, 2 * H, 100, Some(&opened))).expect("grows");
    assert_eq!(
        grown.incident.id, opened.id,
        "the id it was published under"
    );
    assert_eq!(
        grown.incident.opened_at,
        19 * 60_000,
        "when the 20th parcel got stuck"
    );
    assert_eq!(grown.incident.affected, 40);
}

#[test]
fn a_resolved_incident_remembers_how_long_it_held_its_parcels() {
    let mut members = stuck(5, 0, 60_000);
    for (i, m) in members.iter_mut().enumerate() {
        m.incident = "inc-1".into();
        m.moved = m.since + (28 + i as i64) * H;
    }
    members[4].moved = 0;
    let incident = Stored {
        id: "inc-1".into(),
        ..Stored::default()
    };
    // Holds 28, 29, 30, 31 h (one never moved): the median.
    assert_eq!(held_hours(&members, &incident), Some(30));
    let other = Stored {
        id: "inc-2".into(),
        ..Stored::default()
    };
    assert_eq!(held_hours(&members, &other), None);
}

/// Seven UTC days before the day of `at`, each as `f(day index)` makes it.
fn days(at: i64, f: impl Fn(usize) -> (u64, u64, f64)) -> Vec<Day> {
    let today = at.div_euclid(DAY_MS);
    (0..7)
        .map(|i| {
            let (opens, seen, peak) = f(i);
            Day {
                start: (today - 7 + i as i64) * DAY_MS,
                opens,
                seen,
                peak,
            }
        })
        .collect()
}

#[test]
fn a_pile_up_across_midnight_does_not_raise_its_own_bar() {
    let cfg = IncidentsConfig::default();
    // 60 parcels stuck 4 minutes apart from 22:00 UTC: 30 before midnight.
    let midnight = 20 * DAY_MS;
    let members = stuck(60, midnight - 2 * H, 4 * 60_000);
    let at = midnight + 3 * H;
    // Yesterday counted their 30 stalls among 100 parcels seen, and up to 30
    // stuck at once; the days before were quiet.
    let history = days(at, |i| {
        if i == 6 {
            (30, 100, 30.0)
        } else {
            (0, 100, 0.0)
        }
    });
    let baseline = Baseline::of(&cfg, &history, &members, at);
    assert_eq!(baseline, Baseline::default(), "the pile-up is not normal");
    // Counted as normal they would make it need 3 × 30/700 × 400 = 52 (and
    // more the later midnight falls in the pile-up); left out, the floor:
    // the 20th parcel, before midnight, opens it.
    let mut v = view(&members, at, 400, None);
    v.baseline = baseline;
    let decision = decide(&cfg, &v).expect("opens");
    assert_eq!(decision.incident.needed, 20);
    assert_eq!(decision.incident.opened_at, members[19].since);
    // The same decision evaluated before midnight, on the day before's
    // baseline: the same incident.
    let before = midnight - 1;
    let earlier = days(before, |_| (0, 100, 0.0));
    let mut v = view(&members, before, 400, None);
    v.baseline = Baseline::of(&cfg, &earlier, &members, before);
    let first = decide(&cfg, &v).expect("opens before midnight too");
    assert_eq!(first.incident.id, decision.incident.id);
}

#[test]
fn an_earlier_incidents_parcels_are_not_the_places_normal_but_the_rest_is() {
    let cfg = IncidentsConfig::default();
    let at = 30 * DAY_MS + 12 * H;
    let day_of_incident = (30 - 3) * DAY_MS;
    // 40 parcels of a resolved incident, stuck and moved on one day …
    let mut members = stuck(40, day_of_incident + H, 60_000);
    for m in &mut members {
        m.incident = "inc-1".into();
        m.moved = day_of_incident + 10 * H;
    }
    // … and one background parcel that got stuck and moved the next day.
    let mut background = stuck(1, day_of_incident + 30 * H, 0).remove(0);
    background.waybill = "zto:B1".into();
    background.moved = day_of_incident + 40 * H;
    members.push(background);
    // That day counted 50 stalls (40 of the incident) and up to 45 stuck at
    // once; every day saw 100 parcels, 7 of them stuck at once at most.
    let history = days(at, |i| match i {
        4 => (50, 100, 45.0),
        5 => (1, 100, 7.0),
        _ => (0, 100, 7.0),
    });
    let baseline = Baseline::of(&cfg, &history, &members, at);
    // 10 + 1 stalls of 700 seen; peaks 7 × 6 + (45 − 40) over 7 days (the
    // background parcel is stuck no more: it stays in).
    assert!((baseline.share - 11.0 / 700.0).abs() < 1e-9, "{baseline:?}");
    assert!((baseline.peak - 47.0 / 7.0).abs() < 1e-9, "{baseline:?}");
    // Nothing of its own to leave out: the store's counts as they are.
    let quiet = Baseline::of(&cfg, &history, &[], at);
    assert!((quiet.share - 51.0 / 700.0).abs() < 1e-9);
    assert!((quiet.peak - 87.0 / 7.0).abs() < 1e-9);
}
