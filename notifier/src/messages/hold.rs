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
        let open = self.due(
            milestone, &order_id, zone, at_ms, at_ms, false, now, release,
        );
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
        let due = self.due(
            milestone, &order_id, zone, anchor, at_ms, complete, now, release,
        );
        if created && due > now {
            let why = if release.is_some_and(|r| r >= due) {
                "quiet_hours"
            } else if !complete {
                "burst_window"
            } else {
                "supersede_window"
            };
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

    /// When a message anchored at `anchor_ms` may be decided and sent, seen from a
    /// trigger at event time `at_ms` processed at `now`.
    ///
    /// Its decision can change until the event-time point `D`: the end of the
    /// burst window (unless every known parcel is in) and the end of its
    /// supersede horizon. A live run holds it until then; the hold still to go
    /// is `D` minus the later of now and the trigger's event time (a clock
    /// behind the events counts from the event). When that is nothing or less
    /// — a catch-up, or events that came in late — it waits `catch_up_settle`
    /// so the rest of the backlog is applied first; only a message that cannot
    /// change (complete, not supersedable) of an event no older than the settle
    /// goes at once. Quiet hours (wall clock) may push it later still.
    #[allow(clippy::too_many_arguments)]
    fn due(
        &self,
        milestone: Milestone,
        order_id: &str,
        zone: chrono_tz::Tz,
        anchor_ms: i64,
        at_ms: i64,
        complete: bool,
        now: DateTime<Utc>,
        release: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        let merge_end = if complete {
            anchor_ms
        } else {
            anchor_ms.saturating_add(self.burst_window.num_milliseconds())
        };
        let horizon = decide::horizon(&self.rules, milestone, anchor_ms, zone, order_id);
        let decided_at = merge_end.max(horizon);
        // An event older than the settle may be part of a backlog: even a
        // complete message waits, since the order's other parcels may not be
        // known yet (their registrations are behind it on other partitions).
        let lagging = now.timestamp_millis().saturating_sub(at_ms) > self.settle.num_milliseconds();
        let due = if decided_at <= anchor_ms && !lagging {
            now
        } else {
            let still = decided_at.saturating_sub(at_ms.max(now.timestamp_millis()));
            now + chrono::Duration::milliseconds(still).max(self.settle)
        };
        release.map_or(due, |release| due.max(release))
    }
}
