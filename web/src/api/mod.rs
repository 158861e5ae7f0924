//! The routes: pages, assets, the OpenAPI document and the JSON API.

pub mod buyer;
pub mod lookup;
pub mod merchant;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use trackstream_runtime::ApiError;

use crate::Web;
use crate::assets;
use crate::backend::Backend;

/// Largest request body (the lookup form is the only one with a body).
const MAX_BODY_BYTES: usize = 4 * 1024;

/// Every route of the web face over `web`.
pub fn router<B: Backend>(web: Arc<Web<B>>) -> Router {
    Router::new()
        .route(
            "/t/{token}",
            get(|| async { assets::page(assets::TRACK_HTML) }),
        )
        .route(
            "/s/{merchant_id}",
            get(|| async { assets::page(assets::LOOKUP_HTML) }),
        )
        .route(
            "/console",
            get(|| async { assets::page(assets::CONSOLE_HTML) }),
        )
        .route(
            "/assets/{name}",
            get(|Path(name): Path<String>| async move { assets::asset(&name) }),
        )
        .route(
            "/api/openapi.json",
            get(|| async { assets::asset("openapi.json") }),
        )
        .route("/api/v1/track/{token}", get(buyer::view::<B>))
        .route(
            "/api/v1/track/{token}/orders/{order_id}/events",
            get(buyer::events::<B>),
        )
        .route("/api/v1/shops/{merchant_id}", get(lookup::shop::<B>))
        .route("/api/v1/shops/{merchant_id}/logo", get(logo::<B>))
        .route(
            "/api/v1/shops/{merchant_id}/lookup",
            post(lookup::lookup::<B>),
        )
        .route("/api/v1/merchant", get(merchant::me::<B>))
        .route(
            "/api/v1/merchant/orders/{order_id}",
            get(merchant::order::<B>),
        )
        .route("/api/v1/merchant/search", get(merchant::search::<B>))
        .route("/api/v1/merchant/alerts", get(merchant::alerts::<B>))
        .route(
            "/api/v1/merchant/alerts/events",
            get(merchant::alert_events::<B>),
        )
        .route("/api/v1/merchant/incidents", get(merchant::incidents::<B>))
        .route(
            "/api/v1/merchant/scorecards",
            get(merchant::scorecards::<B>),
        )
        .route(
            "/api/v1/merchant/deadletters",
            get(merchant::dead_letters::<B>),
        )
        .fallback(|| async { ApiError::NotFound("no such page".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(assets::security_headers))
        .with_state(web)
}

/// `GET /api/v1/shops/{merchant_id}/logo`.
async fn logo<B: Backend>(
    State(web): State<Arc<Web<B>>>,
    Path(merchant_id): Path<String>,
) -> Result<Response, ApiError> {
    let name = web
        .backend
        .shop_name(&merchant_id)
        .ok_or_else(|| ApiError::NotFound("no such shop".into()))?;
    Ok(web.logos.answer(&merchant_id, &name))
}
