//! The benchmark's report: detection, false alarms, linking, messages, cost.

use std::collections::{BTreeMap, BTreeSet};

use trackstream_proto::time::millis;
use trackstream_proto::v1::{Incident, IncidentState};

use super::world::{H, World};
use super::{Cost, Options};

/// Stall alerts a live run holds DELAYED for (`messages.incident_grace`).
const GRACE: i64 = 2 * H;

fn key(i: &Incident) -> (String, String) {
    (i.merchant_id.clone(), i.incident_id.clone())
}

/// The newest record of each (merchant, incident).
fn newest(records: &[Incident]) -> BTreeMap<(String, String), &Incident> {
    let mut out: BTreeMap<(String, String), &Incident> = BTreeMap::new();
    for r in records {
        let e = out.entry(key(r)).or_insert(r);
        if r.version > e.version {
            *e = r;
        }
    }
    out
}

fn hours(ms: i64) -> f64 {
    ms as f64 / H as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints the report (markdown, for `benches/RESULTS.md`).
pub fn print(opts: &Options, floor: usize, world: &World, records: &[Incident], cost: &Cost) {
    let latest = newest(records);
    let platform: Vec<&Incident> = latest
        .iter()
        .filter(|((m, _), _)| m.is_empty())
        .map(|(_, i)| *i)
        .collect();
    let measured_weeks = (opts.days - opts.warm_up_days) as f64 / 7.0;
    let mut matched: BTreeMap<String, usize> = BTreeMap::new();
    let (mut delays, mut after_floor) = (Vec::new(), Vec::new());
    let mut detectable = 0;
    let mut detected = 0;
    let (mut trucks_big, mut trucks_reported) = (0usize, 0usize);
    for (n, c) in world.closures.iter().enumerate() {
        let found = platform.iter().find(|i| {
            let opened = millis(i.opened_at.as_ref());
            i.carrier == c.carrier
                && i.place == c.place
                && opened >= c.start
                && opened <= c.end + 48 * H
                && !matched.contains_key(&i.incident_id)
        });
        if !c.closure {
            // A late truck: a real group hold, reported once it reaches the floor.
            trucks_big += usize::from(c.stalled.len() >= floor);
            if let Some(i) = found {
                trucks_reported += 1;
                matched.insert(i.incident_id.clone(), n);
            }
            continue;
        }
        let mut thresholds: Vec<i64> = c.stalled.iter().map(|(_, t)| *t).collect();
        thresholds.sort_unstable();
        let first = thresholds.first().copied();
        if c.stalled.len() >= floor {
            detectable += 1;
        }
        if let (Some(i), Some(first)) = (found, first) {
            detected += 1;
            matched.insert(i.incident_id.clone(), n);
            delays.push(hours(millis(i.opened_at.as_ref()) - first));
            if let Some(nth) = thresholds.get(floor - 1) {
                after_floor.push(hours(millis(i.opened_at.as_ref()) - nth));
            }
        }
    }
    let false_alarms: Vec<&&Incident> = platform
        .iter()
        .filter(|i| !matched.contains_key(&i.incident_id))
        .collect();
    let false_measured = false_alarms
        .iter()
        .filter(|i| millis(i.opened_at.as_ref()) >= world.measured_from)
        .count();

    // Linking, and the messages each side would send.
    let (mut linked, mut right, mut held) = (0usize, 0usize, 0usize);
    let (mut parcel_alerts, mut notifications) = (0usize, 0usize);
    let (mut orders_affected, mut buyer_with) = (0usize, 0usize);
    // A merchant is notified when one of its parcels is first linked to an
    // incident and when the incident resolves (escalations and updates
    // refresh the incident it already has; they wake nobody).
    let mut notified: BTreeMap<(String, String), bool> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        !r.merchant_id.is_empty()
            && matched
                .get(&r.incident_id)
                .is_some_and(|n| world.closures[*n].closure)
    }) {
        let resolved = notified
            .entry((r.merchant_id.clone(), r.incident_id.clone()))
            .or_default();
        *resolved |= r.state == IncidentState::Resolved as i32;
    }
    notifications += notified
        .values()
        .map(|resolved| 1 + usize::from(*resolved))
        .sum::<usize>();
    for (id, n) in &matched {
        let closure = &world.closures[*n];
        if !closure.closure {
            continue;
        }
        let truth: BTreeSet<&str> = closure.stalled.iter().map(|(k, _)| k.as_str()).collect();
        held += truth.len();
        let opened = platform
            .iter()
            .find(|i| &i.incident_id == id)
            .map_or(0, |i| millis(i.opened_at.as_ref()));
        let mut orders: BTreeMap<String, bool> = BTreeMap::new();
        for ((merchant, inc), record) in &latest {
            if merchant.is_empty() || inc != id {
                continue;
            }
            for p in &record.parcels {
                let k = format!("{}:{}", p.carrier, p.waybill);
                linked += 1;
                right += usize::from(truth.contains(k.as_str()));
                // Without incidents the merchant hears each parcel's alert
                // open and resolve.
                if !p.alert_id.is_empty() {
                    parcel_alerts += 1 + usize::from(p.moved);
                }
                let since = millis(p.since.as_ref());
                let superseded = opened.max(since) - since <= GRACE;
                let order = world.orders.get(&k).cloned().unwrap_or(k);
                let all = orders.entry(order).or_insert(true);
                *all &= superseded;
            }
        }
        orders_affected += orders.len();
        buyer_with += orders
            .values()
            .map(|all| if *all { 1 } else { 2 })
            .sum::<usize>();
    }

    println!("### Incidents (`trackstream-incidents`)\n");
    println!(
        "{} days ({} warm-up), {} orders/day ({} parcels), {} closures, {} random stalls, {} late trucks, seed {}.\n",
        opts.days,
        opts.warm_up_days,
        opts.per_day,
        world.parcels,
        world.closures.iter().filter(|c| c.closure).count(),
        world.ordinary_stalls,
        world.late_trucks(),
        opts.seed
    );
    println!("| measure | value |\n|---|---|");
    println!(
        "| closures detected | {detected} of {} ({detectable} stranded ≥ {floor} parcels past the threshold) |",
        world.closures.iter().filter(|c| c.closure).count()
    );
    if world.late_trucks() > 0 {
        println!(
            "| late trucks reported as incidents | {trucks_reported} of {} ({trucks_big} held ≥ {floor} parcels past the threshold: real group holds) |",
            world.late_trucks()
        );
    }
    println!(
        "| detection delay after the closure's first stall threshold (h) | median {:.2}, max {:.2} |",
        median(delays.clone()),
        delays.iter().copied().fold(f64::NAN, f64::max)
    );
    println!(
        "| … after its {floor}th stranded parcel's threshold (the floor: the earliest it can open) (h) | median {:.2}, max {:.2} |",
        median(after_floor.clone()),
        after_floor.iter().copied().fold(f64::NAN, f64::max)
    );
    println!(
        "| false incidents (neither a closure nor a truck) | {} per week ({false_measured} in {measured_weeks:.1} measured weeks; {} in the warm-up) |",
        false_measured as f64 / measured_weeks.max(f64::MIN_POSITIVE),
        false_alarms.len() - false_measured
    );
    println!(
        "| parcels linked | {linked} ({:.1} % held by the closure; {:.1} % of the closures' stalled parcels linked) |",
        100.0 * right as f64 / linked.max(1) as f64,
        100.0 * right as f64 / held.max(1) as f64
    );
    println!(
        "| merchant notifications | {parcel_alerts} parcel alerts (opened, resolved) → {notifications} incident notifications (per merchant: when its first parcel is linked, when it resolves) ({} merchant × incident pairs) |",
        notified.len()
    );
    println!(
        "| buyer messages for the affected orders | {orders_affected} generic DELAYED without incidents → {buyer_with} with: {orders_affected} name the cause, {} orders also got a DELAYED (stuck > {}h before the incident opened) |",
        buyer_with - orders_affected,
        GRACE / H
    );
    let per = |s: f64| s * 1e6 / cost.records.max(1) as f64;
    println!(
        "| cost per input record | {:.1} µs detector CPU, {:.1} µs Redis CPU ({} records in {:.1} s: {:.0}/s) |",
        per(cost.detector_cpu),
        per(cost.redis_cpu),
        cost.records,
        cost.wall.as_secs_f64(),
        cost.records as f64 / cost.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    println!(
        "| Redis memory at the end | {:.1} MiB ({} parcels over {} days) |",
        cost.redis_bytes as f64 / 1_048_576.0,
        world.parcels,
        opts.days
    );
    for i in false_alarms.iter().take(5) {
        println!(
            "\nfalse incident: {} {} opened {:.1} h into the run, {} parcels of {} active",
            i.carrier,
            i.place,
            hours(
                millis(i.opened_at.as_ref()) - (world.measured_from - opts.warm_up_days * 24 * H)
            ),
            i.affected_total,
            i.active_total
        );
    }
}
