//! The admin HTTP endpoint every service exposes: `/healthz` for orchestrators and
//! `/metrics` for Prometheus. Kept apart from ingest's public API so scraping and
//! probing never compete with carrier traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Whether the service is healthy; flipped off when it starts shutting down so
/// load balancers stop sending traffic first.
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Marks the service ready (true) or draining (false).
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Release);
    }

    /// Current state.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    health: Health,
}

/// Routes `/healthz` and `/metrics`, for services that merge them into their own
/// HTTP router.
pub fn router(registry: Arc<Registry>, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { registry, health })
}

/// Binds `listen` and serves the admin routes until `shutdown`; returns the bound
/// address (so `:0` works in tests).
pub async fn serve(
    listen: &str,
    registry: Arc<Registry>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    serve_router(listen, router(registry, health), shutdown).await
}

/// Serves the admin routes for a service that is ready now: returns the bound
/// address and the [`Health`] handle to flip off when it starts draining.
pub async fn serve_ready(
    listen: &str,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, Health), Error> {
    let health = Health::default();
    let addr = serve(listen, Arc::new(registry), health.clone(), shutdown).await?;
    health.set(true);
    Ok((addr, health))
}

/// Binds `listen` and serves `app` until `shutdown`; returns the bound address.
pub async fn serve_router(
    listen: &str,
    app: Router,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "http server failed");
        }
    });
    Ok(addr)
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.get() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ok" })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "draining" })),
        )
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::telemetry::encode(&state.registry),
    )
}
