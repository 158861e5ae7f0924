//! Holding: a triggered milestone joins its order's held message (burst
//! merging), waits out quiet hours, supersedes earlier held milestones, or is
//! suppressed as already sent.

use chrono::{DateTime, Utc};
use trackstream_proto::v1::Milestone;
use trackstream_proto::{keys, time};
use trackstream_runtime::order_log;

use super::{Messenger, Trigger};
use crate::contact;
use crate::outbox::{Added, Held};
use crate::quiet;

impl Messenger {
    /// Holds the trigger's parcel in its order's message; returns the message if
    /// it is due now.
    pub(super) async fn hold(
        &self,
        trigger: Trigger,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Option<(String, Milestone)>> {
        let Trigger {
            shipment,
            milestone,
            location,
            reason,
            at,
        } = trigger;
        if shipment.order_id.is_empty() {
            return Ok(None);
        }
        // Everything below is keyed by the merchant-scoped order.
        let order_id = order_log::order_ref(&shipment.merchant_id, &shipment.order_id);
        // Fast path: most scans re-reach an already sent milestone.
        if self
            .outbox
            .state(&order_id, milestone)
            .await?
            .is_some_and(|s| s != "held")
        {
            self.metrics
                .suppressed
                .get_or_create(&Self::label(milestone))
                .inc();
            return Ok(None);
        }
        let zone = quiet::zone(
            shipment.buyer.as_ref().map_or("", |b| b.time_zone.as_str()),
            self.default_zone,
        );
        let release = self
            .quiet
            .as_ref()
            .and_then(|q| q.release_at(now, zone, milestone, &order_id));
        let earliest = release.unwrap_or(now);
        let window_end = now + self.burst_window;
        // Scheduled before it exists: a crash in between leaves a stray member,
        // never an unscheduled message.
        self.outbox
            .schedule(
                &order_id,
                milestone,
                earliest.max(window_end).timestamp_millis(),
            )
            .await?;
        let waybill_key = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        let return_direction = milestone == Milestone::ReturnReceived;
        // The held copy never carries the contact: it is looked up from the
        // registration when the message is rendered (`crate::contact`).
        let held = Held {
            shipment: Some(contact::stripped(shipment)),
            reason: reason as i32,
            created_at: Some(at.unwrap_or_else(|| time::to_proto(now))),
        };
        let added = self
            .outbox
            .add(
                &order_id,
                milestone,
                return_direction,
                &waybill_key,
                &location,
                &held,
            )
            .await?;
        let Added::Held {
            created,
            covered,
            known,
        } = added
        else {
            self.metrics
                .suppressed
                .get_or_create(&Self::label(milestone))
                .inc();
            return Ok(None);
        };
        let complete = covered >= known.max(1);
        if created {
            let why = if release.is_some() {
                "quiet_hours"
            } else if !complete {
                "burst_window"
            } else {
                ""
            };
            if !why.is_empty() {
                tracing::info!(order_id = %order_id, milestone = milestone.as_str_name(),
                    why, due = %earliest, "buyer message held");
                self.metrics
                    .held
                    .get_or_create(&vec![("why", why.to_owned())])
                    .inc();
            }
        }
        if !complete {
            return Ok(None);
        }
        self.outbox
            .schedule(&order_id, milestone, earliest.timestamp_millis())
            .await?;
        Ok((earliest <= now).then_some((order_id, milestone)))
    }
}
