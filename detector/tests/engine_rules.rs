//! The engine alone (pure, no I/O): every rule opens, escalates and resolves as
//! configured; carrier problems are raised at once with their reason; returns;
//! late, duplicate-free shuffled and terminal scans; per-carrier overrides;
//! order independence within the allowed lateness; and the trust rules of
//! registrations and time: a future-dated scan never makes later scans late,
//! the join window, registration identity and ownership, and no buyer contact
//! in state or outputs.

mod common;

use common::*;
use proptest::prelude::*;
use prost::Message as _;
use trackstream_detector::engine::{self, Input, Output, RefusedRegistration, alert_id};
use trackstream_detector::rules::{self, Override, RuleId, RulesConfig};
use trackstream_proto::time;
use trackstream_proto::v1::{AlertState, BuyerContact, Reason, Severity, Status, UpdateKind};

use AlertState::{Escalated, Opened, Resolved};

const KEY: &str = "sf:SF1";

/// The first instant past a threshold, when its deadline fires: thresholds
/// are strict ("more than 24 h").
fn past(threshold: i64) -> i64 {
    threshold + 1
}

fn t(rule: RuleId, state: AlertState, tier: u32) -> (String, AlertState, u32) {
    (rule.name().to_owned(), state, tier)
}

fn registered(rules: RulesConfig) -> Sim {
    let mut sim = Sim::new(rules, KEY);
    sim.register(shipment(KEY, "O-1", T0), T0);
    sim
}

#[test]
fn no_pickup_opens_at_24h_escalates_at_48h_and_72h_and_resolves_on_pickup() {
    let mut sim = registered(RulesConfig::default());
    assert!(transitions(&sim.scan(Status::InfoReceived, T0 + H)).is_empty());
    assert!(transitions(&sim.advance(T0 + 24 * H)).is_empty());
    let opened = alerts(&sim.advance(past(T0 + 24 * H)));
    assert_eq!(transitions(&sim.outputs), [t(RuleId::NoPickup, Opened, 0)]);
    assert_eq!(opened[0].severity, Severity::Warning as i32);
    assert_eq!(opened[0].order_id, "O-1");
    assert_eq!(opened[0].alert_id, alert_id(KEY, RuleId::NoPickup, 1));
    let escalated = alerts(&sim.advance(past(T0 + 72 * H)));
    assert_eq!(
        transitions(&sim.outputs)[1..],
        [
            t(RuleId::NoPickup, Escalated, 1),
            t(RuleId::NoPickup, Escalated, 2)
        ]
    );
    assert_eq!(escalated[1].severity, Severity::Critical as i32);
    assert!(sim.advance(T0 + 500 * H).is_empty(), "no tier after 72 h");
    let resolved = alerts(&sim.scan(Status::PickedUp, T0 + 501 * H));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, Resolved as i32);
    assert_eq!(
        resolved[0].alert_id, opened[0].alert_id,
        "one id per episode"
    );
}

#[test]
fn no_pickup_without_registration_is_anchored_at_info_received() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    sim.scan(Status::InfoReceived, T0 + 5 * H);
    assert!(sim.advance(T0 + 29 * H).is_empty());
    assert_eq!(
        transitions(&sim.advance(past(T0 + 29 * H))),
        [t(RuleId::NoPickup, Opened, 0)]
    );
}

#[test]
fn a_parcel_picked_up_in_time_raises_nothing() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::InfoReceived, T0 + H);
    sim.scan(Status::PickedUp, T0 + 23 * H);
    sim.scan(Status::InTransit, T0 + 40 * H);
    sim.scan(Status::OutForDelivery, T0 + 60 * H);
    sim.scan(Status::Delivered, T0 + 70 * H);
    sim.advance(T0 + 1000 * H);
    assert!(
        alerts(&sim.outputs).is_empty(),
        "{:?}",
        transitions(&sim.outputs)
    );
    assert!(
        sim.wb.state.deadlines().next().is_none(),
        "delivered: nothing armed"
    );
}

#[test]
fn stall_escalates_through_tiers_resolves_on_movement_and_opens_a_new_episode() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::InTransit, T0 + 10 * H);
    assert!(
        sim.advance(T0 + 34 * H).is_empty(),
        "24 h after the LAST scan"
    );
    sim.advance(past(T0 + 82 * H));
    assert_eq!(
        transitions(&sim.outputs),
        [
            t(RuleId::StalledInTransit, Opened, 0),
            t(RuleId::StalledInTransit, Escalated, 1),
            t(RuleId::StalledInTransit, Escalated, 2),
        ]
    );
    let first = alerts(&sim.outputs)[0].alert_id.clone();
    let moved = alerts(&sim.scan(Status::InTransit, T0 + 90 * H));
    assert_eq!(
        (moved[0].alert_id.as_str(), moved[0].state),
        (first.as_str(), Resolved as i32)
    );
    let again = alerts(&sim.advance(past(T0 + 114 * H)));
    assert_eq!(again[0].state, Opened as i32);
    assert_eq!(again[0].episode, 2);
    assert_ne!(again[0].alert_id, first, "a new episode has a new id");
    let delivered = alerts(&sim.scan(Status::Delivered, T0 + 115 * H));
    assert_eq!(
        (delivered[0].alert_id.as_str(), delivered[0].state),
        (again[0].alert_id.as_str(), Resolved as i32),
        "delivery resolves the stall"
    );
}

#[test]
fn out_for_delivery_not_delivered_within_36h() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::OutForDelivery, T0 + 5 * H);
    assert!(sim.advance(T0 + 41 * H).is_empty());
    assert_eq!(
        transitions(&sim.advance(past(T0 + 41 * H))),
        [t(RuleId::OutForDeliveryNotDelivered, Opened, 0)]
    );
    assert!(sim.advance(T0 + 400 * H).is_empty(), "one tier only");
    assert_eq!(
        transitions(&sim.scan(Status::Delivered, T0 + 401 * H)),
        [t(RuleId::OutForDeliveryNotDelivered, Resolved, 0)]
    );
}

#[test]
fn uncollected_at_pickup_point_after_18h_resolves_on_collection() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::AvailableForPickup, T0 + 10 * H);
    assert!(sim.advance(T0 + 28 * H).is_empty());
    assert_eq!(
        transitions(&sim.advance(past(T0 + 28 * H))),
        [t(RuleId::UncollectedAtPickupPoint, Opened, 0)]
    );
    assert_eq!(
        transitions(&sim.scan(Status::Delivered, T0 + 30 * H)),
        [t(RuleId::UncollectedAtPickupPoint, Resolved, 0)]
    );
}

#[test]
fn promised_delivery_time_passed_opens_at_the_promise_escalates_and_resolves_on_delivery() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    let mut reg = shipment(KEY, "O-1", T0);
    reg.promised_delivery_at = Some(time::from_millis(T0 + 48 * H));
    sim.register(reg, T0);
    sim.scan(Status::PickedUp, T0 + H);
    for h in [20, 40] {
        sim.scan(Status::InTransit, T0 + h * H);
    }
    assert!(transitions(&sim.outputs).is_empty());
    assert_eq!(
        transitions(&sim.advance(past(T0 + 48 * H))),
        [t(RuleId::PromisedDateMissed, Opened, 0)]
    );
    let escalated = transitions(&sim.advance(past(T0 + 72 * H)));
    assert!(escalated.contains(&t(RuleId::PromisedDateMissed, Escalated, 1)));
    let delivered = transitions(&sim.scan(Status::Delivered, T0 + 73 * H));
    assert!(delivered.contains(&t(RuleId::PromisedDateMissed, Resolved, 1)));

    let mut on_time = Sim::new(RulesConfig::default(), "sf:SF2");
    let mut reg = shipment("sf:SF2", "O-2", T0);
    reg.promised_delivery_at = Some(time::from_millis(T0 + 48 * H));
    on_time.register(reg, T0);
    on_time.scan(Status::PickedUp, T0 + H);
    on_time.scan(Status::Delivered, T0 + 20 * H);
    on_time.advance(T0 + 1000 * H);
    assert!(alerts(&on_time.outputs).is_empty());
}

