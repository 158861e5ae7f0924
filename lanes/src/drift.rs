//! A lane that changed, noticed from the parcels still in flight.
//!
//! Deliveries tell of a slower line haul only once the first slowed parcels
//! arrive — days later on a long lane. The parcels picked up recently carry
//! the evidence sooner: if far fewer of them have arrived by their ages than
//! the lane's distribution says, the lane has slowed. [`Cohort::scale`] fits
//! the factor `k` by which the lane's durations must be stretched to explain
//! what arrived (a censored fit: each parcel in flight only says "more than
//! its age"), and predictions use `k · D` until the deliveries catch up.

use std::collections::{BTreeMap, VecDeque};

use crate::sketch::Durations;

/// Recent pickups of one lane: those in flight and those delivered.
#[derive(Debug, Default, Clone)]
pub struct Cohort {
    in_flight: BTreeMap<u64, f64>,
    delivered: VecDeque<(f64, f64)>,
}

/// Stretch factors tried by the fit, ×0.5 … ×4 in steps of 0.05.
fn factors() -> impl Iterator<Item = f64> {
    (10..=80).map(|i| f64::from(i) * 0.05)
}

impl Cohort {
    /// Parcel `id` was picked up at `at`.
    pub fn picked_up(&mut self, id: u64, at: f64) {
        self.in_flight.insert(id, at);
    }

    /// Parcel `id`, picked up at `picked_up_at`, was delivered `hours` later.
    pub fn delivered(&mut self, id: u64, picked_up_at: f64, hours: f64) {
        self.in_flight.remove(&id);
        self.delivered.push_back((picked_up_at, hours));
    }

    /// Forgets pickups before `before` (delivered ones in pickup order; in
    /// flight ones too: a parcel lost for that long is not this lane's pace).
    pub fn expire(&mut self, before: f64) {
        while self.delivered.front().is_some_and(|(at, _)| *at < before) {
            self.delivered.pop_front();
        }
        self.in_flight.retain(|_, at| *at >= before);
    }

    /// Parcels held.
    pub fn len(&self) -> usize {
        self.in_flight.len() + self.delivered.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The factor by which `base` (pickup → delivered) must be stretched to
    /// explain how many of the parcels picked up in `[since, now)` have
    /// arrived by `now`: the `k` whose expected arrivals `Σ F(age / k)` are
    /// closest to the observed. `None` with fewer than `min_parcels` parcels
    /// old enough to tell (past the lane's p10).
    pub fn scale(&self, base: &Durations, since: f64, now: f64, min_parcels: usize) -> Option<f64> {
        // F from a table of percentiles: cheap enough to evaluate per parcel
        // per factor.
        let table: Vec<f64> = (0..=100)
            .map(|i| base.quantile(f64::from(i) / 100.0))
            .collect::<Option<_>>()?;
        let cdf = |x: f64| table.partition_point(|q| *q <= x) as f64 / table.len() as f64;
        let informative = table[10];
        let mut ages = Vec::new();
        let mut arrived = 0usize;
        for (at, hours) in &self.delivered {
            if *at >= since && *at < now && now - at >= informative {
                ages.push(now - at);
                arrived += usize::from(*hours <= now - at);
            }
        }
        for at in self.in_flight.values() {
            if *at >= since && *at < now && now - at >= informative {
                ages.push(now - at);
            }
        }
        if ages.len() < min_parcels {
            return None;
        }
        let observed = arrived as f64;
        factors()
            .map(|k| {
                let expected: f64 = ages.iter().map(|a| cdf(a / k)).sum();
                (k, (expected - observed).abs())
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Durations {
        let mut d = Durations::default();
        for i in 0..1000 {
            d.add(40.0 + f64::from(i % 20));
        }
        d
    }

    #[test]
    fn a_lane_on_its_usual_pace_fits_one_and_a_slowed_one_fits_its_factor() {
        let base = base();
        // 100 parcels picked up over 100 h; on pace, those older than their
        // duration (40..60 h) have arrived.
        let (mut usual, mut slowed) = (Cohort::default(), Cohort::default());
        for i in 0..100u64 {
            let at = i as f64;
            let hours = 40.0 + (i % 20) as f64;
            for (cohort, took) in [(&mut usual, hours), (&mut slowed, hours * 2.0)] {
                cohort.picked_up(i, at);
                if at + took <= 150.0 {
                    cohort.delivered(i, at, took);
                }
            }
        }
        let k = usual.scale(&base, 0.0, 150.0, 20).expect("fit");
        assert!((k - 1.0).abs() <= 0.1, "{k}");
        let k = slowed.scale(&base, 0.0, 150.0, 20).expect("fit");
        assert!((k - 2.0).abs() <= 0.25, "{k}");
        assert_eq!(Cohort::default().scale(&base, 0.0, 150.0, 20), None);
        slowed.expire(90.0);
        assert_eq!(slowed.len(), 10);
    }
}
