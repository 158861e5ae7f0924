//! In-process fan-out of live records to watchers, with a bounded buffer each.
//!
//! A watcher whose buffer fills is cut off (never buffered without limit); its
//! stream then ends telling the client where to resume. Fast watchers are never
//! slowed by slow ones: publishing never waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

struct Watcher<T> {
    id: u64,
    tx: mpsc::Sender<Arc<T>>,
    lagged: Arc<AtomicBool>,
}

/// Watchers keyed by order ref (updates; `order_log::order_ref`) or merchant id (alerts).
pub struct Hub<T> {
    watchers: Mutex<HashMap<String, Vec<Watcher<T>>>>,
    next_id: AtomicU64,
    cutoffs: Counter,
}

impl<T> Default for Hub<T> {
    fn default() -> Self {
        Hub::new(Counter::default())
    }
}

/// A live subscription; unsubscribes when dropped.
pub struct Subscription<T> {
    /// Records as they arrive; closes when cut off.
    pub rx: mpsc::Receiver<Arc<T>>,
    /// Set when the subscription was cut off for falling behind.
    pub lagged: Arc<AtomicBool>,
    hub: Arc<Hub<T>>,
    key: String,
    id: u64,
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        self.hub.remove(&self.key, self.id);
    }
}

impl<T> Hub<T> {
    /// A hub counting the watchers it cuts off in `cutoffs` (counted when the
    /// buffer overflows, not when the slow client finally reads its status).
    pub fn new(cutoffs: Counter) -> Self {
        Hub {
            watchers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            cutoffs,
        }
    }

    /// Subscribes to `key` with a buffer of `capacity` records.
    pub fn subscribe(self: &Arc<Self>, key: &str, capacity: usize) -> Subscription<T> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lagged = Arc::new(AtomicBool::new(false));
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.entry(key.to_owned()).or_default().push(Watcher {
                id,
                tx,
                lagged: lagged.clone(),
            });
        }
        Subscription {
            rx,
            lagged,
            hub: self.clone(),
            key: key.to_owned(),
            id,
        }
    }

    /// Delivers `item` to every watcher of `key` without waiting; a watcher whose
    /// buffer is full is cut off.
    pub fn publish(&self, key: &str, item: Arc<T>) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        let Some(list) = watchers.get_mut(key) else {
            return;
        };
        list.retain(|w| match w.tx.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                w.lagged.store(true, Ordering::Release);
                self.cutoffs.inc();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if list.is_empty() {
            watchers.remove(key);
        }
    }

    /// Number of live watchers (a gauge).
    pub fn watchers(&self) -> usize {
        self.watchers
            .lock()
            .map(|w| w.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    fn remove(&self, key: &str, id: u64) {
        if let Ok(mut watchers) = self.watchers.lock()
            && let Some(list) = watchers.get_mut(key)
        {
            list.retain(|w| w.id != id);
            if list.is_empty() {
                watchers.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_watcher_is_cut_off_and_others_keep_receiving() {
        let cutoffs = Counter::default();
        let hub: Arc<Hub<u32>> = Arc::new(Hub::new(cutoffs.clone()));
        let mut fast = hub.subscribe("o1", 8);
        let slow = hub.subscribe("o1", 2);
        for i in 0..5 {
            hub.publish("o1", Arc::new(i));
            assert_eq!(fast.rx.recv().await.as_deref(), Some(&i));
        }
        assert!(slow.lagged.load(Ordering::Acquire));
        assert_eq!(cutoffs.get(), 1);
        assert!(!fast.lagged.load(Ordering::Acquire));
        assert_eq!(hub.watchers(), 1);
        drop(fast);
        assert_eq!(hub.watchers(), 0);
    }
}
