//! Holding: a triggered milestone joins its order's held message (burst
//! merging) with its event time, and the message is scheduled for when its
//! event-time decision can no longer change (or the end of quiet hours), or is
//! suppressed as already sent.

use chrono::{DateTime, Utc};
use trackstream_proto::v1::Milestone;
use trackstream_proto::{keys, time};
use trackstream_runtime::order_log;

use super::{Messenger, Trigger, decide};
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
            registered,
            location,
            reason,
            at,
            prediction,
            incident,
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
        let now_ms = now.timestamp_millis();
        // Without an event time, the time it is seen is the best there is.
        let at_ms = at.as_ref().map_or(now_ms, |t| time::millis(Some(t)));
        // Quiet hours decide when a message may go out: wall clock.
        let release = self
            .quiet
            .as_ref()
            .and_then(|q| q.release_at(now, zone, milestone, &order_id));
        // Scheduled before it exists, for as long as this parcel alone could
        // keep it open: a crash in between leaves a stray member, never an
        // unscheduled message.
        let mut pending = decide::Pending {
            milestone,
            order_ref: &order_id,
            zone,
            anchor_ms: at_ms,
            at_ms,
            complete: false,
            registered,
        };
        let (open, _) = decide::due(&self.rules, &pending, now, release);
        self.outbox
            .schedule(&order_id, milestone, open.timestamp_millis())
            .await?;
        let waybill_key = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        let return_direction = milestone == Milestone::ReturnReceived;
        // The held copy never carries the contact: it is looked up from the
        // registration when the message is rendered (`crate::contact`).
        let held = Held {
            shipment: Some(contact::stripped(shipment)),
            reason: reason as i32,
            created_at: Some(time::from_millis(at_ms)),
            prediction,
            incident,
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
                at_ms,
            )
            .await?;
        let Added::Held {
            created,
            covered,
            known,
            anchor,
        } = added
        else {
            self.metrics
                .suppressed
                .get_or_create(&Self::label(milestone))
                .inc();
            return Ok(None);
        };
        let complete = covered >= known.max(1);
        pending.anchor_ms = anchor;
        pending.complete = complete;
        let (due, wait) = decide::due(&self.rules, &pending, now, release);
        if created && wait != decide::Wait::No {
            let why = wait.as_str();
            tracing::info!(order_id = %order_id, milestone = milestone.as_str_name(),
                why, due = %due, "buyer message held");
            self.metrics
                .held
                .get_or_create(&vec![("why", why.to_owned())])
                .inc();
        }
        self.outbox
            .schedule(&order_id, milestone, due.timestamp_millis())
            .await?;
        Ok((due <= now).then_some((order_id, milestone)))
    }
}
