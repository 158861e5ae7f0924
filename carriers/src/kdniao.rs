//! Kdniao (快递鸟) track push: RequestType 101, and the in-transit monitoring
//! pushes 8001/8008 that use the same body.
//!
//! `POST /v1/webhooks/kdniao`, `application/x-www-form-urlencoded` with
//! `RequestData` (URL-encoded JSON), `DataSign` and `RequestType`:
//!
//! ```json
//! {"EBusinessID": "1237100", "PushTime": "2026-11-20 14:05:00", "Count": 2,
//!  "Data": [{"EBusinessID": "1237100", "ShipperCode": "SF", "LogisticCode": "SF100",
//!            "Success": true, "State": "2", "StateEx": "201", "Location": "深圳市",
//!            "Traces": [{"AcceptTime": "2026-11-20 09:00:00", "AcceptStation": "...",
//!                        "Location": "深圳市", "Action": "1"}]}]}
//! ```
//!
//! **Signature.** `DataSign` = URL-encode(Base64(MD5(RequestData + AppKey))), where
//! the Base64 input is the *lowercase hex string* of the digest (as the official
//! demos do), not its 16 raw bytes. The form decoding already URL-decodes once;
//! a sender that encoded twice, or not at all (a Base64 `+` arriving as a space),
//! is tolerated. Every configured AppKey is tried in constant time
//! ([`find_account`]); the `EBusinessID` inside the verified `RequestData` must
//! then be the matched account, so one account's key cannot vouch for another's
//! pushes. A secret configured with an empty account takes the push's own
//! `EBusinessID`.
//!
//! **Split.** Each `Data[]` element becomes one item whose payload is the exact
//! JSON bytes of that element (never re-serialized); `EBusinessID`, `PushTime`
//! and `RequestType` go into the envelope. Each element is a full snapshot.
//!
//! **Replay window.** `PushTime` is inside the signed `RequestData`: a signed
//! push whose `PushTime` (zone-less, read like `AcceptTime`) is missing or
//! further than the tolerance ([`crate::signature::replay::DEFAULT_TOLERANCE`],
//! 5 min) from our clock is refused (401). Whether Kdniao refreshes `PushTime`
//! when it re-pushes is unverified; a re-push with the old time after the
//! tolerance is refused, and the next snapshot carries the whole trace again.
//! [`Kdniao::accept_within`] takes the clock.
//!
//! **Per-trace status.** Traces carry no status of their own except `Action`,
//! which uses the `StateEx` code space; the rule is, per trace (oldest first):
//! 1. `Action` present → its code ([`STATES`]); an unknown code takes the status
//!    of its leading digit (`4xx` → problem) and reason `UNKNOWN`;
//! 2. otherwise the newest trace takes the item's `StateEx` (else `State`);
//! 3. otherwise a trace whose `AcceptStation` says the carrier took the parcel
//!    in ("顺丰速运 已收取快件", "已揽收"; [`cn_text::is_pickup`]) is `PICKED_UP`;
//! 4. otherwise the oldest trace of several is `PICKED_UP` when `State` says the
//!    parcel was collected (anything but 0 "no trace" and 10 "awaiting pickup");
//! 5. otherwise `IN_TRANSIT` (the newest without a state: reason `UNKNOWN`).
//!
//! Rules 3 and 4 change the status only, never the raw code, so a trace keeps
//! its event id whichever rule classified it.
//!
//! The raw code of a trace is its `Action` (empty without one) — never the item's
//! state — because the event id hashes the raw code: the same snapshot resent
//! gives the same ids, and a snapshot grown by one trace gives the old ids plus
//! one, even though the previously newest trace is no longer the one carrying
//! the state. A snapshot with no traces yields one event carrying the state
//! (timed at receipt), except state 0 "no trace", which yields nothing.
//!
//! **Location.** A trace's `Location` (a city) is the location text and city;
//! the province (and a missing city) is read from it or, when it agrees, from
//! `AcceptStation` ([`area::fill_from_text`]).
//!
//! **Times.** `AcceptTime` is zone-less China time: read in `settings.time_zone`,
//! default Asia/Shanghai. `carrier_sequence` is the trace's 1-based position.
//!
//! **Reply.** `{"EBusinessID", "UpdateTime" (China time), "Success", "Reason"}`.
//! That any other answer makes Kdniao push again is unverified; ingest's HTTP
//! status carries the decision either way.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use trackstream_proto::v1::{Location, Provider, RawScan, Reason, Status, TrackingEvent};

