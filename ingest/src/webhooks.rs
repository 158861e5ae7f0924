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
//! 4. one `scans.raw` record per waybill, keyed `carrier:waybill`, holding the
//!    provider's exact bytes for it; 200 once Kafka acknowledged all, else 503.
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
use trackstream_runtime::kafka::OutRecord;

use crate::AppState;

/// What a push became once Kafka acknowledged it.
struct Accepted {
    account: String,
    items: usize,
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
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, reply.content_type)],
                reply.body,
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

    let received_at = time::to_proto(chrono::Utc::now());
    let records: Vec<OutRecord> = push
        .items
        .into_iter()
        .map(|item| {
            let key = keys::waybill_key(&item.carrier, &item.waybill);
            let raw = RawScan {
                ingest_id: crate::new_id(),
                provider: adapter.provider() as i32,
                carrier: item.carrier,
                waybill: item.waybill,
                received_at: Some(received_at),
                payload: item.payload,
                envelope: item.envelope.into_iter().collect(),
                account: push.account.clone(),
                source: EventSource::Push as i32,
            };
            tracing::debug!(waybill = %raw.waybill, carrier = %raw.carrier, ingest_id = %raw.ingest_id, "scan item");
            OutRecord::new(topics::SCANS_RAW, key, raw.encode_to_vec())
        })
        .collect();
    let items = records.len();
    state.producer.send_all(records).await.map_err(|err| {
        tracing::warn!(%err, "kafka did not acknowledge; answering 503 so the provider retries");
        ApiError::Unavailable("event log unavailable, retry later".into())
    })?;
    Ok(Accepted {
        account: push.account,
        items,
    })
}

/// Adds `error` and `reason` to a provider's JSON reply object where it has no
/// such fields; any other body is returned unchanged.
fn with_error_fields(body: Vec<u8>, kind: &str, reason: &str) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&body) else {
        return body;
    };
    object
        .entry("error")
        .or_insert_with(|| serde_json::Value::from(kind));
    object
        .entry("reason")
        .or_insert_with(|| serde_json::Value::from(reason));
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
