//! AfterShip tracking webhook.
//!
//! `POST /v1/webhooks/aftership`, JSON:
//!
//! ```json
//! {"event": "tracking_update", "event_id": "6d3c1b8e-...", "is_tracking_first_tag": false,
//!  "ts": 1795700000,
//!  "msg": {"id": "...", "slug": "usps", "tracking_number": "9400100000000000000000",
//!    "tag": "InTransit", "subtag": "InTransit_001", "expected_delivery": "2026-11-22",
//!    "signed_by": null,
//!    "checkpoints": [{"checkpoint_time": "2026-11-20T09:00:00-05:00",
//!      "created_at": "2026-11-20T14:05:00+00:00", "tag": "InTransit",
//!      "subtag": "InTransit_001", "message": "Arrived at USPS facility",
//!      "location": "NEW YORK, NY 10001", "city": "NEW YORK", "state": "NY",
//!      "zip": "10001", "country_iso3": "USA"}]}}
//! ```
//!
//! **Signature.** Header `aftership-hmac-sha256` = Base64(HMAC-SHA256(raw body,
//! webhook secret)). Every configured secret is tried in constant time, so old and
//! new secrets both verify during a rotation.
//!
//! **Replay window.** The body's `ts` (unix seconds) is inside the signed bytes:
//! a signed push whose `ts` is missing or further than the tolerance
//! ([`crate::signature::replay::DEFAULT_TOLERANCE`], 5 min) from our clock is refused (401), so a
//! captured push cannot be replayed later. A retry AfterShip sends after the
//! tolerance with its original `ts` is refused too; the next push carries the
//! whole checkpoint list again. [`Aftership::accept_within`] takes the clock.
//!
//! **Split.** One push is one tracking (`msg.slug` / `msg.tracking_number`); the
//! payload is the whole body; `event_id` (AfterShip's dedup key) and `event` go
//! into the envelope.
//!
//! **Normalize.** One event per checkpoint, in the order given (oldest first),
//! `carrier_sequence` = 1-based position. A `subtag` is looked up in [`SUBTAGS`];
//! an unknown one keeps its raw code, reason `UNKNOWN` and its `tag`'s status
//! ([`TAGS`], else `IN_TRANSIT`). The subtag rows come from CARRIERS.md plus the
//! subtags of AfterShip's public tag list whose meaning is unambiguous; the rest
//! deliberately fall back to the tag. `checkpoint_time` is carrier-local ISO-8601:
//! an offset is honoured; without one it is read in `settings.time_zone`
//! (default UTC — AfterShip does not say which zone it is in). `msg.signed_by`
//! becomes the proof of delivery of `Delivered` checkpoints; `expected_delivery`
//! the estimate. A checkpoint's `city`, `state`, `country_iso3` (or
//! `country_region`) and `zip` (or `postal_code`) become the location's city,
//! region, country and postal code.

use serde::Deserialize;
use trackstream_proto::v1::{Location, Provider, RawScan, Reason, Status, TrackingEvent};

use crate::event::{CodeRow, ScanFacts, join_nonempty, lookup};
use crate::signature::replay::ReplayWindow;
use crate::signature::{base64_std, find_account, hmac_sha256};
use crate::{
    NormalizeError, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    VerifiedPush, lenient,
};

const NAME: &str = "aftership";
const SIGNATURE_HEADER: &str = "aftership-hmac-sha256";

/// The AfterShip adapter. Stateless: webhook secrets come from
/// [`ProviderSettings`] on every call, so a rotation is a config change only.
pub struct Aftership;

