//! The gRPC `TrackingService`: GetOrder, WatchOrder, WatchAlerts, GetScorecards,
//! ListIncidents and WatchIncidents, each scoped to the merchant of the caller's
//! bearer token.
//!
//! WatchOrder has no gap and no duplicate across the replay/live seam: it
//! subscribes to live updates *before* reading history, skips live updates it
//! already sent (`seq <= last`), and fills any hole (`seq > last + 1`) from
//! history — the detector writes history before it produces, so the hole is
//! always there to read. Live updates of one order come from several partitions
//! (one per parcel), so they may arrive out of sequence order; the same two rules
//! put them back in order.
//!
//! Every watcher has bounded buffers. One that falls behind is cut off and its
//! stream ends with RESOURCE_EXHAUSTED carrying `resume-after-seq` (metadata and
//! message): reconnecting with that `after_seq` continues exactly after the last
//! update it received. Shutdown ends streams the same way with UNAVAILABLE.
//!
//! Layout: this file holds the service, its unary call and the order view
//! (`build_order`, `decode_updates`); `order_watch` runs one WatchOrder
//! stream; `scorecards` answers GetScorecards; `incidents` answers
//! ListIncidents; `merchant_watch` feeds WatchAlerts and WatchIncidents
//! streams, which have no history.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use trackstream_proto::v1::tracking_service_server::TrackingService;
use trackstream_proto::v1::{
    Alert, AlertState, GetOrderRequest, Incident, Incidents, ListIncidentsRequest, Order, Parcel,
    ShipmentUpdate, WatchAlertsRequest, WatchIncidentsRequest, WatchOrderRequest,
};
use trackstream_proto::{keys, time};
use trackstream_runtime::ApiError;
use trackstream_runtime::merchants::{MerchantConfig, MerchantDirectory};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use crate::clock::Clock;
use crate::hub::Hub;
use crate::incidents::IncidentStore;
use crate::outbox::Outbox;
use crate::quota::Watchers;
use crate::{mask, validate};

pub mod incidents;
mod merchant_watch;
mod order_watch;
pub mod scorecards;

use merchant_watch::forward_live;
use order_watch::OrderWatch;

const HISTORY_PAGE: usize = 500;

/// Watch-stream metrics, exported on `/metrics`.
#[derive(Clone, Default)]
pub struct WatchMetrics {
    /// Open watch streams.
    pub watchers: Gauge,
    /// Watchers cut off for falling behind (counted by the hubs).
    pub cutoffs: Counter,
    /// Watches refused at the instance's limit.
    pub refused: Counter,
    /// Watches refused at a merchant's quota.
    pub refused_quota: Counter,
}

impl WatchMetrics {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_watchers",
            "Open WatchOrder, WatchAlerts and WatchIncidents streams",
            self.watchers.clone(),
        );
        registry.register(
            "grpc_watch_cutoffs",
            "Watch streams ended because the client fell behind (told where to resume)",
            self.cutoffs.clone(),
        );
        registry.register(
            "grpc_watch_refused",
            "Watch streams refused because the instance was at max_watchers",
            self.refused.clone(),
        );
        registry.register(
            "grpc_watch_refused_quota",
            "Watch streams refused because the merchant was at max_watchers_per_merchant",
            self.refused_quota.clone(),
        );
    }
}