use crate::event::{CodeRow, ScanFacts, lookup};
use crate::form::Form;
use crate::signature::replay::ReplayWindow;
use crate::signature::{base64_std, find_account, hex_lower, md5};
use crate::{
    NormalizeError, Outcome, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    Reply, VerifiedPush, area, cn_text, lenient,
};

const NAME: &str = "kdniao";

/// The Kdniao adapter. Stateless: AppKeys come from [`ProviderSettings`] on every
/// call, so one instance serves every EBusinessID and picks up key rotations.
pub struct Kdniao;

/// `State`, `StateEx` and trace `Action` codes (one code space) → canonical.
/// Kept as data so a test walks every row.
pub const STATES: &[CodeRow] = &[
    ("0", Status::Pending, Reason::NoTrace),
    ("1", Status::PickedUp, Reason::Unspecified),
    ("2", Status::InTransit, Reason::Unspecified),
    ("201", Status::InTransit, Reason::Unspecified),
    ("202", Status::OutForDelivery, Reason::Unspecified),
    ("204", Status::InTransit, Reason::Unspecified),
    ("205", Status::InTransit, Reason::Unspecified),
    ("206", Status::InTransit, Reason::Unspecified),
    ("211", Status::AvailableForPickup, Reason::Unspecified),
    ("3", Status::Delivered, Reason::Unspecified),
    ("301", Status::Delivered, Reason::Unspecified),
    ("302", Status::Delivered, Reason::Unspecified),
    ("304", Status::Delivered, Reason::SignedByProxy),
    ("311", Status::Delivered, Reason::Unspecified),
    ("4", Status::Exception, Reason::Unspecified),
    ("401", Status::Exception, Reason::NoTrace),
    ("402", Status::Exception, Reason::DeliveryAttemptFailed),
    ("403", Status::Exception, Reason::CarrierDelay),
    ("404", Status::Returning, Reason::Refused),
    (
        "405",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    ("406", Status::Returned, Reason::ReturnToSender),
    ("407", Status::Returning, Reason::ReturnToSender),
    ("412", Status::AvailableForPickup, Reason::HeldAtLocker),
    ("413", Status::Exception, Reason::Intercepted),
    ("414", Status::Exception, Reason::Damaged),
    ("415", Status::Cancelled, Reason::Cancelled),
    (
        "416",
        Status::DeliveryAttemptFailed,
        Reason::RecipientUnreachable,
    ),
    ("417", Status::Exception, Reason::CarrierDelay),
    ("418", Status::Exception, Reason::Unspecified),
    ("419", Status::OutForDelivery, Reason::DeliveryAttemptFailed),
    ("420", Status::Exception, Reason::Address),
    ("421", Status::Exception, Reason::RecipientUnreachable),
    ("422", Status::Exception, Reason::Missorted),
    ("423", Status::Exception, Reason::OutOfServiceArea),
    ("5", Status::InTransit, Reason::Unspecified),
    ("6", Status::Customs, Reason::Unspecified),
    ("601", Status::Customs, Reason::Unspecified),
    ("602", Status::Customs, Reason::Unspecified),
    ("603", Status::InTransit, Reason::Unspecified),
    ("604", Status::Customs, Reason::CustomsHold),
    ("10", Status::InfoReceived, Reason::Unspecified),
];

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "EBusinessID", default, deserialize_with = "lenient::string")]
    e_business_id: String,
    #[serde(rename = "PushTime", default, deserialize_with = "lenient::string")]
    push_time: String,
    #[serde(rename = "Data", default, borrow)]
    data: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Item {
    #[serde(default, deserialize_with = "lenient::string")]
    shipper_code: String,
    #[serde(default, deserialize_with = "lenient::string")]
    logistic_code: String,
    #[serde(default, deserialize_with = "lenient::string")]
    state: String,
    #[serde(default, deserialize_with = "lenient::string")]
    state_ex: String,
    #[serde(default, deserialize_with = "lenient::string")]
    location: String,
    #[serde(default, deserialize_with = "lenient::string")]
    estimated_delivery_time: String,
    #[serde(default, deserialize_with = "lenient::seq")]
    traces: Vec<Trace>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Trace {
    #[serde(default, deserialize_with = "lenient::string")]
    accept_time: String,
    #[serde(default, deserialize_with = "lenient::string")]
    accept_station: String,
    #[serde(default, deserialize_with = "lenient::string")]
    location: String,
    #[serde(default, deserialize_with = "lenient::string")]
    action: String,
}

/// `DataSign` for `request_data` (before URL-encoding, which the form encoding
/// adds): Base64 of the lowercase hex MD5 of `request_data + app_key`.
pub fn sign(request_data: &[u8], app_key: &str) -> String {
    let digest = md5(&[request_data, app_key.as_bytes()]);
    base64_std(hex_lower(&digest).as_bytes())
}

/// A complete signed push body, as Kdniao posts it (tests, load generator).
pub fn form_body(request_data: &[u8], app_key: &str) -> Vec<u8> {
    let data_sign = sign(request_data, app_key);
    crate::form::encode(&[
        ("RequestData", request_data),
        ("DataSign", data_sign.as_bytes()),
        ("RequestType", b"101"),
    ])
}

/// The reply for `outcome` at `now`; [`ProviderAdapter::reply`] passes the
/// current time, tests pass a fixed one.
pub fn reply_at(outcome: Outcome<'_>, now: DateTime<Utc>) -> Reply {
    let (account, success, reason) = match outcome {
        Outcome::Accepted { account, .. } => (account, true, ""),
        Outcome::Rejected { reason, .. } => ("", false, reason),
    };
    let update_time = now
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let body = serde_json::json!({
        "EBusinessID": account,
        "UpdateTime": update_time,
        "Success": success,
        "Reason": reason,
    });
    Reply {
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    }
}

/// The received `DataSign` as it may have been encoded: as decoded, with spaces
/// restored to `+` (never URL-encoded), and decoded once more (encoded twice).
fn received_variants(received: &[u8]) -> Vec<Vec<u8>> {
    let mut variants = vec![received.to_vec()];
    let plus: Vec<u8> = received
        .iter()
        .map(|b| if *b == b' ' { b'+' } else { *b })
        .collect();
    let twice = crate::form::percent_decode(received, false);
    for candidate in [plus, twice] {
        if !variants.contains(&candidate) {
            variants.push(candidate);
        }
    }
    variants
}

/// `Ok(None)` is an unsigned push that settings allow.
fn verify(
    form: &Form,
    request_data: &[u8],
    settings: &ProviderSettings,
) -> Result<Option<String>, PushError> {
    let Some(received) = form.bytes("DataSign") else {
        if settings.allow_unsigned {
            return Ok(None);
        }
        return Err(PushError::unauthorized("missing form field DataSign"));
    };
    let compute = |s: &crate::AccountSecret| sign(request_data, &s.secret).into_bytes();
    received_variants(received)
        .iter()
        .find_map(|variant| find_account(&settings.secrets, variant, compute))
        .map(|s| Some(s.account.clone()))
        .ok_or_else(|| PushError::unauthorized("DataSign does not match any configured AppKey"))
}

/// Where a trace happened. `Location` ("深圳市") is the text (hashed into the
/// event id) and the city; the province, and the city when `Location` does not
/// name one, come from `Location` itself ("浙江省杭州市") or from the station
/// text ("【广东省深圳市宝安区公司】 已揽收") when it agrees ([`area`]).
fn place(location: &str, station: &str) -> Location {
    let mut place = Location {
        text: location.to_owned(),
        ..Location::default()
    };
    area::fill_from_text(&mut place, location);
    if place.city.is_empty() && place.region.is_empty() {
        place.city = location.trim().to_owned();
    }
    area::fill_from_text(&mut place, station);
    place
}

fn state_code(item: &Item) -> &str {
    let ex = item.state_ex.trim();
    if ex.is_empty() { item.state.trim() } else { ex }
}

/// A code's status; an unknown code takes the status of its leading digit
/// (Kdniao's detailed codes extend the one-digit state), else `IN_TRANSIT`.
fn code_status(code: &str) -> (Status, Reason) {
    let coarse = code.get(..1).map_or(Status::InTransit, |head| {
        lookup(STATES, head, Status::InTransit).0
    });
    lookup(STATES, code, coarse)
}

impl Kdniao {
    /// [`ProviderAdapter::accept`] with the replay window's clock and tolerance
    /// given: a signed push must carry a `PushTime` inside `window`.
    pub fn accept_within(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
        window: ReplayWindow,
    ) -> Result<VerifiedPush, PushError> {
        let form = Form::parse(request.body);
        let request_data = form
            .bytes("RequestData")
            .ok_or_else(|| PushError::bad("missing form field RequestData"))?;
        let signed_account = verify(&form, request_data, settings)?;
        let text = form
            .text("RequestData")
            .map_err(PushError::BadRequest)?
            .unwrap_or_default();
        let envelope: Envelope<'_> = lenient::from_object(text.as_bytes())
            .map_err(|e| PushError::bad(format!("RequestData is not a Kdniao push: {e}")))?;
        let signed = signed_account.is_some();
        let account = match signed_account {
            None => String::new(),
            Some(account) if account.is_empty() => envelope.e_business_id.clone(),
            Some(account) if account == envelope.e_business_id.trim() => account,
            Some(account) => {
                return Err(PushError::unauthorized(format!(
                    "DataSign verified for EBusinessID {account:?} but RequestData names {:?}",
                    envelope.e_business_id
                )));
            }
        };
        let data = envelope.data.unwrap_or_default();
        if data.is_empty() {
            return Err(PushError::bad("RequestData.Data is missing or empty"));
        }
        let mut shared = BTreeMap::new();
        shared.insert("EBusinessID".to_owned(), envelope.e_business_id.clone());
        shared.insert("PushTime".to_owned(), envelope.push_time.clone());
        if let Ok(Some(request_type)) = form.text("RequestType") {
            shared.insert("RequestType".to_owned(), request_type.to_owned());
        }
        let items = data
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                let item: Item = lenient::from_object(raw.get().as_bytes())
                    .map_err(|e| PushError::bad(format!("Data[{index}]: {e}")))?;
                let waybill = item.logistic_code.trim();
                if item.shipper_code.trim().is_empty() || waybill.is_empty() {
                    return Err(PushError::bad(format!(
                        "Data[{index}]: ShipperCode and LogisticCode are required"
                    )));
                }
                Ok(PushItem {
                    carrier: crate::carrier_code::canonical(&item.shipper_code),
                    waybill: waybill.to_owned(),
                    payload: raw.get().as_bytes().to_vec(),
                    envelope: shared.clone(),
                })
            })
            .collect::<Result<Vec<_>, PushError>>()?;
        if signed {
            // Only a signed PushTime can be trusted; an unsigned push could say anything.
            let zone =
                crate::time::zone_or(settings.time_zone.as_deref(), chrono_tz::Asia::Shanghai);
            let pushed_at =
                crate::time::parse_local_or_offset(&envelope.push_time, zone).map(|t| t.utc);
            window.check("PushTime", pushed_at)?;
        }
        Ok(VerifiedPush { account, items })
    }
}