/// Tags → canonical; also the fallback for unknown subtags.
pub const TAGS: &[CodeRow] = &[
    ("Pending", Status::Pending, Reason::Unspecified),
    ("InfoReceived", Status::InfoReceived, Reason::Unspecified),
    ("InTransit", Status::InTransit, Reason::Unspecified),
    (
        "OutForDelivery",
        Status::OutForDelivery,
        Reason::Unspecified,
    ),
    (
        "AttemptFail",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    ("Delivered", Status::Delivered, Reason::Unspecified),
    (
        "AvailableForPickup",
        Status::AvailableForPickup,
        Reason::Unspecified,
    ),
    ("Exception", Status::Exception, Reason::Unspecified),
    ("Expired", Status::Expired, Reason::Unspecified),
];

/// Subtags → canonical.
pub const SUBTAGS: &[CodeRow] = &[
    ("Pending_001", Status::Pending, Reason::NoTrace),
    (
        "InfoReceived_001",
        Status::InfoReceived,
        Reason::Unspecified,
    ),
    ("InTransit_001", Status::InTransit, Reason::Unspecified),
    ("InTransit_002", Status::PickedUp, Reason::Unspecified),
    (
        "OutForDelivery_001",
        Status::OutForDelivery,
        Reason::Unspecified,
    ),
    (
        "AttemptFail_001",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    (
        "AttemptFail_002",
        Status::DeliveryAttemptFailed,
        Reason::RecipientUnreachable,
    ),
    (
        "AttemptFail_003",
        Status::DeliveryAttemptFailed,
        Reason::RecipientUnreachable,
    ),
    ("Delivered_001", Status::Delivered, Reason::Unspecified),
    ("Delivered_002", Status::Delivered, Reason::Unspecified),
    ("Delivered_003", Status::Delivered, Reason::Unspecified),
    ("Delivered_004", Status::Delivered, Reason::Unspecified),
    (
        "AvailableForPickup_001",
        Status::AvailableForPickup,
        Reason::Unspecified,
    ),
    ("Exception_007", Status::Exception, Reason::Address),
    ("Exception_009", Status::Exception, Reason::Refused),
    ("Exception_010", Status::Returning, Reason::ReturnToSender),
    ("Exception_011", Status::Returned, Reason::ReturnToSender),
    ("Exception_012", Status::Exception, Reason::Damaged),
    ("Exception_013", Status::Exception, Reason::Lost),
    ("Expired_001", Status::Expired, Reason::Unspecified),
];

#[derive(Deserialize)]
struct Push {
    #[serde(default, deserialize_with = "lenient::string")]
    event: String,
    #[serde(default, deserialize_with = "lenient::string")]
    event_id: String,
    /// Unix seconds; signed with the body.
    #[serde(default, deserialize_with = "lenient::string")]
    ts: String,
    #[serde(default)]
    msg: Option<Tracking>,
}

impl Push {
    fn signed_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let seconds = self.ts.trim().parse::<i64>().ok()?;
        chrono::DateTime::from_timestamp(seconds, 0)
    }
}

#[derive(Deserialize)]
struct Tracking {
    #[serde(default, deserialize_with = "lenient::string")]
    slug: String,
    #[serde(default, deserialize_with = "lenient::string")]
    tracking_number: String,
    #[serde(default, deserialize_with = "lenient::string")]
    signed_by: String,
    #[serde(default, deserialize_with = "lenient::string")]
    expected_delivery: String,
    #[serde(default, deserialize_with = "lenient::seq")]
    checkpoints: Vec<Checkpoint>,
}

#[derive(Deserialize)]
struct Checkpoint {
    #[serde(default, deserialize_with = "lenient::string")]
    checkpoint_time: String,
    #[serde(default, deserialize_with = "lenient::string")]
    tag: String,
    #[serde(default, deserialize_with = "lenient::string")]
    subtag: String,
    #[serde(default, deserialize_with = "lenient::string")]
    message: String,
    #[serde(default, deserialize_with = "lenient::string")]
    location: String,
    #[serde(default, deserialize_with = "lenient::string")]
    city: String,
    #[serde(default, deserialize_with = "lenient::string")]
    state: String,
    #[serde(default, deserialize_with = "lenient::string")]
    zip: String,
    #[serde(default, deserialize_with = "lenient::string")]
    country_iso3: String,
    /// `country_iso3` and `zip` as tracking API versions from 2024 name them.
    #[serde(default, deserialize_with = "lenient::string")]
    country_region: String,
    #[serde(default, deserialize_with = "lenient::string")]
    postal_code: String,
}

impl Checkpoint {
    /// ISO 3166-1 alpha-3 country, under either API version's name.
    fn country(&self) -> &str {
        first_nonempty(&self.country_iso3, &self.country_region)
    }

    fn postal_code(&self) -> &str {
        first_nonempty(&self.zip, &self.postal_code)
    }
}

fn first_nonempty<'a>(first: &'a str, second: &'a str) -> &'a str {
    if first.trim().is_empty() {
        second
    } else {
        first
    }
}

impl Aftership {
    /// [`ProviderAdapter::accept`] with the replay window's clock and tolerance
    /// given: a signed push must carry a `ts` inside `window`.
    pub fn accept_within(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
        window: ReplayWindow,
    ) -> Result<VerifiedPush, PushError> {
        let account = match request.header(SIGNATURE_HEADER) {
            None if settings.allow_unsigned => None,
            None => {
                return Err(PushError::unauthorized(
                    "missing aftership-hmac-sha256 header",
                ));
            }
            Some(header) => find_account(&settings.secrets, header.trim().as_bytes(), |s| {
                sign(request.body, &s.secret).into_bytes()
            })
            .map(|s| Some(s.account.clone()))
            .ok_or_else(|| {
                PushError::unauthorized(
                    "aftership-hmac-sha256 does not match any configured secret",
                )
            })?,
        };
        let push = parse(request.body).map_err(PushError::BadRequest)?;
        let signed_at = push.signed_at();
        let tracking = push.msg.ok_or_else(|| PushError::bad("msg is missing"))?;
        let waybill = tracking.tracking_number.trim();
        if waybill.is_empty() || tracking.slug.trim().is_empty() {
            return Err(PushError::bad(
                "msg.slug and msg.tracking_number are required",
            ));
        }
        if account.is_some() {
            // Only a signed ts can be trusted; an unsigned push could say anything.
            window.check("ts", signed_at)?;
        }
        let item = PushItem {
            carrier: crate::carrier_code::canonical(&tracking.slug),
            waybill: waybill.to_owned(),
            payload: request.body.to_vec(),
            envelope: [
                ("event".to_owned(), push.event),
                ("event_id".to_owned(), push.event_id),
            ]
            .into_iter()
            .collect(),
        };
        Ok(VerifiedPush {
            account: account.unwrap_or_default(),
            items: vec![item],
        })
    }
}

/// The `aftership-hmac-sha256` header for `body` under `secret`.
pub fn sign(body: &[u8], secret: &str) -> String {
    base64_std(&hmac_sha256(secret.as_bytes(), body))
}

fn parse(body: &[u8]) -> Result<Push, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    lenient::from_object(text.as_bytes())
        .map_err(|e| format!("body is not an AfterShip webhook: {e}"))
}

