//! The consumer side: decode a batch, store its incident records (split by
//! order), group it by order, apply each order's inputs in offset order
//! (several orders at once), dead-letter what cannot be decoded, and send what
//! became due.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message;
use redis::AsyncCommands;
use trackstream_proto::v1::{AffectedParcel, Alert, Incident, Milestone, Shipment, ShipmentUpdate};
use trackstream_proto::{keys, topics};
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use super::{Messenger, ORDERS_IN_FLIGHT};
use crate::lifecycle;

/// One decoded input record.
pub(super) enum Input {
    Shipment(Box<Shipment>),
    Alert(Box<Alert>),
    Update(Box<ShipmentUpdate>),
    /// A record of `tracking.incidents` as decoded; stored and split by order
    /// before the batch is grouped (`incident`).
    IncidentRecord(Box<Incident>),
    /// One order's share of a current per-merchant incident record.
    Incident {
        incident: Arc<Incident>,
        parcels: Vec<AffectedParcel>,
    },
}

impl Input {
    /// Decodes `record` by topic. An undecodable record can never be handled:
    /// the caller dead-letters it rather than retrying it forever or dropping it
    /// silently.
    fn decode(record: &Inbound) -> Result<Input, prost::DecodeError> {
        let payload = record.payload.as_slice();
        if record.topic == topics::SHIPMENTS {
            Shipment::decode(payload).map(|s| Input::Shipment(Box::new(s)))
        } else if record.topic == topics::TRACKING_ALERTS {
            Alert::decode(payload).map(|a| Input::Alert(Box::new(a)))
        } else if record.topic == topics::TRACKING_INCIDENTS {
            Incident::decode(payload).map(|i| Input::IncidentRecord(Box::new(i)))
        } else {
            ShipmentUpdate::decode(payload).map(|update| Input::Update(Box::new(update)))
        }
    }

    /// The merchant-scoped order the input belongs to (empty order id: none).
    fn order_ref(&self) -> Option<String> {
        let (merchant, order) = match self {
            Input::Shipment(shipment) => (&shipment.merchant_id, &shipment.order_id),
            Input::Alert(alert) => (&alert.merchant_id, &alert.order_id),
            Input::Update(update) => (&update.merchant_id, &update.order_id),
            Input::IncidentRecord(_) => return None,
            Input::Incident { incident, parcels } => {
                (&incident.merchant_id, &parcels.first()?.order_id)
            }
        };
        (!order.is_empty()).then(|| order_log::order_ref(merchant, order))
    }

    /// The waybill key of the parcel this input says is final, if it does.
    fn final_parcel(&self) -> Option<String> {
        let Input::Update(update) = self else {
            return None;
        };
        if !lifecycle::is_final(update) {
            return None;
        }
        match (&update.shipment, &update.event) {
            (Some(shipment), _) => Some(keys::waybill_key(&shipment.carrier, &shipment.waybill)),
            (None, Some(event)) => Some(keys::waybill_key(&event.carrier, &event.waybill)),
            (None, None) => None,
        }
    }
}

/// One order's inputs of a batch, in offset order.
struct OrderInputs {
    order_ref: String,
    inputs: Vec<Input>,
    final_parcels: Vec<String>,
}

