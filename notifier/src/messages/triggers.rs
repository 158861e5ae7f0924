//! Milestones from inputs: a shipment update or an alert becomes a
//! [`Trigger`] (a parcel reaching a milestone); alerts also maintain the
//! order's open-alert index that `GetOrder` reads.

use prost::Message;
use trackstream_proto::keys;
use trackstream_proto::v1::{
    Alert, AlertState, Milestone, Reason, Shipment, ShipmentUpdate, Status, UpdateKind,
};
use trackstream_runtime::order_log;

use super::{Messenger, Trigger};
use crate::templates;

/// Keeps the newest emission of each alert per order (`{o:O}:alerts`), ordered by
/// (state, tier), so a replayed OPENED cannot overwrite a RESOLVED.
pub(super) const INDEX_ALERT_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(string.sub(current, 1, 8)) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%08d', tonumber(ARGV[2])) .. ARGV[3])
return 1
";

impl Messenger {
    pub(super) async fn on_update(
        &self,
        update: ShipmentUpdate,
    ) -> redis::RedisResult<Option<Trigger>> {
        let prediction = update.prediction;
        let (Some(event), Some(shipment)) = (update.event, update.shipment) else {
            return Ok(None);
        };
        let unregistered = self.outbox.record_parcel(&shipment, false).await?;
        if update.late {
            return Ok(None);
        }
        let milestone = if update.kind == UpdateKind::ReturnReceived as i32 {
            Milestone::ReturnReceived
        } else if update.kind == UpdateKind::Scan as i32 && !shipment.is_return {
            let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
            match templates::milestone_for_status(status) {
                Some(milestone) => milestone,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let location = event.location.map(|l| l.text).unwrap_or_default();
        Ok(Some(Trigger {
            shipment,
            milestone,
            registered: !unregistered,
            location,
            reason: Reason::Unspecified,
            at: event.occurred_at,
            prediction,
            incident: None,
        }))
    }

    pub(super) async fn on_alert(&self, alert: Alert) -> redis::RedisResult<Option<Trigger>> {
        if alert.order_id.is_empty() {
            return Ok(None);
        }
        let order = order_log::order_ref(&alert.merchant_id, &alert.order_id);
        let mut conn = self.conn.clone();
        let rank = alert.state * 1000 + i32::try_from(alert.tier).unwrap_or(999).min(999);
        let _: i64 = self
            .index_alert
            .key(order_log::key(&order, "alerts"))
            .arg(&alert.alert_id)
            .arg(rank)
            .arg(alert.encode_to_vec())
            .invoke_async(&mut conn)
            .await?;
        if let Some(web) = &self.web {
            web.index
                .alert(&alert, self.clock.now().timestamp_millis())
                .await?;
        }
        if alert.state != AlertState::Opened as i32 {
            return Ok(None);
        }
        let milestone = match alert.rule.as_str() {
            "stalled_in_transit"
            | "stalled_in_customs"
            | "promised_date_missed"
            | "out_for_delivery_not_delivered" => Milestone::Delayed,
            "carrier_exception" => Milestone::Exception,
            _ => return Ok(None),
        };
        let Some((shipment, registered)) = self
            .parcel_of(
                &alert.merchant_id,
                &alert.order_id,
                &alert.carrier,
                &alert.waybill,
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Trigger {
            shipment,
            milestone,
            registered,
            location: String::new(),
            reason: Reason::try_from(alert.reason).unwrap_or(Reason::Unspecified),
            at: alert.effective_at,
            prediction: None,
            incident: None,
        }))
    }

    /// The shipment an alert or incident about parcel `carrier`/`waybill` of
    /// `order_id` is messaged with, and whether it is the registration; `None`
    /// for a return (buyers get no delay message about their own return).
    pub(super) async fn parcel_of(
        &self,
        merchant_id: &str,
        order_id: &str,
        carrier: &str,
        waybill: &str,
    ) -> redis::RedisResult<Option<(Shipment, bool)>> {
        let order = order_log::order_ref(merchant_id, order_id);
        let waybill_key = keys::waybill_key(carrier, waybill);
        let known = match self.outbox.parcel(&order, &waybill_key).await? {
            Some(shipment) => Some(shipment),
            None => self
                .outbox
                .parcels(&order)
                .await?
                .into_iter()
                .find(|s| !s.is_return && s.merchant_id == merchant_id)
                .map(|mut s| {
                    s.carrier = carrier.to_owned();
                    s.waybill = waybill.to_owned();
                    s
                }),
        };
        Ok(match known {
            Some(shipment) if shipment.is_return => None,
            Some(shipment) => Some((shipment, true)),
            None => {
                // The notifier reads `shipments`, `tracking.updates`,
                // `tracking.alerts` and `tracking.incidents` independently, so
                // in a backlog an alert can come before anything else of its
                // parcel. Like an update, it leaves a contact-less copy (the
                // registration overwrites it) and its message waits the
                // catch-up settle for the registration instead of being dropped.
                let copy = Shipment {
                    merchant_id: merchant_id.to_owned(),
                    order_id: order_id.to_owned(),
                    carrier: carrier.to_owned(),
                    waybill: waybill.to_owned(),
                    ..Shipment::default()
                };
                self.outbox.record_parcel(&copy, false).await?;
                tracing::info!(
                    order_id,
                    waybill,
                    "alert before its parcel's registration: message waits for it"
                );
                Some((copy, false))
            }
        })
    }
}
