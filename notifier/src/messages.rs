//! Buyer messages: one per milestone per order, written to `buyer.notifications`.
//!
//! Runs in the notifier's shared consumer group, so each update is handled by one
//! instance. Dedup is two-phase per order and milestone (`{o:O}:ms` hash:
//! `pending` before producing, `sent` after the broker acknowledged): a resend or
//! replay of a `sent` milestone is a no-op; a crash between the two re-sends the
//! message with the same `notification_id`, which gateways dedup on.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use redis::AsyncCommands;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, Channel, Milestone, Reason, Shipment, ShipmentUpdate,
    Status, UpdateKind,
};
use trackstream_proto::{time, topics};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord, Producer};
use trackstream_runtime::merchants::MerchantDirectory;
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use crate::config::MessagesConfig;
use crate::{mask, templates};

type Labels = Vec<(&'static str, String)>;

/// The buyer-message handler (also maintains the open-alerts index of orders).
pub struct Messenger {
    conn: RedisConn,
    producer: Producer,
    config: MessagesConfig,
    merchants: MerchantDirectory,
    sent: Family<Labels, Counter>,
    suppressed: Family<Labels, Counter>,
    index_alert: redis::Script,
}

/// Keeps the newest emission of each alert per order (`{o:O}:alerts`), ordered by
/// (state, tier), so a replayed OPENED cannot overwrite a RESOLVED.
const INDEX_ALERT_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(string.sub(current, 1, 8)) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%08d', tonumber(ARGV[2])) .. ARGV[3])
return 1
";

struct Pending {
    order_id: String,
    milestone: Milestone,
    record: OutRecord,
}

impl Messenger {
    /// A messenger writing through `producer`.
    pub fn new(
        conn: RedisConn,
        producer: Producer,
        config: MessagesConfig,
        merchants: MerchantDirectory,
        registry: &mut Registry,
    ) -> Self {
        let messenger = Messenger {
            conn,
            producer,
            config,
            merchants,
            sent: Family::default(),
            suppressed: Family::default(),
            index_alert: redis::Script::new(INDEX_ALERT_LUA),
        };
        registry.register(
            "buyer_messages",
            "Buyer messages sent, by milestone",
            messenger.sent.clone(),
        );
        registry.register(
            "buyer_messages_suppressed",
            "Milestones not sent because the order already had one (resend, replay, second parcel)",
            messenger.suppressed.clone(),
        );
        messenger
    }

    async fn on_update(
        &self,
        update: ShipmentUpdate,
    ) -> Result<Option<Pending>, redis::RedisError> {
        let Some(event) = update.event.as_ref() else {
            return Ok(None);
        };
        let Some(shipment) = update.shipment.as_ref() else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        // Remember the shipment for alert-driven messages of this order.
        let _: () = conn
            .set(
                order_log::key(&update.order_id, "shipment"),
                shipment.encode_to_vec(),
            )
            .await?;
        if update.late || update.kind != UpdateKind::Scan as i32 || shipment.is_return {
            return Ok(None);
        }
        let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
        let Some(milestone) = templates::milestone_for_status(status) else {
            return Ok(None);
        };
        let location = event
            .location
            .as_ref()
            .map(|l| l.text.as_str())
            .unwrap_or_default();
        self.claim(shipment, milestone, location, "", event.occurred_at)
            .await
    }

    async fn on_alert(&self, alert: Alert) -> Result<Option<Pending>, redis::RedisError> {
        if alert.order_id.is_empty() {
            return Ok(None);
        }
        let mut conn = self.conn.clone();
        let rank = alert.state * 1000 + i32::try_from(alert.tier).unwrap_or(999).min(999);
        let _: i64 = self
            .index_alert
            .key(order_log::key(&alert.order_id, "alerts"))
            .arg(&alert.alert_id)
            .arg(rank)
            .arg(alert.encode_to_vec())
            .invoke_async(&mut conn)
            .await?;
        if alert.state != AlertState::Opened as i32 {
            return Ok(None);
        }
        let milestone = match alert.rule.as_str() {
            "stalled_in_transit" | "promised_date_missed" => Milestone::Delayed,
            "carrier_exception" => Milestone::Exception,
            _ => return Ok(None),
        };
        let stored: Option<Vec<u8>> = conn
            .get(order_log::key(&alert.order_id, "shipment"))
            .await?;
        let Some(shipment) = stored.and_then(|b| Shipment::decode(b.as_slice()).ok()) else {
            return Ok(None);
        };
        if shipment.is_return {
            return Ok(None);
        }
        let locale = locale_of(&shipment, &self.config);
        let reason = templates::reason_text(
            &locale,
            Reason::try_from(alert.reason).unwrap_or(Reason::Unspecified),
            "",
        );
        self.claim(&shipment, milestone, "", &reason, alert.effective_at)
            .await
    }

    /// Claims the milestone for the order; renders the message if it is new.
    async fn claim(
        &self,
        shipment: &Shipment,
        milestone: Milestone,
        location: &str,
        reason: &str,
        at: Option<prost_types::Timestamp>,
    ) -> Result<Option<Pending>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let key = order_log::key(&shipment.order_id, "ms");
        let field = milestone.as_str_name();
        let claimed: bool = conn.hset_nx(&key, field, "pending").await?;
        if !claimed {
            let state: Option<String> = conn.hget(&key, field).await?;
            if state.as_deref() == Some("sent") {
                self.suppressed
                    .get_or_create(&vec![("milestone", field.to_owned())])
                    .inc();
                return Ok(None);
            }
        }
        let locale = locale_of(shipment, &self.config);
        let buyer = shipment.buyer.clone().unwrap_or_default();
        let contact = if buyer.phone.is_empty() {
            mask::email(&buyer.email)
        } else {
            mask::phone(&buyer.phone)
        };
        let merchant_name = if shipment.merchant_name.is_empty() {
            self.merchants
                .get(&shipment.merchant_id)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        } else {
            shipment.merchant_name.clone()
        };
        let vars = templates::Vars {
            merchant: &merchant_name,
            order_id: &shipment.order_id,
            waybill: &shipment.waybill,
            carrier: &shipment.carrier,
            location,
            reason,
            contact: &contact,
        };
        let text = templates::render(
            &self.config,
            &shipment.merchant_id,
            &locale,
            milestone,
            &vars,
        );
        let mut channels = vec![Channel::App as i32];
        if !buyer.phone.is_empty() {
            channels.push(Channel::Sms as i32);
            if locale.starts_with("zh") {
                channels.push(Channel::Wechat as i32);
            }
        }
        if !buyer.email.is_empty() {
            channels.push(Channel::Email as i32);
        }
        let now = time::to_proto(chrono::Utc::now());
        let notification = BuyerNotification {
            notification_id: format!(
                "{}:{}",
                shipment.order_id,
                field.trim_start_matches("MILESTONE_").to_ascii_lowercase()
            ),
            order_id: shipment.order_id.clone(),
            merchant_id: shipment.merchant_id.clone(),
            merchant_name,
            milestone: milestone as i32,
            locale,
            channels,
            contact_masked: contact,
            title: text.title,
            body: text.body,
            waybills: vec![shipment.waybill.clone()],
            created_at: Some(at.unwrap_or(now)),
            deliver_at: Some(now),
        };
        tracing::info!(order_id = %shipment.order_id, waybill = %shipment.waybill, milestone = field,
            "buyer message rendered");
        Ok(Some(Pending {
            order_id: shipment.order_id.clone(),
            milestone,
            record: OutRecord::new(
                topics::BUYER_NOTIFICATIONS,
                shipment.order_id.clone(),
                notification.encode_to_vec(),
            ),
        }))
    }
}

