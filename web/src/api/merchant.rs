//! The merchant console's API, every call scoped to the merchant of the bearer
//! token (the same tokens and the same constant-time check as gRPC).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use trackstream_proto::v1::Severity;
use trackstream_runtime::ApiError;

use crate::backend::{Backend, DeadLetterCount, Merchant};
use crate::links::normalize_phone;
use crate::view::{self, AlertView, IncidentView, OrderView, ScorecardView, Shop};
use crate::{Web, sse};

/// Open alerts listed at most.
const MAX_ALERTS: usize = 500;
/// Orders a search answers at most.
const MAX_RESULTS: usize = 20;

fn signed_in<B: Backend>(web: &Web<B>, headers: &HeaderMap) -> Result<Merchant, ApiError> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    web.backend.authenticate(header)
}

/// `GET /api/v1/merchant`.
pub async fn me<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    headers: HeaderMap,
) -> Result<Json<Shop>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    Ok(Json(Shop::new(&merchant.id, &merchant.name)))
}

/// `GET /api/v1/merchant/orders/{order_id}`.
pub async fn order<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<OrderView>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let order = web
        .backend
        .order(&merchant.id, &order_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("order {order_id:?} not found")))?;
    Ok(Json(view::order_view(&order)))
}

/// `?q=`.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    /// An order id, a waybill or a buyer's phone.
    #[serde(default)]
    pub q: String,
}

/// A search's answer.
#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    /// What the query matched as: `order`, `waybill`, `phone`, or `none`.
    pub query_kind: &'static str,
    /// The orders found.
    pub results: Vec<SearchResult>,
}

/// One order found.
#[derive(Debug, Serialize)]
pub struct SearchResult {
    /// Its id.
    pub order_id: String,
    /// Its parcels.
    pub parcels: Vec<ParcelSummary>,
    /// The buyer's contact, masked.
    pub contact_masked: String,
}

/// A parcel in a search result.
#[derive(Debug, Serialize)]
pub struct ParcelSummary {
    /// Carrier.
    pub carrier: String,
    /// Waybill.
    pub waybill: String,
    /// Status.
    pub status: &'static str,
}

/// `GET /api/v1/merchant/search?q=`: the exact order id, else the exact
/// waybill, else the buyer's phone by its keyed hash — never a prefix or a
/// list of contacts, so the console cannot be used to harvest buyers.
pub async fn search<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
) -> Result<Json<SearchAnswer>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let q = query.q.trim();
    if q.is_empty() || q.len() > 128 || q.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "q: 1 to 128 printable characters".into(),
        ));
    }
    let (kind, orders) = match web.backend.order(&merchant.id, q).await? {
        // An exact order id: the order read once, for the answer too.
        Some(order) => ("order", vec![order]),
        None => {
            let (kind, ids) = matching_ids(&web, &merchant.id, q).await?;
            let mut orders = Vec::new();
            for order_id in ids.iter().take(MAX_RESULTS) {
                orders.extend(web.backend.order(&merchant.id, order_id).await?);
            }
            (kind, orders)
        }
    };
    let results: Vec<SearchResult> = orders
        .iter()
        .map(|order| {
            let view = view::order_view(order);
            SearchResult {
                order_id: view.order_id,
                parcels: view
                    .parcels
                    .into_iter()
                    .map(|p| ParcelSummary {
                        carrier: p.carrier,
                        waybill: p.waybill,
                        status: p.status,
                    })
                    .collect(),
                contact_masked: view.contact_masked,
            }
        })
        .collect();
    tracing::info!(merchant_id = %merchant.id, query_kind = kind, results = results.len(),
        "console search");
    web.metrics.search(kind);
    Ok(Json(SearchAnswer {
        query_kind: kind,
        results,
    }))
}

/// The order ids `q` finds as a waybill, else as the buyer's phone, and which
/// it matched as (`none` when neither).
async fn matching_ids<B: Backend>(
    web: &Web<B>,
    merchant_id: &str,
    q: &str,
) -> Result<(&'static str, Vec<String>), ApiError> {
    let ids = web.backend.waybill_orders(merchant_id, q).await?;
    if !ids.is_empty() {
        return Ok(("waybill", ids));
    }
    if normalize_phone(q).is_some_and(|d| d.len() >= 7)
        && let Some(key) = web.links.phone_key(q)
    {
        let ids = web
            .backend
            .buyer_orders(merchant_id, &key, MAX_RESULTS)
            .await?;
        if !ids.is_empty() {
            return Ok(("phone", ids));
        }
    }
    Ok(("none", Vec::new()))
}

