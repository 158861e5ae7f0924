//! The live follower: every notifier instance reads `tracking.updates`,
//! `tracking.alerts` and `tracking.incidents` in a group of its own (starting
//! at the latest offset) and fans records out to its own gRPC watchers: updates
//! by order, alerts and per-merchant incident records by merchant (the
//! platform-wide incident record has no merchant and goes to nobody). History
//! comes from Redis, so a follower never needs to replay the topic.

use std::sync::Arc;

use prost::Message;
use trackstream_proto::topics;
use trackstream_proto::v1::{Alert, Incident, ShipmentUpdate};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound};
use trackstream_runtime::order_log;

use crate::hub::Hub;

/// Publishes consumed updates by order and alerts by merchant.
pub struct FanOut {
    /// Watchers of orders.
    pub orders: Arc<Hub<ShipmentUpdate>>,
    /// Watchers of merchants' alerts.
    pub alerts: Arc<Hub<Alert>>,
    /// Watchers of merchants' incidents.
    pub incidents: Arc<Hub<Incident>>,
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
            } else if record.topic == topics::TRACKING_INCIDENTS {
                if let Ok(incident) = Incident::decode(record.payload.as_slice())
                    && !incident.merchant_id.is_empty()
                {
                    let merchant = incident.merchant_id.clone();
                    self.incidents.publish(&merchant, Arc::new(incident));
                }
            } else if let Ok(update) = ShipmentUpdate::decode(record.payload.as_slice()) {
                let order = order_log::order_ref(&update.merchant_id, &update.order_id);
                self.orders.publish(&order, Arc::new(update));
            }
        }
        Ok(())
    }
}
