//! `POST /v1/webhooks/{provider}`: verify, split by waybill, write to `scans.raw`,
//! and answer only after Kafka acknowledged every item.
//!
//! One handler serves every provider in `trackstream_carriers::Registry`; the
//! route segment picks the adapter (`kdniao`, `kuaidi100`, `17track`, `aftership`,
//! `easypost`, `generic`) and `providers.<route>` in the config its secrets
//! (several accounts each, all tried in constant time). The order of checks is
//! fixed, so a bad push is refused before anything is written:
//!
//! 1. body size (`http.body_limit_bytes`) → 413;
//! 2. signature, then format and required fields (the adapter) → 401 / 400;
//! 3. JSON nesting and entry counts ([`crate::guard`]) → 400 / 413;
//! 4. every item's carrier and waybill against the identifier grammar
//!    (`runtime::ident`) → 400 naming the item;
//! 5. a bound account (`merchants` on its `providers` entry): only items whose
//!    waybill one of its merchants registered are written, the others are
//!    logged and counted; none → 403; Redis unavailable → 503;
//! 6. one `scans.raw` record per waybill, keyed `carrier:waybill`, holding the
//!    provider's exact bytes for it, each within `kafka.max_record_bytes`
//!    (else 413 naming the item, nothing written); 200 once Kafka acknowledged
//!    all (with `"refused": n` added to a JSON reply when a bound account was
//!    refused items), 422 if the broker refused a record, 503 if it did not
//!    answer.
//!
//! The answer's body is the provider's dialect (`ProviderAdapter::reply`): Kdniao
//! and Kuaidi100 decide whether to push again by reading it. On a rejection,
//! `error` (the kind) and `reason` are added to that object when the dialect has
//! no such fields, so every route also answers in ingest's own terms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use tracing::Instrument as _;
use trackstream_carriers::{Outcome, ProviderAdapter, PushError, PushRequest};
use trackstream_proto::v1::{EventSource, RawScan};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::ApiError;
use trackstream_runtime::ident::{Ident, IdentError};
use trackstream_runtime::kafka::OutRecord;

use crate::AppState;

/// What a push became once Kafka acknowledged it.
struct Accepted {
    account: String,
    items: usize,
    /// Items a bound account may not write (see [`allowed_items`]).
    refused: usize,
}

/// Handles one provider push.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(route): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Some(adapter) = state.carriers.by_route(&route) else {
        let err = ApiError::NotFound(format!("no webhook route for provider {route:?}"));
        state
            .metrics
            .answered("unknown", err.kind(), 0, started.elapsed().as_secs_f64());
        return err.into_response();
    };
    let span = tracing::info_span!("webhook", provider = adapter.route());
    let result = accept(&state, adapter, &query, &headers, body)
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    match result {
        Ok(accepted) => {
            state
                .metrics
                .answered(adapter.route(), "accepted", accepted.items, elapsed);
            let reply = adapter.reply(Outcome::Accepted {
                account: &accepted.account,
                items: accepted.items,
            });
            let body = if accepted.refused > 0 {
                with_field(reply.body, "refused", accepted.refused.into())
            } else {
                reply.body
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, reply.content_type)],
                body,
            )
                .into_response()
        }
        Err(err) => {
            let status = err.http_status();
            let reason = err.to_string();
            state
                .metrics
                .answered(adapter.route(), err.kind(), 0, elapsed);
            tracing::warn!(parent: &span, %status, %reason, "webhook rejected");
            let reply = adapter.reply(Outcome::Rejected {
                status: status.as_u16(),
                reason: &reason,
            });
            (
                status,
                [(header::CONTENT_TYPE, reply.content_type)],
                with_error_fields(reply.body, err.kind(), &reason),
            )
                .into_response()
        }
    }
}

async fn accept(
    state: &AppState,
    adapter: &dyn ProviderAdapter,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let body = crate::read_body(body, headers, state.body_limit, state.body_read_timeout).await?;
    let headers = lowercase_headers(headers);
    let request = PushRequest {
        headers: &headers,
        query,
        body: &body,
    };
    let settings = state.providers.get(adapter.route()).ok_or_else(|| {
        ApiError::Unauthorized(format!("provider {} is not configured", adapter.route()))
    })?;
    let push = adapter
        .accept(&request, settings)
        .map_err(|err| match err {
            PushError::Unauthorized(reason) => ApiError::Unauthorized(reason),
            PushError::BadRequest(reason) => ApiError::BadRequest(reason),
        })?;
    crate::guard::check_body(&body, state.json_limits)?;
    for (index, item) in push.items.iter().enumerate() {
        check_item(index, &item.carrier, &item.waybill)?;
    }
    let account = push.account;
    let allowed = allowed_items(state, adapter.route(), settings, &account, &push.items).await?;
    let refused = push.items.len() - allowed.iter().filter(|a| **a).count();
    if !push.items.is_empty() && refused == push.items.len() {
        return Err(ApiError::Forbidden(format!(
            "account {account:?} is bound to merchants that registered none of the {refused} waybills of this push"
        )));
    }

    let received_at = time::to_proto(chrono::Utc::now());
    let mut records = Vec::with_capacity(push.items.len() - refused);
    for (index, item) in push.items.into_iter().enumerate() {
        if !allowed.get(index).copied().unwrap_or(false) {
            continue;
        }
        let key = keys::waybill_key(&item.carrier, &item.waybill);
        let raw = RawScan {
            ingest_id: crate::new_id(),
            provider: adapter.provider() as i32,
            carrier: item.carrier,
            waybill: item.waybill,
            received_at: Some(received_at),
            payload: item.payload,
            envelope: item.envelope.into_iter().collect(),
            account: account.clone(),
            source: EventSource::Push as i32,
        };
        tracing::debug!(waybill = %raw.waybill, carrier = %raw.carrier, ingest_id = %raw.ingest_id, "scan item");
        let record = OutRecord::new(topics::SCANS_RAW, key, raw.encode_to_vec());
        // Checked here to name the item; `send_all` would refuse it too, but
        // only by key.
        state
            .producer
            .check_size(&record)
            .map_err(|err| match ApiError::from(err) {
                ApiError::PayloadTooLarge(reason) => ApiError::PayloadTooLarge(format!(
                    "items[{index}] ({}:{}): {reason}",
                    raw.carrier, raw.waybill
                )),
                other => other,
            })?;
        records.push(record);
    }
    let items = records.len();
    state.producer.send_all(records).await.map_err(|err| {
        if err.is_permanent() {
            tracing::warn!(%err, "kafka refused the push permanently; answering 4xx");
        } else {
            tracing::warn!(%err, "kafka did not acknowledge; answering 503 so the provider retries");
        }
        ApiError::from(err)
    })?;
    Ok(Accepted {
        account,
        items,
        refused,
    })
}

