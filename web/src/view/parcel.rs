//! A parcel as the tracking page shows it: the five-step bar (商家拣货 –
//! 快递揽收 – 中转 – 派送 – 签收), the timeline newest first, an exception in
//! plain terms with when it should clear, the prediction and the proof of
//! delivery.

use serde::Serialize;
use trackstream_proto::v1::{Alert, Parcel, Status, TrackingEvent};

use super::carrier::{CarrierName, carrier_name};
use super::{reason_name, status_name, time};

/// The steps of the bar, in order.
pub const STEPS: [&str; 5] = [
    "packed",
    "collected",
    "in_transit",
    "out_for_delivery",
    "delivered",
];

/// One parcel.
#[derive(Debug, Clone, Serialize)]
pub struct ParcelView {
    /// Carrier code.
    pub carrier: String,
    /// Carrier name in both languages.
    pub carrier_name: CarrierName,
    /// Waybill.
    pub waybill: String,
    /// A return (buyer → shop).
    pub is_return: bool,
    /// Current status.
    pub status: &'static str,
    /// When the newest scan happened.
    pub status_at: Option<String>,
    /// The five steps.
    pub steps: Vec<Step>,
    /// Scans, newest first.
    pub events: Vec<EventView>,
    /// Why it is held up, when it is.
    pub exception: Option<ExceptionView>,
    /// When it should arrive (not for a delivered parcel).
    pub prediction: Option<PredictionView>,
    /// What the shop promised.
    pub promised_at: Option<String>,
    /// Delivery and its proof.
    pub delivered: Option<DeliveredView>,
}

/// One step of the bar.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `packed`, `collected`, `in_transit`, `out_for_delivery`, `delivered`.
    pub key: &'static str,
    /// Reached (a later step reached implies this one).
    pub reached: bool,
    /// The parcel is at this step now.
    pub current: bool,
    /// When it was first reached, when a scan says.
    pub at: Option<String>,
}

/// One scan.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// Stable id.
    pub event_id: String,
    /// When it happened.
    pub at: Option<String>,
    /// Its status.
    pub status: &'static str,
    /// Its reason, when one.
    pub reason: &'static str,
    /// The carrier's words.
    pub text: String,
    /// Where (city or the carrier's place text).
    pub location: String,
}

/// Why a parcel is held up.
#[derive(Debug, Clone, Serialize)]
pub struct ExceptionView {
    /// The reason, as a code the page words (`WEATHER`, `ADDRESS`, …).
    pub reason: &'static str,
    /// The carrier's words.
    pub text: String,
    /// Since when.
    pub since: Option<String>,
    /// When it should clear: the prediction's latest time, when there is one.
    pub expected_clear_at: Option<String>,
    /// The incident (hub closure, storm) holding it, if any.
    pub incident_id: String,
}

/// When a parcel should arrive.
#[derive(Debug, Clone, Serialize)]
pub struct PredictionView {
    /// Earliest.
    pub earliest_at: Option<String>,
    /// Most likely.
    pub most_likely_at: Option<String>,
    /// Latest.
    pub latest_at: Option<String>,
    /// LOW, MEDIUM or HIGH.
    pub confidence: &'static str,
}

/// A delivery.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveredView {
    /// When.
    pub at: Option<String>,
    /// Who signed.
    pub signer: String,
    /// Photo, when the carrier took one.
    pub photo_url: String,
}

/// The step index a status reaches (`None`: it reaches none by itself).
fn step_of(status: Status) -> Option<usize> {
    match status {
        Status::PickedUp => Some(1),
        Status::InTransit | Status::Customs | Status::Exception => Some(2),
        Status::OutForDelivery | Status::AvailableForPickup | Status::DeliveryAttemptFailed => {
            Some(3)
        }
        Status::Delivered => Some(4),
        _ => None,
    }
}

fn status_of(event: &TrackingEvent) -> Status {
    Status::try_from(event.status).unwrap_or(Status::Unspecified)
}

