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

/// A scorecard as the API and `tracking.lanes` carry it: `stats` of `key`
/// (a [`crate::lane::Lane::key`], without a merchant prefix) over the `days`
/// whole days before `day`.
pub fn to_proto(
    key: &str,
    stats: &crate::book::DayStats,
    days: i64,
    day: i64,
) -> trackstream_proto::v1::Scorecard {
    let parts: Vec<&str> = key.split('|').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
    let level = match parts.first().copied() {
        Some("lane") => "lane",
        Some("cd") => "carrier_destination",
        Some("c") => "carrier",
        _ => "all",
    };
    let (service_level, origin, destination) = match level {
        "lane" => (part(2), part(3), part(4)),
        "carrier_destination" => (String::new(), String::new(), part(2)),
        _ => Default::default(),
    };
    let ratio = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let transit = stats.stage(Stage::PickupToDelivered);
    let promised = stats.on_time + stats.late;
    trackstream_proto::v1::Scorecard {
        key: key.to_owned(),
        level: level.to_owned(),
        carrier: if level == "all" {
            String::new()
        } else {
            part(1)
        },
        service_level,
        origin,
        destination,
        deliveries: stats.deliveries,
        transit_p50_hours: transit.quantile(0.5).unwrap_or_default(),
        transit_p90_hours: transit.quantile(0.9).unwrap_or_default(),
        pickup_lag_p50_hours: stats
            .stage(Stage::PickupLag)
            .quantile(0.5)
            .unwrap_or_default(),
        promised,
        on_time_vs_promise: ratio(stats.on_time, promised),
        predicted: stats.predicted,
        on_time_vs_first_prediction: ratio(stats.predicted_on_time, stats.predicted),
        exception_rate: ratio(stats.exceptions, stats.deliveries),
        failed_attempt_rate: ratio(stats.failed_attempts, stats.deliveries),
        provider_scored: stats.provider_scored,
        provider_estimate_error_hours: if stats.provider_scored == 0 {
            0.0
        } else {
            stats.provider_error_hours / stats.provider_scored as f64
        },
        our_estimate_error_hours: if stats.provider_scored == 0 {
            0.0
        } else {
            stats.our_error_hours / stats.provider_scored as f64
        },
        days: u32::try_from(days).unwrap_or_default(),
        window_end: Some(trackstream_proto::time::from_millis(day * 86_400_000)),
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
                ..Timeline::default()
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
