//! One WatchOrder stream: history after the client's `after_seq`, then live
//! updates, with the seam rules of the parent module's doc (skip what was
//! sent, fill holes from history) and the resume point on every way it ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tonic::Status;
use trackstream_proto::v1::ShipmentUpdate;
use trackstream_runtime::ApiError;
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use super::{HISTORY_PAGE, decode_updates, for_display, resume_status};

/// The state of one WatchOrder stream.
pub(super) struct OrderWatch {
    pub(super) conn: RedisConn,
    pub(super) reads: Arc<tokio::sync::Semaphore>,
    pub(super) order_id: String,
    pub(super) merchant_id: String,
    /// Highest sequence number handled (sent, or skipped as another merchant's).
    pub(super) last: u64,
    pub(super) tx: mpsc::Sender<Result<ShipmentUpdate, Status>>,
}

/// The client went away or was told about a failure: end the stream.
struct Ended;

impl OrderWatch {
    pub(super) async fn run(
        mut self,
        mut live: crate::hub::Subscription<ShipmentUpdate>,
        shutdown: trackstream_runtime::CancellationToken,
    ) {
        // Replay history after `after_seq`, then live, filling holes from history.
        if self.send_history(u64::MAX).await.is_err() {
            return;
        }
        // The client hanging up ends the watch (and frees its slot) at once, not
        // at the order's next update.
        let gone = self.tx.clone();
        loop {
            let next = tokio::select! {
                next = live.rx.recv() => next,
                () = gone.closed() => return,
                _ = shutdown.cancelled() => {
                    let last = self.last;
                    let status = Status::unavailable(format!(
                        "server shutting down; reconnect with after_seq={last}"
                    ));
                    let _ = self.tx.send(Err(resume_status(status, last))).await;
                    return;
                }
            };
            let Some(update) = next else {
                if live.lagged.load(Ordering::Acquire) {
                    let last = self.last;
                    let status = resume_status(
                        Status::resource_exhausted(format!(
                            "watcher fell behind; reconnect with after_seq={last}"
                        )),
                        last,
                    );
                    tracing::info!(last, "slow watcher cut off with resume point");
                    let _ = self.tx.send(Err(status)).await;
                }
                return;
            };
            if update.seq <= self.last {
                continue;
            }
            if update.seq > self.last + 1 && self.send_history(update.seq - 1).await.is_err() {
                return;
            }
            // History normally had everything below; if it did not (it never
            // should), the live update is still sent rather than dropped.
            if update.seq > self.last && self.send((*update).clone()).await.is_err() {
                return;
            }
        }
    }

    async fn send(&mut self, update: ShipmentUpdate) -> Result<(), Ended> {
        self.last = update.seq;
        if update.merchant_id != self.merchant_id {
            return Ok(());
        }
        self.tx
            .send(Ok(for_display(update)))
            .await
            .map_err(|_| Ended)
    }

    /// Sends stored updates with `last < seq <= upto`, advancing `last`.
    async fn send_history(&mut self, upto: u64) -> Result<(), Ended> {
        loop {
            let read = async {
                let _permit = self.reads.acquire().await.map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "shutting down"))
                })?;
                let order = order_log::order_ref(&self.merchant_id, &self.order_id);
                order_log::updates_after(&mut self.conn, &order, self.last, HISTORY_PAGE).await
            };
            let page = match read.await {
                Ok(page) => page,
                Err(err) => {
                    let last = self.last;
                    let status = resume_status(ApiError::from(err).into(), last);
                    let _ = self.tx.send(Err(status)).await;
                    return Err(Ended);
                }
            };
            let full = page.len() == HISTORY_PAGE;
            let before = self.last;
            for update in decode_updates(page) {
                if update.seq > upto {
                    return Ok(());
                }
                if update.seq > self.last {
                    self.send(update).await?;
                }
            }
            if !full || self.last == before {
                return Ok(());
            }
        }
    }
}
