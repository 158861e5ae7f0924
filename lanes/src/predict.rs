//! Predictions: when a parcel in flight will most likely arrive, from the
//! statistics of its lane (or the most specific fallback with enough
//! samples), conditioned on its stage and the time already spent in it; and
//! when a promise becomes likely missed.

use serde::{Deserialize, Serialize};

use crate::book::{DayStats, Windows};
use crate::lane::{Lane, Level};
use crate::sketch::Durations;
use crate::stage::{Position, Stage};

/// How predictions are made (defaults documented per field).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Days of deliveries a prediction draws on (default 14: two of each
    /// weekday).
    pub window_days: i64,
    /// The recent window compared with it to notice a lane that changed
    /// (default 2 days).
    pub recent_days: i64,
    /// Fewest samples a level needs to be used at all (default 30).
    pub min_samples: usize,
    /// Samples for a high-confidence prediction (default 200).
    pub high_samples: usize,
    /// Relative difference between the recent and the whole window's median
    /// above which the lane counts as changed and the recent window is used
    /// (default 0.2); also the least stretch of a lane's parcels in flight
    /// that counts.
    pub shift: f64,
    /// Days of pickups whose progress is fitted against the lane's
    /// distribution ([`crate::drift`]; default 4).
    pub cohort_days: i64,
    /// Fewest such parcels (old enough to tell) for a fit (default 30).
    pub min_cohort: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_days: 14,
            recent_days: 2,
            min_samples: 30,
            high_samples: 200,
            shift: 0.2,
            cohort_days: 4,
            min_cohort: 30,
        }
    }
}

/// How far to trust a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Confidence {
    /// A coarse fallback or few samples: shown to merchants, not promised to
    /// buyers.
    Low,
    /// Enough samples, but a coarse level or a lane that just changed.
    Medium,
    /// The lane itself (or carrier × destination province), many samples,
    /// stable: fit for the buyer's "arriving around".
    High,
}

/// What a prediction rests on: one duration distribution and where the
/// parcel is in it.
#[derive(Debug, Clone)]
pub struct Basis {
    /// The distribution of the remaining stage.
    pub durations: Durations,
    /// Which stage that is, and when the parcel entered it (hours).
    pub stage: Stage,
    /// When the parcel entered the stage (hours).
    pub since: f64,
    /// The level the statistics come from.
    pub level: Level,
    /// Samples behind it.
    pub samples: usize,
    /// Whether the lane changed: the recent window replaced the whole one, or
    /// its parcels in flight are arriving slower or faster (`scale`).
    pub changed: bool,
    /// The stretch applied to the durations (1 unless the lane's parcels in
    /// flight show it changed before its deliveries do).
    pub scale: f64,
}

/// A prediction: arrival quantiles (hours since the caller's epoch) and how
/// far to trust them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// 10 % of such parcels arrived by then.
    pub p10: f64,
    /// The most likely arrival (median).
    pub p50: f64,
    /// 90 % arrived by then.
    pub p90: f64,
    /// How far to trust it.
    pub confidence: Confidence,
    /// The statistics' level.
    pub level: Level,
    /// Samples behind it.
    pub samples: usize,
}

/// The basis for a parcel of `lane` at `position` at `now` (hours; its day's
/// statistics are the whole days before): the most specific level with at
/// least `min_samples` deliveries, stretched when the lane's parcels in
/// flight show it slowed before its deliveries can.
pub fn basis<W: Windows + ?Sized>(
    book: &W,
    lane: &Lane,
    position: Position,
    now: f64,
    settings: &Settings,
) -> Option<Basis> {
    let day = (now / 24.0).floor() as i64;
    let (stage, since) = position.remaining();
    for (level, key) in lane.keys() {
        let whole = book.window(&key, day, settings.window_days);
        let samples = whole.stage(stage).count();
        if samples < settings.min_samples {
            continue;
        }
        let recent = book.window(&key, day, settings.recent_days);
        let changed = changed(&whole, &recent, stage, settings);
        let chosen = if changed { &*recent } else { &*whole };
        // The line haul is what slows; it is in these two remaining stages.
        let hauled = matches!(stage, Stage::PickupToDelivered | Stage::OrderToDelivered);
        // Fitted against what is used, so a recent window that already shows
        // the change is not stretched again.
        let scale = if level == Level::Lane && hauled {
            book.lane_scale(
                lane,
                chosen.stage(Stage::PickupToDelivered),
                now,
                settings.cohort_days,
                settings.min_cohort,
            )
            .filter(|k| (k - 1.0).abs() > settings.shift)
            .unwrap_or(1.0)
        } else {
            1.0
        };
        return Some(Basis {
            durations: chosen.stage(stage).clone(),
            stage,
            since,
            level,
            samples: chosen.stage(stage).count(),
            changed: changed || scale != 1.0,
            scale,
        });
    }
    None
}

