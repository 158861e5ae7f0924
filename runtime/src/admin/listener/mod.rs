//! One HTTP/1 listener with connection hygiene: a header-read timeout, an idle
//! timeout, a whole-request timeout and a connection cap ([`ListenerLimits`]).
//!
//! `axum::serve` has none of these (hyper's own header-read timeout needs a timer
//! axum does not set, and hyper has no idle timeout at all), so connections are
//! served here with hyper directly. Each connection has a small watchdog:
//!
//! - the IO wrapper notes the first byte of a request that is not yet
//!   dispatched — the header clock starts there;
//! - the service wrapper notes when a request is dispatched (header complete)
//!   and when its response is ready — between two requests the idle clock runs;
//! - the connection task sleeps until the running clock's deadline (woken early
//!   when the phase changes) and drops the connection when it passes.
//!
//! hyper's own header-read timer is not used: it starts as soon as a connection
//! waits for a request, so it would also cut idle keep-alive connections at the
//! header timeout and make a longer idle timeout meaningless.
//!
//! The cap is a semaphore taken *before* `accept`: at the cap the listener stops
//! accepting and new connections wait in the kernel's accept queue, costing the
//! process nothing; served clients are unaffected. Each time the cap is reached
//! is one log line and one count.
//!
//! Every connection closed by a timeout and every cap episode is a log line plus
//! a count in the process-wide [`metrics`] registry, which every `/metrics`
//! answer of the process appends (the listener is started by code that has
//! already shared its service registry, so it cannot register there).
//!
//! Layout: this file binds, accepts and runs connections; `watch` holds a
//! connection's watchdog state and IO wrapper; `metrics` the process-wide
//! listener metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ListenerLimits;
use crate::{ApiError, Error};

mod metrics;
mod watch;

pub(crate) use metrics::encode_metrics;
use metrics::{CloseReason, ListenerLabels, metrics, record_close};
use watch::{InFlight, Watch, WatchedIo};

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read: Duration,
    idle: Duration,
    request: Duration,
    max_connections: usize,
}

impl From<&ListenerLimits> for Limits {
    fn from(limits: &ListenerLimits) -> Self {
        Limits {
            header_read: limits.header_read_timeout,
            idle: limits.idle_timeout,
            request: limits.request_timeout,
            max_connections: limits.max_connections,
        }
    }
}

/// Binds `listen` and serves `app` with `limits` until `shutdown`; returns the
/// bound address. On shutdown it stops accepting, lets in-flight requests finish
/// and closes idle connections.
pub(crate) async fn serve(
    listen: &str,
    app: Router,
    limits: &ListenerLimits,
    shutdown: CancellationToken,
) -> Result<SocketAddr, Error> {
    limits.validate()?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let limits = Limits::from(limits);
    tokio::spawn(accept_loop(listener, addr, app, limits, shutdown));
    Ok(addr)
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let name = addr.to_string();
    let labels = ListenerLabels {
        listener: name.clone(),
    };
    // Permits beyond u32 cannot be awaited back at shutdown; no one needs more.
    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                tracing::warn!(
                    listener = %name,
                    max_connections = limits.max_connections,
                    "connection cap reached; new connections wait in the accept queue"
                );
                metrics().cap_reached.get_or_create(&labels).inc();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of
                    // spinning; the pending connections stay queued.
                    tracing::warn!(listener = %name, %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            listener: name.clone(),
            peer,
            limits,
            app: app.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            connection.run(stream).await;
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends: having them all back means
    // every in-flight request finished.
    let _all = slots.acquire_many(max).await;
    tracing::info!(listener = %name, "http listener stopped");
}

struct Connection {
    listener: String,
    peer: SocketAddr,
    limits: Limits,
    app: Router,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let labels = ListenerLabels {
            listener: self.listener.clone(),
        };
        let open = metrics().open.get_or_create(&labels).clone();
        open.inc();
        let watch = Arc::new(Watch::new());
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            watch: watch.clone(),
        });
        let service = RequestService {
            app: TowerToHyperService::new(self.app.clone()),
            watch: watch.clone(),
            timeout: self.limits.request,
            listener: self.listener.clone(),
            peer: self.peer,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The watchdog times headers (see the module doc); hyper's timer would
        // also cut idle keep-alive connections.
        builder.keep_alive(true).header_read_timeout(None);
        let mut conn = pin!(builder.serve_connection(io, service));
        let mut draining = false;
        loop {
            let deadline = watch.deadline(&self.limits);
            let changed = watch.changed.notified();
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(listener = %self.listener, peer = %self.peer, %err, "connection ended with an error");
                    }
                    break;
                }
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = changed => {}
                _ = sleep_until(deadline.map(|(at, _)| at)) => {
                    // Recheck: the phase may have moved on since the deadline was read.
                    if let Some((at, reason)) = watch.deadline(&self.limits)
                        && at <= Instant::now()
                    {
                        self.closed(reason);
                        break;
                    }
                }
            }
        }
        open.dec();
    }

    fn closed(&self, reason: CloseReason) {
        let after = match reason {
            CloseReason::HeaderRead => self.limits.header_read,
            CloseReason::Idle => self.limits.idle,
            CloseReason::Request => self.limits.request,
        };
        record_close(&self.listener, self.peer, reason, after);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The router behind a request timeout, reporting request boundaries to the
/// connection's watchdog.
#[derive(Clone)]
struct RequestService {
    app: TowerToHyperService<Router>,
    watch: Arc<Watch>,
    timeout: Duration,
    listener: String,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        self.watch.on_request();
        let in_flight = InFlight(self.watch.clone());
        // Handlers that need the client's address read it as axum's `ConnectInfo`.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let handled = self.app.call(request);
        let timeout = self.timeout;
        let listener = self.listener.clone();
        let peer = self.peer;
        Box::pin(async move {
            match tokio::time::timeout(timeout, handled).await {
                Ok(Ok(response)) => Ok(until_body_ends(response.map(Body::new), in_flight)),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    drop(in_flight);
                    record_close(&listener, peer, CloseReason::Request, timeout);
                    let mut response = ApiError::RequestTimeout(format!(
                        "request not completed within {} ms",
                        timeout.as_millis()
                    ))
                    .into_response();
                    // The rest of the body (if any) is not read: end the connection.
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    Ok(response)
                }
            }
        })
    }
}

