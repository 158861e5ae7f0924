//! The update stream does not depend on batching or on the detector's clock:
//! the same inputs, split into batches any way and folded with the clock
//! anywhere (a live run, a catch-up after a restart, a backlog read at once),
//! give the same updates in the same order — ids, `current_status`, `late`,
//! the registration they carry, the one `RETURN_RECEIVED` — so the per-order
//! `seq` the delivery step assigns in that order is the same too.

mod common;

use common::*;
use proptest::prelude::*;
use trackstream_detector::engine::Input;
use trackstream_detector::rules::RulesConfig;
use trackstream_proto::time;
use trackstream_proto::v1::{ShipmentUpdate, Status, UpdateKind};

const MIN: i64 = 60_000;

/// One parcel's inputs in arrival order: a scenario's scans, shuffled a little
/// (`swaps` neighbouring swaps: carriers' late scans), each received when it
/// arrives (receipt times never go backwards; a scan received late keeps its
/// own time), some dated ahead of their receipt (`future`: a carrier clock
/// error), and the registration — plus a changed one — anywhere among them.
fn inputs(kind: u64, seed: u64, swaps: usize, future: u64, reg_at: usize) -> Vec<Input> {
    let key = format!("sf:B{kind}-{seed}");
    let (reg, mut events) = scenario(&key, "O-B", kind, T0);
    let mut rng = Lcg(seed);
    for _ in 0..swaps {
        let i = usize::try_from(rng.below(events.len() as u64)).expect("fits");
        if i + 1 < events.len() {
            events.swap(i, i + 1);
        }
    }
    let mut receipt = i64::MIN;
    for event in &mut events {
        let at = time::millis(event.occurred_at.as_ref());
        receipt = receipt.max(at + i64::try_from(rng.below(90)).expect("fits") * MIN);
        if future > 0 && rng.below(future) == 0 {
            // Dated three hours after it was received.
            event.occurred_at = Some(time::from_millis(receipt + 3 * H));
            event.event_id.push_str("/ahead");
        }
        event.received_at = Some(time::from_millis(receipt));
    }
    let mut inputs: Vec<Input> = events.into_iter().map(Input::Event).collect();
    let at = reg_at.min(inputs.len());
    let mut changed = reg.clone();
    changed.service_level = "express".into();
    inputs.insert(at, Input::Registration(reg));
    let later = (at + 1 + reg_at % 3).min(inputs.len());
    inputs.insert(later, Input::Registration(changed));
    inputs
}

/// Feeds `inputs` in batches of the given sizes (cycled), the clock of each
/// batch chosen by `clock(batch index, newest receipt so far)`, then moves the
/// clock far ahead. Returns the update outputs in emission order.
fn run(
    inputs: &[Input],
    sizes: &[usize],
    clock: impl Fn(usize, i64) -> i64,
) -> Vec<(String, ShipmentUpdate)> {
    let key = inputs
        .iter()
        .find_map(|i| match i {
            Input::Event(e) => Some(format!("{}:{}", e.carrier, e.waybill)),
            Input::Registration(_) => None,
        })
        .unwrap_or_default();
    let mut sim = Sim::new(RulesConfig::default(), &key);
    let mut rest = inputs;
    let mut newest = T0;
    let mut batch = 0;
    while !rest.is_empty() {
        let size = sizes.get(batch % sizes.len().max(1)).copied().unwrap_or(1);
        let (now, later) = rest.split_at(size.clamp(1, rest.len()));
        for input in now {
            if let Input::Event(e) = input {
                newest = newest.max(time::millis(e.received_at.as_ref()));
            }
        }
        sim.feed(now, clock(batch, newest));
        rest = later;
        batch += 1;
    }
    // The timer loop: no inputs, the clock far ahead.
    sim.feed(&[], T0 + 2_000 * H);
    updates(&sim.outputs)
}

/// The live run: one input per batch, processed the instant it was received.
fn live(inputs: &[Input]) -> Vec<(String, ShipmentUpdate)> {
    run(inputs, &[1], |_, newest| newest)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_batching_and_any_clock_give_the_live_update_stream(
        kind in 0u64..8,
        seed in any::<u64>(),
        swaps in 0usize..4,
        future in prop_oneof![Just(0u64), 2u64..6],
        reg_at in 0usize..10,
        sizes in proptest::collection::vec(1usize..8, 1..5),
        lag in prop_oneof![Just(0i64), 1i64..200, Just(100_000i64)],
        behind in any::<bool>(),
    ) {
        let inputs = inputs(kind, seed, swaps, future, reg_at);
        let reference = live(&inputs);
        // A catch-up: bigger batches, the clock `lag` hours behind or ahead
        // of what was received (behind: the event clock with allowed lateness;
        // ahead: the wall clock reading a backlog).
        let got = run(&inputs, &sizes, |_, newest| {
            if behind { newest - lag * H } else { newest + lag * H }
        });
        prop_assert_eq!(&got, &reference);
        // The whole backlog in one batch.
        prop_assert_eq!(&run(&inputs, &[usize::MAX], |_, n| n + lag * H), &reference);
    }
}