impl ProviderAdapter for Kdniao {
    fn provider(&self) -> Provider {
        Provider::Kdniao
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

    fn reply(&self, outcome: Outcome<'_>) -> Reply {
        reply_at(outcome, Utc::now())
    }

    fn normalize(
        &self,
        raw: &RawScan,
        settings: &ProviderSettings,
    ) -> Result<Vec<TrackingEvent>, NormalizeError> {
        let item: Item =
            lenient::from_object(&raw.payload).map_err(|e| NormalizeError::unparseable(NAME, e))?;
        let zone = crate::time::zone_or(settings.time_zone.as_deref(), chrono_tz::Asia::Shanghai);
        let estimate =
            crate::time::parse_date_or_time(&item.estimated_delivery_time, zone).map(|t| t.utc);
        let state = state_code(&item);

        if item.traces.is_empty() {
            if state.is_empty() || state == "0" {
                return Ok(Vec::new());
            }
            let (status, reason) = code_status(state);
            let mut facts = ScanFacts::new(status, reason, state);
            facts.location = place(&item.location, "");
            facts.estimated_delivery_at = estimate;
            return Ok(vec![facts.into_event(raw, Provider::Kdniao)]);
        }

        let newest = item.traces.len().saturating_sub(1);
        let collected = !matches!(item.state.trim(), "" | "0" | "10");
        let events = item
            .traces
            .iter()
            .enumerate()
            .map(|(index, trace)| {
                let action = trace.action.trim();
                let (status, reason) = if !action.is_empty() {
                    code_status(action)
                } else if index == newest && !state.is_empty() {
                    code_status(state)
                } else if cn_text::is_pickup(&trace.accept_station) {
                    (Status::PickedUp, Reason::Unspecified)
                } else if index == newest {
                    (Status::InTransit, Reason::Unknown)
                } else if index == 0 && collected {
                    (Status::PickedUp, Reason::Unspecified)
                } else {
                    (Status::InTransit, Reason::Unspecified)
                };
                let mut facts = ScanFacts::new(status, reason, action);
                facts.raw_text = trace.accept_station.clone();
                facts.occurred_at = crate::time::parse_local_or_offset(&trace.accept_time, zone);
                facts.location = place(&trace.location, &trace.accept_station);
                facts.carrier_sequence = i64::try_from(index + 1).unwrap_or(i64::MAX);
                facts.estimated_delivery_at = estimate;
                facts.into_event(raw, Provider::Kdniao)
            })
            .collect();
        Ok(events)
    }
}