#[test]
fn every_carrier_problem_is_raised_at_once_with_its_reason() {
    let cases = [
        (
            Status::DeliveryAttemptFailed,
            Reason::Unspecified,
            Reason::DeliveryAttemptFailed,
        ),
        (Status::Exception, Reason::Address, Reason::Address),
        (Status::Exception, Reason::Refused, Reason::Refused),
        (
            Status::DeliveryAttemptFailed,
            Reason::RecipientUnreachable,
            Reason::RecipientUnreachable,
        ),
        (
            Status::Returning,
            Reason::Unspecified,
            Reason::ReturnToSender,
        ),
        (
            Status::Returned,
            Reason::Unspecified,
            Reason::ReturnToSender,
        ),
        (Status::Customs, Reason::CustomsHold, Reason::CustomsHold),
        (Status::Exception, Reason::Damaged, Reason::Damaged),
        (Status::Exception, Reason::Lost, Reason::Lost),
        (Status::Cancelled, Reason::Unspecified, Reason::Cancelled),
        (Status::InTransit, Reason::Refused, Reason::Refused),
    ];
    for (status, reason, expected) in cases {
        let mut sim = registered(RulesConfig::default());
        sim.scan(Status::PickedUp, T0);
        let raised = alerts(&sim.event(event(KEY, status, reason, T0 + H)));
        let case = format!("{status:?}/{reason:?}");
        assert_eq!(raised.len(), 1, "{case}: {raised:?}");
        assert_eq!(raised[0].rule, "carrier_exception", "{case}");
        assert_eq!(raised[0].state, Opened as i32, "{case}");
        assert_eq!(raised[0].reason, expected as i32, "{case}");
        assert_eq!(raised[0].severity, Severity::Critical as i32, "{case}");
        let next = transitions(&sim.scan(Status::InTransit, T0 + 2 * H));
        let resolved = next.contains(&t(RuleId::CarrierException, Resolved, 0));
        let terminal = matches!(status, Status::Returned | Status::Cancelled);
        assert_eq!(
            resolved, !terminal,
            "{case}: moving again resolves it, unless terminal"
        );
    }
}

#[test]
fn normal_customs_clearance_and_carrier_delay_in_transit_are_not_problems() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::Customs, T0 + H);
    sim.event(event(
        KEY,
        Status::InTransit,
        Reason::CarrierDelay,
        T0 + 2 * H,
    ));
    assert!(alerts(&sim.outputs).is_empty());
}

#[test]
fn a_second_problem_while_one_is_open_does_not_open_another_episode() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.event(event(KEY, Status::Exception, Reason::Address, T0 + H));
    sim.event(event(
        KEY,
        Status::DeliveryAttemptFailed,
        Reason::RecipientUnreachable,
        T0 + 2 * H,
    ));
    sim.scan(Status::InTransit, T0 + 3 * H);
    sim.event(event(KEY, Status::Exception, Reason::Damaged, T0 + 4 * H));
    let exceptions: Vec<(u32, i32)> = alerts(&sim.outputs)
        .iter()
        .filter(|a| a.rule == "carrier_exception")
        .map(|a| (a.episode, a.state))
        .collect();
    assert_eq!(
        exceptions,
        [(1, Opened as i32), (1, Resolved as i32), (2, Opened as i32)]
    );
}

#[test]
fn a_return_not_picked_up_raises_the_return_rule_not_no_pickup() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    let mut reg = shipment(KEY, "R-1", T0);
    reg.is_return = true;
    sim.register(reg, T0);
    sim.scan(Status::InfoReceived, T0 + H);
    assert!(sim.advance(T0 + 7 * 24 * H).is_empty());
    assert_eq!(
        transitions(&sim.advance(past(T0 + 7 * 24 * H))),
        [t(RuleId::ReturnNotPickedUp, Opened, 0)]
    );
    assert_eq!(
        transitions(&sim.scan(Status::PickedUp, T0 + 200 * H)),
        [t(RuleId::ReturnNotPickedUp, Resolved, 0)]
    );
}

#[test]
fn a_delivered_return_emits_return_received_once() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    let mut reg = shipment(KEY, "R-1", T0);
    reg.is_return = true;
    sim.register(reg, T0);
    sim.scan(Status::PickedUp, T0 + H);
    sim.scan(Status::Delivered, T0 + 10 * H);
    // A second delivered scan (carriers resend with another code) adds nothing.
    sim.event(event(
        KEY,
        Status::Delivered,
        Reason::SignedByProxy,
        T0 + 11 * H,
    ));
    let returns: Vec<_> = updates(&sim.outputs)
        .into_iter()
        .filter(|(_, u)| u.kind == UpdateKind::ReturnReceived as i32)
        .collect();
    assert_eq!(returns.len(), 1, "{returns:?}");
    assert_eq!(returns[0].0, format!("r:{KEY}"));
    assert_eq!(returns[0].1.order_id, "R-1");
    assert_eq!(
        returns[0].1.event.as_ref().map(|e| e.status),
        Some(Status::Delivered as i32)
    );

    // Not a return: no refund trigger.
    let mut outbound = registered(RulesConfig::default());
    outbound.scan(Status::Delivered, T0 + H);
    assert!(
        updates(&outbound.outputs)
            .iter()
            .all(|(_, u)| u.kind == UpdateKind::Scan as i32)
    );
}

#[test]
fn a_return_registered_after_its_delivery_emits_return_received_on_join() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    sim.scan(Status::PickedUp, T0 + H);
    sim.scan(Status::Delivered, T0 + 10 * H);
    assert!(updates(&sim.outputs).is_empty(), "no order to update yet");
    let mut reg = shipment(KEY, "R-1", T0);
    reg.is_return = true;
    let joined = updates(&sim.register(reg, T0 + 11 * H));
    let kinds: Vec<(String, i32)> = joined.iter().map(|(id, u)| (id.clone(), u.kind)).collect();
    assert_eq!(
        kinds,
        [
            (
                format!("u:{}", scan(KEY, Status::PickedUp, T0 + H).event_id),
                UpdateKind::Scan as i32
            ),
            (
                format!("u:{}", scan(KEY, Status::Delivered, T0 + 10 * H).event_id),
                UpdateKind::Scan as i32
            ),
            (format!("r:{KEY}"), UpdateKind::ReturnReceived as i32),
        ]
    );
}

#[test]
fn a_late_scan_is_an_update_flagged_late_but_never_moves_the_status_back() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::OutForDelivery, T0 + 30 * H);
    let late = updates(&sim.scan(Status::InTransit, T0 + 20 * H));
    assert_eq!(late.len(), 1);
    assert!(late[0].1.late);
    assert_eq!(late[0].1.current_status, Status::OutForDelivery as i32);
    assert_eq!(sim.wb.state.status(), Status::OutForDelivery);
    // The OFD timer still runs from the OFD scan, not from the late one.
    assert_eq!(
        transitions(&sim.advance(past(T0 + 66 * H))),
        [t(RuleId::OutForDeliveryNotDelivered, Opened, 0)]
    );
}

