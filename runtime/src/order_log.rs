//! The per-order update log in Redis: written by the detector (which assigns the
//! sequence numbers), read by the notifier (GetOrder, WatchOrder replay). Both
//! sides use these functions so the layout exists in one place.
//!
//! Keys share the hash tag `{o:<order_id>}` (one Cluster slot per order):
//! `:seq` last sequence number, `:ids` update id → seq, `:updates` zset seq →
//! encoded `ShipmentUpdate`, `:merchant` the owning merchant, `:alerts` open alerts.

use redis::AsyncCommands;

use crate::redis::RedisConn;

/// The key `{o:<order_id>}:<suffix>`.
pub fn key(order_id: &str, suffix: &str) -> String {
    format!("{{o:{order_id}}}:{suffix}")
}

/// The merchant owning `order_id`, if any update was ever recorded for it.
pub async fn owner(conn: &mut RedisConn, order_id: &str) -> redis::RedisResult<Option<String>> {
    conn.get(key(order_id, "merchant")).await
}

/// Encoded updates with `seq > after_seq`, in sequence order (at most `limit`).
pub async fn updates_after(
    conn: &mut RedisConn,
    order_id: &str,
    after_seq: u64,
    limit: usize,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(key(order_id, "updates"))
        .arg(format!("({after_seq}"))
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(conn)
        .await
}
