//! The Redis indexes the web face reads, written by the messenger as
//! registrations and alerts arrive:
//!
//! | key | holds | lifetime |
//! |---|---|---|
//! | `{bi:<merchant>\|<buyer key>}` | zset order id → registration ms: a buyer's orders in a shop (the link's scope, the console's phone search) | `retention.after_silence` after the buyer's last registration; newest 200 kept |
//! | `{wb:<merchant>\|<waybill>}` | set of order ids holding the waybill (console search) | `retention.after_silence` after its last registration |
//! | `{ma:<merchant>}:open` / `:resolved` | the merchant's open alerts (id → rank-prefixed alert) and ids resolved recently (so a replayed OPENED stays closed) | `retention.after_silence` after the last alert; resolved ids kept 7 days |
//! | `{rl:<what>}` | lookup attempts in the current window | the window |
//!
//! The buyer key is a keyed hash of the phone (`trackstream_web::links`):
//! no contact is stored here, and without the pepper the index cannot be
//! searched by trying phone numbers.

use std::time::Duration;

use prost::Message;
use trackstream_proto::time;
use trackstream_proto::v1::{Alert, AlertState, Shipment};
use trackstream_runtime::redis::RedisConn;
use trackstream_web::Links;

/// A buyer's orders kept at most (newest registrations).
const MAX_BUYER_ORDERS: isize = 200;
/// How long a resolved alert id keeps a replayed OPENED from reopening it.
const RESOLVED_KEEP_MS: i64 = 7 * 86_400_000;

/// Rank-guarded write of one alert to the merchant's board (see the module doc).
const BOARD_LUA: &str = r"
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]))
else
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
  local current = redis.call('HGET', KEYS[1], ARGV[1])
  if current and tonumber(string.sub(current, 1, 8)) >= tonumber(ARGV[2]) then return 0 end
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%08d', tonumber(ARGV[2])) .. ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
";

/// The indexes.
#[derive(Clone)]
pub struct WebIndex {
    conn: RedisConn,
    links: Links,
    keep_ms: i64,
    board: redis::Script,
}

fn buyer_key(merchant_id: &str, key: &str) -> String {
    format!("{{bi:{merchant_id}|{key}}}")
}

fn waybill_key(merchant_id: &str, waybill: &str) -> String {
    format!("{{wb:{merchant_id}|{waybill}}}")
}

fn board_keys(merchant_id: &str) -> [String; 2] {
    [
        format!("{{ma:{merchant_id}}}:open"),
        format!("{{ma:{merchant_id}}}:resolved"),
    ]
}

impl WebIndex {
    /// Indexes on `conn`, keyed with `links`' pepper, kept `keep_ms`.
    pub fn new(conn: RedisConn, links: Links, keep_ms: i64) -> Self {
        WebIndex {
            conn,
            links,
            keep_ms: keep_ms.max(86_400_000),
            board: redis::Script::new(BOARD_LUA),
        }
    }

    /// The link signer (and buyer keys).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Indexes a registration: its buyer and its waybill.
    pub async fn registered(&self, shipment: &Shipment) -> redis::RedisResult<()> {
        if shipment.order_id.is_empty() || shipment.merchant_id.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let buyer = shipment.buyer.clone().unwrap_or_default();
        if let Some(key) = self.links.buyer_key(&buyer.phone, &buyer.email) {
            let key = buyer_key(&shipment.merchant_id, &key);
            let at = time::millis(shipment.registered_at.as_ref());
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(at)
                .arg(&shipment.order_id)
                .ignore()
                .cmd("ZREMRANGEBYRANK")
                .arg(&key)
                .arg(0)
                .arg(-MAX_BUYER_ORDERS - 1)
                .ignore()
                .pexpire(&key, self.keep_ms)
                .ignore();
        }
        if !shipment.waybill.is_empty() {
            let key = waybill_key(&shipment.merchant_id, &shipment.waybill);
            pipe.sadd(&key, &shipment.order_id)
                .ignore()
                .pexpire(&key, self.keep_ms)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// The buyer's orders in the shop, newest registration first.
    pub async fn buyer_orders(
        &self,
        merchant_id: &str,
        key: &str,
        limit: usize,
    ) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("ZRANGE")
            .arg(buyer_key(merchant_id, key))
            .arg(0)
            .arg(isize::try_from(limit.max(1)).unwrap_or(isize::MAX) - 1)
            .arg("REV")
            .query_async(&mut conn)
            .await
    }

    /// The merchant's orders holding `waybill`.
    pub async fn waybill_orders(
        &self,
        merchant_id: &str,
        waybill: &str,
    ) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(waybill_key(merchant_id, waybill))
            .query_async(&mut conn)
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// Puts an alert emission on its merchant's board (or takes it off).
    pub async fn alert(&self, alert: &Alert, now_ms: i64) -> redis::RedisResult<()> {
        if alert.merchant_id.is_empty() || alert.alert_id.is_empty() {
            return Ok(());
        }
        let rank = alert.state * 1000 + i32::try_from(alert.tier).unwrap_or(999).min(999);
        let resolved = alert.state == AlertState::Resolved as i32;
        let [open, closed] = board_keys(&alert.merchant_id);
        let mut conn = self.conn.clone();
        let _: i64 = self
            .board
            .key(open)
            .key(closed)
            .arg(&alert.alert_id)
            .arg(rank)
            .arg(if resolved {
                Vec::new()
            } else {
                alert.encode_to_vec()
            })
            .arg(if resolved { "1" } else { "0" })
            .arg(now_ms)
            .arg(RESOLVED_KEEP_MS)
            .arg(self.keep_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The merchant's open alerts at or above `min_severity`, newest first.
    pub async fn open_alerts(
        &self,
        merchant_id: &str,
        min_severity: i32,
        limit: usize,
    ) -> redis::RedisResult<Vec<Alert>> {
        let [open, _] = board_keys(merchant_id);
        let mut conn = self.conn.clone();
        let stored: Vec<Vec<u8>> = redis::cmd("HVALS").arg(open).query_async(&mut conn).await?;
        let mut alerts: Vec<Alert> = stored
            .iter()
            .filter_map(|b| Alert::decode(b.get(8..)?).ok())
            .filter(|a| a.severity >= min_severity)
            .collect();
        alerts.sort_by_key(|a| {
            std::cmp::Reverse((time::millis(a.effective_at.as_ref()), a.alert_id.clone()))
        });
        alerts.truncate(limit);
        Ok(alerts)
    }

    /// Counts one attempt under `what` in a window shared by every instance;
    /// returns the count and the window's time left.
    pub async fn count_attempt(
        &self,
        what: &str,
        window: Duration,
    ) -> redis::RedisResult<(u64, Duration)> {
        let key = format!("{{rl:{what}}}");
        let window_ms = i64::try_from(window.as_millis())
            .unwrap_or(i64::MAX)
            .max(1_000);
        let mut conn = self.conn.clone();
        let (count, left): (u64, i64) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .pttl(&key)
            .query_async(&mut conn)
            .await?;
        Ok((
            count,
            Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        ))
    }
}
