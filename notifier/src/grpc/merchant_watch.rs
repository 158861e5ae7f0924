//! WatchAlerts and WatchIncidents streams: a merchant's live records from its
//! hub subscription, with no history (GetOrder and ListIncidents show the
//! current state), ending cleanly on hang-up, shutdown or cut-off.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tonic::Status;

use crate::hub::Subscription;

/// Feeds a merchant watch stream (WatchAlerts, WatchIncidents) from its live
/// subscription: the records `keep` accepts, as they arrive. Ends when the
/// client hangs up (at once, not at the next record), at shutdown
/// (UNAVAILABLE: reconnect elsewhere), or when the hub cut the watcher off for
/// falling behind (RESOURCE_EXHAUSTED with `lagged`).
pub(super) async fn forward_live<T: Clone>(
    mut live: Subscription<T>,
    tx: &mpsc::Sender<Result<T, Status>>,
    shutdown: &trackstream_runtime::CancellationToken,
    keep: impl Fn(&T) -> bool,
    lagged: &'static str,
) {
    loop {
        let next = tokio::select! {
            next = live.rx.recv() => next,
            () = tx.closed() => return,
            _ = shutdown.cancelled() => {
                let _ = tx.send(Err(Status::unavailable("server shutting down; reconnect"))).await;
                return;
            }
        };
        let Some(item) = next else { break };
        if !keep(&item) {
            continue;
        }
        if tx.send(Ok((*item).clone())).await.is_err() {
            return;
        }
    }
    if live.lagged.load(Ordering::Acquire) {
        let _ = tx.send(Err(Status::resource_exhausted(lagged))).await;
    }
}