/// `?min_severity=`.
#[derive(Debug, Deserialize)]
pub struct SeverityQuery {
    /// INFO (default), WARNING or CRITICAL.
    #[serde(default)]
    pub min_severity: String,
}

fn severity(query: &SeverityQuery) -> Result<Severity, ApiError> {
    if query.min_severity.is_empty() {
        return Ok(Severity::Info);
    }
    view::parse_severity(&query.min_severity)
        .ok_or_else(|| ApiError::BadRequest("min_severity: one of INFO, WARNING, CRITICAL".into()))
}

/// Open alerts.
#[derive(Debug, Serialize)]
pub struct AlertList {
    /// Newest first.
    pub alerts: Vec<AlertView>,
}

/// `GET /api/v1/merchant/alerts`.
pub async fn alerts<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Query(query): Query<SeverityQuery>,
    headers: HeaderMap,
) -> Result<Json<AlertList>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let min = severity(&query)?;
    let alerts = web
        .backend
        .open_alerts(&merchant.id, min, MAX_ALERTS)
        .await?;
    Ok(Json(AlertList {
        alerts: alerts.iter().map(view::alert_view).collect(),
    }))
}

/// `GET /api/v1/merchant/alerts/events`.
pub async fn alert_events<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Query(query): Query<SeverityQuery>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let min = severity(&query)?;
    let watch = web.backend.watch_alerts(&merchant.id, min)?;
    tracing::info!(merchant_id = %merchant.id, min_severity = view::severity_name(min as i32),
        "console alert stream opened");
    web.metrics.streams.inc();
    Ok(sse::stream(watch, web.config.keep_alive, |alert| {
        ("alert", None, view::alert_view(alert))
    }))
}

/// `?days=`.
#[derive(Debug, Deserialize)]
pub struct DaysQuery {
    /// Look-back in days.
    #[serde(default)]
    pub days: Option<u32>,
}

/// Incidents.
#[derive(Debug, Serialize)]
pub struct IncidentList {
    /// Open first, then resolved.
    pub incidents: Vec<IncidentView>,
}

/// `GET /api/v1/merchant/incidents`.
pub async fn incidents<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Query(query): Query<DaysQuery>,
    headers: HeaderMap,
) -> Result<Json<IncidentList>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let days = query.days.unwrap_or(7).clamp(1, 90);
    let incidents = web.backend.incidents(&merchant.id, days).await?;
    Ok(Json(IncidentList {
        incidents: incidents.iter().map(view::incident_view).collect(),
    }))
}

/// Scorecards.
#[derive(Debug, Serialize)]
pub struct CardList {
    /// The merchant's own cards, then the platform baseline's.
    pub cards: Vec<ScorecardView>,
}

/// `GET /api/v1/merchant/scorecards`.
pub async fn scorecards<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Query(query): Query<DaysQuery>,
    headers: HeaderMap,
) -> Result<Json<CardList>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let days = query.days.unwrap_or(14).clamp(1, 14);
    let cards = web.backend.scorecards(&merchant.id, days).await?;
    Ok(Json(CardList {
        cards: cards
            .merchant
            .iter()
            .map(|c| view::scorecard_view(c, "merchant"))
            .chain(
                cards
                    .global_baseline
                    .iter()
                    .map(|c| view::scorecard_view(c, "platform")),
            )
            .collect(),
    }))
}

/// Dead letters.
#[derive(Debug, Serialize)]
pub struct DeadLetters {
    /// All of them.
    pub total: u64,
    /// By stage and cause.
    pub by_cause: Vec<DeadLetterCount>,
}

/// `GET /api/v1/merchant/deadletters`.
pub async fn dead_letters<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    headers: HeaderMap,
) -> Result<Json<DeadLetters>, ApiError> {
    let merchant = signed_in(&web, &headers)?;
    let by_cause = web.backend.dead_letters(&merchant.id).await?;
    Ok(Json(DeadLetters {
        total: by_cause.iter().map(|c| c.count).sum(),
        by_cause,
    }))
}