/// Checks the carrier and waybill an adapter extracted against the identifier
/// grammar: they become Kafka and Redis keys (`carrier:waybill`), so a `:` or
/// an oversized value would forge or break another parcel's keys.
fn check_item(index: usize, carrier: &str, waybill: &str) -> Result<(), ApiError> {
    let named = |field: &str, value: &str, err: IdentError| {
        ApiError::BadRequest(format!("items[{index}].{field} {}: {err}", shown(value)))
    };
    Ident::Carrier
        .check(carrier)
        .map_err(|e| named("carrier", carrier, e))?;
    Ident::Waybill
        .check(waybill)
        .map_err(|e| named("waybill", waybill, e))
}

/// A provider-sent identifier for an error reason: escaped and cut to 40
/// characters (they are waybills and carrier codes, not contact data).
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(40).collect();
    let more = if cut.len() < value.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

/// Which items a push's account may write. An unbound account may write all
/// (the operator trusts it with every merchant); a bound one only waybills
/// whose claim names one of its merchants — an unregistered waybill is nobody's
/// yet, so it is refused too. Every refusal is logged and counted.
async fn allowed_items(
    state: &AppState,
    route: &str,
    settings: &trackstream_carriers::ProviderSettings,
    account: &str,
    items: &[trackstream_carriers::PushItem],
) -> Result<Vec<bool>, ApiError> {
    let Some(merchants) = settings.merchants_for(account) else {
        return Ok(vec![true; items.len()]);
    };
    let waybills: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i.carrier.as_str(), i.waybill.as_str()))
        .collect();
    let owners = state.claims.owners(&waybills).await.map_err(|err| {
        tracing::warn!(%err, "cannot read waybill owners for a bound account; answering 503");
        ApiError::from(err)
    })?;
    Ok(waybills
        .iter()
        .zip(owners)
        .map(|((carrier, waybill), owner)| {
            let allowed = owner.is_some_and(|o| merchants.contains(&o));
            if !allowed {
                state
                    .metrics
                    .bound_refusal(route, account, carrier, waybill);
            }
            allowed
        })
        .collect())
}

/// Adds `error` and `reason` to a provider's JSON reply object where it has no
/// such fields; any other body is returned unchanged.
fn with_error_fields(body: Vec<u8>, kind: &str, reason: &str) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&body) else {
        return body;
    };
    let error = object
        .entry("error")
        .or_insert_with(|| serde_json::Value::from(kind));
    // `carriers::error_kind` names only the statuses it knows and says "error"
    // for the rest (403, 409, 422): ingest's kind is the precise one.
    if error == "error" {
        *error = serde_json::Value::from(kind);
    }
    object
        .entry("reason")
        .or_insert_with(|| serde_json::Value::from(reason));
    serde_json::Value::Object(object).to_string().into_bytes()
}

/// Adds `name` to a provider's JSON reply object (e.g. how many items a bound
/// account was refused); any other body is returned unchanged.
fn with_field(body: Vec<u8>, name: &str, value: serde_json::Value) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&body) else {
        return body;
    };
    object.entry(name).or_insert(value);
    serde_json::Value::Object(object).to_string().into_bytes()
}

fn lowercase_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_ascii_lowercase(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_fields_are_added_to_a_dialect_without_them() {
        let kdniao = br#"{"EBusinessID":"","Success":false,"Reason":"bad"}"#.to_vec();
        let out: serde_json::Value =
            serde_json::from_slice(&with_error_fields(kdniao, "bad_request", "bad"))
                .unwrap_or_default();
        assert_eq!(out["Success"], false);
        assert_eq!(out["error"], "bad_request");
        assert_eq!(out["reason"], "bad");
    }

    #[test]
    fn existing_fields_and_non_objects_are_left_alone() {
        let ours = br#"{"error":"unauthorized","reason":"kept"}"#.to_vec();
        let out: serde_json::Value =
            serde_json::from_slice(&with_error_fields(ours, "bad_request", "other"))
                .unwrap_or_default();
        assert_eq!(out["error"], "unauthorized");
        assert_eq!(out["reason"], "kept");
        assert_eq!(with_error_fields(b"[1]".to_vec(), "x", "y"), b"[1]");
        assert_eq!(with_error_fields(b"text".to_vec(), "x", "y"), b"text");
    }
}