/// Whether the recent window's median differs from the whole window's by
/// more than `shift`, with enough recent samples to say so.
fn changed(whole: &DayStats, recent: &DayStats, stage: Stage, settings: &Settings) -> bool {
    let recent = recent.stage(stage);
    if recent.count() < settings.min_samples {
        return false;
    }
    match (whole.stage(stage).quantile(0.5), recent.quantile(0.5)) {
        (Some(whole), Some(recent)) if whole > 0.0 => (recent / whole - 1.0).abs() > settings.shift,
        _ => false,
    }
}

impl Basis {
    /// The `q`-quantile of the remaining stage's duration given `elapsed`
    /// hours in it, with the stretch: `D' = k·D`, so `Q'(q | e) = k·Q(q | e/k)`.
    fn conditional(&self, q: f64, elapsed: f64) -> Option<f64> {
        self.durations
            .conditional_quantile(q, elapsed / self.scale)
            .map(|d| d * self.scale)
    }

    /// The prediction at `now` (hours), given no scan since the stage began
    /// other than what `since` says.
    pub fn predict(&self, now: f64, settings: &Settings) -> Option<Prediction> {
        let elapsed = (now - self.since).max(0.0);
        let at = |q: f64| self.conditional(q, elapsed).map(|d| self.since + d);
        let specific = matches!(self.level, Level::Lane | Level::CarrierDestination);
        let confidence = if specific && self.samples >= settings.high_samples && !self.changed {
            Confidence::High
        } else if self.samples >= settings.min_samples && self.level != Level::Everything {
            Confidence::Medium
        } else {
            Confidence::Low
        };
        Some(Prediction {
            p10: at(0.1)?,
            p50: at(0.5)?,
            p90: at(0.9)?,
            confidence,
            level: self.level,
            samples: self.samples,
        })
    }

