//! The process-wide listener metrics: connections closed by each timeout,
//! cap episodes and open connections, in a registry of their own that every
//! `/metrics` answer appends (see the parent module's doc for why).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why the listener closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The request header did not arrive within `header_read_timeout`.
    HeaderRead,
    /// No request for `idle_timeout`.
    Idle,
    /// A request took longer than `request_timeout` (answered 408).
    Request,
}

impl CloseReason {
    pub(super) fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderRead => "header_read",
            CloseReason::Idle => "idle",
            CloseReason::Request => "request",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ListenerLabels {
    pub(super) listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClosedLabels {
    pub(super) listener: String,
    pub(super) reason: String,
}

/// The process-wide HTTP listener metrics.
pub(super) struct Metrics {
    pub(super) registry: Registry,
    pub(super) closed: Family<ClosedLabels, Counter>,
    pub(super) cap_reached: Family<ListenerLabels, Counter>,
    pub(super) open: Family<ListenerLabels, Gauge>,
}

pub(super) fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("trackstream_http");
        let closed = Family::<ClosedLabels, Counter>::default();
        let cap_reached = Family::<ListenerLabels, Counter>::default();
        let open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_closed",
            "Connections the listener closed itself, by reason (header_read, idle, request)",
            closed.clone(),
        );
        registry.register(
            "connection_cap_reached",
            "Times a listener reached max_connections and stopped accepting until one closed",
            cap_reached.clone(),
        );
        registry.register(
            "open_connections",
            "Connections a listener is serving now",
            open.clone(),
        );
        Metrics {
            registry,
            closed,
            cap_reached,
            open,
        }
    })
}

/// The listener metrics in the OpenMetrics text format, without the final
/// `# EOF` line, for `/metrics` to splice into the service's own.
pub(crate) fn encode_metrics() -> String {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &metrics().registry) {
        tracing::warn!(%err, "http listener metrics encoding failed");
    }
    match text.strip_suffix("# EOF\n") {
        Some(body) => body.to_owned(),
        None => text,
    }
}

/// Logs and counts a connection the listener closed itself.
pub(super) fn record_close(listener: &str, peer: SocketAddr, reason: CloseReason, after: Duration) {
    tracing::info!(
        listener,
        %peer,
        reason = reason.label(),
        after_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
        "closed connection: timeout"
    );
    metrics()
        .closed
        .get_or_create(&ClosedLabels {
            listener: listener.to_owned(),
            reason: reason.label().to_owned(),
        })
        .inc();
}