/// An event stream (`text/event-stream`) is a request in progress until its
/// body ends — the client hangs up or the stream is over — so the idle clock
/// does not cut a live stream between two events; the request timeout covers
/// only the wait for its head. Any other response is done when its head is
/// ready (its body is already in memory), and keeps its length.
fn until_body_ends(response: Response, in_flight: InFlight) -> Response {
    let streaming = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !streaming {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(futures::StreamExt::map(
        body.into_data_stream(),
        move |chunk| {
            let _held = &in_flight;
            chunk
        },
    ));
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DEADLINE: Duration = Duration::from_secs(10);

    fn limits(header_ms: u64, idle_ms: u64, request_ms: u64, max: usize) -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            request_timeout: Duration::from_millis(request_ms),
            max_connections: max,
        }
    }

    async fn start(limits: &ListenerLimits) -> (SocketAddr, CancellationToken) {
        let app = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/hang", get(std::future::pending::<&'static str>))
            .route("/events", get(events));
        let shutdown = CancellationToken::new();
        let addr = serve("127.0.0.1:0", app, limits, shutdown.clone())
            .await
            .unwrap_or_else(|e| panic!("serve: {e}"));
        (addr, shutdown)
    }

    /// An event stream of 5 events 100 ms apart (longer than the tests' idle timeout).
    async fn events() -> Response {
        let ticks = futures::stream::unfold(0u32, |n| async move {
            if n == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, Infallible>(format!("data: {n}\n\n")), n + 1))
        });
        (
            [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(ticks),
        )
            .into_response()
    }

    async fn connect(addr: SocketAddr) -> TcpStream {
        TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"))
    }

    /// Everything the server sends until it closes the connection.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut text = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut text))
            .await
            .unwrap_or_else(|_| panic!("connection not closed"))
            .unwrap_or_else(|e| panic!("read: {e}"));
        String::from_utf8_lossy(&text).into_owned()
    }

    async fn get_once(addr: SocketAddr, path: &str) -> String {
        let mut stream = connect(addr).await;
        let request = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        read_to_close(&mut stream).await
    }

    #[tokio::test]
    async fn an_event_stream_is_not_idle_between_its_events() {
        // Idle timeout 50 ms, events 100 ms apart: a stream counted idle once
        // its head was sent would be cut after the first event.
        let (addr, shutdown) = start(&limits(5_000, 50, 5_000, 64)).await;
        let text = get_once(addr, "/events").await;
        for n in 0..5 {
            assert!(
                text.contains(&format!("data: {n}")),
                "event {n} missing: {text}"
            );
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn half_sent_header_is_closed_while_others_are_served() {
        let (addr, shutdown) = start(&limits(200, 60_000, 60_000, 64)).await;
        let mut slow = connect(addr).await;
        slow.write_all(b"GET /ok HTTP/1.1\r\nhost: t\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        assert!(get_once(addr, "/ok").await.starts_with("HTTP/1.1 200"));
        assert_eq!(read_to_close(&mut slow).await, "", "closed without answer");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn idle_keep_alive_connection_is_closed_after_its_response() {
        let (addr, shutdown) = start(&limits(60_000, 200, 60_000, 64)).await;
        let mut stream = connect(addr).await;
        stream
            .write_all(b"GET /ok HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let text = read_to_close(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok"), "{text}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn slow_handler_gets_408_and_connection_closed() {
        let (addr, shutdown) = start(&limits(60_000, 60_000, 200, 64)).await;
        let mut stream = connect(addr).await;
        stream
            .write_all(b"GET /hang HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let text = read_to_close(&mut stream).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("request_timeout"), "{text}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait_until_one_closes() {
        let (addr, shutdown) = start(&limits(60_000, 60_000, 60_000, 1)).await;
        let holder = connect(addr).await;
        let mut waiting = connect(addr).await;
        waiting
            .write_all(b"GET /ok HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut byte)).await;
        assert!(early.is_err(), "served while the cap was full");
        drop(holder);
        let text = read_to_close(&mut waiting).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn zero_limits_are_config_errors_naming_the_key() {
        let shutdown = CancellationToken::new();
        let err = serve("127.0.0.1:0", Router::new(), &limits(0, 1, 1, 1), shutdown)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("header_read_timeout"), "{err}");
    }
}
