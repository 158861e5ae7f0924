//! The lifetime of an order's notifier state.
//!
//! Every notifier key of an order (`crate::outbox::order_keys`: parcels and
//! returns with the buyer's contact, held messages, message state, the parcels
//! of each milestone's message, the open-alert index, the parcels' incident
//! links `{o:O}:incidents`, and `{o:O}:final`, the parcels that reached a
//! terminal status) gets one absolute expiry, set with
//! `PEXPIREAT` each time a batch touches the order:
//!
//! - once every known parcel of the order is final (delivered, returned,
//!   cancelled, expired; a return received), at the time the last one became
//!   final plus `retention.after_terminal` — re-touching a finished order
//!   (a replayed scan) does not extend it;
//! - otherwise the notifier's now plus `retention.after_silence`, so an
//!   order that never ends disappears after a long silence.
//!
//! Times come from the notifier's [`crate::clock::Clock`], so a test with a
//! manual clock standing in the past sees the keys go at once. The touch runs
//! after the batch's due messages were produced, so a message is never lost to
//! its own order's expiry. A crash before the touch re-delivers the batch, which
//! touches again.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use trackstream_proto::v1::{ShipmentUpdate, Status, UpdateKind};
use trackstream_runtime::redis::RedisConn;

use crate::config::RetentionConfig;
use crate::outbox;

const TOUCH_LUA: &str = r"
-- KEYS: 1 parcels, 2 returns, 3 final, then every other key of the order
-- ARGV: 1 now ms, 2 after_terminal ms, 3 after_silence ms, then waybill keys
--       that reached a terminal status in this batch
local now = tonumber(ARGV[1])
local added = 0
for i = 4, #ARGV do
  added = added + redis.call('HSETNX', KEYS[3], ARGV[i], now)
end
local at = now + tonumber(ARGV[3])
local final = 0
local known = redis.call('HKEYS', KEYS[1])
for _, wb in ipairs(redis.call('HKEYS', KEYS[2])) do known[#known + 1] = wb end
if #known > 0 then
  local last = 0
  final = 1
  for _, wb in ipairs(known) do
    local t = redis.call('HGET', KEYS[3], wb)
    if not t then final = 0 break end
    last = math.max(last, tonumber(t))
  end
  if final == 1 then at = math.min(at, last + tonumber(ARGV[2])) end
end
for i = 1, #KEYS do redis.call('PEXPIREAT', KEYS[i], at) end
return {at, (final == 1 and added > 0) and 1 or 0}
";

/// Whether `update` says its parcel will not move again.
pub fn is_final(update: &ShipmentUpdate) -> bool {
    update.kind == UpdateKind::ReturnReceived as i32
        || matches!(
            Status::try_from(update.current_status),
            Ok(Status::Delivered | Status::Returned | Status::Cancelled | Status::Expired)
        )
}

/// Sets the expiry of orders' notifier keys.
#[derive(Clone)]
pub struct Lifecycle {
    conn: RedisConn,
    touch: redis::Script,
    after_terminal_ms: i64,
    after_silence_ms: i64,
    finished: Counter,
}

impl Lifecycle {
    /// A lifecycle with `config`'s retention, registering its counter.
    pub fn new(conn: RedisConn, config: &RetentionConfig, registry: &mut Registry) -> Self {
        let finished = Counter::default();
        registry.register(
            "orders_finished",
            "Orders whose every parcel reached a terminal status; their notifier state now expires retention.after_terminal later",
            finished.clone(),
        );
        Lifecycle {
            conn,
            touch: redis::Script::new(TOUCH_LUA),
            after_terminal_ms: config.after_terminal_ms(),
            after_silence_ms: config.after_silence_ms(),
            finished,
        }
    }

    /// Records that `final_parcels` (waybill keys) of `order_ref` reached a
    /// terminal status at `now_ms`, and sets the expiry of every key of the
    /// order. Returns that expiry (ms since the epoch).
    pub async fn touch(
        &self,
        order_ref: &str,
        final_parcels: &[String],
        now_ms: i64,
    ) -> redis::RedisResult<i64> {
        let mut invocation = self.touch.prepare_invoke();
        for key in outbox::order_keys(order_ref) {
            invocation.key(key);
        }
        invocation
            .arg(now_ms)
            .arg(self.after_terminal_ms)
            .arg(self.after_silence_ms);
        for waybill in final_parcels {
            invocation.arg(waybill);
        }
        let mut conn = self.conn.clone();
        let (at, finished): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        if finished == 1 {
            tracing::info!(
                order_ref,
                expires_at_ms = at,
                "order finished; its notifier state expires after retention.after_terminal"
            );
            self.finished.inc();
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_and_received_returns_are_final() {
        let update = |status: Status, kind: UpdateKind| ShipmentUpdate {
            current_status: status as i32,
            kind: kind as i32,
            ..ShipmentUpdate::default()
        };
        assert!(is_final(&update(Status::Delivered, UpdateKind::Scan)));
        assert!(is_final(&update(Status::Returned, UpdateKind::Scan)));
        assert!(is_final(&update(
            Status::InTransit,
            UpdateKind::ReturnReceived
        )));
        assert!(!is_final(&update(Status::OutForDelivery, UpdateKind::Scan)));
        assert!(!is_final(&update(Status::Exception, UpdateKind::Scan)));
    }
}
