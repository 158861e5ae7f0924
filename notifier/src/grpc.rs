//! The gRPC `TrackingService`: GetOrder, WatchOrder and WatchAlerts, each scoped to
//! the merchant of the caller's bearer token.
//!
//! WatchOrder has no gap and no duplicate across the replay/live seam: it
//! subscribes to live updates *before* reading history, skips live updates it
//! already sent (`seq <= last`), and fills any hole (`seq > last + 1`) from
//! history — the detector writes history before it produces, so the hole is
//! always there to read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use trackstream_proto::v1::tracking_service_server::TrackingService;
use trackstream_proto::v1::{
    Alert, AlertState, GetOrderRequest, Order, Parcel, ShipmentUpdate, WatchAlertsRequest,
    WatchOrderRequest,
};
use trackstream_proto::{keys, time};
use trackstream_runtime::ApiError;
use trackstream_runtime::merchants::{MerchantConfig, MerchantDirectory};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use crate::hub::Hub;
use crate::mask;

const HISTORY_PAGE: usize = 500;
const ORDER_LIMIT: usize = 10_000;

/// The service implementation.
pub struct Api {
    /// Redis, for history and ownership.
    pub conn: RedisConn,
    /// Merchants and tokens.
    pub merchants: MerchantDirectory,
    /// Live order watchers.
    pub orders: Arc<Hub<ShipmentUpdate>>,
    /// Live alert watchers.
    pub alerts: Arc<Hub<Alert>>,
    /// Per-watcher buffer.
    pub buffer: usize,
    /// Cancelled at shutdown: open watches end with UNAVAILABLE and a resume point
    /// so clients reconnect to another instance.
    pub shutdown: trackstream_runtime::CancellationToken,
}

fn resume_status(status: Status, last: u64) -> Status {
    let mut status = status;
    if let Ok(value) = last.to_string().parse() {
        status.metadata_mut().insert("resume-after-seq", value);
    }
    status
}

impl Api {
    fn merchant<T>(&self, request: &Request<T>) -> Result<&MerchantConfig, ApiError> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.merchants.authenticate(header)
    }

    /// Checks that `order_id` exists and belongs to `merchant`; otherwise
    /// NOT_FOUND, the same answer either way, so existence does not leak.
    async fn authorize_order(
        &self,
        merchant: &MerchantConfig,
        order_id: &str,
    ) -> Result<(), ApiError> {
        if order_id.is_empty() {
            return Err(ApiError::BadRequest("order_id is required".into()));
        }
        let mut conn = self.conn.clone();
        match order_log::owner(&mut conn, order_id).await? {
            Some(owner) if owner == merchant.id => Ok(()),
            _ => Err(ApiError::NotFound(format!("order {order_id:?} not found"))),
        }
    }
}

fn decode_updates(raw: Vec<Vec<u8>>) -> Vec<ShipmentUpdate> {
    raw.iter()
        .filter_map(|b| ShipmentUpdate::decode(b.as_slice()).ok())
        .collect()
}

fn for_display(mut update: ShipmentUpdate) -> ShipmentUpdate {
    if let Some(shipment) = update.shipment.as_mut() {
        mask::shipment(shipment);
    }
    update
}

