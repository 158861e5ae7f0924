//! Scorecards: what a merchant (or the platform) sees of a carrier or lane
//! over a window — transit times, the promise kept, pickup lag, exceptions
//! and failed attempts, volume — from the same day buckets predictions use.

use serde::{Deserialize, Serialize};

use crate::book::Book;
use crate::stage::Stage;

/// One key's scorecard over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    /// The lane or fallback key.
    pub key: String,
    /// Parcels delivered in the window.
    pub deliveries: u64,
    /// Pickup → delivered, hours: median and p90.
    pub transit_p50: Option<f64>,
    /// See `transit_p50`.
    pub transit_p90: Option<f64>,
    /// Order → first scan, hours: median.
    pub pickup_lag_p50: Option<f64>,
    /// Share of parcels with a promise delivered by it (`None` without any).
    pub on_time: Option<f64>,
    /// Share of delivered parcels that had a carrier exception.
    pub exception_rate: f64,
    /// Failed delivery attempts per delivered parcel.
    pub failed_attempt_rate: f64,
}

impl Book {
    /// `key`'s scorecard over the `days` whole days before `day`.
    pub fn scorecard(&self, key: &str, day: i64, days: i64) -> Scorecard {
        let window = self.window(key, day, days);
        let transit = window.stage(Stage::PickupToDelivered);
        let promised = window.on_time + window.late;
        let per_delivery = |n: u64| n as f64 / window.deliveries.max(1) as f64;
        Scorecard {
            key: key.to_owned(),
            deliveries: window.deliveries,
            transit_p50: transit.quantile(0.5),
            transit_p90: transit.quantile(0.9),
            pickup_lag_p50: window.stage(Stage::PickupLag).quantile(0.5),
            on_time: (promised > 0).then(|| window.on_time as f64 / promised as f64),
            exception_rate: per_delivery(window.exceptions),
            failed_attempt_rate: per_delivery(window.failed_attempts),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::book::Book;
    use crate::lane::{Lane, Level};
    use crate::stage::Timeline;

    #[test]
    fn a_scorecard_counts_the_window_and_nothing_before_it() {
        let lane = Lane {
            carrier: "yto".into(),
            service_level: String::new(),
            origin: "Jiangsu".into(),
            destination: "Hubei/Wuhan".into(),
        };
        let mut book = Book::default();
        for i in 0..100u32 {
            let late = i % 4 == 0;
            let timeline = Timeline {
                ordered_at: Some(0.0),
                picked_up_at: Some(10.0),
                out_for_delivery_at: Some(40.0),
                delivered_at: Some(if late { 80.0 } else { 44.0 }),
                promised_at: Some(48.0),
                failed_attempts: u32::from(late),
                exception: i % 10 == 0,
            };
            book.record(&lane, &timeline, 5);
        }
        // An old day outside the window.
        book.record(&lane, &Timeline::default(), 1);
        let card = book.scorecard(&lane.key(Level::Carrier), 6, 3);
        assert_eq!(card.deliveries, 100);
        assert_eq!(card.on_time, Some(0.75));
        assert!((card.exception_rate - 0.1).abs() < 1e-9);
        assert!((card.failed_attempt_rate - 0.25).abs() < 1e-9);
        let p50 = card.transit_p50.expect("p50");
        assert!((p50 - 34.0).abs() < 1.0, "{p50}");
        assert!(card.transit_p90.expect("p90") > 60.0);
        assert!((card.pickup_lag_p50.expect("lag") - 10.0).abs() < 0.5);
        assert_eq!(book.scorecard("c|nobody", 6, 3).on_time, None);
    }
}
