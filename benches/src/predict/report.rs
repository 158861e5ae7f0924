//! The accuracy report of a replay: calibration and error by stage,
//! promise-at-risk per quantile, the degraded lane by day, carrier
//! scorecards and the statistics' size.

use std::collections::BTreeMap;
use std::fmt::Write;

use trackstream_lanes::lane::Level;
use trackstream_lanes::predict::{Confidence, Settings};

use super::{Options, Outcome, Scored, history};

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

/// The report of one replay, markdown (what `benches/RESULTS.md` quotes).
pub(super) fn markdown(opts: &Options, parcels: &[history::Parcel], outcome: &Outcome) -> String {
    let Outcome {
        scored,
        risk_opened,
        footprint,
        scorecards,
        elapsed,
    } = outcome;
    let predictions = scored.len();
    let mut out = String::new();
    let scored_parcels = parcels
        .iter()
        .filter(|p| p.ordered_at >= opts.warm_up_days as f64 * 24.0)
        .count();
    let _ = writeln!(
        out,
        "History: {} days × {} orders ({} parcels; {} scored after a {}-day warm-up), seed {}; {} predictions in {:.1} s ({:.1} µs each, statistics and bookkeeping included){}.\n",
        opts.days,
        opts.per_day,
        parcels.len(),
        scored_parcels,
        opts.warm_up_days,
        opts.seed,
        predictions,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / predictions.max(1) as f64,
        if opts.without_in_flight_stretch {
            "; without the in-flight stretch (as the stream predicts today)"
        } else {
            ""
        }
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
    let (buckets, bytes) = *footprint;
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
