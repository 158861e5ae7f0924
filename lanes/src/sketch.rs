//! One stage's duration distribution: a DDSketch with a fixed configuration
//! (so every sketch of the system merges with every other), and the
//! conditional quantiles a prediction needs.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy of every quantile: 2 % of the value (an hour in two
/// days), which keeps a sketch of hours-to-weeks durations at ~250 bins.
pub const RELATIVE_ERROR: f64 = 0.02;
/// Bins before the lowest ones collapse (never reached for durations between
/// a minute and a year at 2 %).
pub const MAX_BINS: u32 = 1024;
/// Durations below this (hours, ~4 s) count as zero.
pub const MIN_HOURS: f64 = 1e-3;

/// A duration distribution in hours.
///
/// Stored as the sketch, or `null` when empty: an empty DDSketch's min and
/// max are infinite, which JSON cannot carry (they would come back as
/// `null` and fail to parse — a bucket with one empty stage would be lost).
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "Option<DDSketch>", into = "Option<DDSketch>")]
pub struct Durations(DDSketch);

impl From<Option<DDSketch>> for Durations {
    fn from(sketch: Option<DDSketch>) -> Self {
        sketch.map_or_else(Durations::default, Durations)
    }
}

impl From<Durations> for Option<DDSketch> {
    fn from(durations: Durations) -> Self {
        (durations.count() > 0).then_some(durations.0)
    }
}

impl Default for Durations {
    fn default() -> Self {
        Durations(DDSketch::new(Config::new(
            RELATIVE_ERROR,
            MAX_BINS,
            MIN_HOURS,
        )))
    }
}

impl std::fmt::Debug for Durations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Durations(n={})", self.count())
    }
}

impl Durations {
    /// Adds one duration (negative and non-finite ones are ignored).
    pub fn add(&mut self, hours: f64) {
        if hours.is_finite() && hours >= 0.0 {
            self.0.add(hours);
        }
    }

    /// Samples held.
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// Merges `other` in (same configuration by construction).
    pub fn merge(&mut self, other: &Durations) {
        // Every sketch is built by `Default`: configurations always agree.
        let _ = self.0.merge(&other.0);
    }

    /// The `q`-quantile, hours (`None` when empty).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    /// The share of durations at or below `hours` (the CDF), found by
    /// bisection over quantiles (the sketch answers quantiles, not ranks);
    /// accurate to the sketch's own resolution.
    pub fn share_below(&self, hours: f64) -> Option<f64> {
        let (mut low, mut high) = (0.0_f64, 1.0_f64);
        if self.quantile(1.0)? <= hours {
            return Some(1.0);
        }
        if self.quantile(0.0)? > hours {
            return Some(0.0);
        }
        for _ in 0..30 {
            let mid = (low + high) / 2.0;
            if self.quantile(mid)? <= hours {
                low = mid;
            } else {
                high = mid;
            }
        }
        Some(low)
    }

    /// The `q`-quantile of the duration *given it already exceeds*
    /// `elapsed` hours: `Q(F(e) + q·(1 − F(e)))`, never below `elapsed`.
    pub fn conditional_quantile(&self, q: f64, elapsed: f64) -> Option<f64> {
        let done = self.share_below(elapsed.max(0.0))?;
        let value = self.quantile(done + q.clamp(0.0, 1.0) * (1.0 - done))?;
        Some(value.max(elapsed))
    }

    /// Encoded size (the JSON a store keeps), bytes.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(0, |v| v.len())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_empty_sketch_survives_json() {
        let empty = Durations::default();
        let text = serde_json::to_string(&empty).expect("encodes");
        assert_eq!(text, "null");
        let back: Durations = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back.count(), 0);
        let mut one = Durations::default();
        one.add(5.0);
        let back: Durations =
            serde_json::from_str(&serde_json::to_string(&one).expect("encodes")).expect("decodes");
        assert_eq!(back.count(), 1);
    }
    use super::*;

    fn uniform(n: usize) -> Durations {
        let mut d = Durations::default();
        for i in 1..=n {
            d.add(i as f64);
        }
        d
    }

    #[test]
    fn quantiles_and_shares_agree_within_the_relative_error() {
        let d = uniform(1000);
        let p50 = d.quantile(0.5).expect("p50");
        assert!((p50 - 500.0).abs() <= 500.0 * RELATIVE_ERROR * 1.5, "{p50}");
        let share = d.share_below(250.0).expect("share");
        assert!((share - 0.25).abs() < 0.02, "{share}");
        assert_eq!(d.share_below(5_000.0), Some(1.0));
        assert_eq!(Durations::default().quantile(0.5), None);
    }

    #[test]
    fn the_conditional_quantile_moves_on_with_time_spent() {
        let d = uniform(1000);
        // Given it took more than 900 h, the median is about 950 h.
        let given = d.conditional_quantile(0.5, 900.0).expect("q");
        assert!((given - 950.0).abs() < 30.0, "{given}");
        // Past every sample it is the time spent itself, never earlier.
        assert_eq!(d.conditional_quantile(0.5, 2_000.0), Some(2_000.0));
        let fresh = d.conditional_quantile(0.5, 0.0).expect("q");
        assert!((fresh - 500.0).abs() < 20.0, "{fresh}");
    }

    #[test]
    fn merged_sketches_answer_like_one() {
        let (mut a, mut b) = (Durations::default(), Durations::default());
        for i in 1..=1000 {
            if i % 2 == 0 {
                a.add(i as f64)
            } else {
                b.add(i as f64)
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        assert_eq!(a.quantile(0.9), uniform(1000).quantile(0.9));
        let json = serde_json::to_vec(&a).expect("encodes");
        let back: Durations = serde_json::from_slice(&json).expect("decodes");
        assert_eq!(back.quantile(0.9), a.quantile(0.9));
    }
}
