//! 17TRACK API v2 webhook.
//!
//! `POST /v1/webhooks/17track`, JSON `{event, data}` with `event`
//! `TRACKING_UPDATED` or `TRACKING_STOPPED`:
//!
//! ```json
//! {"event": "TRACKING_UPDATED",
//!  "data": {"number": "RR123456789CN", "carrier": 3011, "tag": "order-1",
//!   "track_info": {"latest_status": {"status": "InTransit", "sub_status": "InTransit_Other"},
//!     "time_metrics": {"estimated_delivery_date": {"from": null, "to": "2026-11-25T00:00:00+08:00"}},
//!     "tracking": {"providers": [{"provider": {"key": 3011}, "events": [
//!       {"time_iso": "2026-11-20T09:00:00-05:00", "time_utc": "2026-11-20T14:00:00Z",
//!        "description": "Arrived", "location": "NEW YORK, NY", "stage": "Arrival",
//!        "sub_status": "InTransit_Arrival",
//!        "address": {"country": "US", "state": "NY", "city": "NEW YORK", "postal_code": "10001"}}]}]}}}}
//! ```
//!
//! **Signature.** Header `sign` = lowercase hex SHA-256(raw body + "/" + security
//! key), compared in constant time against every configured key.
//!
//! **Split.** One push is one waybill (`data.number`, carrier `data.carrier`, a
//! 17TRACK carrier number mapped through [`crate::carrier_code`]); the payload is
//! the whole body and `event` goes into the envelope. `TRACKING_STOPPED` pushes
//! are accepted and normalize to whatever events they carry (usually none).
//!
//! **Normalize.** Events of every provider (origin and destination carriers) in
//! `tracking.providers[]`, each list newest first, are emitted oldest first.
//! A `sub_status` is looked up in [`SUB_STATUSES`]; an unknown one keeps its raw
//! code, reason `UNKNOWN` and the status of its prefix (`Exception_New` →
//! `EXCEPTION`, via [`STATUSES`]). Without a `sub_status` the event's `stage`
//! ([`STAGES`]) decides. `time_utc` is preferred (zone source `UTC_FIELD`; the
//! `time_iso` offset is kept as the source zone); else `time_iso` with its
//! offset; else the zone-less local time in `settings.time_zone` (default UTC).
//! The estimate is `time_metrics.estimated_delivery_date.to`, else `.from`.

use serde::Deserialize;
use trackstream_proto::v1::{Location, Provider, RawScan, Reason, Status, TrackingEvent};

use crate::event::{CodeRow, ScanFacts, lookup};
use crate::signature::{find_account, hex_lower, sha256};
use crate::time::ParsedTime;
use crate::{
    NormalizeError, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    VerifiedPush, lenient,
};

const NAME: &str = "17track";
const SIGNATURE_HEADER: &str = "sign";

/// The 17TRACK adapter. Stateless: security keys come from [`ProviderSettings`]
/// on every call, so a key change needs no new instance.
pub struct SeventeenTrack;