/// The case from the issue: a catch-up reads pickup … delivery in one batch;
/// each update still says the status after its own scan.
#[test]
fn a_catch_up_batch_says_the_status_after_each_scan_not_after_the_batch() {
    let (reg, events) = scenario("sf:CATCHUP", "O-C", 0, T0);
    let mut inputs = vec![Input::Registration(reg)];
    inputs.extend(events.iter().cloned().map(Input::Event));
    let backlog = run(&inputs, &[usize::MAX], |_, _| T0 + 500 * H);
    let statuses: Vec<(i32, i32, bool)> = backlog
        .iter()
        .map(|(_, u)| {
            (
                u.event.as_ref().map_or(0, |e| e.status),
                u.current_status,
                u.late,
            )
        })
        .collect();
    let expected: Vec<(i32, i32, bool)> =
        events.iter().map(|e| (e.status, e.status, false)).collect();
    assert_eq!(statuses, expected);
    assert_eq!(backlog, live(&inputs));
}

/// A registration arriving after its scans (the backlog read shipments last):
/// the replay gives each scan the status and `late` flag a registration present
/// from the start gave it, in arrival order — a scan a later push inserted into
/// the trace included.
#[test]
fn a_late_registration_replays_what_live_updates_said() {
    let key = "sf:REPLAY";
    let reg = shipment(key, "O-R", T0);
    let mut picked = scan(key, Status::PickedUp, T0 + H);
    picked.received_at = Some(time::from_millis(T0 + H));
    let mut ofd = scan(key, Status::OutForDelivery, T0 + 30 * H);
    ofd.received_at = Some(time::from_millis(T0 + 30 * H));
    // Inserted into the trace by a later push: late.
    let mut transit = scan(key, Status::InTransit, T0 + 20 * H);
    transit.received_at = Some(time::from_millis(T0 + 31 * H));
    let scans = [picked, ofd, transit];
    let mut first = vec![Input::Registration(reg.clone())];
    first.extend(scans.iter().cloned().map(Input::Event));
    let mut last: Vec<Input> = scans.iter().cloned().map(Input::Event).collect();
    last.push(Input::Registration(reg));
    let early = live(&first);
    assert_eq!(
        early
            .iter()
            .map(|(_, u)| (u.current_status, u.late))
            .collect::<Vec<_>>(),
        [
            (Status::PickedUp as i32, false),
            (Status::OutForDelivery as i32, false),
            (Status::OutForDelivery as i32, true)
        ]
    );
    assert_eq!(run(&last, &[usize::MAX], |_, n| n), early);
    assert_eq!(live(&last), early);
}

/// RETURN_RECEIVED follows the delivery's update whatever the batching; the
/// fold's own trigger (reached later, when the clock passes the delivery)
/// never adds a second one.
#[test]
fn return_received_follows_the_delivery_update_in_any_batching() {
    let (reg, events) = scenario("sf:RETURN", "O-RET", 6, T0);
    let mut inputs = vec![Input::Registration(reg)];
    inputs.extend(events.iter().cloned().map(Input::Event));
    let kinds = |stream: &[(String, ShipmentUpdate)]| -> Vec<(i32, i32)> {
        stream
            .iter()
            .map(|(_, u)| (u.kind, u.event.as_ref().map_or(0, |e| e.status)))
            .collect()
    };
    let reference = live(&inputs);
    let tail: Vec<(i32, i32)> = kinds(&reference).into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        [
            (UpdateKind::ReturnReceived as i32, Status::Delivered as i32),
            (UpdateKind::Scan as i32, Status::Delivered as i32)
        ]
    );
    for sizes in [[2usize], [3], [usize::MAX]] {
        // The clock behind every scan: nothing folds until the end.
        assert_eq!(run(&inputs, &sizes, |_, _| T0), reference, "{sizes:?}");
    }
    assert_eq!(
        reference
            .iter()
            .filter(|(id, _)| id.starts_with("r:"))
            .count(),
        1
    );
}