/// The view of one scan.
pub fn event_view(event: &TrackingEvent) -> EventView {
    let location = event
        .location
        .as_ref()
        .map(|l| {
            if l.city.is_empty() {
                l.text.clone()
            } else {
                l.city.clone()
            }
        })
        .unwrap_or_default();
    EventView {
        event_id: event.event_id.clone(),
        at: time(event.occurred_at.as_ref()),
        status: status_name(event.status),
        reason: reason_name(event.reason),
        text: event.raw_text.clone(),
        location,
    }
}

/// The view of `parcel`, with the order's open alerts for its exception.
pub fn parcel_view(parcel: &Parcel, open_alerts: &[Alert]) -> ParcelView {
    let shipment = parcel.shipment.clone().unwrap_or_default();
    let last = parcel.last_event.as_ref();
    let carrier = last.map_or(shipment.carrier.clone(), |e| e.carrier.clone());
    let waybill = last.map_or(shipment.waybill.clone(), |e| e.waybill.clone());
    let status = Status::try_from(parcel.current_status).unwrap_or(Status::Unspecified);

    // First time each step was reached, from the scans (oldest first).
    let mut first_at: [Option<String>; 5] = Default::default();
    first_at[0] = time(shipment.registered_at.as_ref());
    let mut reached: Option<usize> = parcel.shipment.is_some().then_some(0);
    for event in &parcel.timeline {
        if let Some(step) = step_of(status_of(event)) {
            if first_at[step].is_none() {
                first_at[step] = time(event.occurred_at.as_ref());
            }
            reached = Some(reached.map_or(step, |r| r.max(step)));
        }
    }
    let current = if status == Status::Delivered {
        Some(4)
    } else {
        reached
    };
    let steps = STEPS
        .iter()
        .enumerate()
        .map(|(i, key)| Step {
            key,
            reached: current.is_some_and(|c| i <= c),
            current: current == Some(i),
            at: first_at[i].clone(),
        })
        .collect();

    let alert = open_alerts
        .iter()
        .find(|a| a.carrier == carrier && a.waybill == waybill);
    let troubled = matches!(status, Status::Exception | Status::DeliveryAttemptFailed);
    let prediction =
        parcel
            .prediction
            .as_ref()
            .filter(|_| status != Status::Delivered)
            .map(|p| PredictionView {
                earliest_at: time(p.earliest_at.as_ref()),
                most_likely_at: time(p.most_likely_at.as_ref()),
                latest_at: time(p.latest_at.as_ref()),
                confidence: trackstream_proto::v1::PredictionConfidence::try_from(p.confidence)
                    .map_or("UNSPECIFIED", |c| {
                        let name = c.as_str_name();
                        name.strip_prefix("PREDICTION_CONFIDENCE_").unwrap_or(name)
                    }),
            });
    let exception = (troubled || alert.is_some()).then(|| ExceptionView {
        reason: match (alert, last) {
            (Some(a), _) if a.reason != 0 => reason_name(a.reason),
            (_, Some(e)) if e.reason != 0 => reason_name(e.reason),
            (Some(_), _) => "CARRIER_DELAY",
            _ => "UNKNOWN",
        },
        text: last.map(|e| e.raw_text.clone()).unwrap_or_default(),
        since: alert
            .and_then(|a| time(a.opened_at.as_ref()))
            .or_else(|| last.and_then(|e| time(e.occurred_at.as_ref()))),
        expected_clear_at: prediction.as_ref().and_then(|p| p.latest_at.clone()),
        incident_id: alert.map(|a| a.incident_id.clone()).unwrap_or_default(),
    });
    let delivered = (status == Status::Delivered).then(|| {
        let delivery = parcel
            .timeline
            .iter()
            .rev()
            .find(|e| status_of(e) == Status::Delivered);
        let proof = delivery
            .and_then(|e| e.proof_of_delivery.clone())
            .unwrap_or_default();
        DeliveredView {
            at: delivery.and_then(|e| time(e.occurred_at.as_ref())),
            signer: proof.signer,
            photo_url: safe_url(&proof.photo_url),
        }
    });
    ParcelView {
        carrier_name: carrier_name(&carrier),
        carrier,
        waybill,
        is_return: shipment.is_return,
        status: status_name(parcel.current_status),
        status_at: last.and_then(|e| time(e.occurred_at.as_ref())),
        steps,
        events: parcel.timeline.iter().rev().map(event_view).collect(),
        exception,
        prediction,
        promised_at: time(shipment.promised_delivery_at.as_ref()),
        delivered,
    }
}