/// The service implementation.
pub struct Api {
    /// Redis, for history and ownership.
    pub conn: RedisConn,
    /// Registered parcels of orders (kept by the messenger).
    pub outbox: Outbox,
    /// Merchants and tokens.
    pub merchants: MerchantDirectory,
    /// Live order watchers.
    pub orders: Arc<Hub<ShipmentUpdate>>,
    /// Live alert watchers.
    pub alerts: Arc<Hub<Alert>>,
    /// Live incident watchers (by merchant).
    pub incidents: Arc<Hub<Incident>>,
    /// Merchants' incidents and orders' incident links (kept by the messenger).
    pub incident_store: IncidentStore,
    /// Now, for ListIncidents' look back (the notifier's clock).
    pub clock: Arc<dyn Clock>,
    /// Per-watcher buffer.
    pub buffer: usize,
    /// Watch slots: the instance limit and the per-merchant quota.
    pub watchers: Watchers,
    /// Bounds concurrent Redis reads of the API, so a reconnect storm queues
    /// here instead of timing out on the shared Redis connection.
    pub reads: Arc<tokio::sync::Semaphore>,
    /// Metrics.
    pub metrics: WatchMetrics,
    /// Cancelled at shutdown: open watches end with UNAVAILABLE and a resume point
    /// so clients reconnect to another instance.
    pub shutdown: trackstream_runtime::CancellationToken,
}

async fn read_permit(
    reads: &tokio::sync::Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    reads
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("shutting down".into()))
}

/// `status` with the resume point in its metadata (`resume-after-seq`).
pub fn resume_status(status: Status, last: u64) -> Status {
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

    /// Checks that `order_id` exists and belongs to `merchant` (it has recorded
    /// updates, or registered parcels of that merchant); otherwise NOT_FOUND, the
    /// same answer either way, so existence does not leak.
    async fn authorize_order(
        &self,
        merchant: &MerchantConfig,
        order_id: &str,
    ) -> Result<(), ApiError> {
        validate::order_id(order_id)?;
        let order = order_log::order_ref(&merchant.id, order_id);
        let _permit = read_permit(&self.reads).await?;
        let mut conn = self.conn.clone();
        let visible = match order_log::owner(&mut conn, &order).await? {
            Some(owner) => owner == merchant.id,
            None => self
                .outbox
                .parcels(&order)
                .await?
                .iter()
                .any(|s| s.merchant_id == merchant.id),
        };
        if visible {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!("order {order_id:?} not found")))
        }
    }
}

impl Api {
    /// The order as `GetOrder` answers it (contacts masked, open alerts linked
    /// to their incidents). The caller has authorized the order.
    pub async fn read_order(&self, merchant_id: &str, order_id: &str) -> Result<Order, ApiError> {
        let order = order_log::order_ref(merchant_id, order_id);
        let _permit = read_permit(&self.reads).await?;
        let mut conn = self.conn.clone();
        let mut updates = Vec::new();
        let mut after = 0;
        loop {
            let raw = order_log::updates_after(&mut conn, &order, after, HISTORY_PAGE).await?;
            let full = raw.len() == HISTORY_PAGE;
            let page = decode_updates(raw);
            let next = page.last().map(|u| u.seq);
            updates.extend(page);
            match next {
                Some(seq) if full && seq > after => after = seq,
                _ => break,
            }
        }
        let registrations = self.outbox.parcels(&order).await?;
        let stored: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(order_log::key(&order, "alerts"))
            .query_async(&mut conn)
            .await?;
        let alerts = stored
            .iter()
            .filter_map(|b| Alert::decode(b.get(8..)?).ok())
            .collect();
        let links = self.incident_store.links(&order).await?;
        let mut built = build_order(order_id, merchant_id, updates, registrations, alerts);
        incidents::link_alerts(&mut built.open_alerts, &links);
        Ok(built)
    }

