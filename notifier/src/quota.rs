//! Watch-stream slots: an instance-wide limit (`grpc.max_watchers`) and a
//! per-merchant quota (`grpc.max_watchers_per_merchant`) over WatchOrder,
//! WatchAlerts and WatchIncidents together, so one merchant's token — leaked, or a client bug
//! reconnecting in a loop — cannot take every slot of an instance.
//!
//! A [`Slot`] is held by the task feeding a stream and frees both counts when
//! it is dropped, however the stream ends (client gone, cut off, shutdown).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use trackstream_runtime::ApiError;

/// Open watches, in total and per merchant.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_merchant: HashMap<String, usize>,
}

/// The watch slots of one instance.
#[derive(Clone)]
pub struct Watchers {
    counts: Arc<Mutex<Counts>>,
    max_watchers: usize,
    per_merchant: usize,
    gauge: Gauge,
    refused: Counter,
    refused_quota: Counter,
}

/// One open watch; frees its slot when dropped.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    merchant_id: String,
    gauge: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_merchant.get_mut(&self.merchant_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_merchant.remove(&self.merchant_id);
            }
        }
        self.gauge.dec();
    }
}

impl Watchers {
    /// Slots for `max_watchers` streams, at most `per_merchant` of one merchant.
    /// `gauge` counts open streams; `refused` and `refused_quota` count refusals
    /// at the instance limit and at a merchant's quota.
    pub fn new(
        max_watchers: usize,
        per_merchant: usize,
        gauge: Gauge,
        refused: Counter,
        refused_quota: Counter,
    ) -> Self {
        Watchers {
            counts: Arc::default(),
            max_watchers,
            per_merchant: per_merchant.max(1),
            gauge,
            refused,
            refused_quota,
        }
    }

    /// A slot for a watch of `merchant_id`: UNAVAILABLE at the instance limit
    /// (another instance can take it), RESOURCE_EXHAUSTED at the merchant's quota
    /// (no instance will: close a stream first).
    pub fn acquire(&self, merchant_id: &str) -> Result<Slot, ApiError> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.total >= self.max_watchers {
            drop(counts);
            self.refused.inc();
            tracing::info!(
                merchant_id,
                max_watchers = self.max_watchers,
                "watch refused: instance at max_watchers"
            );
            return Err(ApiError::Unavailable(
                "this instance is at its watcher limit; retry, another instance will take it"
                    .into(),
            ));
        }
        let held = counts.per_merchant.get(merchant_id).copied().unwrap_or(0);
        if held >= self.per_merchant {
            drop(counts);
            self.refused_quota.inc();
            tracing::info!(
                merchant_id,
                quota = self.per_merchant,
                "watch refused: merchant at its watcher quota"
            );
            return Err(ApiError::RateLimited {
                retry_after_secs: 1,
                reason: format!(
                    "merchant watcher quota exceeded: {held} of {} open WatchOrder/WatchAlerts/WatchIncidents streams \
                 on this instance (grpc.max_watchers_per_merchant); close a stream before opening another",
                    self.per_merchant
                ),
            });
        }
        counts.total += 1;
        *counts
            .per_merchant
            .entry(merchant_id.to_owned())
            .or_default() += 1;
        drop(counts);
        self.gauge.inc();
        Ok(Slot {
            counts: self.counts.clone(),
            merchant_id: merchant_id.to_owned(),
            gauge: self.gauge.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchant_at_its_quota_is_refused_while_others_still_watch() {
        let watchers = Watchers::new(
            4,
            2,
            Gauge::default(),
            Counter::default(),
            Counter::default(),
        );
        let a1 = watchers.acquire("a");
        let a2 = watchers.acquire("a");
        assert!(a1.is_ok() && a2.is_ok());
        let refused = watchers.acquire("a").err().map(|s| s.grpc_code());
        assert_eq!(refused, Some(tonic::Code::ResourceExhausted));
        let b1 = watchers.acquire("b");
        assert!(b1.is_ok());
        drop(a1);
        let again = watchers.acquire("a");
        assert!(again.is_ok(), "a closed stream frees its slot");
        let b2 = watchers.acquire("b");
        assert!(b2.is_ok());
        let full = watchers.acquire("c").err().map(|s| s.grpc_code());
        assert_eq!(full, Some(tonic::Code::Unavailable), "instance limit first");
    }
}
