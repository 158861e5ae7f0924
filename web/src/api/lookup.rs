//! Order lookup by order number and the last 4 digits of the buyer's phone (the
//! SF Express way): for a buyer without the message, or with an expired link.
//!
//! Rate-limited per client address and per order in Redis windows shared by
//! every instance, so the 10 000 possible digits cannot be walked from one
//! address nor from many. One answer — 404 — for an unknown order, another
//! shop's order and wrong digits, so the lookup tells nothing about which
//! orders exist. The digits are compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use trackstream_runtime::ApiError;

use crate::Web;
use crate::backend::Backend;
use crate::links::{Link, Scope, last4};
use crate::view::Shop;

/// The lookup form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    /// The shop's order number.
    pub order_id: String,
    /// The last 4 digits of the phone the order was registered with.
    pub phone_last4: String,
}

/// A link to the order.
#[derive(Debug, Serialize)]
pub struct LookupResponse {
    /// The link token (scope: this order only).
    pub token: String,
    /// The page to open.
    pub url: String,
    /// When the link stops working.
    pub expires_at: Option<String>,
}

/// `GET /api/v1/shops/{merchant_id}`.
pub async fn shop<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Path(merchant_id): Path<String>,
) -> Result<Json<Shop>, ApiError> {
    let name = web
        .backend
        .shop_name(&merchant_id)
        .ok_or_else(|| ApiError::NotFound("no such shop".into()))?;
    Ok(Json(Shop::new(&merchant_id, &name)))
}

/// `POST /api/v1/shops/{merchant_id}/lookup`.
pub async fn lookup<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Path(merchant_id): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LookupRequest>, JsonRejection>,
) -> Result<Json<LookupResponse>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if web.backend.shop_name(&merchant_id).is_none() {
        return Err(ApiError::NotFound("no such shop".into()));
    }
    let order_id = request.order_id.trim();
    if order_id.is_empty() || order_id.len() > 128 || order_id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "order_id: 1 to 128 printable characters".into(),
        ));
    }
    let digits = request.phone_last4.trim();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest("phone_last4: exactly 4 digits".into()));
    }
    let client = client_address(&web, peer, &headers);
    let window = web.config.lookup_window;
    limit(
        &web,
        &format!("c|{client}"),
        web.config.lookups_per_client,
        window,
        "from this address",
    )
    .await?;
    limit(
        &web,
        &format!("o|{merchant_id}/{order_id}"),
        web.config.lookups_per_order,
        window,
        "for this order",
    )
    .await?;

    let phones = web.backend.order_phones(&merchant_id, order_id).await?;
    let mut matched = subtle::Choice::from(0u8);
    for phone in &phones {
        if let Some(last) = last4(phone) {
            matched |= last.as_bytes().ct_eq(digits.as_bytes());
        }
    }
    if !bool::from(matched) {
        web.metrics.lookup("not_found");
        tracing::info!(%merchant_id, "order lookup found nothing");
        return Err(ApiError::NotFound(
            "no order matches that number and those digits".into(),
        ));
    }
    let expires_at = chrono::Utc::now().timestamp()
        + i64::try_from(web.config.lookup_ttl.as_secs()).unwrap_or(3_600);
    let token = web
        .links
        .sign(&Link {
            merchant_id: merchant_id.clone(),
            scope: Scope::Order(order_id.to_owned()),
            expires_at,
        })
        .ok_or_else(|| ApiError::Internal("could not sign a link for this shop".into()))?;
    web.metrics.lookup("found");
    tracing::info!(%merchant_id, %order_id, "order lookup opened a link");
    Ok(Json(LookupResponse {
        url: format!("/t/{token}"),
        token,
        expires_at: chrono::DateTime::from_timestamp(expires_at, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }))
}

/// Counts an attempt under `key`; over `max` in the window → 429 with the wait.
async fn limit<B: Backend>(
    web: &Web<B>,
    key: &str,
    max: u32,
    window: std::time::Duration,
    what: &str,
) -> Result<(), ApiError> {
    let (count, left) = web.backend.count_attempt(key, window).await?;
    if count > u64::from(max) {
        web.metrics.lookup("rate_limited");
        tracing::warn!(what, count, "order lookups rate-limited");
        return Err(ApiError::RateLimited {
            reason: format!("too many lookups {what}; try again later"),
            retry_after_secs: left.as_secs().max(1),
        });
    }
    Ok(())
}

/// The client's address: the peer, or — behind a trusted proxy that the
/// operator named in `client_ip_header` — that header's first entry.
fn client_address<B: Backend>(web: &Web<B>, peer: SocketAddr, headers: &HeaderMap) -> String {
    web.config
        .client_ip_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map_or_else(|| peer.ip().to_string(), str::to_owned)
}
