//! The live follower: every notifier instance reads `tracking.updates` and
//! `tracking.alerts` in a group of its own (starting at the latest offset) and
//! fans records out to its own gRPC watchers. History comes from Redis, so a
//! follower never needs to replay the topic.

use std::sync::Arc;

use prost::Message;
use trackstream_proto::topics;
use trackstream_proto::v1::{Alert, ShipmentUpdate};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound};
use trackstream_runtime::order_log;

use crate::hub::Hub;

/// Publishes consumed updates by order and alerts by merchant.
pub struct FanOut {
    /// Watchers of orders.
    pub orders: Arc<Hub<ShipmentUpdate>>,
    /// Watchers of merchants' alerts.
    pub alerts: Arc<Hub<Alert>>,
}

impl BatchHandler for FanOut {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        for record in batch {
            if record.topic == topics::TRACKING_ALERTS {
                if let Ok(alert) = Alert::decode(record.payload.as_slice())
                    && !alert.merchant_id.is_empty()
                {
                    let merchant = alert.merchant_id.clone();
                    self.alerts.publish(&merchant, Arc::new(alert));
                }
            } else if let Ok(update) = ShipmentUpdate::decode(record.payload.as_slice()) {
                let order = order_log::order_ref(&update.merchant_id, &update.order_id);
                self.orders.publish(&order, Arc::new(update));
            }
        }
        Ok(())
    }
}
