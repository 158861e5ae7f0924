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
//! handler over `trackstream_carriers` adapters), [`guard`] (JSON nesting and
//! size limits), [`shipments`] (registration), [`ownership`] (waybill claims in
//! Redis), [`openapi`] (the served API description), [`startup`] (config checks
//! that name the offending key), [`metrics`] (logged-and-counted events).
//!
//! The public listener serves only the API; `/healthz` and `/metrics` are on the
//! admin listener (`admin.listen`), which should not be exposed.
//!
//! Status codes, each with a JSON `error` kind and `reason` (for webhooks, added
//! to the provider's own reply object, so Kdniao still reads `Success: false`):
//!
//! | status | when | written |
//! |---|---|---|
//! | 200 | every item acknowledged by Kafka | one `scans.raw` / `shipments` record per waybill (a bound account's refused items excepted) |
//! | 400 | unparseable body, invalid UTF-8, missing required field, a field outside its grammar or length limit (`runtime::ident`), body cut short in transit, JSON nested deeper than `http.json_max_depth` | nothing |
//! | 401 | missing or wrong signature, unknown account, provider not configured, missing or unknown bearer token | nothing |
//! | 403 | a bound provider account pushed only waybills its merchants did not register | nothing |
//! | 404 | unknown route or provider | nothing |
//! | 408 | body not received within `http.body_read_timeout` | nothing |
//! | 409 | a shipment's waybill is registered by another merchant | nothing |
//! | 413 | body over `http.body_limit_bytes`, a JSON array/object over `http.json_max_elements` entries, or a record over `kafka.max_record_bytes` | nothing |
//! | 422 | the broker refused a record permanently | nothing acknowledged |
//! | 503 | Kafka did not acknowledge within `kafka.produce_timeout`, or Redis (ownership) did not answer within `ownership.redis_timeout` | possibly some items (the sender retries; downstream dedups by event id) |
//!
//! The same document, machine-readable: `GET /v1/openapi.json` ([`openapi`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod ownership;
pub mod shipments;
pub mod startup;
pub mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, Method, header};
use axum::routing::{MethodRouter, get, post};
use trackstream_carriers::{ProviderSettings, Registry};
use trackstream_runtime::admin::{self, Health};
use trackstream_runtime::kafka::Producer;
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::redis::RedisConn;
use trackstream_runtime::{ApiError, CancellationToken, Error, telemetry};

pub use config::Config;

/// Shared state of the HTTP handlers.
pub struct AppState {
    carriers: Registry,
    providers: BTreeMap<String, ProviderSettings>,
    merchants: MerchantDirectory,
    producer: Producer,
    body_limit: usize,
    body_read_timeout: std::time::Duration,
    json_limits: guard::JsonLimits,
    metrics: metrics::Metrics,
    claims: ownership::Claims,
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
    startup::validate(&config)?;
    let redis_timeout = config.ownership.redis_timeout;
    let redis = tokio::time::timeout(redis_timeout, RedisConn::connect(&config.redis))
        .await
        .map_err(|_| {
            Error::Config(format!(
                "redis: no connection within {} ms (ownership.redis_timeout)",
                redis_timeout.as_millis()
            ))
        })??;
    let mut registry = telemetry::registry("ingest");
    let producer = Producer::new(&config.kafka, "trackstream-ingest", &mut registry)?;
    let metrics = metrics::Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let health = Health::default();

    let state = Arc::new(AppState {
        carriers: Registry::builtin(),
        providers: config.providers.clone(),
        merchants: MerchantDirectory::try_new(config.merchants.clone())?,
        producer: producer.clone(),
        body_limit: config.http.body_limit_bytes,
        body_read_timeout: config.http.body_read_timeout,
        json_limits: guard::JsonLimits {
            max_depth: config.http.json_max_depth,
            max_elements: config.http.json_max_elements,
        },
        metrics,
        claims: ownership::Claims::new(redis, config.ownership.claim_ttl, redis_timeout),
    });
    let app = routes()
        .into_iter()
        .fold(Router::new(), |app, route| {
            tracing::debug!(method = %route.method, path = route.path, "public route");
            app.route(route.path, route.handler)
        })
        .fallback(not_found)
        .with_state(state)
        // The limit is enforced by `read_body` with a JSON 413 instead.
        .layer(DefaultBodyLimit::disable());

