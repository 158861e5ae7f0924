//! The generated weeks: parcels of three carriers moving between 30 cities
//! (hub sizes skewed like real networks), with ordinary trouble — random
//! stalls, late trucks that hold a handful of parcels at once, carrier
//! exceptions about the buyer — and, after the warm-up, injected hub
//! closures. Produces what the detector would write for them: scan updates
//! and the alerts (stall OPENED at the threshold, RESOLVED at the next scan),
//! ordered by event time, as a live run reads them.

use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trackstream_carriers::area::PROVINCES;
use trackstream_proto::time::from_millis;
use trackstream_proto::topics;
use trackstream_proto::v1::{
    Alert, AlertState, Location, Reason, Severity, ShipmentUpdate, Status, TrackingEvent,
    UpdateKind,
};

use super::Options;

pub const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;
const CARRIERS: [&str; 3] = ["zto", "yto", "sto"];
const CITIES: usize = 30;
const MERCHANTS: usize = 200;

/// One input record, in event-time order.
pub struct Input {
    pub at: i64,
    pub topic: &'static str,
    pub payload: Vec<u8>,
}

/// A group hold injected into the traffic: a hub closure, or a late truck.
#[derive(Debug, Clone)]
pub struct Closure {
    /// A closure (`true`) or a late truck.
    pub closure: bool,
    pub carrier: &'static str,
    pub place: String,
    pub start: i64,
    pub end: i64,
    /// Parcels it held past the stall threshold: (waybill key, threshold).
    pub stalled: Vec<(String, i64)>,
}

/// The generated traffic.
pub struct World {
    pub inputs: Vec<Input>,
    /// The closures, then the late trucks.
    pub closures: Vec<Closure>,
    /// Stall alerts opened by random stalls (not in a closure or a truck).
    pub ordinary_stalls: usize,
    pub parcels: usize,
    /// Event time the measured part starts.
    pub measured_from: i64,
    /// (waybill key → order key) of every parcel, for the buyer count.
    pub orders: std::collections::HashMap<String, String>,
}

impl World {
    /// Late trucks injected (the group holds that are not closures).
    pub fn late_trucks(&self) -> usize {
        self.closures.iter().filter(|c| !c.closure).count()
    }
}

/// City `i`: its province and a city name of its own.
pub fn city(i: usize) -> (String, String) {
    let province = &PROVINCES[i % PROVINCES.len()];
    (
        province.name.to_owned(),
        format!("{}{}号市", province.short, i),
    )
}

pub fn place(i: usize) -> String {
    let (p, c) = city(i);
    format!("{p}/{c}")
}

fn location(i: usize) -> Location {
    let (region, city) = city(i);
    Location {
        text: format!("{city}转运中心"),
        city,
        region,
        country: "CN".into(),
        ..Location::default()
    }
}

/// The cumulative Zipf weights of `n` ranks (the largest carry most).
fn zipf(n: usize) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// A rank drawn from cumulative weights.
fn pick(rng: &mut StdRng, cumulative: &[f64]) -> usize {
    let x: f64 = rng.random();
    cumulative
        .iter()
        .position(|c| x <= *c)
        .unwrap_or(cumulative.len().saturating_sub(1))
}

struct Late {
    carrier: usize,
    hub: usize,
    from: i64,
    to: i64,
    hold: i64,
}

struct Parcel {
    key: String,
    carrier: usize,
    merchant: String,
    order: String,
    scans: Vec<(i64, usize, Status)>,
}

