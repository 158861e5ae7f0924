//! The statistics: per lane key and day, one sketch per stage and the counts
//! a scorecard shows. Days are buckets so a window slides by dropping old
//! days, and every bucket merges with any other (instances, days, levels).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::drift::Cohort;
use crate::lane::{Lane, Level};
use crate::sketch::Durations;
use crate::stage::{Stage, Timeline};

/// One key's statistics for one day (or, merged, for a window).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DayStats {
    /// One sketch per [`Stage`], indexed by [`Stage::index`].
    pub stages: [Durations; 5],
    /// Parcels delivered.
    pub deliveries: u64,
    /// Delivered by the promise / after it (parcels with a promise only).
    pub on_time: u64,
    /// Delivered after the promise.
    pub late: u64,
    /// Delivered parcels that had a carrier exception.
    pub exceptions: u64,
    /// Failed delivery attempts among delivered parcels.
    pub failed_attempts: u64,
    /// Delivered parcels that had a first prediction, and those delivered
    /// by its latest (p90) time.
    #[serde(default)]
    pub predicted: u64,
    /// See `predicted`.
    #[serde(default)]
    pub predicted_on_time: u64,
    /// Delivered parcels with both a provider estimate and a first
    /// prediction, and the sums of the absolute errors (hours) of each.
    #[serde(default)]
    pub provider_scored: u64,
    /// See `provider_scored`.
    #[serde(default)]
    pub provider_error_hours: f64,
    /// See `provider_scored`.
    #[serde(default)]
    pub our_error_hours: f64,
}

impl DayStats {
    /// Adds a delivered parcel.
    pub fn record(&mut self, timeline: &Timeline) {
        for (stage, hours) in timeline.durations() {
            self.stages[stage.index()].add(hours);
        }
        self.deliveries += 1;
        match timeline.on_time() {
            Some(true) => self.on_time += 1,
            Some(false) => self.late += 1,
            None => {}
        }
        self.exceptions += u64::from(timeline.exception);
        self.failed_attempts += u64::from(timeline.failed_attempts);
        if let Some(kept) = timeline.on_time_vs_first_prediction() {
            self.predicted += 1;
            self.predicted_on_time += u64::from(kept);
        }
        if let Some((provider, ours)) = timeline.estimate_errors() {
            self.provider_scored += 1;
            self.provider_error_hours += provider;
            self.our_error_hours += ours;
        }
    }

    /// Merges `other` in.
    pub fn merge(&mut self, other: &DayStats) {
        for (mine, theirs) in self.stages.iter_mut().zip(&other.stages) {
            mine.merge(theirs);
        }
        self.deliveries += other.deliveries;
        self.on_time += other.on_time;
        self.late += other.late;
        self.exceptions += other.exceptions;
        self.failed_attempts += other.failed_attempts;
        self.predicted += other.predicted;
        self.predicted_on_time += other.predicted_on_time;
        self.provider_scored += other.provider_scored;
        self.provider_error_hours += other.provider_error_hours;
        self.our_error_hours += other.our_error_hours;
    }

    /// The sketch of `stage`.
    pub fn stage(&self, stage: Stage) -> &Durations {
        &self.stages[stage.index()]
    }

    /// Encoded size (what a store keeps per key and day), bytes.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(0, |v| v.len())
    }
}

/// Every key's day buckets, in memory (the stream component keeps the same
/// buckets in Redis).
///
/// A window covers whole days *before* the day asked about, so within a day
/// every prediction of a lane draws on the same statistics: the same inputs
/// give the same prediction however often they are replayed that day, and a
/// window can be merged once per day and reused (`cache`, cleared when the
/// day changes or a delivery lands in a day already closed).
#[derive(Debug, Default)]
pub struct Book {
    days: HashMap<(String, i64), DayStats>,
    cache: RefCell<Cached>,
    /// Recent pickups per lane (lane-level key), for [`Cohort::scale`].
    cohorts: HashMap<String, Cohort>,
    /// The last fit per lane and the hour it was made for: a fit reads every
    /// recent pickup of the lane, so it is made at most once an hour.
    scales: RefCell<HashMap<String, (i64, Option<f64>)>>,
}

/// Merged windows of one day: `(day, (key, days) → stats)`.
type Cached = (i64, HashMap<(String, i64), Arc<DayStats>>);

/// Where predictions read their statistics: the in-memory [`Book`] (the
/// accuracy benchmark, tests) or the stream's cache of the Redis buckets.
pub trait Windows {
    /// `key`'s statistics over the `days` whole days before `day`.
    fn window(&self, key: &str, day: i64, days: i64) -> Arc<DayStats>;

    /// The stretch of `lane`'s durations its parcels in flight show
    /// ([`crate::drift`]); `None` where no cohort is kept.
    fn lane_scale(
        &self,
        _lane: &Lane,
        _base: &Durations,
        _now: f64,
        _days: i64,
        _min_parcels: usize,
    ) -> Option<f64> {
        None
    }
}

impl Windows for Book {
    fn window(&self, key: &str, day: i64, days: i64) -> Arc<DayStats> {
        Book::window(self, key, day, days)
    }

