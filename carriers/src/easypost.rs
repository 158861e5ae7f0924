//! EasyPost tracker webhook.
//!
//! `POST /v1/webhooks/easypost`, a JSON Event whose `result` is a Tracker:
//!
//! ```json
//! {"id": "evt_...", "object": "Event", "description": "tracker.updated",
//!  "result": {"id": "trk_...", "object": "Tracker", "tracking_code": "9400100000000000000000",
//!    "carrier": "USPS", "status": "in_transit", "status_detail": "arrived_at_facility",
//!    "est_delivery_date": "2026-11-22T00:00:00Z", "signed_by": null,
//!    "tracking_details": [{"datetime": "2026-11-20T14:00:00Z", "message": "Arrived",
//!      "status": "in_transit", "status_detail": "arrived_at_facility",
//!      "tracking_location": {"city": "NEW YORK", "state": "NY", "country": "US",
//!                            "zip": "10001"}}]}}
//! ```
//!
//! **Signature.** Header `x-hmac-signature: hmac-sha256-hex=<hex>` = hex
//! HMAC-SHA256(raw body, webhook secret). Confirmed against EasyPost's own SDK
//! (`easypost-python`, `validate_webhook`): the secret is Unicode-NFKD-normalized
//! and UTF-8 encoded before it keys the HMAC, and the whole header value
//! including the `hmac-sha256-hex=` prefix is compared. We do the same; because
//! that normalization is a client-side convention rather than a documented
//! server contract, a secret whose NFKD form differs is also tried as
//! configured. Every configured secret is tried in constant time.
//!
//! **Split.** `tracker.created` / `tracker.updated` events carry one tracker, one
//! item (carrier `result.carrier`, waybill `result.tracking_code`, payload the
//! whole body, envelope the event `id` and `description`). Any other event type
//! EasyPost sends to the same URL (batches, refunds, ...) is acknowledged with
//! no items: refusing it would only make EasyPost retry something we never use.
//!
//! **Normalize.** One event per `tracking_details[]` entry (oldest first,
//! `carrier_sequence` = 1-based position). `status` → [`STATUSES`] (unknown:
//! reason `UNKNOWN`, status `IN_TRANSIT`); when that row has no reason, a known
//! `status_detail` supplies one ([`DETAIL_REASONS`]). `datetime` is RFC 3339 (a
//! zone-less value is read in `settings.time_zone`, default UTC). `signed_by`
//! is the proof of delivery of delivered scans; `est_delivery_date` the estimate.

use serde::Deserialize;
use serde_json::value::RawValue;
use trackstream_proto::v1::{Location, Provider, RawScan, Reason, Status, TrackingEvent};
use unicode_normalization::UnicodeNormalization as _;

use crate::event::{CodeRow, ScanFacts, join_nonempty, lookup};
use crate::signature::{find_account, hex_lower, hmac_sha256};
use crate::{
    NormalizeError, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    VerifiedPush, lenient,
};

const NAME: &str = "easypost";
const SIGNATURE_HEADER: &str = "x-hmac-signature";
const SIGNATURE_PREFIX: &str = "hmac-sha256-hex=";

/// The EasyPost adapter. Stateless: webhook secrets come from
/// [`ProviderSettings`] on every call, so a rotation is a config change only.
pub struct Easypost;

/// Tracker and tracking-detail `status` → canonical.
pub const STATUSES: &[CodeRow] = &[
    ("unknown", Status::Pending, Reason::Unspecified),
    ("pre_transit", Status::InfoReceived, Reason::Unspecified),
    ("in_transit", Status::InTransit, Reason::Unspecified),
    (
        "out_for_delivery",
        Status::OutForDelivery,
        Reason::Unspecified,
    ),
    ("delivered", Status::Delivered, Reason::Unspecified),
    (
        "available_for_pickup",
        Status::AvailableForPickup,
        Reason::Unspecified,
    ),
    (
        "return_to_sender",
        Status::Returning,
        Reason::ReturnToSender,
    ),
    ("failure", Status::Exception, Reason::Unspecified),
    ("cancelled", Status::Cancelled, Reason::Cancelled),
    ("error", Status::Exception, Reason::Unspecified),
];

/// `status_detail` values that say *why*, for statuses whose row has no reason.
/// Details that only restate the status are left out on purpose.
pub const DETAIL_REASONS: &[(&str, Reason)] = &[
    ("address_correction", Reason::Address),
    ("damaged", Reason::Damaged),
    ("delayed", Reason::CarrierDelay),
    ("delivery_exception", Reason::DeliveryAttemptFailed),
    ("lost", Reason::Lost),
    ("missorted", Reason::Missorted),
    ("refused", Reason::Refused),
    ("return", Reason::ReturnToSender),
    ("weather_delay", Reason::Weather),
    ("held", Reason::CustomsHold),
    ("cancelled", Reason::Cancelled),
];

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, deserialize_with = "lenient::string")]
    id: String,
    #[serde(default, deserialize_with = "lenient::string")]
    description: String,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Tracker {
    #[serde(default, deserialize_with = "lenient::string")]
    tracking_code: String,
    #[serde(default, deserialize_with = "lenient::string")]
    carrier: String,
    #[serde(default, deserialize_with = "lenient::string")]
    est_delivery_date: String,
    #[serde(default, deserialize_with = "lenient::string")]
    signed_by: String,
    #[serde(default, deserialize_with = "lenient::seq")]
    tracking_details: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default, deserialize_with = "lenient::string")]
    datetime: String,
    #[serde(default, deserialize_with = "lenient::string")]
    message: String,
    #[serde(default, deserialize_with = "lenient::string")]
    status: String,
    #[serde(default, deserialize_with = "lenient::string")]
    status_detail: String,
    #[serde(default)]
    tracking_location: Option<TrackingLocation>,
}

