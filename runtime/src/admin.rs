//! The admin HTTP endpoint every service exposes: `/healthz` (ready: 200 only
//! when the service is up and every [`ReadyGate`] is open — for a consuming
//! service, every consumer group holds its partitions and has caught up),
//! `/livez` (the process answers: 200 even while starting or draining) for
//! orchestrators, and `/metrics` for Prometheus. Kept apart from ingest's
//! public API so scraping and probing never compete with carrier traffic.
//!
//! Every HTTP listener of trackstream (this one and ingest's public API) is served
//! by [`serve_router_with`], which enforces [`ListenerLimits`]: header-read, idle
//! and request timeouts and a connection cap (see `admin/listener.rs`).

mod listener;
mod ready;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::config::ListenerLimits;

pub use ready::{Health, ReadyGate};

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    health: Health,
}

/// Routes `/healthz`, `/livez` and `/metrics`, for services that merge them
/// into their own HTTP router.
pub fn router(registry: Arc<Registry>, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .with_state(AdminState { registry, health })
}

/// Binds `listen` and serves the admin routes until `shutdown` with the default
/// [`ListenerLimits`]; returns the bound address (so `:0` works in tests).
pub async fn serve(
    listen: &str,
    registry: Arc<Registry>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    serve_with(
        listen,
        &ListenerLimits::default(),
        registry,
        health,
        shutdown,
    )
    .await
}

/// [`serve`] with configured limits (`[admin.limits]`).
pub async fn serve_with(
    listen: &str,
    limits: &ListenerLimits,
    registry: Arc<Registry>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    serve_router_with(listen, router(registry, health), limits, shutdown).await
}

/// Serves the admin routes for a service that is ready now: returns the bound
/// address and the [`Health`] handle to flip off when it starts draining.
pub async fn serve_ready(
    listen: &str,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, Health), Error> {
    serve_ready_with(listen, &ListenerLimits::default(), registry, shutdown).await
}

/// [`serve_ready`] with configured limits (`[admin.limits]`).
pub async fn serve_ready_with(
    listen: &str,
    limits: &ListenerLimits,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, Health), Error> {
    let health = Health::default();
    let addr = serve_with(listen, limits, Arc::new(registry), health.clone(), shutdown).await?;
    health.set(true);
    Ok((addr, health))
}

/// Serves the admin routes for a consumer service: `/healthz` answers 503
/// until every gate in `gates` is open (one per consumer group member: it
/// holds its share of partitions and has caught up), and again whenever one
/// closes. Before that the service reads nothing, and an orchestrator rolling
/// instances (or a benchmark starting load) must not count it in. Returns the
/// bound address and the [`Health`] handle to flip off when the service starts
/// draining.
pub async fn serve_gated_with(
    listen: &str,
    limits: &ListenerLimits,
    registry: Registry,
    shutdown: CancellationToken,
    gates: Vec<ReadyGate>,
) -> Result<(SocketAddr, Health), Error> {
    let health = Health::gated(gates);
    let addr = serve_with(listen, limits, Arc::new(registry), health.clone(), shutdown).await?;
    health.set(true);
    Ok((addr, health))
}

/// Binds `listen` and serves `app` until `shutdown` with the default
/// [`ListenerLimits`]; returns the bound address.
pub async fn serve_router(
    listen: &str,
    app: Router,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    serve_router_with(listen, app, &ListenerLimits::default(), shutdown).await
}

/// Binds `listen` and serves `app` until `shutdown` with `limits`; returns the
/// bound address. Zero limits are a config error. On shutdown the listener stops
/// accepting, in-flight requests finish and idle connections are closed.
pub async fn serve_router_with(
    listen: &str,
    app: Router,
    limits: &ListenerLimits,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    listener::serve(listen, app, limits, shutdown).await
}

async fn healthz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.get() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "status": "ok" })),
        )
    } else if !state.health.is_up() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            // Starting or draining (shutting down).
            axum::Json(serde_json::json!({ "status": "unavailable" })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            // Up, but a consumer group does not hold its partitions or is
            // catching up.
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "waiting_for": state.health.waiting_for(),
            })),
        )
    }
}

/// Liveness: the process serves requests. Never 503 while starting or
/// draining, so a liveness probe does not kill an instance that is catching up.
async fn livez() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "alive" }))
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics_text(&state.registry),
    )
}

/// The service's metrics followed by the process's HTTP listener metrics, one
/// OpenMetrics document (one `# EOF`).
fn metrics_text(registry: &Arc<Registry>) -> String {
    let service = crate::telemetry::encode(registry);
    let service = service.strip_suffix("# EOF\n").unwrap_or(&service);
    format!("{service}{}# EOF\n", listener::encode_metrics())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn status(addr: SocketAddr, path: &str) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn healthz_follows_the_gates_and_draining_while_livez_stays_up() {
        let (gate, open) = ReadyGate::new("trackstream-test");
        let shutdown = CancellationToken::new();
        let (addr, health) = serve_gated_with(
            "127.0.0.1:0",
            &ListenerLimits::default(),
            Registry::default(),
            shutdown.clone(),
            vec![gate],
        )
        .await
        .unwrap_or_else(|e| panic!("serve: {e}"));
        assert_eq!(status(addr, "/healthz").await, 503, "gate closed");
        assert_eq!(status(addr, "/livez").await, 200, "alive while starting");
        open.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(status(addr, "/healthz").await, 200, "gate open");
        open.store(false, std::sync::atomic::Ordering::Release);
        assert_eq!(status(addr, "/healthz").await, 503, "gate closed again");
        open.store(true, std::sync::atomic::Ordering::Release);
        health.set(false);
        assert_eq!(status(addr, "/healthz").await, 503, "draining");
        assert_eq!(status(addr, "/livez").await, 200, "alive while draining");
        shutdown.cancel();
    }
}