/// Main statuses (`latest_status.status`, and the prefix of every sub-status).
pub const STATUSES: &[CodeRow] = &[
    ("NotFound", Status::Pending, Reason::NoTrace),
    ("InfoReceived", Status::InfoReceived, Reason::Unspecified),
    ("InTransit", Status::InTransit, Reason::Unspecified),
    ("Expired", Status::Expired, Reason::Unspecified),
    (
        "AvailableForPickup",
        Status::AvailableForPickup,
        Reason::Unspecified,
    ),
    (
        "OutForDelivery",
        Status::OutForDelivery,
        Reason::Unspecified,
    ),
    (
        "DeliveryFailure",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    ("Delivered", Status::Delivered, Reason::Unspecified),
    ("Exception", Status::Exception, Reason::Unspecified),
];

/// Sub-statuses → canonical.
pub const SUB_STATUSES: &[CodeRow] = &[
    ("NotFound_Other", Status::Pending, Reason::NoTrace),
    ("NotFound_InvalidCode", Status::Pending, Reason::NoTrace),
    ("InfoReceived", Status::InfoReceived, Reason::Unspecified),
    ("InTransit_PickedUp", Status::PickedUp, Reason::Unspecified),
    ("InTransit_Other", Status::InTransit, Reason::Unspecified),
    (
        "InTransit_Departure",
        Status::InTransit,
        Reason::Unspecified,
    ),
    ("InTransit_Arrival", Status::InTransit, Reason::Unspecified),
    (
        "InTransit_CustomsProcessing",
        Status::Customs,
        Reason::Unspecified,
    ),
    (
        "InTransit_CustomsReleased",
        Status::InTransit,
        Reason::Unspecified,
    ),
    (
        "InTransit_CustomsRequiringInformation",
        Status::Customs,
        Reason::CustomsDocuments,
    ),
    ("Expired_Other", Status::Expired, Reason::Unspecified),
    (
        "AvailableForPickup_Other",
        Status::AvailableForPickup,
        Reason::Unspecified,
    ),
    (
        "OutForDelivery_Other",
        Status::OutForDelivery,
        Reason::Unspecified,
    ),
    (
        "DeliveryFailure_Other",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    (
        "DeliveryFailure_NoBody",
        Status::DeliveryAttemptFailed,
        Reason::RecipientUnreachable,
    ),
    (
        "DeliveryFailure_Security",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    (
        "DeliveryFailure_Rejected",
        Status::DeliveryAttemptFailed,
        Reason::Refused,
    ),
    (
        "DeliveryFailure_InvalidAddress",
        Status::DeliveryAttemptFailed,
        Reason::Address,
    ),
    ("Delivered_Other", Status::Delivered, Reason::Unspecified),
    ("Exception_Other", Status::Exception, Reason::Unspecified),
    (
        "Exception_Returning",
        Status::Returning,
        Reason::ReturnToSender,
    ),
    (
        "Exception_Returned",
        Status::Returned,
        Reason::ReturnToSender,
    ),
    (
        "Exception_NoBody",
        Status::Exception,
        Reason::RecipientUnreachable,
    ),
    ("Exception_Security", Status::Exception, Reason::CustomsHold),
    ("Exception_Damage", Status::Exception, Reason::Damaged),
    ("Exception_Rejected", Status::Exception, Reason::Refused),
    ("Exception_Delayed", Status::Exception, Reason::CarrierDelay),
    ("Exception_Lost", Status::Exception, Reason::Lost),
    ("Exception_Destroyed", Status::Exception, Reason::Damaged),
    ("Exception_Cancel", Status::Cancelled, Reason::Cancelled),
];

/// Event stages, for events that carry no `sub_status`.
pub const STAGES: &[CodeRow] = &[
    ("InfoReceived", Status::InfoReceived, Reason::Unspecified),
    ("PickedUp", Status::PickedUp, Reason::Unspecified),
    ("Departure", Status::InTransit, Reason::Unspecified),
    ("Arrival", Status::InTransit, Reason::Unspecified),
    (
        "AvailableForPickup",
        Status::AvailableForPickup,
        Reason::Unspecified,
    ),
    (
        "OutForDelivery",
        Status::OutForDelivery,
        Reason::Unspecified,
    ),
    ("Delivered", Status::Delivered, Reason::Unspecified),
    ("Returning", Status::Returning, Reason::ReturnToSender),
    ("Returned", Status::Returned, Reason::ReturnToSender),
];

#[derive(Deserialize)]
struct Push {
    #[serde(default, deserialize_with = "lenient::string")]
    event: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default, deserialize_with = "lenient::string")]
    number: String,
    #[serde(default, deserialize_with = "lenient::string")]
    carrier: String,
    #[serde(default)]
    track_info: Option<TrackInfo>,
}

#[derive(Deserialize)]
struct TrackInfo {
    #[serde(default)]
    time_metrics: Option<TimeMetrics>,
    #[serde(default)]
    tracking: Option<Tracking>,
}

#[derive(Deserialize)]
struct TimeMetrics {
    #[serde(default)]
    estimated_delivery_date: Option<Estimate>,
}

#[derive(Deserialize)]
struct Estimate {
    #[serde(default, deserialize_with = "lenient::string")]
    from: String,
    #[serde(default, deserialize_with = "lenient::string")]
    to: String,
}

#[derive(Deserialize)]
struct Tracking {
    #[serde(default, deserialize_with = "lenient::seq")]
    providers: Vec<ProviderTrack>,
}

#[derive(Deserialize)]
struct ProviderTrack {
    #[serde(default, deserialize_with = "lenient::seq")]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default, deserialize_with = "lenient::string")]
    time_iso: String,
    #[serde(default, deserialize_with = "lenient::string")]
    time_utc: String,
    #[serde(default, deserialize_with = "lenient::string")]
    description: String,
    #[serde(default, deserialize_with = "lenient::string")]
    location: String,
    #[serde(default, deserialize_with = "lenient::string")]
    stage: String,
    #[serde(default, deserialize_with = "lenient::string")]
    sub_status: String,
    #[serde(default)]
    address: Option<Address>,
}

#[derive(Deserialize)]
struct Address {
    #[serde(default, deserialize_with = "lenient::string")]
    country: String,
    #[serde(default, deserialize_with = "lenient::string")]
    state: String,
    #[serde(default, deserialize_with = "lenient::string")]
    city: String,
    #[serde(default, deserialize_with = "lenient::string")]
    postal_code: String,
}

/// The `sign` header for `body` under `key`: lowercase hex SHA-256(body + "/" + key).
pub fn sign(body: &[u8], key: &str) -> String {
    hex_lower(&sha256(&[body, b"/", key.as_bytes()]))
}

fn parse(body: &[u8]) -> Result<(String, Data), String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let push: Push = lenient::from_object(text.as_bytes())
        .map_err(|e| format!("body is not a 17TRACK push: {e}"))?;
    let data = push.data.ok_or_else(|| "data is missing".to_owned())?;
    Ok((push.event, data))
}

