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

use std::collections::BTreeMap;

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
    let settings = Settings::default();
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
    let mut predictions = 0usize;
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
        predictions += 1;
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
        predictions,
        elapsed,
    };
    let report = report(opts, &parcels, &outcome);
    println!("{report}");
    Ok(())
}

fn share(items: &[&Scored], pred: impl Fn(&Scored) -> bool) -> f64 {
    if items.is_empty() {
        return f64::NAN;
    }
    items.iter().filter(|s| pred(s)).count() as f64 / items.len() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a replay produced, for the report.
struct Outcome {
    scored: Vec<Scored>,
    /// Per risk quantile, per parcel: when `promise_at_risk` first opened.
    risk_opened: Vec<Vec<Option<f64>>>,
    /// Day buckets and their encoded bytes once a whole window is held.
    footprint: (usize, usize),
    scorecards: Vec<trackstream_lanes::scorecard::Scorecard>,
    predictions: usize,
    elapsed: std::time::Duration,
}

fn report(opts: &Options, parcels: &[history::Parcel], outcome: &Outcome) -> String {
    let Outcome {
        scored,
        risk_opened,
        footprint,
        scorecards,
        predictions,
        elapsed,
    } = outcome;
    let (predictions, elapsed, footprint) = (*predictions, *elapsed, *footprint);
    use std::fmt::Write;
    let mut out = String::new();
    let scored_parcels = parcels
        .iter()
        .filter(|p| p.ordered_at >= opts.warm_up_days as f64 * 24.0)
        .count();
    let _ = writeln!(
        out,
        "History: {} days × {} orders ({} parcels; {} scored after a {}-day warm-up), seed {}; {} predictions in {:.1} s ({:.1} µs each, statistics and bookkeeping included).\n",
        opts.days,
        opts.per_day,
        parcels.len(),
        scored_parcels,
        opts.warm_up_days,
        opts.seed,
        predictions,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / predictions.max(1) as f64
    );
    out.push_str("| predicted at | predictions | delivered by p50 | delivered by p90 | inside p10–p90 | p50 abs. error, h (median) | p50 abs. error, h (mean) | high confidence | by level (lane / carrier×dest / carrier / all) |\n|---|---|---|---|---|---|---|---|---|\n");
    type Filter = Box<dyn Fn(&Scored) -> bool>;
    let groups: [(&str, Filter); 5] = [
        (
            "registration (before pickup)",
            Box::new(|s: &Scored| s.position == "before pickup"),
        ),
        ("first scan (pickup)", Box::new(|s: &Scored| s.first_scan)),
        (
            "out for delivery",
            Box::new(|s: &Scored| s.position == "out for delivery"),
        ),
        ("every scan", Box::new(|_: &Scored| true)),
        (
            "first scan, high confidence only",
            Box::new(|s: &Scored| s.first_scan && s.confidence == Confidence::High),
        ),
    ];
    for (name, filter) in &groups {
        let items: Vec<&Scored> = scored.iter().filter(|s| filter(s)).collect();
        let errors: Vec<f64> = items
            .iter()
            .map(|s| (s.p50 - s.delivered_at).abs())
            .collect();
        let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
        let mut levels: BTreeMap<Level, usize> = BTreeMap::new();
        for s in &items {
            *levels.entry(s.level).or_default() += 1;
        }
        let _ = writeln!(
            out,
            "| {name} | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} | {:.1} | {:.1} % | {} |",
            items.len(),
            share(&items, |s| s.delivered_at <= s.p50) * 100.0,
            share(&items, |s| s.delivered_at <= s.p90) * 100.0,
            share(&items, |s| s.delivered_at >= s.p10
                && s.delivered_at <= s.p90)
                * 100.0,
            median(errors),
            mean,
            share(&items, |s| s.confidence == Confidence::High) * 100.0,
            Level::ALL
                .iter()
                .map(|l| levels.get(l).copied().unwrap_or(0).to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    // promise_at_risk
    let warm_up = opts.warm_up_days as f64 * 24.0;
    let late = parcels
        .iter()
        .filter(|p| p.ordered_at >= warm_up && p.delivered_at > p.promised_at)
        .count();
    let _ = writeln!(
        out,
        "\npromise_at_risk: opens at the first instant the predicted quantile passes the promise (with no new scan), if before the parcel's next scan and the promise. {late} of {scored_parcels} scored parcels were late ({:.1} %).\n",
        late as f64 * 100.0 / scored_parcels.max(1) as f64
    );
    out.push_str("| quantile | opened for | precision | recall | median lead time before the promise, h |\n|---|---|---|---|---|\n");
    for (q, opened) in opts.risk_quantiles.iter().zip(risk_opened) {
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut leads = Vec::new();
        for (p, opened) in parcels.iter().zip(opened) {
            if p.ordered_at < warm_up {
                continue;
            }
            match (opened, p.delivered_at > p.promised_at) {
                (Some(at), true) => {
                    tp += 1;
                    leads.push(p.promised_at - at);
                }
                (Some(_), false) => fp += 1,
                _ => {}
            }
        }
        let _ = writeln!(
            out,
            "| p{:.0} | {} | {:.3} | {:.3} | {:.1} |",
            q * 100.0,
            tp + fp,
            tp as f64 / (tp + fp).max(1) as f64,
            tp as f64 / late.max(1) as f64,
            median(leads)
        );
    }
    // degraded lane: share delivered by p90 at first scan, by day of pickup
    let _ = writeln!(
        out,
        "\nThe degraded lane ({} {} → {}, line haul ×2.2 for the {} parcels picked up from day {} on): first-scan predictions, by day.\n",
        history::DEGRADED.0,
        history::DEGRADED.1,
        history::DEGRADED.2,
        parcels.iter().filter(|p| p.degraded).count(),
        opts.degrade_at_day
    );
    out.push_str("| day | predictions | delivered by p90 | p50 abs. error, h | high confidence |\n|---|---|---|---|---|\n");
    let mut recovered: Option<i64> = None;
    for day in (opts.degrade_at_day - 2)..(opts.degrade_at_day + 12).min(opts.days) {
        let items: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.degraded_lane && s.first_scan && s.day == day)
            .collect();
        if items.is_empty() {
            continue;
        }
        let by_p90 = share(&items, |s| s.delivered_at <= s.p90);
        if day > opts.degrade_at_day && recovered.is_none() && by_p90 >= 0.8 {
            recovered = Some(day);
        }
        let errors: Vec<f64> = items
            .iter()
            .map(|s| (s.p50 - s.delivered_at).abs())
            .collect();
        let _ = writeln!(
            out,
            "| {day} | {} | {:.0} % | {:.1} | {:.0} % |",
            items.len(),
            by_p90 * 100.0,
            median(errors),
            share(&items, |s| s.confidence == Confidence::High) * 100.0
        );
    }
    let _ = writeln!(
        out,
        "\nTime to react: first-scan p90 back to ≥ 80 % delivered by it on day {} ({} days after the slowdown began).",
        recovered.map_or("never".to_owned(), |d| d.to_string()),
        recovered.map_or("—".to_owned(), |d| (d - opts.degrade_at_day).to_string())
    );
    let _ = writeln!(
        out,
        "\nCarrier scorecards on day {} (the 14 days before; `Book::scorecard`), with the share of the carrier's scored parcels delivered by their first-scan p90:\n",
        opts.days
    );
    out.push_str("| carrier | deliveries | transit p50 / p90, h | pickup lag p50, h | on time vs promise | by first prediction's p90 | exceptions | failed attempts per parcel |\n|---|---|---|---|---|---|---|---|\n");
    for card in scorecards {
        let carrier = card.key.trim_start_matches("c|");
        let first: Vec<&Scored> = scored
            .iter()
            .filter(|s| s.first_scan && s.carrier == carrier)
            .collect();
        let hours = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "| {carrier} | {} | {} / {} | {} | {} | {:.1} % | {:.1} % | {:.3} |",
            card.deliveries,
            hours(card.transit_p50),
            hours(card.transit_p90),
            hours(card.pickup_lag_p50),
            card.on_time
                .map_or("—".to_owned(), |v| format!("{:.1} %", v * 100.0)),
            share(&first, |s| s.delivered_at <= s.p90) * 100.0,
            card.exception_rate * 100.0,
            card.failed_attempt_rate
        );
    }
    let (buckets, bytes) = footprint;
    let _ = writeln!(
        out,
        "\nStatistics held on day {} (a whole window): {buckets} key-day buckets (every lane and fallback key × up to {} days), {bytes} bytes encoded (JSON): {:.0} bytes per key-day bucket (five stage sketches + counts), {:.0} KB per key for the window.",
        opts.days,
        Settings::default().window_days + 1,
        bytes as f64 / buckets.max(1) as f64,
        bytes as f64 / buckets.max(1) as f64 * (Settings::default().window_days + 1) as f64
            / 1024.0
    );
    out
}
