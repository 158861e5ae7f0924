//! ingest's internal events: each is logged and counted together.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters and histograms of the HTTP front door.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    items: Family<Labels, Counter>,
    latency: Histogram,
    conflicts: Counter,
    refused_items: Family<Labels, Counter>,
}

impl Metrics {
    /// Registers ingest's metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            items: Family::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            conflicts: Counter::default(),
            refused_items: Family::default(),
        };
        registry.register(
            "ownership_conflicts",
            "Registrations refused with 409 because a waybill is another merchant's",
            metrics.conflicts.clone(),
        );
        registry.register(
            "bound_account_refused_items",
            "Push items not written because the verified provider account is bound to merchants that do not own the waybill, by route",
            metrics.refused_items.clone(),
        );
        registry.register(
            "requests",
            "HTTP requests by route and outcome (accepted, unauthorized, bad_request, ...)",
            metrics.requests.clone(),
        );
        registry.register(
            "records_written",
            "Records acknowledged by Kafka, by route",
            metrics.items.clone(),
        );
        registry.register(
            "request_seconds",
            "Time from request to answer, Kafka acknowledgement included",
            metrics.latency.clone(),
        );
        metrics
    }

    /// A request was answered.
    pub fn answered(&self, route: &str, outcome: &str, items: usize, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        if items > 0 {
            self.items
                .get_or_create(&vec![("route", route.to_owned())])
                .inc_by(items as u64);
        }
        self.latency.observe(seconds);
        tracing::info!(route, outcome, items, seconds, "request answered");
    }
}

impl Metrics {
    /// A registration was refused: `carrier:waybill` belongs to another
    /// merchant. The other merchant is not named (not even in logs: the
    /// requester's support staff read them too).
    pub fn ownership_conflict(&self, merchant_id: &str, carrier: &str, waybill: &str) {
        self.conflicts.inc();
        tracing::warn!(
            merchant_id,
            carrier,
            waybill,
            "registration refused: waybill is registered by another merchant"
        );
    }

    /// A push item was not written: the verified account is bound to merchants
    /// that do not own the waybill (or nobody registered it yet).
    pub fn bound_refusal(&self, route: &str, account: &str, carrier: &str, waybill: &str) {
        self.refused_items
            .get_or_create(&vec![("route", route.to_owned())])
            .inc();
        tracing::warn!(
            route,
            account,
            carrier,
            waybill,
            "push item refused: the account is not bound to the waybill's merchant"
        );
    }
}