    /// The first time from `now` at which, with no new scan, the predicted
    /// `quantile` of arrival passes `promise` — when a promise becomes likely
    /// missed (at `quantile` 0.5: more likely than not). `None` if that does
    /// not happen before the promise (then the promise's own deadline rules).
    /// The predicted quantile only grows while a parcel waits, so the first
    /// crossing is found by bisection (to a minute).
    pub fn risk_from(&self, now: f64, promise: f64, quantile: f64) -> Option<f64> {
        let late_at = |t: f64| {
            self.conditional(quantile, (t - self.since).max(0.0))
                .is_some_and(|d| self.since + d > promise)
        };
        if late_at(now) {
            return Some(now);
        }
        if now >= promise || !late_at(promise) {
            return None;
        }
        let (mut low, mut high) = (now, promise);
        while high - low > 1.0 / 60.0 {
            let mid = (low + high) / 2.0;
            if late_at(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        Some(high)
    }
}

/// [`basis`] then [`Basis::predict`] at `now`.
pub fn predict<W: Windows + ?Sized>(
    book: &W,
    lane: &Lane,
    position: Position,
    now: f64,
    settings: &Settings,
) -> Option<Prediction> {
    basis(book, lane, position, now, settings)?.predict(now, settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::Book;
    use crate::stage::Timeline;

    fn lane(carrier: &str) -> Lane {
        Lane {
            carrier: carrier.into(),
            service_level: "standard".into(),
            origin: "Zhejiang".into(),
            destination: "Sichuan/Chengdu".into(),
        }
    }

    /// `n` parcels of `lane` delivered on `day`, transit `hours` (+ i % 10).
    fn history(book: &mut Book, lane: &Lane, day: i64, n: usize, hours: f64) {
        for i in 0..n {
            let transit = hours + (i % 10) as f64;
            book.record(
                lane,
                &Timeline {
                    ordered_at: Some(0.0),
                    picked_up_at: Some(2.0),
                    out_for_delivery_at: Some(2.0 + transit),
                    delivered_at: Some(6.0 + transit),
                    ..Timeline::default()
                },
                day,
            );
        }
    }

    #[test]
    fn a_thin_lane_falls_back_and_says_so() {
        let settings = Settings::default();
        let mut book = Book::default();
        history(&mut book, &lane("zto"), 9, 300, 40.0);
        // Another zto lane to Sichuan, never seen: carrier × destination.
        let other = Lane {
            origin: "Jiangsu".into(),
            ..lane("zto")
        };
        let p =
            predict(&book, &other, Position::InTransit(240.0), 240.0, &settings).expect("fallback");
        assert_eq!(p.level, Level::CarrierDestination);
        assert_eq!(p.confidence, Confidence::High);
        let p = predict(
            &book,
            &lane("yto"),
            Position::InTransit(240.0),
            240.0,
            &settings,
        )
        .expect("everything");
        assert_eq!(
            (p.level, p.confidence),
            (Level::Everything, Confidence::Low)
        );
        assert!(p.p10 <= p.p50 && p.p50 <= p.p90);
        // pickup→delivered is 44..53 h: median ~48.5 h after pickup.
        assert!((p.p50 - 288.5).abs() < 2.0, "{p:?}");
        assert!(
            predict(
                &Book::default(),
                &lane("zto"),
                Position::InTransit(240.0),
                240.0,
                &settings
            )
            .is_none()
        );
    }

    #[test]
    fn time_spent_in_a_stage_moves_the_prediction_and_the_risk() {
        let settings = Settings::default();
        let mut book = Book::default();
        history(&mut book, &lane("zto"), 9, 300, 40.0);
        let basis = basis(
            &book,
            &lane("zto"),
            Position::InTransit(0.0),
            240.0,
            &settings,
        )
        .expect("basis");
        let fresh = basis.predict(0.0, &settings).expect("p");
        let late = basis.predict(60.0, &settings).expect("p");
        assert!(
            late.p50 > fresh.p50 && late.p50 >= 60.0,
            "{fresh:?} {late:?}"
        );
        // Promise at 50 h: the median (~48.5 h) is inside it at pickup, and
        // becomes later than it as the parcel waits without a scan.
        let opens = basis
            .risk_from(0.0, 50.0, 0.5)
            .expect("risk before the promise");
        assert!(opens > 0.0 && opens < 50.0, "{opens}");
        assert!(basis.predict(opens + 0.1, &settings).expect("p").p50 > 50.0);
        assert!(basis.predict(opens - 0.5, &settings).expect("p").p50 <= 50.0);
        // A generous promise never comes at risk before it.
        assert_eq!(basis.risk_from(0.0, 500.0, 0.5), None);
        // An already hopeless one is at risk now.
        assert_eq!(basis.risk_from(10.0, 20.0, 0.5), Some(10.0));
    }

    #[test]
    fn a_lane_that_changed_uses_its_recent_days_at_lower_confidence() {
        let settings = Settings::default();
        let mut book = Book::default();
        for day in 0..12 {
            history(&mut book, &lane("zto"), day, 50, 40.0);
        }
        for day in 12..14 {
            history(&mut book, &lane("zto"), day, 50, 90.0);
        }
        let p = predict(
            &book,
            &lane("zto"),
            Position::InTransit(336.0),
            336.0,
            &settings,
        )
        .expect("p");
        assert_eq!(p.confidence, Confidence::Medium);
        assert!(p.p50 > 336.0 + 90.0, "the recent days rule: {p:?}");
    }

    #[test]
    fn parcels_in_flight_stretch_a_lane_before_its_deliveries_show_it() {
        let settings = Settings::default();
        let mut book = Book::default();
        for day in 0..14 {
            history(&mut book, &lane("zto"), day, 50, 40.0);
        }
        // Day 14: 90 parcels picked up over the last 3 days, none delivered,
        // though a third of them are older than the lane's usual 44–53 h.
        let now = 14.0 * 24.0 + 12.0;
        for i in 0..90u64 {
            book.picked_up(&lane("zto"), i, now - 72.0 + i as f64 * 0.8);
        }
        let p = predict(
            &book,
            &lane("zto"),
            Position::InTransit(now),
            now,
            &settings,
        )
        .expect("p");
        assert_eq!(p.confidence, Confidence::Medium, "the lane changed: {p:?}");
        assert!(
            p.p50 > now + 60.0,
            "stretched beyond the usual 48.5 h: {p:?}"
        );
        // Delivered on pace, the same pickups leave the prediction alone.
        let mut on_pace = Book::default();
        for day in 0..14 {
            history(&mut on_pace, &lane("zto"), day, 50, 40.0);
        }
        for i in 0..90u64 {
            let at = now - 72.0 + i as f64 * 0.8;
            on_pace.picked_up(&lane("zto"), i, at);
            if at + 48.0 <= now {
                let timeline = Timeline {
                    picked_up_at: Some(at),
                    delivered_at: Some(at + 48.0),
                    ..Timeline::default()
                };
                on_pace.delivered(&lane("zto"), i, &timeline, 14);
            }
        }
        let p = predict(
            &on_pace,
            &lane("zto"),
            Position::InTransit(now),
            now,
            &settings,
        )
        .expect("p");
        assert_eq!(p.confidence, Confidence::High, "{p:?}");
        assert!((p.p50 - (now + 48.5)).abs() < 2.0, "{p:?}");
    }
}