pub fn generate(opts: &Options) -> World {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let cumulative = zipf(CITIES);
    let shops = zipf(MERCHANTS);
    let start = 1_700_000_000_000 - 1_700_000_000_000 % DAY;
    let measured_from = start + opts.warm_up_days * DAY;
    let end = start + opts.days * DAY;

    // Late trucks: a carrier's hub holds an hour's arrivals 25–30 h.
    let mut late = Vec::new();
    let trucks = (opts.late_trucks_per_day * opts.days as f64) as usize;
    for _ in 0..trucks {
        let from = rng.random_range(start..end);
        late.push(Late {
            carrier: rng.random_range(0..CARRIERS.len()),
            hub: pick(&mut rng, &cumulative),
            from,
            to: from + H,
            hold: rng.random_range(25 * H..30 * H),
        });
    }
    // Closures after the warm-up, at one of the ten largest hubs.
    let weeks = ((opts.days - opts.warm_up_days) as f64 / 7.0).max(0.0);
    let mut closures: Vec<(usize, usize, i64, i64)> = Vec::new();
    for _ in 0..((opts.closures_per_week as f64 * weeks).round() as usize) {
        let s = rng.random_range(measured_from..end - 3 * DAY);
        closures.push((
            rng.random_range(0..CARRIERS.len()),
            rng.random_range(0..10),
            s,
            s + rng.random_range(30 * H..54 * H),
        ));
    }

    let mut parcels = Vec::new();
    let mut n = 0usize;
    for day in 0..opts.days {
        for _ in 0..opts.per_day {
            let carrier = rng.random_range(0..CARRIERS.len());
            let (origin, hub, dest) = (
                pick(&mut rng, &cumulative),
                pick(&mut rng, &cumulative),
                pick(&mut rng, &cumulative),
            );
            let t0 = start + day * DAY + rng.random_range(0..DAY);
            // Shops are Zipf-sized too: the largest ships ~17 % of the parcels.
            let merchant = format!("m-{:03}", pick(&mut rng, &shops));
            let twins = if rng.random_bool(0.15) { 2 } else { 1 };
            let order = format!("o-{n}");
            // The route: pickup, hub arrival, hub departure, destination, out for delivery, delivered.
            let arrive = t0 + rng.random_range(4 * H..8 * H);
            let mut depart = arrive + rng.random_range(3 * H..9 * H);
            for l in late.iter().filter(|l| {
                l.carrier == carrier && l.hub == hub && (l.from..l.to).contains(&arrive)
            }) {
                depart = depart.max(arrive + l.hold);
            }
            for (c, h, s, e) in &closures {
                if *c == carrier && *h == hub && arrive >= s - 6 * H && arrive < *e {
                    depart = depart.max(e + rng.random_range(0..6 * H));
                }
            }
            let mut steps = vec![
                (t0, origin, Status::PickedUp),
                (arrive, hub, Status::InTransit),
                (depart, hub, Status::InTransit),
            ];
            let mut t = depart + rng.random_range(6 * H..10 * H);
            steps.push((t, dest, Status::InTransit));
            t += rng.random_range(4 * H..8 * H);
            steps.push((t, dest, Status::OutForDelivery));
            t += rng.random_range(H..5 * H);
            steps.push((t, dest, Status::Delivered));
            // A random stall somewhere on the way.
            if rng.random_bool(opts.stall_rate) {
                let at = rng.random_range(1..steps.len() - 1);
                let extra = rng.random_range(25 * H..48 * H);
                for step in steps.iter_mut().skip(at) {
                    step.0 += extra;
                }
            }
            for twin in 0..twins {
                parcels.push(Parcel {
                    key: format!("{}:W{n:08}{twin}", CARRIERS[carrier]),
                    carrier,
                    merchant: merchant.clone(),
                    order: order.clone(),
                    scans: steps.clone(),
                });
            }
            n += 1;
        }
    }

    let mut world = World {
        inputs: Vec::new(),
        closures: closures
            .iter()
            .map(|(c, h, s, e)| Closure {
                closure: true,
                carrier: CARRIERS[*c],
                place: place(*h),
                start: *s,
                end: *e,
                stalled: Vec::new(),
            })
            .chain(late.iter().map(|l| Closure {
                closure: false,
                carrier: CARRIERS[l.carrier],
                place: place(l.hub),
                start: l.from,
                end: l.to,
                stalled: Vec::new(),
            }))
            .collect(),
        ordinary_stalls: 0,
        parcels: parcels.len(),
        measured_from,
        orders: std::collections::HashMap::new(),
    };
    for p in &parcels {
        world
            .orders
            .insert(p.key.clone(), format!("{}/{}", p.merchant, p.order));
        let (carrier_code, waybill) = p.key.split_once(':').unwrap_or(("", &p.key));
        for (i, (at, city_i, status)) in p.scans.iter().enumerate() {
            if *at >= end {
                break;
            }
            let update = ShipmentUpdate {
                order_id: p.order.clone(),
                merchant_id: p.merchant.clone(),
                current_status: *status as i32,
                kind: UpdateKind::Scan as i32,
                event: Some(TrackingEvent {
                    carrier: carrier_code.to_owned(),
                    waybill: waybill.to_owned(),
                    status: *status as i32,
                    occurred_at: Some(from_millis(*at)),
                    location: Some(location(*city_i)),
                    ..TrackingEvent::default()
                }),
                ..ShipmentUpdate::default()
            };
            world.inputs.push(Input {
                at: *at,
                topic: topics::TRACKING_UPDATES,
                payload: update.encode_to_vec(),
            });
            // A gap over 24 h before the next scan: a stall, opened at the
            // threshold, resolved by the next scan.
            let Some((next, _, _)) = p.scans.get(i + 1) else {
                continue;
            };
            if next - at <= 24 * H || at + 24 * H >= end {
                continue;
            }
            let threshold = at + 24 * H + 1;
            let alert = |state: AlertState, effective: i64| Alert {
                alert_id: format!("{}:st:1", p.key),
                rule: "stalled_in_transit".into(),
                state: state as i32,
                severity: Severity::Warning as i32,
                carrier: carrier_code.to_owned(),
                waybill: waybill.to_owned(),
                order_id: p.order.clone(),
                merchant_id: p.merchant.clone(),
                reason: Reason::Unspecified as i32,
                effective_at: Some(from_millis(effective)),
                location: Some(location(*city_i)),
                ..Alert::default()
            };
            world.inputs.push(Input {
                at: threshold,
                topic: topics::TRACKING_ALERTS,
                payload: alert(AlertState::Opened, threshold).encode_to_vec(),
            });
            if *next < end {
                world.inputs.push(Input {
                    at: *next,
                    topic: topics::TRACKING_ALERTS,
                    payload: alert(AlertState::Resolved, *next).encode_to_vec(),
                });
            }
            let closed = world.closures.iter_mut().find(|c| {
                c.carrier == CARRIERS[p.carrier]
                    && c.place == place(*city_i)
                    && if c.closure {
                        *at >= c.start - 6 * H && *at < c.end
                    } else {
                        *at >= c.start && *at < c.end
                    }
            });
            match closed {
                Some(c) => c.stalled.push((p.key.clone(), threshold)),
                None => world.ordinary_stalls += 1,
            }
        }
    }
    world.inputs.sort_by_key(|i| i.at);
    world
}