#[test]
fn nothing_leaves_a_terminal_state() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::Delivered, T0 + 10 * H);
    // A scan dated after delivery (mis-scan) and a late one: both history only.
    sim.scan(Status::InTransit, T0 + 20 * H);
    sim.scan(Status::OutForDelivery, T0 + 5 * H);
    assert_eq!(sim.wb.state.status(), Status::Delivered);
    sim.advance(T0 + 1000 * H);
    assert!(
        alerts(&sim.outputs).is_empty(),
        "{:?}",
        transitions(&sim.outputs)
    );
    assert_eq!(
        updates(&sim.outputs).len(),
        4,
        "every scan is still an update"
    );
}

#[test]
fn a_scan_beyond_the_clock_waits_and_deadlines_before_it_fire_first() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    // The 30 h scan arrives while the clock is at 18 h: it waits.
    let early = sim.feed(
        &[Input::Event(scan(KEY, Status::InTransit, T0 + 30 * H))],
        T0 + 18 * H,
    );
    assert_eq!(updates(&early).len(), 1, "the update goes out at once");
    assert!(transitions(&early).is_empty());
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("st", past(T0 + 24 * H)), ("pe", T0 + 30 * H)]
    );
    // When the clock passes both, the 24 h deadline fires before the scan
    // resolves it: the alerts of living through it.
    assert_eq!(
        transitions(&sim.advance(T0 + 40 * H)),
        [
            t(RuleId::StalledInTransit, Opened, 0),
            t(RuleId::StalledInTransit, Resolved, 0)
        ]
    );
}

/// Strict thresholds: the next scan exactly 24h00 after the last is folded
/// before the deadline (nothing opens, the stall re-arms from it); one
/// millisecond later the deadline comes first.
#[test]
fn a_scan_exactly_at_a_threshold_folds_first_and_one_just_past_it_does_not() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    assert!(transitions(&sim.scan(Status::InTransit, T0 + 24 * H)).is_empty());
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("st", past(T0 + 48 * H))],
        "re-armed from the scan at the threshold"
    );
    let late = sim.scan(Status::InTransit, past(T0 + 48 * H));
    assert_eq!(
        transitions(&late),
        [
            t(RuleId::StalledInTransit, Opened, 0),
            t(RuleId::StalledInTransit, Resolved, 0)
        ]
    );
    assert_eq!(
        alerts(&late)[0].effective_at,
        Some(time::from_millis(T0 + 48 * H)),
        "effective at the threshold it passed"
    );
}

/// Wall clock: a snapshot pushed 3 days late arrives one record per scan; the
/// batch path applies each with the grace (`hold_until`). The first scan's
/// deadline is long past, but nothing fires before the next scan moves it on.
#[test]
fn a_late_snapshot_read_one_scan_at_a_time_raises_nothing_within_the_grace() {
    let now = T0 + 72 * H;
    let grace = 5_000;
    let mut sim = registered(RulesConfig::default());
    let snapshot = [
        (Status::PickedUp, T0),
        (Status::InTransit, T0 + 20 * H),
        (Status::InTransit, T0 + 40 * H),
        (Status::OutForDelivery, T0 + 60 * H),
    ];
    for (i, (status, at)) in snapshot.into_iter().enumerate() {
        // A record every 100 ms, the consumer caught up in between.
        let clock = now + i64::try_from(i).expect("small") * 100;
        sim.wb.hold_until = clock + grace;
        let out = sim.feed(&[Input::Event(scan(KEY, status, at))], clock);
        assert!(
            transitions(&out).is_empty(),
            "scan {i}: {:?}",
            transitions(&out)
        );
        // The timer loop (which never holds) only sees the member's score.
        let score: Vec<i64> = sim.wb.timer_scores().map(|(_, s)| s).collect();
        assert!(score.iter().all(|s| *s >= clock + grace), "{score:?}");
    }
    sim.wb.hold_until = 0;
    assert!(transitions(&sim.advance(now + 10_000)).is_empty());
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("od", past(T0 + 96 * H))],
        "the rule keeps its real deadline"
    );
}

/// The grace only delays: a deadline still past when it ends fires, with its
/// real time; and a deadline a received scan follows (a real gap inside the
/// snapshot) fires during the grace as the event-time fold says.
#[test]
fn the_grace_delays_a_past_deadline_and_never_hides_a_real_gap() {
    let now = T0 + 72 * H;
    let mut sim = registered(RulesConfig::default());
    sim.wb.hold_until = now + 5_000;
    let out = sim.feed(&[Input::Event(scan(KEY, Status::PickedUp, T0))], now);
    assert!(transitions(&out).is_empty());
    assert_eq!(
        sim.wb.timer_scores().collect::<Vec<_>>(),
        [("st", now + 5_000)]
    );
    sim.wb.hold_until = 0;
    let fired = sim.advance(now + 5_000);
    assert_eq!(
        transitions(&fired),
        [
            t(RuleId::StalledInTransit, Opened, 0),
            t(RuleId::StalledInTransit, Escalated, 1),
            t(RuleId::StalledInTransit, Escalated, 2)
        ]
    );
    assert_eq!(
        alerts(&fired)[0].effective_at,
        Some(time::from_millis(T0 + 24 * H))
    );

    let mut sim = registered(RulesConfig::default());
    sim.wb.hold_until = now + 5_000;
    let out = sim.feed(
        &[
            Input::Event(scan(KEY, Status::PickedUp, T0)),
            Input::Event(scan(KEY, Status::InTransit, T0 + 30 * H)),
        ],
        now,
    );
    assert_eq!(
        transitions(&out),
        [
            t(RuleId::StalledInTransit, Opened, 0),
            t(RuleId::StalledInTransit, Resolved, 0)
        ]
    );
}

fn with_overrides() -> RulesConfig {
    let mut rules = RulesConfig::default();
    rules.stalled_in_transit.overrides = vec![
        Override {
            carrier: Some("sf".into()),
            service_level: Some("express".into()),
            tiers: vec![millis(6 * H), millis(12 * H)],
        },
        Override {
            carrier: Some("sf".into()),
            service_level: None,
            tiers: vec![millis(10 * H)],
        },
    ];
    rules
}

#[test]
fn thresholds_are_overridden_per_carrier_and_service_level() {
    let stall_opens_at = |key: &str, level: &str| {
        let mut sim = Sim::new(with_overrides(), key);
        let mut reg = shipment(key, "O", T0);
        reg.service_level = level.into();
        sim.register(reg, T0);
        sim.scan(Status::PickedUp, T0);
        sim.advance(T0 + 200 * H);
        alerts(&sim.outputs)
            .iter()
            .filter(|a| a.rule == "stalled_in_transit")
            .map(|a| time::millis(a.effective_at.as_ref()) - T0)
            .collect::<Vec<_>>()
    };
    assert_eq!(stall_opens_at("sf:A", "express"), [6 * H, 12 * H]);
    assert_eq!(stall_opens_at("sf:B", "standard"), [10 * H]);
    assert_eq!(stall_opens_at("yto:C", "express"), [24 * H, 48 * H, 72 * H]);
}

