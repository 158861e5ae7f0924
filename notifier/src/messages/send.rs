//! Sending: decide each due held message on its event times (`decide`: its
//! parcels, superseded or not, its lead parcel), take it under a lease, render
//! it, produce it (dead-lettering what can never be produced) and mark it sent;
//! the flusher does the same for every shard on a timer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use prost::Message;
use tracing::Instrument;
use trackstream_proto::v1::{BuyerContact, Milestone, Shipment};
use trackstream_proto::{keys, topics};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::kafka::OutRecord;

use super::{Messenger, ORDERS_IN_FLIGHT, decide, message_key, render_message};
use crate::contact;
use crate::deliver::{self, Delivered};
use crate::outbox::{self, Claim, Claimed, Held, Snapshot};
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

    /// Decides one due message on a snapshot of its order (`decide`) and
    /// claims the outcome: the record to produce, or `None` (superseded, gone,
    /// busy, or deferred to the buyer's morning).
    async fn take_one(
        &self,
        order_id: &str,
        milestone: Milestone,
        now: DateTime<Utc>,
        token: &str,
    ) -> redis::RedisResult<Option<OutRecord>> {
        // A parcel joining between the read and the claim makes the claim fail;
        // a few tries, then the flusher comes back to it.
        for _ in 0..3 {
            let snapshot = self.outbox.snapshot(order_id, milestone).await?;
            match self
                .decide_one(order_id, milestone, snapshot, now, token)
                .await?
            {
                Decided::Again => continue,
                Decided::Busy => return Ok(None),
                Decided::Gone => {
                    self.outbox.unschedule(order_id, milestone).await?;
                    return Ok(None);
                }
                Decided::Send(record) => return Ok(Some(*record)),
            }
        }
        Ok(None)
    }

    async fn decide_one(
        &self,
        order_id: &str,
        milestone: Milestone,
        snapshot: Snapshot,
        now: DateTime<Utc>,
        token: &str,
    ) -> redis::RedisResult<Decided> {
        let now_ms = now.timestamp_millis();
        match snapshot.state.as_deref() {
            None => return Ok(Decided::Gone),
            Some("held") => {}
            Some(state) => match state
                .strip_prefix("sending:")
                .and_then(|rest| rest.split(':').next())
                .and_then(|lease| lease.parse::<i64>().ok())
            {
                Some(lease) if lease > now_ms => return Ok(Decided::Busy),
                Some(_) => {}
                None => return Ok(Decided::Gone),
            },
        }
        let seen = snapshot.locations.len();
        let composed = decide::composition(&self.rules, &snapshot.times);
        let Some(lead) = decide::lead(&composed).map(str::to_owned) else {
            return Ok(Decided::Gone);
        };
        let anchor = decide::anchor(&snapshot.times).unwrap_or(now_ms);
        let lead_shipment = lead_shipment(&snapshot, &lead);
        let zone = quiet::zone(
            lead_shipment
                .buyer
                .as_ref()
                .map_or("", |b| b.time_zone.as_str()),
            self.default_zone,
        );
        // Due, but the buyer's night started again meanwhile (a flusher that
        // was down, a catch-up at night): wait for the morning. Nothing is
        // decided yet, so what is sent does not depend on it.
        if let Some(later) = self
            .quiet
            .as_ref()
            .and_then(|q| q.release_at(now, zone, milestone, order_id))
        {
            self.outbox
                .reschedule(order_id, milestone, later.timestamp_millis())
                .await?;
            return Ok(Decided::Busy);
        }
        let horizon = decide::horizon(&self.rules, milestone, anchor, zone, order_id);
        if let Some(by) = decide::superseded_by(milestone, &composed, horizon, &snapshot.higher) {
            return Ok(
                match self
                    .outbox
                    .claim(order_id, milestone, now_ms, Claim::Supersede, seen)
                    .await?
                {
                    Claimed::Done => {
                        tracing::info!(order_id = %order_id, milestone = milestone.as_str_name(),
                            by = by.as_str_name(), "held buyer message superseded by a later milestone");
                        self.metrics
                            .superseded
                            .get_or_create(&Self::label(milestone))
                            .inc();
                        if milestone == Milestone::Delayed && by == Milestone::Incident {
                            self.metrics.delayed_superseded_by_incident.inc();
                        }
                        Decided::Gone
                    }
                    claimed => claimed.into(),
                },
            );
        }
        match self
            .outbox
            .claim(order_id, milestone, now_ms, Claim::Send(token), seen)
            .await?
        {
            Claimed::Done => {}
            claimed => return Ok(claimed.into()),
        }
        let parcels: Vec<(String, String)> = composed
            .iter()
            .map(|key| {
                let location = snapshot.locations.get(key).cloned().unwrap_or_default();
                (key.clone(), location)
            })
            .collect();
        let waybills: Vec<&str> = composed.iter().map(String::as_str).collect();
        let buyer = contact::for_message(&snapshot.registrations, &waybills);
        let lead_held = snapshot.parcels.get(&lead).or(snapshot.creator.as_ref());
        let held = Held {
            shipment: Some(lead_shipment),
            reason: lead_held.map_or(0, |h| h.reason),
            created_at: Some(trackstream_proto::time::from_millis(anchor)),
            prediction: lead_held.and_then(|h| h.prediction.clone()),
            incident: lead_held.and_then(|h| h.incident.clone()),
        };
        Ok(Decided::Send(Box::new(self.render(
            &held,
            buyer.as_ref(),
            milestone,
            &parcels,
            now,
        ))))
    }

    fn render(
        &self,
        held: &Held,
        buyer: Option<&BuyerContact>,
        milestone: Milestone,
        parcels: &[(String, String)],
        now: DateTime<Utc>,
    ) -> OutRecord {
        let mut notification = render_message(
            &self.config,
            &self.merchants,
            held,
            buyer,
            milestone,
            parcels,
            now,
        );
        if let (Some(web), Some(shipment)) = (&self.web, held.shipment.as_ref()) {
            // The link lasts from the message's creation, not from this render:
            // a resend or a replay renders the same message, link included.
            let created = notification
                .created_at
                .as_ref()
                .and_then(trackstream_proto::time::from_proto)
                .unwrap_or(now);
            notification.tracking_url = web.tracking_url(shipment, buyer, created);
            notification.body = crate::web::with_link(
                &notification.body,
                &notification.locale,
                &notification.tracking_url,
            );
        }
        let incident_id = held
            .incident
            .as_ref()
            .map_or("", |i| i.incident_id.as_str());
        tracing::info!(order_id = %notification.order_id, merchant_id = %notification.merchant_id,
            parcels = parcels.len(), milestone = milestone.as_str_name(), incident_id,
            "buyer message rendered");
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

/// The outcome of deciding one message.
enum Decided {
    /// Read and decide again (a parcel joined meanwhile).
    Again,
    /// Not now (leased elsewhere, or deferred): the schedule keeps it.
    Busy,
    /// Nothing (more) to send: unschedule it.
    Gone,
    /// Ours to produce.
    Send(Box<OutRecord>),
}

impl From<Claimed> for Decided {
    fn from(claimed: Claimed) -> Self {
        match claimed {
            Claimed::Changed => Decided::Again,
            Claimed::Busy | Claimed::Done => Decided::Busy,
            Claimed::Gone => Decided::Gone,
        }
    }
}

/// The lead parcel's shipment (locale, time zone, merchant and order): its
/// registration (or the shipment first seen in an update) without contact,
/// else the one held with its earliest event, else the creator's.
fn lead_shipment(snapshot: &Snapshot, lead: &str) -> Shipment {
    snapshot
        .registrations
        .iter()
        .find(|s| keys::waybill_key(&s.carrier, &s.waybill) == lead)
        .cloned()
        .or_else(|| snapshot.parcels.get(lead).and_then(|h| h.shipment.clone()))
        .or_else(|| snapshot.creator.as_ref().and_then(|h| h.shipment.clone()))
        .map(contact::stripped)
        .unwrap_or_default()
}
