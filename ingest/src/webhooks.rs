//! `POST /v1/webhooks/{provider}`: verify, split by waybill, write to `scans.raw`,
//! and answer only after Kafka acknowledged every item.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use trackstream_carriers::{Outcome, ProviderAdapter, PushError, PushRequest};
use trackstream_proto::v1::{EventSource, RawScan};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::ApiError;
use trackstream_runtime::kafka::OutRecord;

use crate::AppState;

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
    let _entered = span.enter();
    drop(_entered);

    let (status, reason, items) = match accept(&state, adapter, &query, &headers, body).await {
        Ok(items) => (StatusCode::OK, String::new(), items),
        Err(err) => (err.http_status(), err.to_string(), 0),
    };
    let outcome = if status == StatusCode::OK {
        Outcome::Accepted { account: "", items }
    } else {
        Outcome::Rejected {
            status: status.as_u16(),
            reason: &reason,
        }
    };
    let label = if status == StatusCode::OK {
        "accepted"
    } else {
        trackstream_carriers::error_kind(status.as_u16())
    };
    state.metrics.answered(
        adapter.route(),
        label,
        items,
        started.elapsed().as_secs_f64(),
    );
    if status != StatusCode::OK {
        tracing::warn!(parent: &span, %status, %reason, "webhook rejected");
    }
    let reply = adapter.reply(outcome);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

async fn accept(
    state: &AppState,
    adapter: &dyn ProviderAdapter,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<usize, ApiError> {
    let body = crate::read_body(body, headers, state.body_limit).await?;
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
    let count = records.len();
    state.producer.send_all(records).await.map_err(|err| {
        tracing::warn!(%err, "kafka did not acknowledge; answering 503 so the provider retries");
        ApiError::Unavailable("event log unavailable, retry later".into())
    })?;
    Ok(count)
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
