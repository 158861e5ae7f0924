//! The delivery-prediction accuracy benchmark behind `trackstream-predict`
//! (`cargo run --release -p trackstream-benches --bin trackstream-predict`).
//!
//! A generated history ([`history`]: lanes with their own heavy-tailed stage
//! durations, weekday effects, a carrier mix, one lane whose line haul slows
//! ×2.2 mid-run) is replayed in time order through the model of
//! `trackstream-lanes`: each delivery enters the day buckets of its lane and
//! fallbacks; after the warm-up, every parcel is predicted at its
//! registration, its first scan and its out-for-delivery scan, from the
//! statistics of the whole days before (what the stream component does), and
//! `promise_at_risk` is decided as the detector would (the first instant the
//! predicted median passes the promise, if before the parcel's next scan and
//! the promise). It reports calibration (share delivered by the predicted p50
//! and p90), p50 absolute error by stage, coverage (high-confidence at first
//! scan), promise-at-risk precision / recall / median lead time, how fast the
//! degraded lane's predictions recover, and the statistics' bytes per lane.

mod history;
mod report;

use trackstream_lanes::book::Book;
use trackstream_lanes::lane::Level;
use trackstream_lanes::predict::{self, Confidence, Settings};
use trackstream_lanes::stage::{Position, Timeline};

pub use history::Plan;

/// The command line.
#[derive(clap::Parser)]
#[command(name = "trackstream-predict", version)]
pub struct Options {
    /// Days of orders.
    #[arg(long, default_value_t = 56)]
    pub days: i64,
    /// Orders per day.
    #[arg(long, default_value_t = 3000)]
    pub per_day: usize,
    /// Days of deliveries before parcels are scored.
    #[arg(long, default_value_t = 21)]
    pub warm_up_days: i64,
    /// Day the degraded lane slows down.
    #[arg(long, default_value_t = 35)]
    pub degrade_at_day: i64,
    /// Predicted arrival quantiles that must pass the promise for
    /// `promise_at_risk` to open (0.5: more likely late than not), each
    /// scored.
    #[arg(long, default_value = "0.2,0.3,0.5,0.7", value_delimiter = ',')]
    pub risk_quantiles: Vec<f64>,
    /// Random seed of the history.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Predict as the stream does today: without the in-flight stretch
    /// (`lanes::drift`), which needs each lane's recent pickups kept.
    #[arg(long)]
    pub without_in_flight_stretch: bool,
}

/// One scored prediction.
struct Scored {
    position: &'static str,
    first_scan: bool,
    p10: f64,
    p50: f64,
    p90: f64,
    confidence: Confidence,
    level: Level,
    delivered_at: f64,
    degraded_lane: bool,
    day: i64,
    carrier: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ordered,
    PickedUp,
    OutForDelivery,
    Delivered,
}

/// Runs the benchmark and prints the report (markdown).
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let plan = Plan {
        days: opts.days,
        per_day: opts.per_day,
        degrade_at_day: opts.degrade_at_day,
        seed: opts.seed,
    };
    let started = std::time::Instant::now();
    let parcels = history::generate(&plan);
    let mut events: Vec<(f64, Kind, usize)> = Vec::with_capacity(parcels.len() * 4);
    for (i, p) in parcels.iter().enumerate() {
        events.push((p.ordered_at, Kind::Ordered, i));
        events.push((p.picked_up_at, Kind::PickedUp, i));
        events.push((p.out_for_delivery_at, Kind::OutForDelivery, i));
        events.push((p.delivered_at, Kind::Delivered, i));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let settings = Settings {
        // No cohort is ever large enough: the stretch never applies.
        min_cohort: if opts.without_in_flight_stretch {
            usize::MAX
        } else {
            Settings::default().min_cohort
        },
        ..Settings::default()
    };
    let mut book = Book::default();
    let mut scored: Vec<Scored> = Vec::new();
    // Per risk quantile, per parcel: when promise_at_risk first opened.
    let mut risk_opened: Vec<Vec<Option<f64>>> =
        vec![vec![None; parcels.len()]; opts.risk_quantiles.len()];
    // The statistics' size once a whole window is held (the last order day),
    // and the carriers' scorecards then.
    let mut footprint = (0, 0);
    let mut scorecards = Vec::new();
    let warm_up = opts.warm_up_days as f64 * 24.0;
    let mut last_day = 0;
    for (at, kind, i) in events {
        let p = &parcels[i];
        let day = (at / 24.0).floor() as i64;
        if day != last_day {
            book.expire(day, settings.window_days + 1);
            book.expire_cohorts((day - settings.cohort_days) as f64 * 24.0);
            if day == opts.days {
                footprint = book.footprint();
                scorecards = history::CARRIERS
                    .iter()
                    .map(|(carrier, ..)| book.scorecard(&format!("c|{carrier}"), day, 14))
                    .collect();
            }
            last_day = day;
        }
        if kind == Kind::Delivered {
            let timeline = Timeline {
                ordered_at: Some(p.ordered_at),
                picked_up_at: Some(p.picked_up_at),
                out_for_delivery_at: Some(p.out_for_delivery_at),
                delivered_at: Some(p.delivered_at),
                promised_at: Some(p.promised_at),
                failed_attempts: p.failed_attempts,
                exception: p.exception,
                ..Timeline::default()
            };
            book.delivered(&p.lane, i as u64, &timeline, day);
            continue;
        }
        if kind == Kind::PickedUp {
            book.picked_up(&p.lane, i as u64, at);
        }
        if p.ordered_at < warm_up {
            continue;
        }
        let (position, next) = match kind {
            Kind::Ordered => (Position::Ordered(p.ordered_at), p.picked_up_at),
            Kind::PickedUp => (Position::InTransit(p.picked_up_at), p.out_for_delivery_at),
            _ => (
                Position::OutForDelivery(p.out_for_delivery_at),
                p.delivered_at,
            ),
        };
        let Some(basis) = predict::basis(&book, &p.lane, position, at, &settings) else {
            continue;
        };
        let Some(prediction) = basis.predict(at, &settings) else {
            continue;
        };
        scored.push(Scored {
            position: position.name(),
            first_scan: kind == Kind::PickedUp,
            p10: prediction.p10,
            p50: prediction.p50,
            p90: prediction.p90,
            confidence: prediction.confidence,
            level: prediction.level,
            delivered_at: p.delivered_at,
            degraded_lane: (
                p.lane.carrier.as_str(),
                p.lane.origin.as_str(),
                p.lane.destination.as_str(),
            ) == history::DEGRADED,
            day,
            carrier: p.lane.carrier.clone(),
        });
        for (q, opened) in opts.risk_quantiles.iter().zip(&mut risk_opened) {
            if opened[i].is_none()
                && let Some(opens) = basis.risk_from(at, p.promised_at, *q)
                && opens < next
                && opens < p.promised_at
            {
                opened[i] = Some(opens);
            }
        }
    }
    let elapsed = started.elapsed();
    let outcome = Outcome {
        scored,
        risk_opened,
        footprint,
        scorecards,
        elapsed,
    };
    let report = report::markdown(opts, &parcels, &outcome);
    println!("{report}");
    Ok(())
}

/// What a replay produced, for the report.
struct Outcome {
    scored: Vec<Scored>,
    /// Per risk quantile, per parcel: when `promise_at_risk` first opened.
    risk_opened: Vec<Vec<Option<f64>>>,
    /// Day buckets and their encoded bytes once a whole window is held.
    footprint: (usize, usize),
    scorecards: Vec<trackstream_lanes::scorecard::Scorecard>,
    elapsed: std::time::Duration,
}
