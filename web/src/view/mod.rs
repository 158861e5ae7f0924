//! The JSON the API answers with: small, stable shapes for pages (docs/WEB.md
//! "Shapes"), built from the gRPC messages. Enums are their proto names
//! without the prefix, times RFC 3339 UTC, contacts only masked (the orders
//! handed in were masked by the order reader already; nothing here unmasks).

mod carrier;
mod parcel;

use serde::Serialize;
use trackstream_proto::v1::{
    Alert, AlertState, Incident, IncidentReason, IncidentState, Order, Reason, Scorecard, Severity,
    Status,
};

pub use carrier::carrier_name;
pub use parcel::{EventView, ParcelView, Step, parcel_view};

/// A shop as pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct Shop {
    /// Merchant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Where its logo is served (always by us).
    pub logo_url: String,
}

impl Shop {
    /// The shop of `id` named `name`.
    pub fn new(id: &str, name: &str) -> Self {
        Shop {
            id: id.to_owned(),
            name: if name.is_empty() { id } else { name }.to_owned(),
            logo_url: format!("/api/v1/shops/{id}/logo"),
        }
    }
}

/// One order.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    /// The merchant's order id.
    pub order_id: String,
    /// Resume point for the order's event stream.
    pub last_seq: u64,
    /// The buyer's contact, masked ("" when none was registered).
    pub contact_masked: String,
    /// Outbound parcels first, then returns.
    pub parcels: Vec<ParcelView>,
    /// Open alerts of the order.
    pub alerts: Vec<AlertView>,
}

/// The order view of a (masked) `Order`.
pub fn order_view(order: &Order) -> OrderView {
    let contact_masked = order
        .parcels
        .iter()
        .filter_map(|p| p.shipment.as_ref()?.buyer.as_ref())
        .map(|b| {
            if b.phone.is_empty() {
                b.email.clone()
            } else {
                b.phone.clone()
            }
        })
        .find(|c| !c.is_empty())
        .unwrap_or_default();
    OrderView {
        order_id: order.order_id.clone(),
        last_seq: order.last_seq,
        contact_masked,
        parcels: order
            .parcels
            .iter()
            .map(|p| parcel_view(p, &order.open_alerts))
            .collect(),
        alerts: order.open_alerts.iter().map(alert_view).collect(),
    }
}

/// One update of an order's event stream.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateView {
    /// Its sequence number in the order (the SSE id).
    pub seq: u64,
    /// The order.
    pub order_id: String,
    /// The parcel's carrier.
    pub carrier: String,
    /// The parcel's waybill.
    pub waybill: String,
    /// The parcel's status after the update.
    pub status: &'static str,
    /// The scan.
    pub event: Option<EventView>,
}

/// The stream view of an update.
pub fn update_view(update: &trackstream_proto::v1::ShipmentUpdate) -> UpdateView {
    let event = update.event.as_ref();
    UpdateView {
        seq: update.seq,
        order_id: update.order_id.clone(),
        carrier: event.map(|e| e.carrier.clone()).unwrap_or_default(),
        waybill: event.map(|e| e.waybill.clone()).unwrap_or_default(),
        status: status_name(update.current_status),
        event: event.map(parcel::event_view),
    }
}

/// An alert.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// Stable id across its emissions.
    pub alert_id: String,
    /// The rule that raised it.
    pub rule: String,
    /// OPENED, ESCALATED or RESOLVED.
    pub state: &'static str,
    /// INFO, WARNING or CRITICAL.
    pub severity: &'static str,
    /// The order.
    pub order_id: String,
    /// The parcel's carrier.
    pub carrier: String,
    /// The parcel's waybill.
    pub waybill: String,
    /// Why, when the carrier said.
    pub reason: &'static str,
    /// The parcel's status when it fired.
    pub last_status: &'static str,
    /// A one-line summary (never a contact).
    pub summary: String,
    /// When it opened.
    pub opened_at: Option<String>,
    /// When this emission took effect.
    pub effective_at: Option<String>,
    /// The incident holding the parcel up, if any.
    pub incident_id: String,
}

/// The view of an alert.
pub fn alert_view(alert: &Alert) -> AlertView {
    AlertView {
        alert_id: alert.alert_id.clone(),
        rule: alert.rule.clone(),
        state: AlertState::try_from(alert.state)
            .map_or("UNSPECIFIED", |s| strip(s.as_str_name(), "ALERT_STATE_")),
        severity: severity_name(alert.severity),
        order_id: alert.order_id.clone(),
        carrier: alert.carrier.clone(),
        waybill: alert.waybill.clone(),
        reason: reason_name(alert.reason),
        last_status: status_name(alert.last_status),
        summary: alert.summary.clone(),
        opened_at: time(alert.opened_at.as_ref()),
        effective_at: time(alert.effective_at.as_ref()),
        incident_id: alert.incident_id.clone(),
    }
}