#[tonic::async_trait]
impl TrackingService for Api {
    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let merchant = self.merchant(&request)?.clone();
        let order_id = request.into_inner().order_id;
        self.authorize_order(&merchant, &order_id).await?;
        let mut conn = self.conn.clone();
        let updates = decode_updates(
            order_log::updates_after(&mut conn, &order_id, 0, ORDER_LIMIT)
                .await
                .map_err(ApiError::from)?,
        );
        let mut parcels: BTreeMap<String, Parcel> = BTreeMap::new();
        let mut last_seq = 0;
        for update in updates {
            last_seq = last_seq.max(update.seq);
            let Some(event) = update.event.clone() else {
                continue;
            };
            let key = keys::waybill_key(&event.carrier, &event.waybill);
            let parcel = parcels.entry(key).or_default();
            let mut shipment = update.shipment.clone();
            if let Some(s) = shipment.as_mut() {
                mask::shipment(s);
            }
            parcel.shipment = shipment;
            parcel.current_status = update.current_status;
            if !update.late {
                parcel.last_event = Some(event.clone());
            }
            if event.estimated_delivery_at.is_some() {
                parcel.estimated_delivery_at = event.estimated_delivery_at;
            }
            if !parcel.timeline.iter().any(|e| e.event_id == event.event_id) {
                parcel.timeline.push(event);
            }
        }
        for parcel in parcels.values_mut() {
            parcel
                .timeline
                .sort_by_key(|e| (time::millis(e.occurred_at.as_ref()), e.event_id.clone()));
        }
        let stored: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(order_log::key(&order_id, "alerts"))
            .query_async(&mut conn)
            .await
            .map_err(ApiError::from)?;
        let open_alerts = stored
            .iter()
            .filter_map(|b| Alert::decode(b.get(8..)?).ok())
            .filter(|a| a.state != AlertState::Resolved as i32)
            .collect();
        Ok(Response::new(Order {
            order_id,
            merchant_id: merchant.id,
            parcels: parcels.into_values().collect(),
            open_alerts,
            last_seq,
        }))
    }

    type WatchOrderStream = ReceiverStream<Result<ShipmentUpdate, Status>>;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let merchant = self.merchant(&request)?.clone();
        let WatchOrderRequest {
            order_id,
            after_seq,
        } = request.into_inner();
        self.authorize_order(&merchant, &order_id).await?;
        // Subscribe first: anything produced from now on reaches us live.
        let mut live = self.orders.subscribe(&order_id, self.buffer);
        let (tx, rx) = mpsc::channel(self.buffer.max(1));
        let mut conn = self.conn.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("watch_order", order_id = %order_id, after_seq);
            let _entered = span.enter();
            drop(_entered);
            let mut last = after_seq;
            // Replay history after `after_seq`, then fill holes while live.
            if send_history(&mut conn, &order_id, &mut last, u64::MAX, &tx)
                .await
                .is_err()
            {
                return;
            }
            loop {
                let next = tokio::select! {
                    next = live.rx.recv() => next,
                    _ = shutdown.cancelled() => {
                        let status = Status::unavailable(format!(
                            "server shutting down; reconnect with after_seq={last}"
                        ));
                        let _ = tx.send(Err(resume_status(status, last))).await;
                        return;
                    }
                };
                let Some(update) = next else {
                    if live.lagged.load(Ordering::Acquire) {
                        let status = resume_status(
                            Status::resource_exhausted(format!(
                                "watcher fell behind; reconnect with after_seq={last}"
                            )),
                            last,
                        );
                        tracing::info!(parent: &span, last, "slow watcher cut off with resume point");
                        let _ = tx.send(Err(status)).await;
                    }
                    return;
                };
                if update.seq <= last {
                    continue;
                }
                if update.seq > last + 1
                    && send_history(&mut conn, &order_id, &mut last, update.seq - 1, &tx)
                        .await
                        .is_err()
                {
                    return;
                }
                if update.seq == last + 1 {
                    last = update.seq;
                    if tx.send(Ok(for_display((*update).clone()))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchAlertsStream = ReceiverStream<Result<Alert, Status>>;

    async fn watch_alerts(
        &self,
        request: Request<WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let merchant = self.merchant(&request)?.clone();
        let WatchAlertsRequest {
            merchant_id,
            min_severity,
        } = request.into_inner();
        if !merchant_id.is_empty() && merchant_id != merchant.id {
            return Err(ApiError::Forbidden("token is not valid for that merchant".into()).into());
        }
        let mut live = self.alerts.subscribe(&merchant.id, self.buffer);
        let (tx, rx) = mpsc::channel(self.buffer.max(1));
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = live.rx.recv() => next,
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("server shutting down; reconnect"))).await;
                        return;
                    }
                };
                let Some(alert) = next else { break };
                if alert.severity < min_severity {
                    continue;
                }
                if tx.send(Ok((*alert).clone())).await.is_err() {
                    return;
                }
            }
            if live.lagged.load(Ordering::Acquire) {
                let _ = tx
                    .send(Err(Status::resource_exhausted(
                        "alert watcher fell behind; reconnect",
                    )))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends stored updates with `last < seq <= upto`, advancing `last`. Errors mean
/// the client is gone or Redis failed (the client was told).
async fn send_history(
    conn: &mut RedisConn,
    order_id: &str,
    last: &mut u64,
    upto: u64,
    tx: &mpsc::Sender<Result<ShipmentUpdate, Status>>,
) -> Result<(), ()> {
    loop {
        let page = match order_log::updates_after(conn, order_id, *last, HISTORY_PAGE).await {
            Ok(page) => page,
            Err(err) => {
                let _ = tx.send(Err(ApiError::from(err).into())).await;
                return Err(());
            }
        };
        let full = page.len() == HISTORY_PAGE;
        for update in decode_updates(page) {
            if update.seq > upto {
                return Ok(());
            }
            *last = update.seq;
            tx.send(Ok(for_display(update))).await.map_err(|_| ())?;
        }
        if !full {
            return Ok(());
        }
    }
}