    let http_shutdown = CancellationToken::new();
    let http_addr = admin::serve_router_with(
        &config.http.listen,
        app,
        &config.http.limits,
        http_shutdown.clone(),
    )
    .await?;
    let admin_addr = admin::serve_with(
        &config.admin.listen,
        &config.admin.limits,
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

/// One route of the public API.
pub(crate) struct Route {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) handler: MethodRouter<Arc<AppState>>,
}

/// Every route of the public listener. The router is built from this list, and
/// a test checks each entry against `openapi.json`, so a route cannot be added
/// without being described. Admin endpoints are deliberately absent.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            path: "/v1/webhooks/{provider}",
            handler: post(webhooks::receive),
        },
        Route {
            method: Method::POST,
            path: "/v1/shipments",
            handler: post(shipments::register),
        },
        Route {
            method: Method::GET,
            path: "/v1/openapi.json",
            handler: get(openapi::serve),
        },
    ]
}

/// Unknown paths: 404 with the JSON error shape every other answer has.
async fn not_found() -> ApiError {
    ApiError::NotFound("no such route (see GET /v1/openapi.json)".into())
}

/// At most this much of an oversized body is read and thrown away before the 413
/// is sent. A server that answers while the sender is still writing, and then
/// closes, makes the sender's kernel see a reset: most HTTP clients report that
/// as a connection error and never read the 413, so the provider retries the
/// same oversized push forever instead of learning why it failed. Draining a
/// bounded amount (as nginx's lingering close does) lets the answer arrive;
/// anything larger is cut off.
const OVERSIZE_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// How long draining an oversized body may take, so a slow sender cannot hold a
/// connection open with a body we already refused.
const OVERSIZE_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a request body up to `limit` bytes.
///
/// - over `limit` (declared or actual) → 413; the excess is drained within
///   [`OVERSIZE_DRAIN_BYTES`] / [`OVERSIZE_DRAIN_TIME`] so the sender can read
///   the answer (see there), and is never buffered;
/// - a body that ends early (shorter than its `Content-Length`, or a broken
///   chunked encoding) → 400: what arrived is not what was sent, and must not
///   be written.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    tokio::time::timeout(timeout, read_body_unbounded(body, headers, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::RequestTimeout(format!(
                "request body not received within {} ms",
                timeout.as_millis()
            )))
        })
}

async fn read_body_unbounded(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt as _;

    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || ApiError::PayloadTooLarge(format!("body exceeds {limit} bytes"));
    let mut stream = body.into_data_stream();
    if let Some(declared) = declared.filter(|n| *n > limit) {
        if declared <= limit.saturating_add(OVERSIZE_DRAIN_BYTES) {
            drain(&mut stream).await;
        }
        return Err(too_large());
    }
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| {
            ApiError::BadRequest(format!(
                "request body could not be read in full (truncated in transit?): {err}"
            ))
        })?;
        if buffer.len().saturating_add(chunk.len()) > limit {
            drain(&mut stream).await;
            return Err(too_large());
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer)
}

/// Reads and discards the rest of a refused body, within the drain bounds.
async fn drain(stream: &mut axum::body::BodyDataStream) {
    use futures::StreamExt as _;

    let discard = async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            drained = drained.saturating_add(chunk.len());
            if drained > OVERSIZE_DRAIN_BYTES {
                break;
            }
        }
    };
    // Elapsed just means we stop draining; the 413 goes out either way.
    let _ = tokio::time::timeout(OVERSIZE_DRAIN_TIME, discard).await;
}

/// A random 128-bit id for tracing a record from ingest through the pipeline.
pub(crate) fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender that stops mid-body is answered 408 instead of holding the
    /// connection forever (paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_with_408() {
        let stalled = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let body = Body::from_stream(stalled);
        let result = read_body(
            body,
            &HeaderMap::new(),
            1024,
            std::time::Duration::from_secs(30),
        )
        .await;
        let err = result.expect_err("must time out");
        assert_eq!(err.http_status().as_u16(), 408, "{err}");
    }

    #[tokio::test]
    async fn a_complete_body_is_read() {
        let body = Body::from("hello");
        let bytes = read_body(
            body,
            &HeaderMap::new(),
            1024,
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("read");
        assert_eq!(bytes, b"hello");
    }
}