#[derive(Deserialize)]
struct TrackingLocation {
    #[serde(default, deserialize_with = "lenient::string")]
    city: String,
    #[serde(default, deserialize_with = "lenient::string")]
    state: String,
    #[serde(default, deserialize_with = "lenient::string")]
    country: String,
    #[serde(default, deserialize_with = "lenient::string")]
    zip: String,
}

/// The `x-hmac-signature` header for `body` under `secret`, as EasyPost's SDKs
/// compute it (secret NFKD-normalized).
pub fn sign(body: &[u8], secret: &str) -> String {
    let normalized: String = secret.nfkd().collect();
    sign_with_key(body, normalized.as_bytes())
}

fn sign_with_key(body: &[u8], key: &[u8]) -> String {
    format!("{SIGNATURE_PREFIX}{}", hex_lower(&hmac_sha256(key, body)))
}

fn parse_event(body: &[u8]) -> Result<Event<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    lenient::from_object(text.as_bytes()).map_err(|e| format!("body is not an EasyPost event: {e}"))
}

fn is_tracker_event(event: &Event<'_>) -> bool {
    event.description.starts_with("tracker.")
}

fn parse_tracker(event: &Event<'_>) -> Result<Tracker, String> {
    let result = event.result.ok_or_else(|| "result is missing".to_owned())?;
    lenient::from_object(result.get().as_bytes())
        .map_err(|e| format!("result is not a Tracker: {e}"))
}

fn verify(request: &PushRequest<'_>, settings: &ProviderSettings) -> Result<String, PushError> {
    let Some(header) = request.header(SIGNATURE_HEADER) else {
        if settings.allow_unsigned {
            return Ok(String::new());
        }
        return Err(PushError::unauthorized("missing X-Hmac-Signature header"));
    };
    // The hex digits are not secret: accept either case.
    let received = header.trim().to_ascii_lowercase();
    find_account(&settings.secrets, received.as_bytes(), |s| {
        sign(request.body, &s.secret).into_bytes()
    })
    .or_else(|| {
        find_account(&settings.secrets, received.as_bytes(), |s| {
            sign_with_key(request.body, s.secret.as_bytes()).into_bytes()
        })
    })
    .map(|s| s.account.clone())
    .ok_or_else(|| PushError::unauthorized("X-Hmac-Signature does not match any configured secret"))
}

impl ProviderAdapter for Easypost {
    fn provider(&self) -> Provider {
        Provider::Easypost
    }

    fn route(&self) -> &'static str {
        NAME
    }

    fn accept(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
    ) -> Result<VerifiedPush, PushError> {
        let account = verify(request, settings)?;
        let event = parse_event(request.body).map_err(PushError::BadRequest)?;
        if !is_tracker_event(&event) {
            return Ok(VerifiedPush {
                account,
                items: Vec::new(),
            });
        }
        let tracker = parse_tracker(&event).map_err(PushError::BadRequest)?;
        let waybill = tracker.tracking_code.trim();
        if waybill.is_empty() || tracker.carrier.trim().is_empty() {
            return Err(PushError::bad(
                "result.tracking_code and result.carrier are required",
            ));
        }
        let item = PushItem {
            carrier: crate::carrier_code::canonical(&tracker.carrier),
            waybill: waybill.to_owned(),
            payload: request.body.to_vec(),
            envelope: [
                ("id".to_owned(), event.id.clone()),
                ("description".to_owned(), event.description.clone()),
            ]
            .into_iter()
            .collect(),
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
        let unparseable = |e: String| NormalizeError::unparseable(NAME, e);
        let event = parse_event(&raw.payload).map_err(unparseable)?;
        let tracker = parse_tracker(&event).map_err(unparseable)?;
        let zone = crate::time::zone_or(settings.time_zone.as_deref(), chrono_tz::UTC);
        let estimate =
            crate::time::parse_date_or_time(&tracker.est_delivery_date, zone).map(|t| t.utc);
        let signer = tracker.signed_by.trim();
        let events = tracker
            .tracking_details
            .iter()
            .enumerate()
            .map(|(index, detail)| {
                let code = detail.status.trim();
                let (status, mut reason) = lookup(STATUSES, code, Status::InTransit);
                if reason == Reason::Unspecified
                    && let Some((_, why)) = DETAIL_REASONS
                        .iter()
                        .find(|(d, _)| *d == detail.status_detail.trim())
                {
                    reason = *why;
                }
                let mut facts = ScanFacts::new(status, reason, code);
                facts.raw_text = detail.message.clone();
                facts.occurred_at = crate::time::parse_local_or_offset(&detail.datetime, zone);
                if let Some(at) = &detail.tracking_location {
                    let text = join_nonempty(&[&at.city, &at.state, &at.zip, &at.country]);
                    facts.location = Location {
                        text,
                        city: at.city.clone(),
                        region: at.state.clone(),
                        country: at.country.clone(),
                        postal_code: at.zip.clone(),
                        admin_area_code: String::new(),
                    };
                }
                facts
                    .with_tracker_context(index, signer, estimate)
                    .into_event(raw, Provider::Easypost)
            })
            .collect();
        Ok(events)
    }
}
