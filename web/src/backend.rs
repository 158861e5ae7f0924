//! What the web face needs from the service that hosts it. The notifier
//! implements it over the same Redis reads, hubs and quotas its gRPC API
//! uses, so a page and a gRPC client see the same order the same way; the web
//! crate adds only what a browser needs (links, lookup, JSON, SSE, pages).

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use trackstream_proto::v1::{Alert, Incident, Order, Scorecards, Severity, ShipmentUpdate};
use trackstream_runtime::ApiError;

/// A signed-in merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// Dead letters of one stage and cause.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterCount {
    /// The stage that set the records aside.
    pub stage: String,
    /// Why.
    pub cause: String,
    /// How many.
    pub count: u64,
}

/// A stream of an order's updates (replay, then live; gap-free) or of a
/// merchant's alerts. It ends with an `Err` carrying `resume-after-seq` when the
/// watcher fell behind or the service is shutting down.
pub type Watch<T> = mpsc::Receiver<Result<T, tonic::Status>>;

/// The host service's side.
pub trait Backend: Send + Sync + 'static {
    /// The merchant an `Authorization: Bearer …` value signs in as.
    fn authenticate(&self, authorization: Option<&str>) -> Result<Merchant, ApiError>;

    /// The display name of a configured merchant; `None` for an unknown id.
    fn shop_name(&self, merchant_id: &str) -> Option<String>;

    /// The order, masked, if it exists and is the merchant's (`None` otherwise:
    /// one answer whether it is missing or another shop's).
    fn order(
        &self,
        merchant_id: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<Order>, ApiError>> + Send;

    /// The merchant's orders of the buyer with `buyer_key`, newest registration
    /// first, at most `limit`.
    fn buyer_orders(
        &self,
        merchant_id: &str,
        buyer_key: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;

    /// The merchant's orders holding `waybill` (any carrier).
    fn waybill_orders(
        &self,
        merchant_id: &str,
        waybill: &str,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;

    /// The buyer phones registered for the order — raw, for the last-4 check
    /// of a lookup only; never logged, never answered.
    fn order_phones(
        &self,
        merchant_id: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, ApiError>> + Send;

    /// The merchant's open alerts at or above `min`, newest first, at most `limit`.
    fn open_alerts(
        &self,
        merchant_id: &str,
        min: Severity,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Alert>, ApiError>> + Send;

    /// The order's updates after `after_seq`, then live (counted in the
    /// merchant's watcher quota).
    fn watch_order(
        &self,
        merchant_id: &str,
        order_id: &str,
        after_seq: u64,
    ) -> impl Future<Output = Result<Watch<ShipmentUpdate>, ApiError>> + Send;

    /// The merchant's alerts at or above `min`, live.
    fn watch_alerts(&self, merchant_id: &str, min: Severity) -> Result<Watch<Alert>, ApiError>;

    /// The merchant's incidents: open, and resolved within `days`.
    fn incidents(
        &self,
        merchant_id: &str,
        days: u32,
    ) -> impl Future<Output = Result<Vec<Incident>, ApiError>> + Send;

    /// The merchant's scorecards over `days` (and the platform baseline).
    fn scorecards(
        &self,
        merchant_id: &str,
        days: u32,
    ) -> impl Future<Output = Result<Scorecards, ApiError>> + Send;

    /// The merchant's records set aside on dead-letter topics, last 7 days.
    fn dead_letters(
        &self,
        merchant_id: &str,
    ) -> impl Future<Output = Result<Vec<DeadLetterCount>, ApiError>> + Send;

    /// Counts one attempt under `key` in a window of `window` shared by every
    /// instance; returns the count so far and how long the window still runs.
    fn count_attempt(
        &self,
        key: &str,
        window: Duration,
    ) -> impl Future<Output = Result<(u64, Duration), ApiError>> + Send;
}
