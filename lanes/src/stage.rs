//! A parcel's timeline and the stage durations a delivered one contributes.

use serde::{Deserialize, Serialize};

/// A measured stage (what a sketch is kept for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// Order created → first carrier scan (the shop's processing and pickup).
    PickupLag,
    /// Pickup → out for delivery (line haul and sorting).
    Transit,
    /// Out for delivery → delivered.
    LastMile,
    /// Pickup → delivered.
    PickupToDelivered,
    /// Order created → delivered.
    OrderToDelivered,
}

impl Stage {
    /// Every stage, in sketch order.
    pub const ALL: [Stage; 5] = [
        Stage::PickupLag,
        Stage::Transit,
        Stage::LastMile,
        Stage::PickupToDelivered,
        Stage::OrderToDelivered,
    ];

    /// Index into per-stage arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::PickupLag => "order→pickup",
            Stage::Transit => "pickup→out for delivery",
            Stage::LastMile => "out for delivery→delivered",
            Stage::PickupToDelivered => "pickup→delivered",
            Stage::OrderToDelivered => "order→delivered",
        }
    }
}

/// What is known of one parcel, hours since the caller's epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The order's creation (from the registration).
    pub ordered_at: Option<f64>,
    /// First carrier scan (pickup).
    pub picked_up_at: Option<f64>,
    /// Latest out-for-delivery scan.
    pub out_for_delivery_at: Option<f64>,
    /// Delivery.
    pub delivered_at: Option<f64>,
    /// What the shop promised, if anything.
    pub promised_at: Option<f64>,
    /// Failed delivery attempts seen.
    pub failed_attempts: u32,
    /// Whether a carrier exception was seen.
    pub exception: bool,
    /// Our first prediction for the parcel: most likely and latest (p90)
    /// arrival, scored against the delivery.
    #[serde(default)]
    pub first_p50: Option<f64>,
    /// See `first_p50`.
    #[serde(default)]
    pub first_p90: Option<f64>,
    /// The provider's own estimate, scored against the delivery beside ours.
    #[serde(default)]
    pub provider_estimate: Option<f64>,
}

/// Where a parcel in flight is, for a prediction: the stage it is in and
/// when it entered it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Position {
    /// Registered, not picked up yet; since the order.
    Ordered(f64),
    /// Picked up, not out for delivery; since pickup.
    InTransit(f64),
    /// Out for delivery; since then.
    OutForDelivery(f64),
}

impl Position {
    /// The sketch whose remaining time applies from here, and the stage start.
    pub fn remaining(self) -> (Stage, f64) {
        match self {
            Position::Ordered(at) => (Stage::OrderToDelivered, at),
            Position::InTransit(at) => (Stage::PickupToDelivered, at),
            Position::OutForDelivery(at) => (Stage::LastMile, at),
        }
    }

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Position::Ordered(_) => "before pickup",
            Position::InTransit(_) => "in transit",
            Position::OutForDelivery(_) => "out for delivery",
        }
    }
}

impl Timeline {
    /// Where the parcel is now; `None` once delivered or before anything is known.
    pub fn position(&self) -> Option<Position> {
        if self.delivered_at.is_some() {
            return None;
        }
        if let Some(at) = self.out_for_delivery_at {
            return Some(Position::OutForDelivery(at));
        }
        if let Some(at) = self.picked_up_at {
            return Some(Position::InTransit(at));
        }
        self.ordered_at.map(Position::Ordered)
    }

    /// The stage durations (hours) of a delivered parcel; stages whose ends
    /// are unknown, or out of order (a clock skew, a late scan), are left out.
    pub fn durations(&self) -> Vec<(Stage, f64)> {
        let span = |from: Option<f64>, to: Option<f64>| match (from, to) {
            (Some(from), Some(to)) if to >= from => Some(to - from),
            _ => None,
        };
        let delivered = self.delivered_at;
        [
            (Stage::PickupLag, span(self.ordered_at, self.picked_up_at)),
            (
                Stage::Transit,
                span(self.picked_up_at, self.out_for_delivery_at),
            ),
            (Stage::LastMile, span(self.out_for_delivery_at, delivered)),
            (Stage::PickupToDelivered, span(self.picked_up_at, delivered)),
            (Stage::OrderToDelivered, span(self.ordered_at, delivered)),
        ]
        .into_iter()
        .filter_map(|(stage, d)| d.map(|d| (stage, d)))
        .collect()
    }

    /// Whether it arrived by the promise (`None` without a promise or delivery).
    pub fn on_time(&self) -> Option<bool> {
        Some(self.delivered_at? <= self.promised_at?)
    }

    /// Whether it arrived by our first prediction's latest time (`None`
    /// without a first prediction or a delivery).
    pub fn on_time_vs_first_prediction(&self) -> Option<bool> {
        Some(self.delivered_at? <= self.first_p90?)
    }

    /// Absolute errors in hours of the provider's estimate and of our first
    /// most-likely time, when the parcel had both (scored on the same
    /// parcels, or the comparison would be between different mixes).
    pub fn estimate_errors(&self) -> Option<(f64, f64)> {
        let delivered = self.delivered_at?;
        Some((
            (self.provider_estimate? - delivered).abs(),
            (self.first_p50? - delivered).abs(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_timeline_gives_every_stage_and_skewed_ones_are_dropped() {
        let timeline = Timeline {
            ordered_at: Some(0.0),
            picked_up_at: Some(10.0),
            out_for_delivery_at: Some(40.0),
            delivered_at: Some(44.0),
            promised_at: Some(48.0),
            ..Timeline::default()
        };
        let durations = timeline.durations();
        assert_eq!(
            durations,
            vec![
                (Stage::PickupLag, 10.0),
                (Stage::Transit, 30.0),
                (Stage::LastMile, 4.0),
                (Stage::PickupToDelivered, 34.0),
                (Stage::OrderToDelivered, 44.0),
            ]
        );
        assert_eq!(timeline.on_time(), Some(true));
        let skewed = Timeline {
            out_for_delivery_at: Some(50.0),
            ..timeline
        };
        assert!(
            !skewed
                .durations()
                .iter()
                .any(|(s, _)| *s == Stage::LastMile)
        );
        assert_eq!(skewed.position(), None);
    }
}