#[test]
fn rules_load_from_toml_with_overrides_and_severities() {
    let rules: RulesConfig = trackstream_runtime::config::load_from(
        r#"
        [stalled_in_transit]
        tiers = ["12h", "1d"]
        severities = ["info", "critical"]
        [[stalled_in_transit.overrides]]
        carrier = "sf"
        tiers = ["90m"]
        [out_for_delivery_not_delivered]
        enabled = false
        tiers = ["36h"]
        "#,
        Vec::new(),
    )
    .expect("valid rules");
    let mut sim = Sim::new(rules.clone(), "yto:Y1");
    sim.scan(Status::PickedUp, T0);
    sim.advance(T0 + 100 * H);
    let severities: Vec<i32> = alerts(&sim.outputs).iter().map(|a| a.severity).collect();
    assert_eq!(
        severities,
        [Severity::Info as i32, Severity::Critical as i32]
    );
    let mut sim = Sim::new(rules.clone(), "sf:S1");
    sim.scan(Status::PickedUp, T0);
    assert_eq!(
        alerts(&sim.advance(past(T0 + 90 * 60_000)))
            .iter()
            .map(|a| a.tier)
            .collect::<Vec<_>>(),
        [0]
    );
    let mut off = Sim::new(rules, "yto:Y2");
    off.scan(Status::OutForDelivery, T0);
    off.advance(T0 + 100 * H);
    assert!(alerts(&off.outputs).is_empty(), "disabled rule");
    assert_eq!(
        trackstream_runtime::config::load_from::<RulesConfig>(
            "[stalled_in_transit]\ntiers = [\"1x\"]",
            Vec::new()
        )
        .map(|_| ())
        .map_err(|e| e.to_string().contains("unknown time unit \"x\"")),
        Err(true)
    );
}

#[test]
fn a_late_registration_earlier_than_info_received_reschedules_instead_of_resolving() {
    // Clean: registered at 0, info at 10 h → opens at 24 h, escalates at 48 h.
    // Late: info at 10 h alone opens at 34 h; the registration then joins.
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    sim.scan(Status::InfoReceived, T0 + 10 * H);
    sim.advance(T0 + 35 * H);
    sim.register(shipment(KEY, "O-1", T0), T0 + 35 * H);
    sim.advance(T0 + 50 * H);
    assert_eq!(
        transitions(&sim.outputs),
        [
            t(RuleId::NoPickup, Opened, 0),
            t(RuleId::NoPickup, Escalated, 1)
        ]
    );
    let tier1 = alerts(&sim.outputs)[1].clone();
    assert_eq!(time::millis(tier1.effective_at.as_ref()), T0 + 48 * H);
}

/// Every scenario, fed shuffled (one batch, the clock far behind) with the
/// registration anywhere in between, folds into exactly the clean run's alerts
/// and updates.
#[test]
fn shuffled_scans_and_a_late_registration_yield_the_clean_alerts() {
    let rules = RulesConfig::default();
    let mut rng = Lcg(7);
    for kind in 0..8 {
        for round in 0..20 {
            let key = format!("sf:K{kind}-{round}");
            let (reg, events) = scenario(&key, "O", kind, T0);
            let end = T0 + 1000 * H;
            let clean = clean_run(&rules, &key, &reg, &events, end);
            let mut inputs: Vec<Input> = events.iter().cloned().map(Input::Event).collect();
            rng.shuffle(&mut inputs);
            let at = usize::try_from(rng.below(inputs.len() as u64 + 1)).expect("fits");
            inputs.insert(at, Input::Registration(reg.clone()));
            let mut sim = Sim::new(rules.clone(), &key);
            // Arrive in a few batches while the clock stays before the first scan.
            let mut rest = inputs.as_slice();
            while !rest.is_empty() {
                let n = 1 + usize::try_from(rng.below(3)).expect("fits");
                let (now, later) = rest.split_at(n.min(rest.len()));
                sim.feed(now, T0);
                rest = later;
            }
            sim.advance(end);
            let got_alerts = alert_set(&alerts(&sim.outputs));
            let got_updates: std::collections::BTreeSet<_> = updates(&sim.outputs)
                .iter()
                .map(|(_, u)| update_key(u))
                .collect();
            assert_eq!(got_alerts, clean.0, "kind {kind} round {round}");
            assert_eq!(got_updates, clean.1, "kind {kind} round {round}");
            if kind != 0 {
                assert!(!clean.0.is_empty(), "scenario {kind} raises alerts");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Time sanity: `late` means older than a scan received (and vouched) before.
// ---------------------------------------------------------------------------

/// One scan dated a month ahead (a carrier clock bug or a forged push) waits in
/// `pending`; every real scan after it is still a normal update, the status
/// keeps moving, and the rules keep running on the real scans.
#[test]
fn a_future_dated_scan_does_not_make_later_scans_late() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    // Received at 1 h (ingest's clock), dated a month later.
    let mut ahead = scan(KEY, Status::InTransit, T0 + 30 * 24 * H);
    ahead.received_at = Some(time::from_millis(T0 + H));
    let future = sim.feed(&[Input::Event(ahead)], T0 + H);
    assert_eq!(updates(&future).len(), 1, "its own update goes out");
    assert_eq!(sim.wb.state.pending.len(), 1, "it waits for its time");
    for (status, at) in [
        (Status::InTransit, T0 + 2 * H),
        (Status::OutForDelivery, T0 + 3 * H),
    ] {
        let later = updates(&sim.scan(status, at));
        assert_eq!(later.len(), 1, "{status:?}");
        assert!(!later[0].1.late, "{status:?} must not be late");
        assert_eq!(later[0].1.current_status, status as i32);
    }
    assert_eq!(sim.wb.state.status(), Status::OutForDelivery);
    // The 36 h out-for-delivery rule runs from the real scan.
    assert_eq!(
        transitions(&sim.advance(past(T0 + 39 * H))),
        [t(RuleId::OutForDeliveryNotDelivered, Opened, 0)]
    );
    let delivered = updates(&sim.scan(Status::Delivered, T0 + 40 * H));
    assert!(!delivered[0].1.late);
    assert_eq!(sim.wb.state.status(), Status::Delivered);
    // When the clock reaches it, it folds without leaving the terminal state.
    sim.advance(T0 + 31 * 24 * H);
    assert!(sim.wb.state.pending.is_empty());
    assert_eq!(sim.wb.state.status(), Status::Delivered);
}

/// Late is relative to what was *received* before, never to how far the fold
/// got: a scan older than one received (and vouched) before it is late
/// whatever the clock, so a catch-up flags exactly what a live run flags.
#[test]
fn late_means_older_than_a_scan_received_before_it() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::InTransit, T0 + 10 * H);
    let late = updates(&sim.feed(
        &[Input::Event(scan(KEY, Status::PickedUp, T0 + 5 * H))],
        T0 + 10 * H,
    ));
    assert!(late[0].1.late, "older than a scan received before it");

    // Clock at 10 h: the 30 h scan is still pending in the fold, but it was
    // received before the 20 h one, which is late all the same.
    let pending = updates(&sim.feed(
        &[
            Input::Event(scan(KEY, Status::OutForDelivery, T0 + 30 * H)),
            Input::Event(scan(KEY, Status::InTransit, T0 + 20 * H)),
        ],
        T0 + 10 * H,
    ));
    assert_eq!(
        pending
            .iter()
            .map(|(_, u)| (u.late, u.current_status))
            .collect::<Vec<_>>(),
        [
            (false, Status::OutForDelivery as i32),
            (true, Status::OutForDelivery as i32)
        ],
        "the fold's clock plays no part"
    );
    sim.advance(T0 + 30 * H);
    let after = updates(&sim.feed(
        &[Input::Event(scan(KEY, Status::InTransit, T0 + 25 * H))],
        T0 + 30 * H,
    ));
    assert!(after[0].1.late, "older than the 30 h scan");
    assert_eq!(after[0].1.current_status, Status::OutForDelivery as i32);
}

// ---------------------------------------------------------------------------
// Registrations: join window, identity, ownership, contacts.
// ---------------------------------------------------------------------------

const D: i64 = 24 * H;

fn update_ids(outputs: &[Output]) -> Vec<String> {
    updates(outputs).into_iter().map(|(id, _)| id).collect()
}

fn id_of(status: Status, at: i64) -> String {
    format!("u:{}", scan(KEY, status, at).event_id)
}

/// A waybill number with an earlier parcel's scans (delivered two months ago):
/// a first registration joins only the scans from `join_window` before its
/// `registered_at`; the earlier proof of delivery never reaches the order, and
/// a straggler of the old parcel arriving later does not either.
#[test]
fn a_first_registration_joins_only_scans_inside_the_join_window() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    let start = T0 + 100 * D;
    sim.scan(Status::PickedUp, start - 60 * D);
    sim.scan(Status::Delivered, start - 59 * D);
    sim.scan(Status::InfoReceived, start - 29 * D);
    sim.scan(Status::InfoReceived, start - H);
    let joined = sim.register(shipment(KEY, "O-1", start), start);
    assert_eq!(
        update_ids(&joined),
        [
            id_of(Status::InfoReceived, start - 29 * D),
            id_of(Status::InfoReceived, start - H)
        ],
        "30 days back by default, nothing older"
    );
    // A scan dated before the window, arriving now: history only.
    let straggler = sim.scan(Status::InTransit, start - 45 * D);
    assert!(update_ids(&straggler).is_empty());
    assert_eq!(sim.history.len(), 5, "still kept in history");

    // The window is configurable.
    let rules = RulesConfig {
        join_window: millis(2 * H),
        ..RulesConfig::default()
    };
    let mut sim = Sim::new(rules, KEY);
    sim.scan(Status::InfoReceived, start - 3 * H);
    sim.scan(Status::InfoReceived, start - H);
    assert_eq!(
        update_ids(&sim.register(shipment(KEY, "O-1", start), start)),
        [id_of(Status::InfoReceived, start - H)]
    );
    let loaded: RulesConfig =
        trackstream_runtime::config::load_from("join_window = \"7d\"", Vec::new())
            .expect("valid rules");
    assert_eq!(loaded.join_window, millis(7 * D));
    assert_eq!(RulesConfig::default().join_window, millis(30 * D));
}

