//! A generated delivery history for the accuracy benchmark: lanes with their
//! own heavy-tailed stage durations, weekday effects, a carrier mix, and one
//! lane that degrades mid-run.
//!
//! Hours since the run's start (a Monday, 00:00 China time) throughout.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trackstream_lanes::lane::Lane;

/// Where parcels leave from and go to, with a distance class each.
const ORIGINS: [&str; 3] = ["Zhejiang/Hangzhou", "Guangdong/Guangzhou", "Jiangsu/Suzhou"];
const DESTINATIONS: [(&str, f64); 10] = [
    ("Zhejiang/Hangzhou", 0.0),
    ("Shanghai/Shanghai", 0.3),
    ("Jiangsu/Nanjing", 0.3),
    ("Guangdong/Shenzhen", 0.8),
    ("Beijing/Beijing", 1.0),
    ("Sichuan/Chengdu", 1.2),
    ("Hubei/Wuhan", 0.7),
    ("Shaanxi/Xi'an", 1.1),
    ("Heilongjiang/Harbin", 1.6),
    ("Xinjiang/Urumqi", 2.6),
];

/// Carrier code, service level, speed factor on line haul, share of parcels.
pub(crate) const CARRIERS: [(&str, &str, f64, f64); 5] = [
    ("sf", "express", 0.55, 0.15),
    ("jd", "standard", 0.7, 0.15),
    ("zto", "standard", 1.0, 0.3),
    ("yto", "standard", 1.1, 0.25),
    ("sto", "standard", 1.2, 0.15),
];

/// The lane that degrades: zto from Hangzhou to Chengdu, line haul ×2.2
/// from `degrade_at` on (a hub congestion, say).
pub const DEGRADED: (&str, &str, &str) = ("zto", "Zhejiang/Hangzhou", "Sichuan/Chengdu");
const DEGRADE_FACTOR: f64 = 2.2;

/// One generated parcel: its lane and true timeline (hours).
#[derive(Debug, Clone)]
pub struct Parcel {
    pub lane: Lane,
    pub ordered_at: f64,
    pub picked_up_at: f64,
    pub out_for_delivery_at: f64,
    pub delivered_at: f64,
    /// The shop's promise: the lane's nominal order→delivery plus a margin,
    /// rounded up to the end of that day (what "次日达" promises are).
    pub promised_at: f64,
    pub failed_attempts: u32,
    pub exception: bool,
    /// Whether its line haul went through the degraded lane after it degraded.
    pub degraded: bool,
}

/// Settings of a history.
pub struct Plan {
    /// Days of orders.
    pub days: i64,
    /// Orders a day.
    pub per_day: usize,
    /// Day the degraded lane slows down.
    pub degrade_at_day: i64,
    /// Random seed.
    pub seed: u64,
}

fn lognormal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    // Box–Muller: one standard normal.
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * z).exp()
}

/// A heavy tail: most parcels 1×, 6 % of them delayed by a Pareto(α = 1.5)
/// factor (a missed line haul, a sorting backlog).
fn tail(rng: &mut StdRng) -> f64 {
    if rng.random::<f64>() < 0.06 {
        let u: f64 = rng.random::<f64>().max(1e-9);
        1.0 + (u.powf(-1.0 / 1.5) - 1.0).min(6.0)
    } else {
        1.0
    }
}

/// Hour of the week, 0 = Monday 00:00.
fn weekday(at: f64) -> i64 {
    ((at / 24.0).floor() as i64).rem_euclid(7)
}

/// Generates `plan.days` days of orders, `plan.per_day` a day, in order of
/// creation.
pub fn generate(plan: &Plan) -> Vec<Parcel> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let degrade_at = plan.degrade_at_day as f64 * 24.0;
    let mut parcels = Vec::with_capacity(plan.days as usize * plan.per_day);
    for day in 0..plan.days {
        for _ in 0..plan.per_day {
            // Orders through the day, busiest in the evening (live streams).
            let hour = if rng.random::<f64>() < 0.5 {
                18.0 + rng.random::<f64>() * 6.0
            } else {
                8.0 + rng.random::<f64>() * 10.0
            };
            let ordered_at = day as f64 * 24.0 + hour;
            let pick = rng.random::<f64>();
            let mut acc = 0.0;
            let &(carrier, service, speed, _) = CARRIERS
                .iter()
                .find(|c| {
                    acc += c.3;
                    pick < acc
                })
                .unwrap_or(&CARRIERS[2]);
            let origin = ORIGINS[rng.random_range(0..ORIGINS.len())];
            let (destination, distance) = DESTINATIONS[rng.random_range(0..DESTINATIONS.len())];
            // Processing and pickup: next morning's or the same evening's
            // round; Sunday orders wait for Monday's.
            let mut lag = lognormal(&mut rng, 14.0, 0.45);
            if weekday(ordered_at) == 6 {
                lag += 12.0;
            }
            let picked_up_at = ordered_at + lag;
            let nominal = 14.0 + 34.0 * distance;
            let mut haul = lognormal(&mut rng, nominal * speed, 0.25) * tail(&mut rng);
            // Weekend sorting is slower.
            if matches!(weekday(picked_up_at), 5 | 6) {
                haul *= 1.15;
            }
            let degraded = (carrier, origin, destination) == DEGRADED && picked_up_at >= degrade_at;
            if degraded {
                haul *= DEGRADE_FACTOR;
            }
            let out_for_delivery_at = picked_up_at + haul;
            let mut last_mile = lognormal(&mut rng, 4.0, 0.5);
            let failed_attempts = u32::from(rng.random::<f64>() < 0.04);
            if failed_attempts > 0 {
                last_mile += 24.0;
            }
            let exception = rng.random::<f64>() < 0.03;
            if exception {
                last_mile += lognormal(&mut rng, 30.0, 0.5);
            }
            let delivered_at = out_for_delivery_at + last_mile;
            // The promise: nominal pickup, line haul at the carrier's speed
            // and a day's margin, to the end of that day.
            let promise = ordered_at + 14.0 + nominal * speed + 4.0 + 20.0;
            let promised_at = (promise / 24.0).ceil() * 24.0;
            parcels.push(Parcel {
                lane: Lane {
                    carrier: carrier.to_owned(),
                    service_level: service.to_owned(),
                    origin: origin.to_owned(),
                    destination: destination.to_owned(),
                },
                ordered_at,
                picked_up_at,
                out_for_delivery_at,
                delivered_at,
                promised_at,
                failed_attempts,
                exception,
                degraded,
            });
        }
    }
    parcels
}
