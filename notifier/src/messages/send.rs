//! Sending: take each due held message under a lease, render it, produce it
//! (dead-lettering what can never be produced) and mark it sent; the flusher
//! does the same for every shard on a timer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message;
use tracing::Instrument;
use trackstream_proto::topics;
use trackstream_proto::v1::{BuyerContact, Milestone};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::OutRecord;

use super::{Messenger, ORDERS_IN_FLIGHT, message_key, render_message};
use crate::contact;
use crate::deliver::{self, Delivered};
use crate::outbox::{self, Held, Taken};
use crate::quiet;

/// Held messages looked at per shard per flush.
const FLUSH_PAGE: usize = 256;

impl Messenger {
    /// Sends the given held messages that are (still) ours to send, each on its
    /// own: one that cannot be produced never holds back the others. Retriable
    /// failures are logged and the message is released, to be retried by the
    /// flusher; a permanent one is dead-lettered and marked `dead`.
    pub async fn flush(&self, due: Vec<(String, Milestone)>, now: DateTime<Utc>) {
        if due.is_empty() {
            return;
        }
        let now_ms = now.timestamp_millis();
        let token = format!("sending:{}:{}", now_ms + self.lease_ms, self.instance);
        let token = token.as_str();
        futures::stream::iter(due)
            .for_each_concurrent(ORDERS_IN_FLIGHT, |(order_id, milestone)| async move {
                let record = match self.take_one(&order_id, milestone, now, token).await {
                    Ok(Some(record)) => record,
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(%err, order_id = %order_id, "cannot take held message; retried later");
                        return;
                    }
                };
                self.deliver(&order_id, milestone, record, token).await;
            })
            .await;
    }

    /// Produces one taken message and records the outcome.
    async fn deliver(&self, order_id: &str, milestone: Milestone, record: OutRecord, token: &str) {
        let span = tracing::info_span!("deliver", order_id = %order_id,
            milestone = milestone.as_str_name());
        self.deliver_in_span(order_id, milestone, record, token)
            .instrument(span)
            .await;
    }

    async fn deliver_in_span(
        &self,
        order_id: &str,
        milestone: Milestone,
        record: OutRecord,
        token: &str,
    ) {
        let marked = match deliver::produce(&self.producer, &self.letters, record).await {
            Delivered::Sent => {
                self.metrics
                    .sent
                    .get_or_create(&Self::label(milestone))
                    .inc();
                self.outbox.done(order_id, milestone).await
            }
            Delivered::DeadLettered => self.outbox.dead(order_id, milestone).await,
            Delivered::Retry => {
                if let Err(err) = self.outbox.release(order_id, milestone, token).await {
                    tracing::warn!(%err, "cannot release lease; message retried when it expires");
                }
                return;
            }
        };
        let unscheduled = match marked {
            Ok(()) => self.outbox.unschedule(order_id, milestone).await,
            Err(err) => Err(err),
        };
        if let Err(err) = unscheduled {
            // Re-sent after the lease with the same notification id.
            tracing::warn!(%err, "sent message not marked sent");
        }
    }

    async fn take_one(
        &self,
        order_id: &str,
        milestone: Milestone,
        now: DateTime<Utc>,
        token: &str,
    ) -> redis::RedisResult<Option<OutRecord>> {
        match self
            .outbox
            .take(order_id, milestone, now.timestamp_millis(), token)
            .await?
        {
            Taken::Busy => Ok(None),
            Taken::Gone => {
                self.outbox.unschedule(order_id, milestone).await?;
                Ok(None)
            }
            Taken::Superseded(by) => {
                tracing::info!(order_id = %order_id, milestone = milestone.as_str_name(),
                    by = %by, "held buyer message superseded by a later milestone");
                self.metrics
                    .superseded
                    .get_or_create(&Self::label(milestone))
                    .inc();
                self.outbox.unschedule(order_id, milestone).await?;
                Ok(None)
            }
            Taken::Take {
                held,
                parcels,
                superseded,
            } => {
                for lower in superseded {
                    tracing::info!(order_id = %order_id, milestone = lower.as_str_name(),
                        by = milestone.as_str_name(), "held buyer message superseded by a later milestone");
                    self.metrics
                        .superseded
                        .get_or_create(&Self::label(lower))
                        .inc();
                }
                let shipment = held.shipment.clone().unwrap_or_default();
                // Due, but the buyer's night started again meanwhile (a flusher
                // that was down): wait for the next morning.
                let zone = quiet::zone(
                    shipment.buyer.as_ref().map_or("", |b| b.time_zone.as_str()),
                    self.default_zone,
                );
                if let Some(later) = self
                    .quiet
                    .as_ref()
                    .and_then(|q| q.release_at(now, zone, milestone, order_id))
                {
                    self.outbox.release(order_id, milestone, token).await?;
                    self.outbox
                        .reschedule(order_id, milestone, later.timestamp_millis())
                        .await?;
                    return Ok(None);
                }
                let registrations = self.outbox.parcels(order_id).await?;
                let mut waybills: Vec<&str> = parcels.iter().map(|(k, _)| k.as_str()).collect();
                waybills.sort_unstable();
                let buyer = contact::for_message(&registrations, &waybills);
                Ok(Some(self.render(
                    &held,
                    buyer.as_ref(),
                    milestone,
                    &parcels,
                    now,
                )))
            }
        }
    }

    fn render(
        &self,
        held: &Held,
        buyer: Option<&BuyerContact>,
        milestone: Milestone,
        parcels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> OutRecord {
        let notification = render_message(
            &self.config,
            &self.merchants,
            held,
            buyer,
            milestone,
            parcels,
            now,
        );
        tracing::info!(order_id = %notification.order_id, merchant_id = %notification.merchant_id,
            parcels = parcels.len(), milestone = milestone.as_str_name(), "buyer message rendered");
        OutRecord::new(
            topics::BUYER_NOTIFICATIONS,
            message_key(&notification.merchant_id, &notification.order_id),
            notification.encode_to_vec(),
        )
    }

    /// Runs the flusher until `shutdown`: every `flush_interval`, sends the
    /// held messages of every shard that have become due.
    pub async fn run_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = (self.config.flush_interval).max(std::time::Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = self.clock.now();
            for shard in 0..outbox::SHARDS {
                match self
                    .outbox
                    .due(shard, now.timestamp_millis(), FLUSH_PAGE)
                    .await
                {
                    Ok(due) => self.flush(due, now).await,
                    Err(err) => tracing::warn!(%err, shard, "cannot read the message schedule"),
                }
            }
        }
    }
}