fn checkpoint_status(checkpoint: &Checkpoint) -> (Status, Reason, &str) {
    let tag = checkpoint.tag.trim();
    let subtag = checkpoint.subtag.trim();
    let (tag_status, tag_reason) = lookup(TAGS, tag, Status::InTransit);
    if subtag.is_empty() {
        return (tag_status, tag_reason, tag);
    }
    let (status, reason) = lookup(SUBTAGS, subtag, tag_status);
    (status, reason, subtag)
}

impl ProviderAdapter for Aftership {
    fn provider(&self) -> Provider {
        Provider::Aftership
    }

    fn route(&self) -> &'static str {
        NAME
    }

    fn accept(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
    ) -> Result<VerifiedPush, PushError> {
        self.accept_within(request, settings, ReplayWindow::for_settings(settings))
    }

    fn normalize(
        &self,
        raw: &RawScan,
        settings: &ProviderSettings,
    ) -> Result<Vec<TrackingEvent>, NormalizeError> {
        let push = parse(&raw.payload).map_err(|e| NormalizeError::unparseable(NAME, e))?;
        let tracking = push
            .msg
            .ok_or_else(|| NormalizeError::unparseable(NAME, "msg is missing"))?;
        let zone = crate::time::zone_or(settings.time_zone.as_deref(), chrono_tz::UTC);
        let estimate =
            crate::time::parse_date_or_time(&tracking.expected_delivery, zone).map(|t| t.utc);
        let signer = tracking.signed_by.trim();
        let events = tracking
            .checkpoints
            .iter()
            .enumerate()
            .map(|(index, checkpoint)| {
                let (status, reason, code) = checkpoint_status(checkpoint);
                let mut facts = ScanFacts::new(status, reason, code);
                facts.raw_text = checkpoint.message.clone();
                facts.occurred_at =
                    crate::time::parse_local_or_offset(&checkpoint.checkpoint_time, zone);
                let text = if checkpoint.location.trim().is_empty() {
                    join_nonempty(&[&checkpoint.city, &checkpoint.state, checkpoint.country()])
                } else {
                    checkpoint.location.clone()
                };
                facts.location = Location {
                    text,
                    city: checkpoint.city.clone(),
                    region: checkpoint.state.clone(),
                    country: checkpoint.country().to_owned(),
                    postal_code: checkpoint.postal_code().to_owned(),
                    admin_area_code: String::new(),
                };
                facts
                    .with_tracker_context(index, signer, estimate)
                    .into_event(raw, Provider::Aftership)
            })
            .collect();
        Ok(events)
    }
}