    /// How much slower (> 1) or faster than `base` the lane's parcels picked
    /// up in the last `days` days are arriving, fitted at most once an hour
    /// (`None` without enough of them).
    fn lane_scale(
        &self,
        lane: &Lane,
        base: &Durations,
        now: f64,
        days: i64,
        min_parcels: usize,
    ) -> Option<f64> {
        let key = lane.key(Level::Lane);
        let hour = now.floor() as i64;
        if let Some((at, scale)) = self.scales.borrow().get(&key)
            && *at == hour
        {
            return *scale;
        }
        let scale = self
            .cohorts
            .get(&key)
            .and_then(|cohort| cohort.scale(base, now - days as f64 * 24.0, now, min_parcels));
        self.scales.borrow_mut().insert(key, (hour, scale));
        scale
    }
}

impl Book {
    /// Records a delivered parcel of `lane` under every level's key, in the
    /// bucket of `day` (its delivery day).
    pub fn record(&mut self, lane: &Lane, timeline: &Timeline, day: i64) {
        if day < self.cache.get_mut().0 {
            self.cache.get_mut().1.clear();
        }
        for (_, key) in lane.keys() {
            self.days.entry((key, day)).or_default().record(timeline);
        }
    }

    /// Parcel `id` of `lane` was picked up at `at` (hours).
    pub fn picked_up(&mut self, lane: &Lane, id: u64, at: f64) {
        self.cohorts
            .entry(lane.key(Level::Lane))
            .or_default()
            .picked_up(id, at);
    }

    /// Parcel `id` of `lane` was delivered: [`Book::record`], and its lane's
    /// recent pickups learn it arrived.
    pub fn delivered(&mut self, lane: &Lane, id: u64, timeline: &Timeline, day: i64) {
        self.record(lane, timeline, day);
        if let (Some(picked), Some(delivered)) = (timeline.picked_up_at, timeline.delivered_at)
            && let Some(cohort) = self.cohorts.get_mut(&lane.key(Level::Lane))
        {
            cohort.delivered(id, picked, delivered - picked);
        }
    }

    /// Forgets pickups before `before` (hours).
    pub fn expire_cohorts(&mut self, before: f64) {
        for cohort in self.cohorts.values_mut() {
            cohort.expire(before);
        }
        self.cohorts.retain(|_, c| !c.is_empty());
    }

    /// `key`'s statistics over the `days` whole days before `day`.
    pub fn window(&self, key: &str, day: i64, days: i64) -> Arc<DayStats> {
        let mut cache = self.cache.borrow_mut();
        if cache.0 != day {
            *cache = (day, HashMap::new());
        }
        cache
            .1
            .entry((key.to_owned(), days))
            .or_insert_with(|| {
                let mut merged = DayStats::default();
                for d in (day - days)..day {
                    if let Some(stats) = self.days.get(&(key.to_owned(), d)) {
                        merged.merge(stats);
                    }
                }
                Arc::new(merged)
            })
            .clone()
    }

    /// Drops buckets older than `day - keep_days` (the window's tail).
    pub fn expire(&mut self, day: i64, keep_days: i64) {
        self.days.retain(|(_, d), _| *d >= day - keep_days);
        self.cache.get_mut().1.clear();
    }

    /// Buckets held and their encoded bytes.
    pub fn footprint(&self) -> (usize, usize) {
        (
            self.days.len(),
            self.days.values().map(DayStats::encoded_len).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(transit: f64) -> Timeline {
        Timeline {
            ordered_at: Some(0.0),
            picked_up_at: Some(5.0),
            out_for_delivery_at: Some(5.0 + transit),
            delivered_at: Some(9.0 + transit),
            promised_at: Some(36.0),
            ..Timeline::default()
        }
    }

    #[test]
    fn a_window_merges_its_days_and_every_level_counts_the_parcel() {
        let lane = Lane {
            carrier: "sf".into(),
            service_level: "express".into(),
            origin: "Guangdong".into(),
            destination: "Beijing".into(),
        };
        let mut book = Book::default();
        for day in 0..10 {
            book.record(&lane, &delivered(20.0 + day as f64), day);
        }
        // Days 7, 8, 9 (a window ends before its day).
        let window = book.window(&lane.key(crate::lane::Level::Lane), 10, 3);
        assert_eq!(window.deliveries, 3);
        assert_eq!(window.stage(Stage::Transit).count(), 3);
        assert_eq!(book.window("all", 10, 10).deliveries, 10);
        assert_eq!(book.window("all", 9, 10).deliveries, 9, "day 9 not closed");
        assert_eq!(
            book.window("all", 10, 10).late,
            2,
            "transits of 28 and 29 h miss a 36 h promise"
        );
        // A late delivery into a closed day is seen by the next window.
        book.record(&lane, &delivered(20.0), 9);
        assert_eq!(book.window("all", 10, 10).deliveries, 11);
        book.expire(10, 3);
        assert_eq!(book.window("all", 10, 10).deliveries, 4);
        assert_eq!(book.footprint().0, 4 * 3);
    }
}