/// A return registered on a number whose earlier parcel was delivered two
/// months ago: the old delivery is no refund trigger, on join or on the new
/// parcel's scans; the return's own delivery is.
#[test]
fn an_earlier_parcels_delivery_never_triggers_return_received() {
    let start = T0 + 100 * D;
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    sim.scan(Status::PickedUp, start - 61 * D);
    sim.scan(Status::Delivered, start - 60 * D);
    let mut reg = shipment(KEY, "R-1", start);
    reg.is_return = true;
    let returns = |outputs: &[Output]| {
        updates(outputs)
            .into_iter()
            .filter(|(_, u)| u.kind == UpdateKind::ReturnReceived as i32)
            .count()
    };
    assert_eq!(returns(&sim.register(reg, start)), 0);
    assert_eq!(returns(&sim.scan(Status::InTransit, start + H)), 0);
    assert_eq!(returns(&sim.scan(Status::Delivered, start + 2 * D)), 1);
}

/// Ingest defaults `registered_at` to the request time: a merchant repeating
/// its registration hours later must not move the no-pickup deadline.
#[test]
fn an_identical_registration_keeps_the_no_pickup_deadline() {
    let mut sim = registered(RulesConfig::default());
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("np", past(T0 + 24 * H))]
    );
    sim.wb.registration_changed = false;
    let before = sim.wb.state.clone();
    let repeat = sim.register(shipment(KEY, "O-1", T0 + 10 * H), T0 + 10 * H);
    assert!(repeat.is_empty(), "{repeat:?}");
    assert!(!sim.wb.registration_changed, "nothing to store");
    assert_eq!(sim.wb.state, before);
    assert_eq!(
        transitions(&sim.advance(past(T0 + 24 * H))),
        [t(RuleId::NoPickup, Opened, 0)],
        "opens 24 h after the first registration"
    );
}

/// The owner may change its registration: the new fields apply (promise,
/// service level, order), the first `registered_at` stays.
#[test]
fn a_changed_registration_by_the_owner_applies() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0 + H);
    let mut changed = shipment(KEY, "O-1b", T0 + 5 * H);
    changed.promised_delivery_at = Some(time::from_millis(T0 + 20 * H));
    changed.service_level = "express".into();
    sim.wb.registration_changed = false;
    assert!(sim.register(changed, T0 + 5 * H).is_empty());
    assert!(sim.wb.registration_changed);
    let reg = sim.wb.registration.clone().expect("registered");
    assert_eq!(reg.order_id, "O-1b");
    assert_eq!(reg.service_level, "express");
    assert_eq!(time::millis(reg.registered_at.as_ref()), T0, "first kept");
    let moved = updates(&sim.scan(Status::InTransit, T0 + 6 * H));
    assert_eq!(moved[0].1.order_id, "O-1b");
    assert_eq!(
        moved[0]
            .1
            .shipment
            .as_ref()
            .and_then(|s| s.promised_delivery_at),
        Some(time::from_millis(T0 + 20 * H))
    );
    assert_eq!(
        transitions(&sim.advance(past(T0 + 20 * H))),
        [t(RuleId::PromisedDateMissed, Opened, 0)],
        "the new promise is watched"
    );
}

/// Defense in depth behind ingest's 409: another merchant's registration of
/// the waybill changes nothing, emits nothing, and is reported for the dead
/// letter topic; the owner's order keeps receiving the scans.
#[test]
fn another_merchants_registration_is_refused_with_no_output() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0 + H);
    sim.wb.registration_changed = false;
    let state = sim.wb.state.clone();
    let stored = sim.wb.registration.clone();
    let mut takeover = shipment(KEY, "EVIL-1", T0 + 2 * H);
    takeover.merchant_id = "m-evil".into();
    takeover.promised_delivery_at = Some(time::from_millis(T0 + 3 * H));

    let mut fx = engine::Effects::default();
    sim.engine.apply(
        &mut sim.wb,
        &[Input::Registration(takeover.clone())],
        &sim.history,
        T0 + 2 * H,
        &mut fx,
    );
    assert!(fx.outputs.is_empty() && fx.history.is_empty(), "{fx:?}");
    assert_eq!(sim.wb.state, state, "state unchanged");
    assert_eq!(sim.wb.registration, stored, "registration unchanged");
    assert!(!sim.wb.registration_changed);
    assert_eq!(
        fx.refused_registrations,
        [RefusedRegistration {
            input: 0,
            registration: 0,
            merchant_id: "m-evil".into(),
            order_id: "EVIL-1".into(),
            owner: "m-acme".into(),
        }]
    );
    assert_eq!(RefusedRegistration::CAUSE, "not_owner");

    // In a batch with scans: they still go to the owner's order, and the
    // refused registration is found by its position.
    let mut fx = engine::Effects::default();
    sim.engine.apply(
        &mut sim.wb,
        &[
            Input::Event(scan(KEY, Status::InTransit, T0 + 4 * H)),
            Input::Registration(shipment(KEY, "O-1", T0 + 4 * H)),
            Input::Registration(takeover),
            Input::Event(scan(KEY, Status::OutForDelivery, T0 + 5 * H)),
        ],
        &sim.history,
        T0 + 5 * H,
        &mut fx,
    );
    assert_eq!(
        fx.refused_registrations
            .iter()
            .map(|r| (r.input, r.registration))
            .collect::<Vec<_>>(),
        [(2, 1)],
        "found by position; the owner's repeat before it changed nothing"
    );
    let sent = updates(&fx.outputs);
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|(_, u)| u.order_id == "O-1" && u.merchant_id == "m-acme")
    );
    assert!(alerts(&fx.outputs).iter().all(|a| a.order_id == "O-1"));
}