/// An incident as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Stable id for its life.
    pub incident_id: String,
    /// OPENED, ESCALATED, UPDATED or RESOLVED.
    pub state: &'static str,
    /// WEATHER, HUB_CONGESTION, …
    pub reason: &'static str,
    /// Carrier.
    pub carrier: String,
    /// Province/city.
    pub place: String,
    /// Opened.
    pub opened_at: Option<String>,
    /// Resolved (null while open).
    pub resolved_at: Option<String>,
    /// Expected delay (0 = unknown).
    pub expected_delay_hours: u32,
    /// This merchant's parcels held up.
    pub affected: u32,
    /// Every merchant's parcels held up at the place.
    pub platform_affected: u32,
}

/// The view of an incident record.
pub fn incident_view(incident: &Incident) -> IncidentView {
    IncidentView {
        incident_id: incident.incident_id.clone(),
        state: IncidentState::try_from(incident.state)
            .map_or("UNSPECIFIED", |s| strip(s.as_str_name(), "INCIDENT_STATE_")),
        reason: IncidentReason::try_from(incident.reason)
            .map_or("UNKNOWN", |r| strip(r.as_str_name(), "INCIDENT_REASON_")),
        carrier: incident.carrier.clone(),
        place: incident.place.clone(),
        opened_at: time(incident.opened_at.as_ref()),
        resolved_at: time(incident.resolved_at.as_ref()),
        expected_delay_hours: incident.expected_delay_hours,
        affected: incident.affected,
        platform_affected: incident.affected_total,
    }
}

/// A scorecard as the console charts it.
#[derive(Debug, Clone, Serialize)]
pub struct ScorecardView {
    /// `merchant` (the caller's own) or `platform` (the labelled baseline).
    pub scope: &'static str,
    /// Carrier.
    pub carrier: String,
    /// `origin → destination` when the card is a lane's, else "".
    pub lane: String,
    /// Deliveries counted.
    pub delivered: u64,
    /// Share delivered by the promised time (of those with a promise).
    pub on_time_rate: f64,
    /// Median transit hours.
    pub p50_hours: f64,
    /// 90th percentile transit hours.
    pub p90_hours: f64,
}

/// The view of a scorecard.
pub fn scorecard_view(card: &Scorecard, scope: &'static str) -> ScorecardView {
    let lane = if card.origin.is_empty() && card.destination.is_empty() {
        String::new()
    } else {
        format!("{} → {}", card.origin, card.destination)
    };
    ScorecardView {
        scope,
        carrier: card.carrier.clone(),
        lane,
        delivered: card.deliveries,
        on_time_rate: card.on_time_vs_promise,
        p50_hours: card.transit_p50_hours,
        p90_hours: card.transit_p90_hours,
    }
}

/// `STATUS_IN_TRANSIT` → `IN_TRANSIT`.
pub fn status_name(status: i32) -> &'static str {
    Status::try_from(status).map_or("UNSPECIFIED", |s| strip(s.as_str_name(), "STATUS_"))
}

/// `REASON_WEATHER` → `WEATHER` (`UNSPECIFIED` when none).
pub fn reason_name(reason: i32) -> &'static str {
    Reason::try_from(reason).map_or("UNSPECIFIED", |r| strip(r.as_str_name(), "REASON_"))
}

/// `SEVERITY_WARNING` → `WARNING`.
pub fn severity_name(severity: i32) -> &'static str {
    Severity::try_from(severity).map_or("UNSPECIFIED", |s| strip(s.as_str_name(), "SEVERITY_"))
}

/// `WARNING` (or `SEVERITY_WARNING`, any case) → the severity; `None` otherwise.
pub fn parse_severity(text: &str) -> Option<Severity> {
    let upper = text.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SEVERITY_") {
        upper
    } else {
        format!("SEVERITY_{upper}")
    };
    Severity::from_str_name(&name)
}

fn strip(name: &'static str, prefix: &str) -> &'static str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// RFC 3339 UTC of a proto timestamp; `None` when absent.
pub fn time(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let at = trackstream_proto::time::from_proto(ts?)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
