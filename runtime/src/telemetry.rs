//! Logs and metrics. Every service logs structured events with `tracing` (JSON by
//! default) and counts the same events in a Prometheus registry served on
//! `/metrics`, so an operator can go from a graph to the log lines behind it.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::AdminConfig;

/// Installs the global `tracing` subscriber. Idempotent: later calls (tests that
/// start several services in one process) are no-ops.
pub fn init_tracing(cfg: &AdminConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cfg.log_level.as_str()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if cfg.log_format == "pretty" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
    // Already installed: keep the first subscriber.
    drop(result);
}

/// A service's metric registry with the service name as prefix.
pub fn registry(service: &str) -> Registry {
    Registry::with_prefix(format!("trackstream_{service}"))
}

/// Encodes `registry` in the Prometheus text format.
pub fn encode(registry: &Arc<Registry>) -> String {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(%err, "metrics encoding failed");
    }
    text
}