const PHONE: &str = "13812345678";
const EMAIL: &str = "li.lei@example.com";
const NAME: &str = "Li Lei";

fn with_contacts(order: &str, at: i64) -> trackstream_proto::v1::Shipment {
    let mut reg = shipment(KEY, order, at);
    reg.buyer = Some(BuyerContact {
        name: NAME.into(),
        phone: PHONE.into(),
        email: EMAIL.into(),
        locale: "zh-CN".into(),
        time_zone: "Asia/Shanghai".into(),
    });
    reg.is_return = true;
    reg
}

fn assert_no_contact(what: &str, bytes: &[u8]) {
    for contact in [PHONE, EMAIL, NAME] {
        assert!(
            !bytes
                .windows(contact.len())
                .any(|w| w == contact.as_bytes()),
            "{what} holds {contact:?}"
        );
    }
}

fn encoded(output: &Output) -> Vec<u8> {
    match output {
        Output::Update { update, .. } => update.encode_to_vec(),
        Output::Alert(alert) => alert.encode_to_vec(),
    }
}

/// The detector keeps no buyer name, phone or e-mail: not in the stored
/// registration or state, not in any update (first join, live scans, return
/// received) or alert; locale and time zone stay. A registration stored with
/// contacts by an older version is stripped and rewritten when next touched.
#[test]
fn stored_state_and_emitted_outputs_hold_no_contact() {
    let mut sim = Sim::new(RulesConfig::default(), KEY);
    sim.scan(Status::InfoReceived, T0 + H);
    sim.register(with_contacts("R-1", T0), T0 + 2 * H);
    sim.scan(Status::PickedUp, T0 + 8 * 24 * H);
    sim.event(event(KEY, Status::Exception, Reason::Damaged, T0 + 9 * D));
    sim.scan(Status::Delivered, T0 + 10 * D);
    sim.register(with_contacts("R-1", T0 + 11 * D), T0 + 11 * D);
    sim.advance(T0 + 40 * D);

    let kinds: std::collections::BTreeSet<i32> =
        updates(&sim.outputs).iter().map(|(_, u)| u.kind).collect();
    assert!(kinds.contains(&(UpdateKind::ReturnReceived as i32)));
    assert!(!alerts(&sim.outputs).is_empty());
    for output in &sim.outputs {
        assert_no_contact(&output.outbox_id(), &encoded(output));
    }
    let reg = sim.wb.registration.clone().expect("registered");
    assert_no_contact("stored registration", &reg.encode_to_vec());
    assert_no_contact("stored state", &engine::encode_state(&sim.wb.state));
    let buyer = reg.buyer.expect("locale and zone kept");
    assert_eq!(
        (buyer.locale.as_str(), buyer.time_zone.as_str()),
        ("zh-CN", "Asia/Shanghai")
    );

    // Written by an older version: stripped and marked for storing.
    sim.wb.registration = Some(with_contacts("R-1", T0));
    sim.wb.registration_changed = false;
    let out = sim.scan(Status::Delivered, T0 + 41 * D);
    assert!(sim.wb.registration_changed);
    assert_no_contact(
        "migrated registration",
        &sim.wb.registration.as_ref().expect("kept").encode_to_vec(),
    );
    for output in &out {
        assert_no_contact(&output.outbox_id(), &encoded(output));
    }
}

/// The case the property below found (seed-dependent, once in a full run):
/// with no allowed lateness, an exception and an "info received" of the same
/// instant arriving in two batches, the exception first. The canonical order
/// folds the lower progress rank first (info, then exception: the address
/// problem of the first scan resolves and a new exception opens); folding
/// them as they came kept the first exception open instead.
#[test]
fn same_instant_scans_in_two_batches_fold_in_the_canonical_order() {
    let first = event(KEY, Status::InfoReceived, Reason::Address, T0);
    let exception = event(KEY, Status::Exception, Reason::Unspecified, T0 + H);
    let info = event(KEY, Status::InfoReceived, Reason::Unspecified, T0 + H);
    let reg = shipment(KEY, "O-1", T0);
    let rules = RulesConfig::default();
    let end = T0 + 1000 * H;
    let clean = clean_run(
        &rules,
        KEY,
        &reg,
        &[first.clone(), exception.clone(), info.clone()],
        end,
    );
    let mut sim = Sim::new(rules, KEY);
    sim.register(reg, T0);
    for e in [first, exception, info] {
        let newest = time::millis(e.occurred_at.as_ref());
        let clock = trackstream_detector::config::event_clock(newest, std::time::Duration::ZERO);
        sim.feed(&[Input::Event(e)], clock);
    }
    sim.advance(end);
    let seen = alert_set(&alerts(&sim.outputs));
    assert_eq!(seen, clean.0);
    assert_eq!(
        seen.iter()
            .map(|(id, _, _)| id)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "the first exception resolves and a second opens: {seen:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any scan sequence, delivered in any order where each scan is at most
    /// `lateness` behind the newest seen, with the clock the service derives
    /// from that watermark (`config::event_clock`), folds into the alerts of
    /// the time-sorted sequence — same-instant scans included, whichever
    /// arrives first.
    #[test]
    fn disorder_within_the_allowed_lateness_never_changes_the_alerts(
        steps in proptest::collection::vec((0usize..9, 0i64..40, 0usize..4), 1..12),
        jitter in proptest::collection::vec(0i64..30, 12),
        lateness_h in 0i64..30,
    ) {
        let statuses = [
            Status::InfoReceived, Status::PickedUp, Status::InTransit, Status::InTransit,
            Status::OutForDelivery, Status::AvailableForPickup, Status::DeliveryAttemptFailed,
            Status::Exception, Status::Delivered,
        ];
        let reasons = [Reason::Unspecified, Reason::Address, Reason::Lost, Reason::CarrierDelay];
        let mut at = T0;
        let mut events = Vec::new();
        for (status, gap_h, reason) in steps {
            at += gap_h * H;
            events.push(event(KEY, statuses[status], reasons[reason], at));
        }
        events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        events.dedup_by(|a, b| a.event_id == b.event_id);
        let reg = shipment(KEY, "O-1", T0);
        let end = at + 1000 * H;
        let rules = RulesConfig::default();
        let clean = clean_run(&rules, KEY, &reg, &events, end);

        // Arrival order: by time plus a jitter below the lateness.
        let lateness = lateness_h * H;
        let mut arrival: Vec<(i64, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let j = if lateness == 0 { 0 } else { jitter[i % jitter.len()] * H % lateness };
                (time::millis(e.occurred_at.as_ref()) + j, i)
            })
            .collect();
        arrival.sort();
        let mut sim = Sim::new(rules, KEY);
        sim.register(reg, T0);
        let mut newest = i64::MIN;
        for (_, i) in arrival {
            let e = events[i].clone();
            newest = newest.max(time::millis(e.occurred_at.as_ref()));
            sim.feed(
                &[Input::Event(e)],
                trackstream_detector::config::event_clock(
                    newest,
                    std::time::Duration::from_millis(lateness.unsigned_abs()),
                ),
            );
        }
        sim.advance(end);
        prop_assert_eq!(alert_set(&alerts(&sim.outputs)), clean.0);
    }
}