impl Messenger {
    /// Applies one order's inputs in order; returns the milestones that became
    /// due to send.
    async fn apply_order(
        &self,
        inputs: Vec<Input>,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Vec<(String, Milestone)>> {
        let mut due = Vec::new();
        for input in inputs {
            let triggers = match input {
                Input::Shipment(shipment) => {
                    self.outbox.record_parcel(&shipment, true).await?;
                    if let Some(web) = &self.web {
                        web.index.registered(&shipment).await?;
                    }
                    Vec::new()
                }
                Input::Alert(alert) => self.on_alert(*alert).await?.into_iter().collect(),
                Input::Update(update) => self.on_update(*update).await?.into_iter().collect(),
                Input::Incident { incident, parcels } => {
                    self.on_incident(&incident, &parcels).await?
                }
                // Split before grouping (`expand_incidents`); never here.
                Input::IncidentRecord(_) => Vec::new(),
            };
            for trigger in triggers {
                if let Some(ready) = self.hold(trigger, now).await?
                    && !due.contains(&ready)
                {
                    due.push(ready);
                }
            }
        }
        Ok(due)
    }

    /// Dead-letters the batch's undecodable records. A letter that cannot be
    /// produced for a retriable reason fails the batch (retried); one refused for
    /// good is logged and counted by the producer, and the batch moves on.
    async fn dead_letter(&self, letters: Vec<OutRecord>) -> Result<(), HandlerError> {
        if letters.is_empty() {
            return Ok(());
        }
        match self.producer.send_all(letters).await {
            Ok(()) => Ok(()),
            Err(err) if err.is_permanent() => {
                tracing::error!(%err, "dead letter refused by the broker; input record skipped");
                Ok(())
            }
            Err(err) => Err(HandlerError(format!("dead letters: {err}"))),
        }
    }
}

impl BatchHandler for Messenger {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let now = self.clock.now();
        let mut orders: Vec<OrderInputs> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut letters = Vec::new();
        let mut orphans = Vec::new();
        let mut decoded = Vec::with_capacity(batch.len());
        for record in batch {
            match Input::decode(record) {
                Ok(input) => decoded.push(input),
                Err(err) => {
                    letters.push(self.letters.letter(record, "undecodable", &err.to_string()));
                }
            }
        }
        self.dead_letter(letters).await?;
        // Incident records are merchant-wide: stored first, in batch order,
        // then applied as per-order inputs like the rest.
        let decoded = self
            .expand_incidents(decoded, now)
            .await
            .map_err(|e| HandlerError(format!("redis: {e}")))?;
        for input in decoded {
            // Inputs without an order (nothing to message) are still applied.
            let Some(order_ref) = input.order_ref() else {
                orphans.push(input);
                continue;
            };
            let slot = *index.entry(order_ref.clone()).or_insert_with(|| {
                orders.push(OrderInputs {
                    order_ref,
                    inputs: Vec::new(),
                    final_parcels: Vec::new(),
                });
                orders.len() - 1
            });
            if let Some(parcel) = input.final_parcel()
                && !orders[slot].final_parcels.contains(&parcel)
            {
                orders[slot].final_parcels.push(parcel);
            }
            orders[slot].inputs.push(input);
        }
        let mut touches = Vec::with_capacity(orders.len());
        let mut work = Vec::with_capacity(orders.len() + 1);
        for order in orders {
            touches.push((order.order_ref, order.final_parcels));
            work.push(order.inputs);
        }
        if !orphans.is_empty() {
            work.push(orphans);
        }
        let applied: Vec<redis::RedisResult<Vec<(String, Milestone)>>> =
            futures::stream::iter(work.into_iter().map(|inputs| self.apply_order(inputs, now)))
                .buffer_unordered(ORDERS_IN_FLIGHT)
                .collect()
                .await;
        let mut due: Vec<(String, Milestone)> = Vec::new();
        for result in applied {
            // Any failure retries the whole batch; what was applied is idempotent.
            due.extend(result.map_err(|e| HandlerError(format!("redis: {e}")))?);
        }
        // Held state is durable: sending is retried by the flusher if this fails.
        self.flush(due, now).await;
        // Expiry last, so a message is produced before its order can expire.
        let now_ms = now.timestamp_millis();
        let touched: Vec<redis::RedisResult<i64>> = futures::stream::iter(touches)
            .map(|(order_ref, finals)| async move {
                self.lifecycle.touch(&order_ref, &finals, now_ms).await
            })
            .buffer_unordered(ORDERS_IN_FLIGHT)
            .collect()
            .await;
        for result in touched {
            result.map_err(|e| HandlerError(format!("redis: {e}")))?;
        }
        Ok(())
    }
}

/// Reads the held state of an order's milestone, for tests and tooling.
pub async fn milestone_state(
    conn: &mut RedisConn,
    order_id: &str,
    milestone: Milestone,
) -> redis::RedisResult<Option<String>> {
    conn.hget(order_log::key(order_id, "ms"), milestone.as_str_name())
        .await
}
