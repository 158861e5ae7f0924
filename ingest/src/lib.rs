//! ingest — trackstream's HTTP front door.
//!
//! Carriers and aggregators push scans to `POST /v1/webhooks/{provider}`; merchants
//! register parcels at `POST /v1/shipments`. ingest verifies, splits pushes by
//! waybill, writes `scans.raw` / `shipments` records keyed `carrier:waybill`, and
//! answers 2xx **only after Kafka acknowledged every record** (idempotent producer,
//! `acks=all`). When Kafka is down it answers 503, so the sender retries and
//! nothing it was told we have is lost.
//!
//! Layout: [`config`] (what it reads), [`webhooks`] (carrier pushes, one generic
//! handler over `trackstream_carriers` adapters), [`shipments`] (registration),
//! [`metrics`] (logged-and-counted events). Status codes: 400 bad body, 401 bad
//! signature or token, 404 unknown provider, 413 body over `http.body_limit_bytes`,
//! 503 Kafka unavailable — each with a JSON reason.
#![forbid(unsafe_code)]

pub mod config;
pub mod metrics;
pub mod shipments;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, header};
use axum::routing::post;
use trackstream_carriers::{ProviderSettings, Registry};
use trackstream_runtime::admin::{self, Health};
use trackstream_runtime::kafka::Producer;
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::{ApiError, CancellationToken, Error, telemetry};

pub use config::Config;

/// Shared state of the HTTP handlers.
pub struct AppState {
    carriers: Registry,
    providers: BTreeMap<String, ProviderSettings>,
    merchants: MerchantDirectory,
    producer: Producer,
    body_limit: usize,
    metrics: metrics::Metrics,
}

/// A started ingest: where it listens and the task that ends at shutdown.
pub struct Running {
    /// Public API address (webhooks, shipments).
    pub http_addr: SocketAddr,
    /// `/healthz` and `/metrics` address.
    pub admin_addr: SocketAddr,
    /// Completes after shutdown, once queued records are flushed.
    pub task: tokio::task::JoinHandle<Result<(), Error>>,
}

/// Starts ingest: binds both listeners and returns once they accept connections.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut registry = telemetry::registry("ingest");
    let producer = Producer::new(&config.kafka, "trackstream-ingest", &mut registry)?;
    let metrics = metrics::Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let health = Health::default();

    let state = Arc::new(AppState {
        carriers: Registry::builtin(),
        providers: config.providers.clone(),
        merchants: MerchantDirectory::new(config.merchants.clone()),
        producer: producer.clone(),
        body_limit: config.http.body_limit_bytes,
        metrics,
    });
    let app = Router::new()
        .route("/v1/webhooks/{provider}", post(webhooks::receive))
        .route("/v1/shipments", post(shipments::register))
        .with_state(state)
        // The limit is enforced by `read_body` with a JSON 413 instead.
        .layer(DefaultBodyLimit::disable())
        .merge(admin::router(registry.clone(), health.clone()));

    let http_shutdown = CancellationToken::new();
    let http_addr = admin::serve_router(&config.http.listen, app, http_shutdown.clone()).await?;
    let admin_addr = admin::serve(
        &config.admin.listen,
        registry,
        health.clone(),
        http_shutdown.clone(),
    )
    .await?;
    health.set(true);
    tracing::info!(%http_addr, %admin_addr, "ingest listening");

    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        health.set(false);
        // Stop accepting; in-flight requests finish (they await their acks).
        http_shutdown.cancel();
        producer.flush(std::time::Duration::from_secs(10));
        tracing::info!("ingest stopped");
        Ok(())
    });
    Ok(Running {
        http_addr,
        admin_addr,
        task,
    })
}

/// Reads a request body up to `limit` bytes; larger bodies are 413 without being
/// read in full (a declared `Content-Length` over the limit is refused at once).
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| too_large())
}

/// A random 128-bit id for tracing a record from ingest through the pipeline.
pub(crate) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
