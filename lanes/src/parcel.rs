//! One parcel as the stream carries it (a `ShipmentUpdate`: registration,
//! milestones, predictions) in the model's terms: its [`Lane`], its
//! [`Timeline`] and its [`Position`], times in hours since the Unix epoch
//! (so a day number is a UTC day). Pure: the detector, the statistics
//! consumer and the tests read parcels through this one mapping.

use trackstream_proto::time;
use trackstream_proto::v1::{
    DeliveryPrediction, Milestones, PredictionConfidence, Region, Shipment, ShipmentUpdate, Status,
    UpdateKind,
};

use crate::lane::Lane;
use crate::predict::{Basis, Confidence, Prediction};
use crate::stage::{Position, Timeline};

const HOUR_MS: f64 = 3_600_000.0;

/// Hours since the epoch of a timestamp; `None` when absent or unset.
pub fn hours(ts: Option<&prost_types::Timestamp>) -> Option<f64> {
    let ms = time::millis(ts);
    (ms > 0).then(|| ms as f64 / HOUR_MS)
}

/// Milliseconds since the epoch of hours since the epoch.
pub fn millis(hours: f64) -> i64 {
    (hours * HOUR_MS).round() as i64
}

/// The UTC day number of an instant in hours.
pub fn day(hours: f64) -> i64 {
    (hours / 24.0).floor() as i64
}

/// The UTC day number of an instant in ms since the epoch — through hours,
/// exactly as [`day`] of [`hours`] computes it, so a caller fetching the
/// windows of a scan's day and the prediction made at it never disagree at
/// a midnight.
pub fn day_of_millis(ms: i64) -> i64 {
    day(ms as f64 / HOUR_MS)
}

/// A region as a lane names it: the province, with the city when `city`.
/// A Chinese province however it is written ("Zhejiang", "浙江", "浙江省", or
/// only an admin code) is its full name, so merchants writing it differently
/// share a lane; anything else is trimmed and lower-cased.
fn region(region: Option<&Region>, city: bool) -> String {
    let Some(region) = region else {
        return String::new();
    };
    let province = trackstream_carriers::area::province_named(&region.province)
        .or_else(|| {
            region
                .province
                .trim()
                .is_empty()
                .then(|| trackstream_carriers::area::province_for_code(region.admin_code.trim()))
                .flatten()
        })
        .map_or_else(
            || region.province.trim().to_lowercase(),
            |p| p.name.to_owned(),
        );
    let town = region.city.trim().to_lowercase();
    if city && !town.is_empty() {
        format!("{province}/{town}")
    } else {
        province
    }
}

/// The parcel's lane: carrier × service level × origin province ×
/// destination province/city (a shop ships from a few warehouses, so the
/// origin's city would only thin the lane).
pub fn lane(shipment: &Shipment) -> Lane {
    Lane {
        carrier: shipment.carrier.trim().to_lowercase(),
        service_level: shipment.service_level.trim().to_lowercase(),
        origin: region(shipment.origin.as_ref(), false),
        destination: region(shipment.destination.as_ref(), true),
    }
}

/// The parcel's timeline as an update says it.
pub fn timeline(update: &ShipmentUpdate) -> Timeline {
    let empty = Milestones::default();
    let m = update.milestones.as_ref().unwrap_or(&empty);
    let shipment = update.shipment.as_ref();
    let first = update.first_prediction.as_ref();
    Timeline {
        ordered_at: shipment.and_then(|s| hours(s.ordered_at.as_ref())),
        picked_up_at: hours(m.picked_up_at.as_ref()),
        out_for_delivery_at: hours(m.out_for_delivery_at.as_ref()),
        delivered_at: hours(m.delivered_at.as_ref()),
        promised_at: shipment.and_then(|s| hours(s.promised_delivery_at.as_ref())),
        failed_attempts: m.failed_attempts,
        exception: m.exception,
        first_p50: first.and_then(|p| hours(p.most_likely_at.as_ref())),
        first_p90: first.and_then(|p| hours(p.latest_at.as_ref())),
        provider_estimate: hours(m.provider_estimated_delivery_at.as_ref()),
    }
}

/// The instant the update's prediction is made at: its newest scan.
pub fn now(update: &ShipmentUpdate) -> Option<f64> {
    hours(update.milestones.as_ref()?.newest_scan_at.as_ref())
}

/// Where the parcel is, or `None` once delivered, returned or cancelled
/// (nothing left to predict) or before any stage with a start time.
pub fn position(update: &ShipmentUpdate) -> Option<Position> {
    let current = Status::try_from(update.current_status).unwrap_or(Status::Unspecified);
    if matches!(
        current,
        Status::Delivered
            | Status::Returning
            | Status::Returned
            | Status::Cancelled
            | Status::Expired
    ) || update.kind != UpdateKind::Scan as i32
        || update.shipment.as_ref().is_some_and(|s| s.is_return)
    {
        return None;
    }
    timeline(update).position()
}

/// The update that counts a delivery into the statistics: a scan update
/// whose own scan is the parcel's winning delivery (a late or repeated scan
/// after it says DELIVERED too, but counts nothing), of an outbound parcel.
pub fn delivery(update: &ShipmentUpdate) -> Option<Timeline> {
    let event = update.event.as_ref()?;
    let delivered_at = update.milestones.as_ref()?.delivered_at.as_ref();
    let counts = update.kind == UpdateKind::Scan as i32
        && update.current_status == Status::Delivered as i32
        && event.status == Status::Delivered as i32
        && !update.late
        && update.shipment.as_ref().is_some_and(|s| !s.is_return)
        && delivered_at.is_some()
        && time::millis(delivered_at) == time::millis(event.occurred_at.as_ref());
    counts.then(|| timeline(update))
}