fn event_status(event: &Event) -> (Status, Reason, &str) {
    let sub = event.sub_status.trim();
    if !sub.is_empty() {
        let prefix = sub.split('_').next().unwrap_or_default();
        let coarse = lookup(STATUSES, prefix, Status::InTransit).0;
        let (status, reason) = lookup(SUB_STATUSES, sub, coarse);
        return (status, reason, sub);
    }
    let stage = event.stage.trim();
    let (status, reason) = lookup(STAGES, stage, Status::InTransit);
    (status, reason, stage)
}

fn event_time(event: &Event, zone: chrono_tz::Tz) -> Option<ParsedTime> {
    let local = crate::time::parse_local_or_offset(&event.time_iso, zone);
    match crate::time::parse_utc_field(&event.time_utc) {
        Some(mut utc) => {
            if let Some(local) =
                local.filter(|l| l.source != trackstream_proto::v1::ZoneSource::ProviderDefault)
            {
                utc.zone = local.zone;
            }
            Some(utc)
        }
        None => local,
    }
}

impl ProviderAdapter for SeventeenTrack {
    fn provider(&self) -> Provider {
        Provider::SeventeenTrack
    }

    fn route(&self) -> &'static str {
        NAME
    }

    fn accept(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
    ) -> Result<VerifiedPush, PushError> {
        let account = match request.header(SIGNATURE_HEADER) {
            None if settings.allow_unsigned => String::new(),
            None => return Err(PushError::unauthorized("missing sign header")),
            Some(header) => {
                let received = header.trim().to_ascii_lowercase();
                find_account(&settings.secrets, received.as_bytes(), |s| {
                    sign(request.body, &s.secret).into_bytes()
                })
                .map(|s| s.account.clone())
                .ok_or_else(|| PushError::unauthorized("sign does not match any configured key"))?
            }
        };
        let (event, data) = parse(request.body).map_err(PushError::BadRequest)?;
        let waybill = data.number.trim();
        if waybill.is_empty() || data.carrier.trim().is_empty() {
            return Err(PushError::bad("data.number and data.carrier are required"));
        }
        let item = PushItem {
            carrier: crate::carrier_code::canonical(&data.carrier),
            waybill: waybill.to_owned(),
            payload: request.body.to_vec(),
            envelope: [("event".to_owned(), event)].into_iter().collect(),
        };
        Ok(VerifiedPush {
            account,
            items: vec![item],
        })
    }

    fn normalize(
        &self,
        raw: &RawScan,
        settings: &ProviderSettings,
    ) -> Result<Vec<TrackingEvent>, NormalizeError> {
        let (_, data) = parse(&raw.payload).map_err(|e| NormalizeError::unparseable(NAME, e))?;
        let Some(info) = data.track_info else {
            return Ok(Vec::new());
        };
        let zone = crate::time::zone_or(settings.time_zone.as_deref(), chrono_tz::UTC);
        let estimate = info
            .time_metrics
            .and_then(|m| m.estimated_delivery_date)
            .and_then(|e| {
                crate::time::parse_date_or_time(&e.to, zone)
                    .or_else(|| crate::time::parse_date_or_time(&e.from, zone))
            })
            .map(|t| t.utc);
        let providers = info.tracking.map(|t| t.providers).unwrap_or_default();
        let mut events: Vec<TrackingEvent> = providers
            .iter()
            .flat_map(|p| p.events.iter())
            .map(|event| {
                let (status, reason, code) = event_status(event);
                let mut facts = ScanFacts::new(status, reason, code);
                facts.raw_text = event.description.clone();
                facts.occurred_at = event_time(event, zone);
                let address = event.address.as_ref();
                facts.location = Location {
                    text: event.location.clone(),
                    city: address.map(|a| a.city.clone()).unwrap_or_default(),
                    region: address.map(|a| a.state.clone()).unwrap_or_default(),
                    country: address.map(|a| a.country.clone()).unwrap_or_default(),
                    postal_code: address.map(|a| a.postal_code.clone()).unwrap_or_default(),
                    admin_area_code: String::new(),
                };
                facts.estimated_delivery_at = estimate;
                facts.into_event(raw, Provider::SeventeenTrack)
            })
            .collect();
        // Origin and destination carriers each list newest first; one timeline
        // reads oldest first (stable, so equal times keep push order).
        events.sort_by_key(|e| trackstream_proto::time::millis(e.occurred_at.as_ref()));
        Ok(events)
    }
}
