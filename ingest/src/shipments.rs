//! `POST /v1/shipments`: a merchant registers parcels (order ↔ waybill ↔ buyer).
//!
//! Authenticated by the merchant's bearer token; the merchant id comes from the
//! token, never from the body, so one merchant cannot register into another's
//! account. Body: one shipment, an array, or `{"shipments": [...]}`:
//!
//! ```json
//! {"order_id": "O-1001", "carrier": "sf", "waybill": "SF100",
//!  "buyer": {"name": "Li Lei", "phone": "13812345678", "email": "li@example.com",
//!            "locale": "zh-CN", "time_zone": "Asia/Shanghai"},
//!  "promised_delivery_at": "2026-11-23T18:00:00+08:00",
//!  "service_level": "express", "is_return": false,
//!  "origin": {"province": "浙江省", "city": "杭州市", "admin_code": "330100"},
//!  "destination": {"province": "四川省", "city": "成都市"},
//!  "ordered_at": "2026-11-22T20:15:00+08:00"}
//! ```
//!
//! `origin`, `destination` (province and city, never an address; an admin
//! code where known) and `ordered_at` (when the buyer ordered; not in the
//! future) are optional: the delivery statistics are kept per lane with them.
//!
//! `registered_at` (RFC 3339) may be given for backfills and replays, where the
//! order was created long before it reaches trackstream; it anchors the no-pickup
//! rule. It defaults to the time of the request.
//!
//! Before anything is written, every shipment of the request is checked, in this
//! order: each field against the identifier grammar and limits
//! (`runtime::ident`; 400 naming `shipments[i].field`), the record against
//! `kafka.max_record_bytes` (413 naming `shipments[i]`), then the waybill's
//! ownership ([`crate::ownership`]: 409 when another merchant registered it,
//! 503 when Redis does not answer). Only then are the records sent.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde::Deserialize;
use trackstream_carriers::carrier_code;
use trackstream_proto::v1::{BuyerContact, Region, Shipment};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::ApiError;
use trackstream_runtime::ident::{self, Contact, Ident, IdentError};
use trackstream_runtime::kafka::OutRecord;