// ---------------------------------------------------------------------------
// Issue 16: one problem, one alert; which rule watches which status; strict
// thresholds.
// ---------------------------------------------------------------------------

/// The rules (by name) a run raised, each once, in order of first appearance.
fn rules_raised(outputs: &[Output]) -> Vec<String> {
    let mut seen = Vec::new();
    for alert in alerts(outputs) {
        if !seen.contains(&alert.rule) {
            seen.push(alert.rule);
        }
    }
    seen
}

/// A carrier exception followed by silence is one alert: it opens at once,
/// escalates past 24 h and 72 h without a scan (critical throughout), and no
/// stall rule opens beside it. A scan showing the parcel moving resolves it,
/// and the stall rule re-arms from that scan.
#[test]
fn an_exception_then_silence_escalates_the_exception_alone() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.event(event(KEY, Status::Exception, Reason::Address, T0 + H));
    assert!(transitions(&sim.advance(T0 + 25 * H)).is_empty(), "24h00");
    assert_eq!(
        transitions(&sim.advance(past(T0 + 25 * H))),
        [t(RuleId::CarrierException, Escalated, 1)]
    );
    assert!(transitions(&sim.advance(T0 + 73 * H)).is_empty());
    let critical = sim.advance(T0 + 500 * H);
    assert_eq!(
        transitions(&critical),
        [t(RuleId::CarrierException, Escalated, 2)],
        "two escalations, then nothing more"
    );
    assert_eq!(
        alerts(&critical)[0].effective_at,
        Some(time::from_millis(T0 + 73 * H))
    );
    let all = alerts(&sim.outputs);
    assert!(all.iter().all(|a| a.severity == Severity::Critical as i32));
    assert!(all.iter().all(|a| a.alert_id == all[0].alert_id), "one id");
    assert_eq!(rules_raised(&sim.outputs), ["carrier_exception"]);

    let moved = sim.scan(Status::InTransit, T0 + 501 * H);
    assert_eq!(
        transitions(&moved),
        [t(RuleId::CarrierException, Resolved, 2)]
    );
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("st", past(T0 + 525 * H))],
        "the stall watches again, from the new scan"
    );
    assert_eq!(
        transitions(&sim.advance(past(T0 + 525 * H))),
        [t(RuleId::StalledInTransit, Opened, 0)]
    );
}

/// A failed delivery attempt is watched the same way; a second failed
/// attempt is a scan, so it restarts the silence (no new episode).
#[test]
fn a_failed_attempt_then_silence_escalates_the_exception_alone() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::OutForDelivery, T0 + 10 * H);
    let opened = sim.scan(Status::DeliveryAttemptFailed, T0 + 12 * H);
    assert_eq!(
        transitions(&opened),
        [t(RuleId::CarrierException, Opened, 0)]
    );
    sim.scan(Status::DeliveryAttemptFailed, T0 + 30 * H);
    assert!(
        transitions(&sim.advance(T0 + 54 * H)).is_empty(),
        "24 h after the second attempt, not the first"
    );
    sim.advance(T0 + 1000 * H);
    assert_eq!(
        transitions(&sim.outputs),
        [
            t(RuleId::CarrierException, Opened, 0),
            t(RuleId::CarrierException, Escalated, 1),
            t(RuleId::CarrierException, Escalated, 2)
        ]
    );
    let escalations: Vec<i64> = alerts(&sim.outputs)[1..]
        .iter()
        .map(|a| time::millis(a.effective_at.as_ref()) - T0)
        .collect();
    assert_eq!(escalations, [54 * H, 102 * H]);
    assert_eq!(
        transitions(&sim.scan(Status::Delivered, T0 + 1001 * H)),
        [t(RuleId::CarrierException, Resolved, 2)]
    );
    sim.advance(T0 + 2000 * H);
    assert!(sim.wb.state.deadlines().next().is_none());
}

/// Customs: a normal clearance is watched by its own, longer stall rule
/// (nothing at 24 h or 48 h; 72 h / 120 h / 168 h), which a scan out of
/// customs resolves, re-arming the transit stall. A customs hold with a
/// problem reason is a carrier exception, escalating alone.
#[test]
fn customs_is_watched_by_its_own_longer_stall_and_a_hold_by_the_exception() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::Customs, T0 + 10 * H);
    assert!(sim.advance(T0 + 82 * H).is_empty(), "72h00 in customs");
    sim.advance(T0 + 200 * H);
    assert_eq!(
        transitions(&sim.outputs),
        [
            t(RuleId::StalledInCustoms, Opened, 0),
            t(RuleId::StalledInCustoms, Escalated, 1),
            t(RuleId::StalledInCustoms, Escalated, 2)
        ]
    );
    let severities: Vec<i32> = alerts(&sim.outputs).iter().map(|a| a.severity).collect();
    assert_eq!(
        severities,
        [
            Severity::Warning as i32,
            Severity::Warning as i32,
            Severity::Critical as i32
        ]
    );
    assert_eq!(
        transitions(&sim.scan(Status::InTransit, T0 + 201 * H)),
        [t(RuleId::StalledInCustoms, Resolved, 2)]
    );
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("st", past(T0 + 225 * H))]
    );

    let mut held = registered(RulesConfig::default());
    held.scan(Status::PickedUp, T0);
    held.event(event(KEY, Status::Customs, Reason::CustomsDuties, T0 + H));
    held.advance(T0 + 500 * H);
    assert_eq!(
        transitions(&held.outputs),
        [
            t(RuleId::CarrierException, Opened, 0),
            t(RuleId::CarrierException, Escalated, 1),
            t(RuleId::CarrierException, Escalated, 2)
        ]
    );
}

/// Returning to the sender is a carrier exception (return to sender) that
/// escalates while the way back is silent; each scan on the way back restarts
/// the silence; once returned (terminal) nothing is armed.
#[test]
fn returning_is_watched_by_the_exception_and_returned_stops_it() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    let opened = alerts(&sim.scan(Status::Returning, T0 + H));
    assert_eq!(opened[0].reason, Reason::ReturnToSender as i32);
    sim.scan(Status::Returning, T0 + 20 * H);
    assert_eq!(
        transitions(&sim.advance(past(T0 + 44 * H))),
        [t(RuleId::CarrierException, Escalated, 1)]
    );
    assert!(transitions(&sim.scan(Status::Returned, T0 + 50 * H)).is_empty());
    assert!(sim.wb.state.deadlines().next().is_none(), "terminal");
    sim.advance(T0 + 1000 * H);
    assert_eq!(rules_raised(&sim.outputs), ["carrier_exception"]);
}