/// A carrier's photo link only when it is http(s): a `javascript:` URL from a
/// hostile provider payload must never become a link on our page.
fn safe_url(url: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        url.trim().to_owned()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackstream_proto::time::from_millis;
    use trackstream_proto::v1::{ProofOfDelivery, Shipment};

    fn event(id: &str, status: Status, at_ms: i64) -> TrackingEvent {
        TrackingEvent {
            event_id: id.into(),
            carrier: "sf".into(),
            waybill: "SF1".into(),
            status: status as i32,
            occurred_at: Some(from_millis(at_ms)),
            ..TrackingEvent::default()
        }
    }

    fn parcel(timeline: Vec<TrackingEvent>, status: Status) -> Parcel {
        Parcel {
            shipment: Some(Shipment {
                carrier: "sf".into(),
                waybill: "SF1".into(),
                registered_at: Some(from_millis(0)),
                ..Shipment::default()
            }),
            current_status: status as i32,
            last_event: timeline.last().cloned(),
            timeline,
            ..Parcel::default()
        }
    }

    fn reached(view: &ParcelView) -> Vec<(&str, bool, bool)> {
        view.steps
            .iter()
            .map(|s| (s.key, s.reached, s.current))
            .collect()
    }

    #[test]
    fn the_bar_marks_every_step_up_to_the_newest_and_the_timeline_is_newest_first() {
        let view = parcel_view(
            &parcel(
                vec![
                    event("a", Status::PickedUp, 1_000),
                    event("b", Status::InTransit, 2_000),
                    event("c", Status::OutForDelivery, 3_000),
                ],
                Status::OutForDelivery,
            ),
            &[],
        );
        assert_eq!(
            reached(&view),
            [
                ("packed", true, false),
                ("collected", true, false),
                ("in_transit", true, false),
                ("out_for_delivery", true, true),
                ("delivered", false, false)
            ]
        );
        let ids: Vec<&str> = view.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(view.carrier_name.zh, "顺丰速运");
        assert!(view.exception.is_none());
    }

    #[test]
    fn a_registered_parcel_is_packed_and_a_delivery_carries_its_proof_but_no_unsafe_link() {
        let view = parcel_view(&parcel(Vec::new(), Status::Pending), &[]);
        assert_eq!(reached(&view)[0], ("packed", true, true));
        assert!(!view.steps[1].reached);

        let mut delivered = event("d", Status::Delivered, 5_000);
        delivered.proof_of_delivery = Some(ProofOfDelivery {
            signer: "front desk".into(),
            photo_url: "javascript:alert(1)".into(),
        });
        let view = parcel_view(&parcel(vec![delivered], Status::Delivered), &[]);
        let proof = view.delivered.expect("delivered");
        assert_eq!(
            (proof.signer.as_str(), proof.photo_url.as_str()),
            ("front desk", "")
        );
        assert!(view.steps.iter().all(|s| s.reached));
    }

    #[test]
    fn an_open_alert_explains_the_hold_up_with_its_incident() {
        let alert = Alert {
            carrier: "sf".into(),
            waybill: "SF1".into(),
            reason: trackstream_proto::v1::Reason::Weather as i32,
            opened_at: Some(from_millis(9_000)),
            incident_id: "inc-1".into(),
            ..Alert::default()
        };
        let view = parcel_view(
            &parcel(
                vec![event("a", Status::InTransit, 1_000)],
                Status::InTransit,
            ),
            &[alert],
        );
        let exception = view.exception.expect("held up");
        assert_eq!(
            (exception.reason, exception.incident_id.as_str()),
            ("WEATHER", "inc-1")
        );
        assert_eq!(exception.since.as_deref(), Some("1970-01-01T00:00:09Z"));
    }
}
