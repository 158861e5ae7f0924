//! Data lifecycle: when a parcel's Redis keys expire.
//!
//! Every commit of a waybill sets an absolute expiry (`PEXPIREAT`) on its state
//! and history keys, on its ownership claim (`runtime::ownership::owner_key`,
//! another slot on Redis Cluster, so a separate command) and, when it appends
//! updates, on its order's log keys (`runtime::order_log`). The time is the
//! detector's **wall clock** plus the retention: `retention.after_terminal`
//! once the parcel reached a terminal status, `retention.after_silence`
//! otherwise. Each commit moves it, so "after" means after the last change.
//!
//! Why the wall clock and not the event clock: a replay with `clock = "event"`
//! re-applies scans dated months ago; an expiry computed from their time would
//! delete what the replay just wrote. From the wall clock, a replay only ever
//! pushes expiries into the future. The clock is injectable
//! ([`crate::service::Detector::with_wall_clock`], and `retention.backdate` in
//! config), so a test sees keys expire at once without sleeping.
//!
//! What does not expire by itself, and why it is still bounded: the
//! per-partition timer zset holds members of expired waybills until they come
//! due; the timer loop then loads an empty state, finds nothing due and drops
//! the member (compare-and-remove on its score). The per-partition outbox only
//! holds outputs between commit and acknowledgement; one that can never be
//! produced is dead-lettered and removed. A waybill number seen after its keys
//! expired starts from an empty state: a new parcel, with no inherited status,
//! history or alert episodes.

use trackstream_proto::v1::Status;
use trackstream_runtime::config::duration;

use crate::config::RetentionConfig;
use crate::engine::WaybillState;
use crate::rules;

/// Computes expiries from retention settings.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    config: RetentionConfig,
}

impl Retention {
    /// Retention from config.
    pub fn new(config: RetentionConfig) -> Self {
        Retention { config }
    }

    /// The settings.
    pub fn config(&self) -> &RetentionConfig {
        &self.config
    }

    /// The clock expiries count from: wall time minus `retention.backdate`.
    fn base(&self, wall_now: i64) -> i64 {
        wall_now.saturating_sub(duration::millis(self.config.backdate))
    }

    /// When a parcel in `state`, changed at `wall_now` (ms), expires.
    pub fn parcel_expires_at(&self, state: &WaybillState, wall_now: i64) -> i64 {
        let keep = if is_ended(state) {
            self.config.after_terminal
        } else {
            self.config.after_silence
        };
        self.base(wall_now).saturating_add(duration::millis(keep))
    }

    /// When an order log touched at `wall_now` expires: `retention.order_log`,
    /// but never before any parcel that may still append to it.
    pub fn order_expires_at(&self, wall_now: i64) -> i64 {
        let keep = self
            .config
            .order_log
            .max(self.config.after_silence)
            .max(self.config.after_terminal);
        self.base(wall_now).saturating_add(duration::millis(keep))
    }
}

/// Whether the parcel reached a status nothing moves it out of.
pub fn is_ended(state: &WaybillState) -> bool {
    rules::is_terminal(Status::try_from(state.status).unwrap_or(Status::Unspecified))
}

/// The ownership claim key of a `carrier:waybill` key.
pub fn owner_key_of(waybill_key: &str) -> String {
    match waybill_key.split_once(':') {
        Some((carrier, waybill)) => trackstream_runtime::ownership::owner_key(carrier, waybill),
        // Keys are `carrier:waybill` by construction; a key without a colon
        // has no claim to refresh, and this names a key nobody writes.
        None => trackstream_runtime::ownership::owner_key(waybill_key, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn terminal_parcels_expire_sooner_and_order_logs_outlive_parcels() {
        let retention = Retention::new(RetentionConfig {
            after_terminal: Duration::from_millis(10),
            after_silence: Duration::from_millis(100),
            order_log: Duration::from_millis(50),
            backdate: Duration::from_millis(5),
        });
        let open = WaybillState::default();
        let delivered = WaybillState {
            status: Status::Delivered as i32,
            ..Default::default()
        };
        assert_eq!(retention.parcel_expires_at(&open, 1_000), 1_095);
        assert_eq!(retention.parcel_expires_at(&delivered, 1_000), 1_005);
        assert_eq!(retention.order_expires_at(1_000), 1_095);
    }

    #[test]
    fn the_owner_key_matches_the_claim_ingest_writes() {
        assert_eq!(owner_key_of("sf:SF1"), "own:{sf:SF1}");
    }
}