use crate::AppState;
use crate::ownership::ClaimError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipmentIn {
    order_id: String,
    carrier: String,
    waybill: String,
    #[serde(default)]
    buyer: Option<BuyerIn>,
    #[serde(default)]
    promised_delivery_at: Option<String>,
    #[serde(default)]
    registered_at: Option<String>,
    #[serde(default)]
    service_level: Option<String>,
    #[serde(default)]
    is_return: bool,
    #[serde(default)]
    origin: Option<RegionIn>,
    #[serde(default)]
    destination: Option<RegionIn>,
    #[serde(default)]
    ordered_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionIn {
    #[serde(default)]
    province: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    admin_code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyerIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    locale: String,
    #[serde(default)]
    time_zone: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Batch {
    Wrapped { shipments: Vec<ShipmentIn> },
    Many(Vec<ShipmentIn>),
    One(Box<ShipmentIn>),
}

/// Handles one registration request.
pub async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = register_inner(&state, &headers, body).await;
    let (label, items) = match &result {
        Ok(n) => ("accepted", *n),
        Err(err) => (err.kind(), 0),
    };
    state
        .metrics
        .answered("shipments", label, items, started.elapsed().as_secs_f64());
    match result {
        Ok(n) => Json(serde_json::json!({ "accepted": n })).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn register_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, ApiError> {
    let merchant = state.merchants.authenticate(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    let body = crate::read_body(body, headers, state.body_limit, state.body_read_timeout).await?;
    crate::guard::check_body(&body, state.json_limits)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not UTF-8: {e}")))?;
    let batch = match serde_json::from_str::<Batch>(text) {
        Ok(Batch::Wrapped { shipments }) | Ok(Batch::Many(shipments)) => shipments,
        Ok(Batch::One(one)) => vec![*one],
        Err(_) => {
            let detail = serde_json::from_str::<ShipmentIn>(text).err().map_or_else(
                || "invalid shipment JSON".to_owned(),
                |e| format!("invalid shipment JSON: {e}"),
            );
            return Err(ApiError::BadRequest(detail));
        }
    };
    if batch.is_empty() {
        return Err(ApiError::BadRequest("no shipments in body".into()));
    }
    let now = time::to_proto(chrono::Utc::now());
    let mut shipments = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    for (index, input) in batch.into_iter().enumerate() {
        let shipment = to_shipment(input, &merchant.id, &merchant.name, now)
            .map_err(|reason| ApiError::BadRequest(format!("shipments[{index}].{reason}")))?;
        let record = OutRecord::new(
            topics::SHIPMENTS,
            keys::waybill_key(&shipment.carrier, &shipment.waybill),
            shipment.encode_to_vec(),
        );
        // Checked here, before any claim, so the answer names the item.
        state
            .producer
            .check_size(&record)
            .map_err(|err| match ApiError::from(err) {
                ApiError::PayloadTooLarge(reason) => {
                    ApiError::PayloadTooLarge(format!("shipments[{index}]: {reason}"))
                }
                other => other,
            })?;
        shipments.push(shipment);
        records.push(record);
    }
    let waybills: Vec<(&str, &str)> = shipments
        .iter()
        .map(|s| (s.carrier.as_str(), s.waybill.as_str()))
        .collect();
    let created = match state.claims.claim_all(&merchant.id, &waybills).await {
        Ok(created) => created,
        Err(ClaimError::Conflict { index }) => {
            let (carrier, waybill) = waybills.get(index).copied().unwrap_or_default();
            state
                .metrics
                .ownership_conflict(&merchant.id, carrier, waybill);
            return Err(ApiError::Conflict(format!(
                "shipments[{index}]: waybill {carrier}:{waybill} is registered by another merchant"
            )));
        }
        Err(err) => {
            tracing::warn!(%err, merchant_id = %merchant.id, "cannot claim waybills; answering 503");
            return Err(err.into());
        }
    };
    for shipment in &shipments {
        tracing::info!(order_id = %shipment.order_id, waybill = %shipment.waybill,
            carrier = %shipment.carrier, merchant_id = %shipment.merchant_id, "shipment registered");
    }
    let count = records.len();
    if let Err(err) = state.producer.send_all(records).await {
        if err.is_permanent() {
            // Nothing was sent (size) or the broker refused it: the request
            // leaves no trace, its new claims included.
            tracing::warn!(%err, merchant_id = %merchant.id, "kafka refused shipments permanently");
            state.claims.release(&merchant.id, created).await;
        } else {
            tracing::warn!(%err, merchant_id = %merchant.id,
                "kafka did not acknowledge shipments; answering 503 (claims kept for the retry)");
        }
        return Err(err.into());
    }
    Ok(count)
}

/// Validates one input against the identifier grammar (`runtime::ident`) and
/// builds its record. The error starts with the field name, so the caller's
/// `shipments[i].` prefix makes a full path (`shipments[3].buyer.phone: ...`).
fn to_shipment(
    input: ShipmentIn,
    merchant_id: &str,
    merchant_name: &str,
    now: prost_types::Timestamp,
) -> Result<Shipment, String> {
    let field =
        |name: &str, check: Result<(), IdentError>| check.map_err(|e| format!("{name}: {e}"));
    let order_id = input.order_id.trim();
    let waybill = input.waybill.trim();
    let carrier = carrier_code::canonical(&input.carrier);
    field("order_id", Ident::OrderId.check(order_id))?;
    field("carrier", Ident::Carrier.check(&carrier))?;
    field("waybill", Ident::Waybill.check(waybill))?;
    let service_level = input.service_level.unwrap_or_default();
    if !service_level.is_empty() {
        field("service_level", Ident::ServiceLevel.check(&service_level))?;
    }
    let registered_at = match input.registered_at.as_deref() {
        Some(text) => parse_time(text).map_err(|e| format!("registered_at: {e}"))?,
        None => now,
    };
    let promised_delivery_at = input
        .promised_delivery_at
        .as_deref()
        .map(|t| parse_time(t).map_err(|e| format!("promised_delivery_at: {e}")))
        .transpose()?;
    let origin = input.origin.map(|r| to_region("origin", r)).transpose()?;
    let destination = input
        .destination
        .map(|r| to_region("destination", r))
        .transpose()?;
    let ordered_at = input
        .ordered_at
        .as_deref()
        .map(|t| parse_time(t).map_err(|e| format!("ordered_at: {e}")))
        .transpose()?;
    if let Some(ordered_at) = &ordered_at
        && time::millis(Some(ordered_at)) > time::millis(Some(&now)) + MAX_FUTURE_MS
    {
        return Err("ordered_at: is in the future".to_owned());
    }
    let buyer = input
        .buyer
        .map(|b| {
            field("buyer.name", Contact::Name.check(&b.name))?;
            field("buyer.phone", Contact::Phone.check(&b.phone))?;
            field("buyer.email", Contact::Email.check(&b.email))?;
            if !b.locale.is_empty() {
                field("buyer.locale", ident::check_locale(&b.locale))?;
            }
            field("buyer.time_zone", Contact::TimeZone.check(&b.time_zone))?;
            if !b.time_zone.is_empty() && b.time_zone.parse::<chrono_tz::Tz>().is_err() {
                return Err("buyer.time_zone: is not an IANA zone".to_owned());
            }
            Ok(BuyerContact {
                name: b.name,
                phone: b.phone,
                email: b.email,
                locale: b.locale,
                time_zone: b.time_zone,
            })
        })
        .transpose()?;
    Ok(Shipment {
        order_id: order_id.to_owned(),
        merchant_id: merchant_id.to_owned(),
        carrier,
        waybill: waybill.to_owned(),
        buyer,
        promised_delivery_at,
        service_level,
        is_return: input.is_return,
        registered_at: Some(registered_at),
        merchant_name: merchant_name.to_owned(),
        origin,
        destination,
        ordered_at,
    })
}

/// How far ahead of the request `ordered_at` may be (clock skew between the
/// merchant's systems and ours), ms.
const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;

/// Validates a region (`what` is `origin` or `destination`, for the error's
/// field path): province and city are bounded text without the lane key's
/// delimiters, the code digits; an empty region is refused.
fn to_region(what: &str, input: RegionIn) -> Result<Region, String> {
    let RegionIn {
        province,
        city,
        admin_code,
    } = input;
    let (province, city, admin_code) = (province.trim(), city.trim(), admin_code.trim());
    if province.is_empty() && city.is_empty() && admin_code.is_empty() {
        return Err(format!("{what}: give province, city or admin_code"));
    }
    for (name, value) in [("province", province), ("city", city)] {
        ident::check_region_name(value).map_err(|e| format!("{what}.{name}: {e}"))?;
    }
    if !admin_code.is_empty() {
        ident::check_admin_code(admin_code).map_err(|e| format!("{what}.admin_code: {e}"))?;
    }
    Ok(Region {
        province: province.to_owned(),
        city: city.to_owned(),
        admin_code: admin_code.to_owned(),
    })
}

/// Longest accepted RFC 3339 text (`2026-11-23T18:00:00.123456789+08:00` is 35).
const MAX_TIME_TEXT: usize = 40;

fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    if text.len() > MAX_TIME_TEXT {
        return Err(format!(
            "over {MAX_TIME_TEXT} bytes (RFC 3339 with offset expected)"
        ));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| time::to_proto(t.with_timezone(&chrono::Utc)))
        .map_err(|e| format!("{e} (RFC 3339 with offset expected)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(registered_at: Option<&str>) -> ShipmentIn {
        serde_json::from_value(serde_json::json!({
            "order_id": "O-1", "carrier": "SF", "waybill": "SF1", "registered_at": registered_at
        }))
        .expect("valid input")
    }

    #[test]
    fn registered_at_defaults_to_now_and_accepts_a_backfilled_time() {
        let now = time::from_millis(1_795_000_000_000);
        let shipment = to_shipment(input(None), "m", "M", now).expect("valid");
        assert_eq!(shipment.registered_at, Some(now));
        assert_eq!(shipment.carrier, "sf", "carrier aliases are canonicalized");
        let backfilled =
            to_shipment(input(Some("2026-11-01T08:00:00+08:00")), "m", "M", now).expect("valid");
        assert_eq!(
            time::millis(backfilled.registered_at.as_ref()),
            1_793_491_200_000
        );
        let err = to_shipment(input(Some("yesterday")), "m", "M", now).expect_err("bad time");
        assert!(err.contains("registered_at"), "{err}");
    }

    #[test]
    fn origin_destination_and_order_time_are_validated_and_kept() {
        let now = time::from_millis(1_795_000_000_000);
        let parse = |v: serde_json::Value| -> ShipmentIn {
            serde_json::from_value(v).expect("valid input")
        };
        let shipment = to_shipment(
            parse(
                serde_json::json!({"order_id": "O", "carrier": "zto", "waybill": "ZT1",
                "origin": {"province": " 浙江省 ", "city": "杭州市", "admin_code": "330100"},
                "destination": {"province": "四川省", "city": "成都市"},
                "ordered_at": "2026-11-17T20:15:00+08:00"}),
            ),
            "m",
            "M",
            now,
        )
        .expect("valid");
        let origin = shipment.origin.expect("origin");
        assert_eq!(
            (
                origin.province.as_str(),
                origin.city.as_str(),
                origin.admin_code.as_str()
            ),
            ("浙江省", "杭州市", "330100"),
            "trimmed"
        );
        assert_eq!(
            shipment.destination.map(|d| d.city),
            Some("成都市".to_owned())
        );
        assert!(shipment.ordered_at.is_some());
        let refused = [
            (serde_json::json!({"destination": {}}), "destination: give"),
            (
                serde_json::json!({"origin": {"city": "a{p1}"}}),
                "origin.city:",
            ),
            (
                serde_json::json!({"origin": {"admin_code": "33A"}}),
                "origin.admin_code:",
            ),
            (
                serde_json::json!({"destination": {"province": "x".repeat(65)}}),
                "destination.province:",
            ),
            (
                serde_json::json!({"destination": {"street": "Main St 1"}}),
                "unknown field",
            ),
            (
                serde_json::json!({"ordered_at": "2030-01-01T00:00:00Z"}),
                "ordered_at: is in the future",
            ),
            (
                serde_json::json!({"ordered_at": "last night"}),
                "ordered_at:",
            ),
        ];
        for (extra, expected) in refused {
            let mut value =
                serde_json::json!({"order_id": "O", "carrier": "zto", "waybill": "ZT1"});
            for (k, v) in extra.as_object().expect("object") {
                value[k] = v.clone();
            }
            let err = match serde_json::from_value::<ShipmentIn>(value) {
                Ok(input) => to_shipment(input, "m", "M", now).expect_err("refused"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(expected), "{err} (wanted {expected})");
        }
    }

    #[test]
    fn every_field_is_bounded_and_named() {
        let now = time::from_millis(1_795_000_000_000);
        let long = "9".repeat(300);
        let cases = [
            (
                serde_json::json!({"order_id": "O:1", "carrier": "sf", "waybill": "SF1"}),
                "order_id:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "x".repeat(40), "waybill": "SF1"}),
                "carrier:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "sf:SF2"}),
                "waybill:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "service_level": "e{x}"}),
                "service_level:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "buyer": {"phone": long}}),
                "buyer.phone:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "buyer": {"email": "nobody"}}),
                "buyer.email:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "buyer": {"name": "n".repeat(201)}}),
                "buyer.name:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "buyer": {"locale": "zh CN"}}),
                "buyer.locale:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "buyer": {"time_zone": "Mars/Base"}}),
                "buyer.time_zone:",
            ),
            (
                serde_json::json!({"order_id": "O", "carrier": "sf", "waybill": "SF1", "promised_delivery_at": "2".repeat(50)}),
                "promised_delivery_at:",
            ),
        ];
        for (value, field) in cases {
            let input: ShipmentIn = serde_json::from_value(value.clone()).expect("shape");
            let err = to_shipment(input, "m", "M", now).expect_err("must be refused");
            assert!(err.starts_with(field), "{value}: {err}");
            assert!(!err.contains(&long), "values are not echoed: {err}");
        }
    }
}
