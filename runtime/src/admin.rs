//! The admin HTTP endpoint every service exposes: `/healthz` for orchestrators and
//! `/metrics` for Prometheus. Kept apart from ingest's public API so scraping and
//! probing never compete with carrier traffic.
//!
//! Every HTTP listener of trackstream (this one and ingest's public API) is served
//! by [`serve_router_with`], which enforces [`ListenerLimits`]: header-read, idle
//! and request timeouts and a connection cap (see `admin/listener.rs`).

mod listener;

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
use crate::config::ListenerLimits;

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

/// Serves the admin routes for a consumer service: `/healthz` answers 503 until
/// `ready` completes — for normalize and the detector, their consumer group's
/// first assignment (possibly empty). Before that they read nothing, and an
/// orchestrator rolling instances (or a benchmark starting load) must not count
/// them in. Returns the bound address and the [`Health`] handle to flip off when
/// the service starts draining.
pub async fn serve_ready_after(
    listen: &str,
    registry: Registry,
    shutdown: CancellationToken,
    ready: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, Health), Error> {
    serve_ready_after_with(
        listen,
        &ListenerLimits::default(),
        registry,
        shutdown,
        ready,
    )
    .await
}

/// [`serve_ready_after`] with configured limits (`[admin.limits]`).
pub async fn serve_ready_after_with(
    listen: &str,
    limits: &ListenerLimits,
    registry: Registry,
    shutdown: CancellationToken,
    ready: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, Health), Error> {
    let health = Health::default();
    let addr = serve_with(
        listen,
        limits,
        Arc::new(registry),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let flip = health.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = ready => {
                flip.set(true);
                tracing::info!("ready: consumer group joined");
            }
        }
    });
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
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            // Starting (not yet ready) or draining (shutting down).
            axum::Json(serde_json::json!({ "status": "unavailable" })),
        )
    }
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

    async fn healthz_status(addr: SocketAddr) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
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
    async fn healthz_is_unavailable_until_ready_and_again_when_draining() {
        let (joined, ready) = tokio::sync::oneshot::channel::<()>();
        let shutdown = CancellationToken::new();
        let (addr, health) = serve_ready_after(
            "127.0.0.1:0",
            Registry::default(),
            shutdown.clone(),
            async {
                let _ = ready.await;
            },
        )
        .await
        .unwrap_or_else(|e| panic!("serve: {e}"));
        assert_eq!(healthz_status(addr).await, 503, "not ready before joining");
        let _ = joined.send(());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while healthz_status(addr).await != 200 {
            assert!(std::time::Instant::now() < deadline, "never became ready");
            tokio::task::yield_now().await;
        }
        health.set(false);
        assert_eq!(healthz_status(addr).await, 503, "draining");
        shutdown.cancel();
    }
}