fn locale_of(shipment: &Shipment, config: &MessagesConfig) -> String {
    shipment
        .buyer
        .as_ref()
        .map(|b| b.locale.clone())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| config.default_locale.clone())
}

impl BatchHandler for Messenger {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let redis_err = |e: redis::RedisError| HandlerError(format!("redis: {e}"));
        let mut pending = Vec::new();
        for record in batch {
            let result = if record.topic == topics::TRACKING_ALERTS {
                match Alert::decode(record.payload.as_slice()) {
                    Ok(alert) => self.on_alert(alert).await.map_err(redis_err)?,
                    Err(err) => {
                        tracing::error!(%err, offset = record.offset, "undecodable alert skipped");
                        None
                    }
                }
            } else {
                match ShipmentUpdate::decode(record.payload.as_slice()) {
                    Ok(update) => self.on_update(update).await.map_err(redis_err)?,
                    Err(err) => {
                        tracing::error!(%err, offset = record.offset, "undecodable update skipped");
                        None
                    }
                }
            };
            pending.extend(result);
        }
        if pending.is_empty() {
            return Ok(());
        }
        let records = pending.iter().map(|p| p.record.clone()).collect();
        self.producer
            .send_all(records)
            .await
            .map_err(|e| HandlerError(format!("writing buyer messages: {e}")))?;
        let mut conn = self.conn.clone();
        for p in &pending {
            let _: () = conn
                .hset(
                    order_log::key(&p.order_id, "ms"),
                    p.milestone.as_str_name(),
                    "sent",
                )
                .await
                .map_err(redis_err)?;
            self.sent
                .get_or_create(&vec![("milestone", p.milestone.as_str_name().to_owned())])
                .inc();
        }
        Ok(())
    }
}