/// A prediction as the stream carries it.
pub fn to_proto(
    prediction: &Prediction,
    basis: &Basis,
    key: &str,
    position: Position,
    now: f64,
) -> DeliveryPrediction {
    let ts = |h: f64| Some(time::from_millis(millis(h)));
    DeliveryPrediction {
        earliest_at: ts(prediction.p10),
        most_likely_at: ts(prediction.p50),
        latest_at: ts(prediction.p90),
        confidence: match prediction.confidence {
            Confidence::Low => PredictionConfidence::Low,
            Confidence::Medium => PredictionConfidence::Medium,
            Confidence::High => PredictionConfidence::High,
        } as i32,
        level: prediction.level.name().to_owned(),
        lane: key.to_owned(),
        samples: u32::try_from(prediction.samples).unwrap_or(u32::MAX),
        stage: position.name().to_owned(),
        stage_since: ts(basis.since),
        lane_changed: basis.changed,
        made_at: ts(now),
    }
}

/// What a parcel keeps of its first prediction (in the detector's state, a
/// few dozen bytes per parcel, and on every later update): the window, the
/// confidence and when it was made — what it is scored on. Its basis (lane
/// key, level, stage) is on the update that made it.
pub fn kept(prediction: &DeliveryPrediction) -> DeliveryPrediction {
    DeliveryPrediction {
        earliest_at: prediction.earliest_at,
        most_likely_at: prediction.most_likely_at,
        latest_at: prediction.latest_at,
        confidence: prediction.confidence,
        made_at: prediction.made_at,
        ..DeliveryPrediction::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackstream_proto::v1::TrackingEvent;

    fn at(h: f64) -> Option<prost_types::Timestamp> {
        Some(time::from_millis(millis(h)))
    }

    fn delivered_update(late: bool) -> ShipmentUpdate {
        ShipmentUpdate {
            kind: UpdateKind::Scan as i32,
            current_status: Status::Delivered as i32,
            late,
            event: Some(TrackingEvent {
                status: Status::Delivered as i32,
                occurred_at: at(500_000.0),
                ..TrackingEvent::default()
            }),
            shipment: Some(Shipment {
                carrier: "ZTO".into(),
                service_level: "Standard".into(),
                origin: Some(Region {
                    province: "Zhejiang".into(),
                    city: "Hangzhou".into(),
                    ..Region::default()
                }),
                destination: Some(Region {
                    province: "Sichuan".into(),
                    city: "Chengdu".into(),
                    ..Region::default()
                }),
                ordered_at: at(499_900.0),
                promised_delivery_at: at(500_010.0),
                ..Shipment::default()
            }),
            milestones: Some(Milestones {
                picked_up_at: at(499_950.0),
                out_for_delivery_at: at(499_995.0),
                delivered_at: at(500_000.0),
                newest_scan_at: at(500_000.0),
                ..Milestones::default()
            }),
            ..ShipmentUpdate::default()
        }
    }

    #[test]
    fn a_winning_delivery_counts_once_with_its_lane_and_stages() {
        let update = delivered_update(false);
        let lane = lane(update.shipment.as_ref().expect("shipment"));
        assert_eq!(
            lane.key(crate::lane::Level::Lane),
            "lane|zto|standard|浙江省|四川省/chengdu"
        );
        let timeline = delivery(&update).expect("counts");
        assert_eq!(timeline.on_time(), Some(true));
        assert!((timeline.picked_up_at.expect("pickup") - 499_950.0).abs() < 1e-6);
        assert_eq!(position(&update), None, "nothing left to predict");
        assert!(delivery(&delivered_update(true)).is_none(), "a late scan");
        let mut later = delivered_update(false);
        if let Some(e) = later.event.as_mut() {
            e.occurred_at = at(500_001.0);
        }
        assert!(delivery(&later).is_none(), "not the winning delivery");
    }

    #[test]
    fn a_province_written_any_way_is_one_region() {
        let lane_to = |province: &str, code: &str| {
            lane(&Shipment {
                carrier: "zto".into(),
                destination: Some(Region {
                    province: province.into(),
                    city: "杭州市".into(),
                    admin_code: code.into(),
                }),
                ..Shipment::default()
            })
            .destination
        };
        for (province, code) in [
            ("Zhejiang", ""),
            ("浙江", ""),
            ("浙江省", ""),
            ("", "330100"),
        ] {
            assert_eq!(
                lane_to(province, code),
                "浙江省/杭州市",
                "{province} {code}"
            );
        }
        assert_eq!(lane_to(" Ontario ", ""), "ontario/杭州市");
    }

    #[test]
    fn a_parcel_in_flight_is_positioned_at_its_latest_stage() {
        let mut update = delivered_update(false);
        update.current_status = Status::OutForDelivery as i32;
        if let Some(m) = update.milestones.as_mut() {
            m.delivered_at = None;
        }
        assert_eq!(position(&update), Some(Position::OutForDelivery(499_995.0)));
        if let Some(m) = update.milestones.as_mut() {
            m.out_for_delivery_at = None;
        }
        assert_eq!(position(&update), Some(Position::InTransit(499_950.0)));
    }
}