    /// Starts a `WatchOrder` stream of the merchant's order after `after_seq`
    /// (in the merchant's watcher quota): the gRPC call and the web face's
    /// event stream both run on it.
    pub async fn open_order_watch(
        &self,
        merchant: &MerchantConfig,
        order_id: String,
        after_seq: u64,
    ) -> Result<mpsc::Receiver<Result<ShipmentUpdate, Status>>, ApiError> {
        validate::order_id(&order_id)?;
        let slot = self.watchers.acquire(&merchant.id)?;
        self.authorize_order(merchant, &order_id).await?;
        // Subscribe first: anything produced from now on reaches us live.
        let live = self
            .orders
            .subscribe(&order_log::order_ref(&merchant.id, &order_id), self.buffer);
        let (tx, rx) = mpsc::channel(self.buffer.max(1));
        let watch = OrderWatch {
            conn: self.conn.clone(),
            reads: self.reads.clone(),
            order_id,
            merchant_id: merchant.id.clone(),
            last: after_seq,
            tx,
        };
        let span = tracing::info_span!("watch_order", order_id = %watch.order_id, after_seq);
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                let _slot = slot;
                watch.run(live, shutdown).await;
            }
            .instrument(span),
        );
        Ok(rx)
    }

    /// Starts a `WatchAlerts` stream of the merchant's alerts at or above
    /// `min_severity` (in its watcher quota).
    pub fn open_alert_watch(
        &self,
        merchant_id: &str,
        min_severity: i32,
    ) -> Result<mpsc::Receiver<Result<Alert, Status>>, ApiError> {
        let merchant = merchant_id.to_owned();
        self.open_merchant_watch(
            &self.alerts,
            merchant_id,
            move |alert: &Alert| alert.severity >= min_severity && alert.merchant_id == merchant,
            "alert watcher fell behind; reconnect (GetOrder shows open alerts)",
        )
    }

    /// A merchant's live stream from `hub` (WatchAlerts, WatchIncidents): a
    /// slot of its watcher quota, a hub subscription, and the records `keep`
    /// accepts forwarded until hang-up, shutdown or cut-off.
    fn open_merchant_watch<T: Clone + Send + Sync + 'static>(
        &self,
        hub: &Arc<Hub<T>>,
        merchant_id: &str,
        keep: impl Fn(&T) -> bool + Send + 'static,
        lagged: &'static str,
    ) -> Result<mpsc::Receiver<Result<T, Status>>, ApiError> {
        let slot = self.watchers.acquire(merchant_id)?;
        let live = hub.subscribe(merchant_id, self.buffer);
        let (tx, rx) = mpsc::channel(self.buffer.max(1));
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            forward_live(live, &tx, &shutdown, keep, lagged).await;
        });
        Ok(rx)
    }

    /// Whether the order is the merchant's (the same rule as every call).
    pub async fn visible(
        &self,
        merchant: &MerchantConfig,
        order_id: &str,
    ) -> Result<bool, ApiError> {
        match self.authorize_order(merchant, order_id).await {
            Ok(()) => Ok(true),
            Err(ApiError::NotFound(_) | ApiError::BadRequest(_)) => Ok(false),
            Err(err) => Err(err),
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

/// Builds an order snapshot from its update log and registered parcels. Parcels
/// registered but not yet scanned are PENDING; a parcel's shipment is its latest
/// registration (which carries a changed promised date even without a new scan).
pub fn build_order(
    order_id: &str,
    merchant_id: &str,
    updates: Vec<ShipmentUpdate>,
    registrations: Vec<trackstream_proto::v1::Shipment>,
    open_alerts: Vec<Alert>,
) -> Order {
    use trackstream_proto::v1::Status as TrackingStatus;
    let mut parcels: BTreeMap<String, Parcel> = BTreeMap::new();
    let mut last_seq = 0;
    for update in updates {
        last_seq = last_seq.max(update.seq);
        if update.merchant_id != merchant_id {
            continue;
        }
        let Some(event) = update.event.clone() else {
            continue;
        };
        let key = keys::waybill_key(&event.carrier, &event.waybill);
        let parcel = parcels.entry(key).or_default();
        if update.shipment.is_some() {
            parcel.shipment = update.shipment.clone();
        }
        parcel.current_status = update.current_status;
        if !update.late && update.kind == trackstream_proto::v1::UpdateKind::Scan as i32 {
            // The latest prediction; a delivered parcel's update has none.
            parcel.prediction = update.prediction.clone();
        }
        if !update.late {
            if event.estimated_delivery_at.is_some() {
                parcel.estimated_delivery_at = event.estimated_delivery_at;
            }
            parcel.last_event = Some(event.clone());
        }
        if !parcel.timeline.iter().any(|e| e.event_id == event.event_id) {
            parcel.timeline.push(event);
        }
    }
    for shipment in registrations {
        if shipment.merchant_id != merchant_id {
            continue;
        }
        let key = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        let parcel = parcels.entry(key).or_insert_with(|| Parcel {
            current_status: TrackingStatus::Pending as i32,
            ..Parcel::default()
        });
        let newer = parcel.shipment.as_ref().is_none_or(|s| {
            time::millis(s.registered_at.as_ref()) <= time::millis(shipment.registered_at.as_ref())
        });
        if newer {
            parcel.shipment = Some(shipment);
        }
    }
    let mut parcels: Vec<Parcel> = parcels.into_values().collect();
    for parcel in &mut parcels {
        parcel
            .timeline
            .sort_by_key(|e| (time::millis(e.occurred_at.as_ref()), e.event_id.clone()));
        if let Some(shipment) = parcel.shipment.as_mut() {
            mask::shipment(shipment);
        }
    }
    // Outbound parcels first, then returns; each group by waybill key (stable).
    parcels.sort_by_key(|p| p.shipment.as_ref().is_some_and(|s| s.is_return));
    Order {
        order_id: order_id.to_owned(),
        merchant_id: merchant_id.to_owned(),
        parcels,
        open_alerts: open_alerts
            .into_iter()
            .filter(|a| a.state != AlertState::Resolved as i32 && a.merchant_id == merchant_id)
            .collect(),
        last_seq,
    }
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
        Ok(Response::new(
            self.read_order(&merchant.id, &order_id).await?,
        ))
    }

    async fn get_scorecards(
        &self,
        request: Request<trackstream_proto::v1::GetScorecardsRequest>,
    ) -> Result<Response<trackstream_proto::v1::Scorecards>, Status> {
        let merchant = self.merchant(&request)?.clone();
        let _permit = read_permit(&self.reads).await?;
        let today = chrono::Utc::now().timestamp().div_euclid(86_400);
        let cards =
            scorecards::scorecards(&self.conn, &merchant.id, request.get_ref(), today).await?;
        Ok(Response::new(cards))
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
        let rx = self
            .open_order_watch(&merchant, order_id, after_seq)
            .await?;
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
        validate::merchant_id(&merchant_id)?;
        if !merchant_id.is_empty() && merchant_id != merchant.id {
            return Err(ApiError::Forbidden("token is not valid for that merchant".into()).into());
        }
        let rx = self.open_alert_watch(&merchant.id, min_severity)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<Incidents>, Status> {
        let merchant = self.merchant(&request)?.clone();
        let _permit = read_permit(&self.reads).await?;
        let now = self.clock.now();
        let listed =
            incidents::list(&self.incident_store, &merchant.id, request.get_ref(), now).await?;
        Ok(Response::new(listed))
    }

    type WatchIncidentsStream = ReceiverStream<Result<Incident, Status>>;

    async fn watch_incidents(
        &self,
        request: Request<WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        let merchant_id = self.merchant(&request)?.id.clone();
        let keep_id = merchant_id.clone();
        let rx = self.open_merchant_watch(
            &self.incidents,
            &merchant_id,
            move |incident: &Incident| incident.merchant_id == keep_id,
            "incident watcher fell behind; reconnect (ListIncidents shows the current state)",
        )?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trackstream_proto::v1::{BuyerContact, Shipment, Status as S, TrackingEvent};

    fn shipment(waybill: &str, is_return: bool, registered_ms: i64) -> Shipment {
        Shipment {
            order_id: "O".into(),
            merchant_id: "m".into(),
            carrier: "sf".into(),
            waybill: waybill.into(),
            is_return,
            registered_at: Some(time::from_millis(registered_ms)),
            promised_delivery_at: Some(time::from_millis(registered_ms + 86_400_000)),
            buyer: Some(BuyerContact {
                phone: "13812345678".into(),
                email: "john@example.com".into(),
                ..BuyerContact::default()
            }),
            ..Shipment::default()
        }
    }

    fn update(seq: u64, waybill: &str, status: S, at_ms: i64, late: bool) -> ShipmentUpdate {
        ShipmentUpdate {
            seq,
            order_id: "O".into(),
            merchant_id: "m".into(),
            event: Some(TrackingEvent {
                event_id: format!("e{seq}"),
                carrier: "sf".into(),
                waybill: waybill.into(),
                status: status as i32,
                occurred_at: Some(time::from_millis(at_ms)),
                ..TrackingEvent::default()
            }),
            current_status: status as i32,
            late,
            shipment: Some(shipment(waybill, false, 0)),
            ..ShipmentUpdate::default()
        }
    }

    #[test]
    fn an_order_shows_scanned_unscanned_and_return_parcels_with_newest_registration() {
        let updates = vec![
            update(1, "A", S::PickedUp, 1_000, false),
            update(2, "A", S::InTransit, 3_000, false),
            // A late scan is in the timeline but does not become the last event
            // (and the detector does not move the status back for it).
            ShipmentUpdate {
                current_status: S::InTransit as i32,
                ..update(3, "A", S::InfoReceived, 500, true)
            },
        ];
        let registrations = vec![
            shipment("A", false, 5_000),
            shipment("B", false, 0),
            shipment("R", true, 0),
        ];
        let order = build_order("O", "m", updates, registrations, Vec::new());
        assert_eq!(order.last_seq, 3);
        let summary: Vec<(String, i32, bool)> = order
            .parcels
            .iter()
            .map(|p| {
                let s = p.shipment.clone().unwrap_or_default();
                (s.waybill, p.current_status, s.is_return)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("A".to_owned(), S::InTransit as i32, false),
                ("B".to_owned(), S::Pending as i32, false),
                ("R".to_owned(), S::Pending as i32, true),
            ]
        );
        let a = &order.parcels[0];
        let times: Vec<i64> = a
            .timeline
            .iter()
            .map(|e| time::millis(e.occurred_at.as_ref()))
            .collect();
        assert_eq!(times, [500, 1_000, 3_000]);
        assert_eq!(
            a.last_event.as_ref().map(|e| e.status),
            Some(S::InTransit as i32)
        );
        let shipment = a.shipment.clone().unwrap_or_default();
        assert_eq!(
            time::millis(shipment.promised_delivery_at.as_ref()),
            5_000 + 86_400_000,
            "the newest registration's promise"
        );
        let buyer = shipment.buyer.unwrap_or_default();
        assert_eq!(
            (buyer.phone.as_str(), buyer.email.as_str()),
            ("138****5678", "j***@example.com")
        );
    }

    #[test]
    fn another_merchants_records_never_appear() {
        let mut foreign = update(2, "X", S::Delivered, 2_000, false);
        foreign.merchant_id = "other".into();
        let mut foreign_reg = shipment("Y", false, 0);
        foreign_reg.merchant_id = "other".into();
        let order = build_order(
            "O",
            "m",
            vec![update(1, "A", S::PickedUp, 1_000, false), foreign],
            vec![foreign_reg],
            vec![
                Alert {
                    merchant_id: "other".into(),
                    state: AlertState::Opened as i32,
                    ..Alert::default()
                },
                Alert {
                    merchant_id: "m".into(),
                    state: AlertState::Resolved as i32,
                    ..Alert::default()
                },
            ],
        );
        assert_eq!(order.parcels.len(), 1);
        assert!(order.open_alerts.is_empty());
    }
}