/// The status → watching-rule table of `docs/RULES.md`, status by status:
/// a parcel picked up, then one scan in the status, then silence for 1000 h.
#[test]
fn every_status_is_watched_by_the_rule_of_the_table() {
    use Status::*;
    let table: [(Status, &[&str]); 14] = [
        (Pending, &["no_pickup"]),
        (InfoReceived, &["no_pickup"]),
        (PickedUp, &["stalled_in_transit"]),
        (InTransit, &["stalled_in_transit"]),
        (Customs, &["stalled_in_customs"]),
        (OutForDelivery, &["out_for_delivery_not_delivered"]),
        (AvailableForPickup, &["uncollected_at_pickup_point"]),
        (DeliveryAttemptFailed, &["carrier_exception"]),
        (Exception, &["carrier_exception"]),
        (Returning, &["carrier_exception"]),
        (Returned, &["carrier_exception"]),
        (Cancelled, &["carrier_exception"]),
        (Delivered, &[]),
        (Expired, &[]),
    ];
    for (status, expected) in table {
        let mut sim = registered(RulesConfig::default());
        // Not picked up yet: the pickup rule, anchored at registration.
        if rules::silence_rule(status).is_some() || rules::is_terminal(status) {
            sim.scan(Status::PickedUp, T0);
        }
        sim.scan(status, T0 + H);
        sim.advance(T0 + 1000 * H);
        assert_eq!(rules_raised(&sim.outputs), expected, "{status:?}");
        let escalated = alerts(&sim.outputs).iter().any(|a| a.tier > 0);
        let terminal = rules::is_terminal(status);
        assert_eq!(
            escalated,
            !expected.is_empty()
                && !terminal
                && status != OutForDelivery
                && status != AvailableForPickup,
            "{status:?}: silence escalates unless terminal or a one-tier rule"
        );
    }
}

/// With `carrier_exception` switched off nothing would watch a parcel stuck
/// in a problem status: the transit stall takes over.
#[test]
fn with_the_exception_rule_off_the_stall_watches_problem_statuses() {
    let mut rules = RulesConfig::default();
    rules.carrier_exception.enabled = false;
    let mut sim = registered(rules);
    sim.scan(Status::PickedUp, T0);
    sim.scan(Status::DeliveryAttemptFailed, T0 + H);
    sim.advance(past(T0 + 25 * H));
    assert_eq!(
        transitions(&sim.outputs),
        [t(RuleId::StalledInTransit, Opened, 0)]
    );
}

/// The escalation tiers are configurable like the other rules' tiers, with
/// per-carrier / service-level overrides; empty means never escalate.
#[test]
fn exception_escalation_tiers_load_from_toml_with_overrides() {
    let rules: RulesConfig = trackstream_runtime::config::load_from(
        r#"
        [carrier_exception]
        escalate_after = ["12h"]
        [[carrier_exception.overrides]]
        carrier = "sf"
        service_level = "express"
        tiers = ["2h", "4h"]
        [[carrier_exception.overrides]]
        carrier = "yto"
        tiers = []
        "#,
        Vec::new(),
    )
    .expect("valid rules");
    let escalations = |key: &str, level: &str| {
        let mut sim = Sim::new(rules.clone(), key);
        let mut reg = shipment(key, "O", T0);
        reg.service_level = level.into();
        sim.register(reg, T0);
        sim.event(event(key, Status::Exception, Reason::Lost, T0));
        sim.advance(T0 + 100 * H);
        alerts(&sim.outputs)
            .iter()
            .filter(|a| a.state == Escalated as i32)
            .map(|a| time::millis(a.effective_at.as_ref()) - T0)
            .collect::<Vec<_>>()
    };
    assert_eq!(escalations("sf:A", "express"), [2 * H, 4 * H]);
    assert_eq!(escalations("sf:B", "standard"), [12 * H]);
    assert_eq!(escalations("yto:C", "express"), Vec::<i64>::new());
    assert_eq!(
        RulesConfig::default().carrier_exception.escalate_after,
        [millis(24 * H), millis(72 * H)]
    );
}

/// State written by the previous version: an open exception and, beside it,
/// an armed transit stall. When that deadline comes the stall no longer
/// watches the parcel: it is disarmed (no alert) and the exception's
/// escalation is armed instead.
#[test]
fn a_stall_armed_beside_an_open_exception_by_an_older_version_stands_down() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    sim.event(event(KEY, Status::Exception, Reason::Damaged, T0 + H));
    let stall = sim.wb.state.slots.iter_mut().find(|s| s.rule == "st");
    let stall = stall.expect("the stall slot exists since the pickup");
    (stall.anchor, stall.deadline) = (T0 + H, T0 + 25 * H);
    for slot in &mut sim.wb.state.slots {
        if slot.rule == "ce" {
            slot.deadline = 0;
        }
    }
    assert!(transitions(&sim.advance(T0 + 25 * H)).is_empty());
    assert_eq!(
        sim.wb.state.deadlines().collect::<Vec<_>>(),
        [("ce", past(T0 + 25 * H))]
    );
    assert_eq!(
        transitions(&sim.advance(past(T0 + 25 * H))),
        [t(RuleId::CarrierException, Escalated, 1)]
    );
}

/// Strict thresholds, each rule: an input exactly at the threshold is folded
/// first and nothing opens (pickup 24h00 after registration, delivery exactly
/// at the promised time, collection 18h00 after reaching a locker, delivery
/// 36h00 after going out, moving again 24h00 after an exception).
#[test]
fn an_input_exactly_at_a_threshold_opens_nothing() {
    let mut pickup = registered(RulesConfig::default());
    pickup.scan(Status::PickedUp, T0 + 24 * H);
    pickup.scan(Status::Delivered, T0 + 30 * H);

    let mut promise = Sim::new(RulesConfig::default(), KEY);
    let mut reg = shipment(KEY, "O-1", T0);
    reg.promised_delivery_at = Some(time::from_millis(T0 + 30 * H));
    promise.register(reg, T0);
    promise.scan(Status::PickedUp, T0 + H);
    promise.scan(Status::InTransit, T0 + 20 * H);
    promise.scan(Status::Delivered, T0 + 30 * H);

    let mut locker = registered(RulesConfig::default());
    locker.scan(Status::PickedUp, T0);
    locker.scan(Status::AvailableForPickup, T0 + 10 * H);
    locker.scan(Status::Delivered, T0 + 28 * H);

    let mut courier = registered(RulesConfig::default());
    courier.scan(Status::PickedUp, T0);
    courier.scan(Status::OutForDelivery, T0 + 10 * H);
    courier.scan(Status::Delivered, T0 + 46 * H);

    let mut exception = registered(RulesConfig::default());
    exception.scan(Status::PickedUp, T0);
    exception.scan(Status::DeliveryAttemptFailed, T0 + H);
    exception.scan(Status::OutForDelivery, T0 + 25 * H);
    exception.scan(Status::Delivered, T0 + 26 * H);

    for (name, mut sim) in [
        ("pickup", pickup),
        ("promise", promise),
        ("locker", locker),
        ("courier", courier),
    ] {
        sim.advance(T0 + 1000 * H);
        assert!(
            alerts(&sim.outputs).is_empty(),
            "{name}: {:?}",
            transitions(&sim.outputs)
        );
    }
    exception.advance(T0 + 1000 * H);
    assert_eq!(
        transitions(&exception.outputs),
        [
            t(RuleId::CarrierException, Opened, 0),
            t(RuleId::CarrierException, Resolved, 0)
        ],
        "resolved at 24h00, never escalated"
    );
}

/// The same inputs arriving after the clock already stands exactly at the
/// threshold (the event clock reached it through another parcel's scan): the
/// deadline is not due yet, so the input still folds first.
#[test]
fn a_clock_standing_at_the_threshold_fires_nothing() {
    let mut sim = registered(RulesConfig::default());
    sim.scan(Status::PickedUp, T0);
    assert!(sim.advance(T0 + 24 * H).is_empty());
    let out = sim.feed(
        &[Input::Event(scan(KEY, Status::InTransit, T0 + 24 * H))],
        T0 + 24 * H,
    );
    assert!(transitions(&out).is_empty(), "{:?}", transitions(&out));
}
