//! The buyer's side: the view a link opens and its live updates.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use trackstream_runtime::ApiError;

use crate::backend::Backend;
use crate::links::{Link, Scope};
use crate::view::{self, OrderView, Shop};
use crate::{Web, sse};

/// What a link opens.
#[derive(Debug, Serialize)]
pub struct BuyerView {
    /// The shop.
    pub shop: Shop,
    /// The buyer's registered locale ("" = let the browser decide).
    pub locale: String,
    /// The buyer's registered time zone ("" = the browser's).
    pub time_zone: String,
    /// When the link stops working.
    pub expires_at: Option<String>,
    /// The buyer's orders in this shop, newest registration first.
    pub orders: Vec<OrderView>,
}

/// `GET /api/v1/track/{token}`.
pub async fn view<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Path(token): Path<String>,
) -> Result<Json<BuyerView>, ApiError> {
    let link = web.verify(&token)?;
    let shop_name = web
        .backend
        .shop_name(&link.merchant_id)
        .ok_or_else(|| ApiError::LinkInvalid("this tracking link is not valid".into()))?;
    let order_ids = orders_of(&web, &link).await?;
    let mut orders = Vec::with_capacity(order_ids.len());
    for order_id in &order_ids {
        if let Some(order) = web.backend.order(&link.merchant_id, order_id).await? {
            orders.push(order);
        }
    }
    let buyer = orders
        .iter()
        .flat_map(|o| &o.parcels)
        .filter_map(|p| p.shipment.as_ref()?.buyer.clone())
        .next()
        .unwrap_or_default();
    tracing::info!(merchant_id = %link.merchant_id, orders = orders.len(), "buyer view served");
    Ok(Json(BuyerView {
        shop: Shop::new(&link.merchant_id, &shop_name),
        locale: buyer.locale,
        time_zone: buyer.time_zone,
        expires_at: chrono::DateTime::from_timestamp(link.expires_at, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        orders: orders.iter().map(view::order_view).collect(),
    }))
}

/// The order ids `link` opens.
async fn orders_of<B: Backend>(web: &Web<B>, link: &Link) -> Result<Vec<String>, ApiError> {
    match &link.scope {
        Scope::Order(order_id) => Ok(vec![order_id.clone()]),
        Scope::Buyer(key) => {
            web.backend
                .buyer_orders(
                    &link.merchant_id,
                    key,
                    web.config.max_orders_per_link.max(1),
                )
                .await
        }
    }
}

/// `?after_seq=`.
#[derive(Debug, Default, Deserialize)]
pub struct After {
    /// Resume after this sequence number.
    #[serde(default)]
    pub after_seq: u64,
}

/// `GET /api/v1/track/{token}/orders/{order_id}/events`.
pub async fn events<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Path((token, order_id)): Path<(String, String)>,
    Query(after): Query<After>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let link = web.verify(&token)?;
    if !orders_of(&web, &link).await?.contains(&order_id) {
        return Err(ApiError::NotFound(format!("order {order_id:?} not found")));
    }
    let after_seq = last_event_id(&headers).map_or(after.after_seq, |id| id.max(after.after_seq));
    let watch = web
        .backend
        .watch_order(&link.merchant_id, &order_id, after_seq)
        .await?;
    tracing::info!(merchant_id = %link.merchant_id, %order_id, after_seq, "buyer event stream opened");
    web.metrics.streams.inc();
    Ok(sse::stream(watch, web.config.keep_alive, |update| {
        (
            "update",
            Some(update.seq.to_string()),
            view::update_view(update),
        )
    }))
}

/// The `Last-Event-ID` an `EventSource` sends when it reconnects.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}
