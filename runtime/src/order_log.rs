//! The per-order update log in Redis: written by the detector (which assigns the
//! sequence numbers), read by the notifier (GetOrder, WatchOrder replay). Both
//! sides use these functions so the layout exists in one place.
//!
//! An order is identified by its merchant and its order id together (an
//! [`order_ref`]): order ids are unique only within a merchant, and two shops
//! numbering orders from 10001 must not share one log.
//!
//! Keys share the hash tag `{o:<merchant_id>/<order_id>}` (one Cluster slot per
//! order): `:seq` last sequence number, `:ids` update id → seq, `:updates` zset
//! seq → encoded `ShipmentUpdate`, `:merchant` the owning merchant, `:alerts` open
//! alerts.
//!
//! Encoding of an `:updates` entry: the `ShipmentUpdate` protobuf with its
//! `seq` set — field 1 as a varint, then the rest of the update — so a reader
//! decodes an entry as it is (`ShipmentUpdate::decode`) and it is byte for
//! byte the `tracking.updates` record. Exactly one writer encodes it: the
//! `append_update` Lua function (`runtime/src/lua/append_update.lua`, see
//! [`with_append`]), which the detector's commit and [`append_one`] run,
//! because the sequence number is assigned inside Redis, in the same atomic
//! step that appends the entry (a number handed out before its entry is
//! stored would let a reader skip it). Rust writes no entry; the detector's
//! record is the protobuf merge of `{seq}` and the update's body, which the
//! protobuf encoding rules (fields in tag order) make the same bytes.
//!
//! Lifecycle: the detector gives `:seq`, `:ids`, `:updates` and `:merchant` an
//! absolute expiry (`PEXPIREAT`, wall clock + its `retention.order_log`, never
//! less than the parcel retention) every time it appends an update, so an
//! order's log lives as long as its newest parcel may still need it and then
//! disappears as a whole. Keys other components keep under the same tag (the
//! notifier's `:alerts` and message state) set their own expiry.

use std::sync::LazyLock;

use redis::AsyncCommands;

use crate::redis::RedisConn;

/// The merchant-scoped identity of an order, `<merchant_id>/<order_id>`, that
/// every per-order key, schedule entry and watcher is keyed by.
pub fn order_ref(merchant_id: &str, order_id: &str) -> String {
    format!("{merchant_id}/{order_id}")
}

/// The key `{o:<order_ref>}:<suffix>`.
pub fn key(order_ref: &str, suffix: &str) -> String {
    format!("{{o:{order_ref}}}:{suffix}")
}

/// Suffixes of the keys an append touches, in the order the detector's
/// append script takes them as KEYS: update id → seq, the counter, the log,
/// the owner.
pub const APPEND_SUFFIXES: [&str; 4] = ["ids", "seq", "updates", "merchant"];

/// The keys of [`APPEND_SUFFIXES`] for one order.
pub fn append_keys(order_ref: &str) -> [String; 4] {
    APPEND_SUFFIXES.map(|suffix| key(order_ref, suffix))
}

/// `script` with the `append_update(ids, seq, updates, owner, id, body,
/// merchant)` Lua function in front of it: every script that appends to an
/// order log calls that one function, so the sequence assignment and the
/// entry's encoding exist once.
pub fn with_append(script: &str) -> String {
    [include_str!("lua/append_update.lua"), script].concat()
}

/// The script behind [`append_one`]: `lua/append_one.lua` with the append
/// function in front, hashed once.
static APPEND_ONE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(&with_append(include_str!("lua/append_one.lua"))));

/// Appends one update to its order's log in the order's own slot and returns
/// its sequence number; the same `update_id` always gets the same number.
/// `body` is the update encoded WITHOUT `seq`; the stored entry (and the
/// record to produce) is the update with it. The order's keys expire at
/// `expire_at_ms` (ms since the epoch, wall clock).
pub async fn append_one(
    conn: &mut RedisConn,
    order_ref: &str,
    update_id: &str,
    body: &[u8],
    merchant_id: &str,
    expire_at_ms: i64,
) -> redis::RedisResult<u64> {
    let mut invocation = APPEND_ONE.prepare_invoke();
    for key in append_keys(order_ref) {
        invocation.key(key);
    }
    invocation
        .arg(update_id)
        .arg(body)
        .arg(merchant_id)
        .arg(expire_at_ms)
        .invoke_async(conn)
        .await
}

/// The merchant owning the order, if any update was ever recorded for it.
pub async fn owner(conn: &mut RedisConn, order_ref: &str) -> redis::RedisResult<Option<String>> {
    conn.get(key(order_ref, "merchant")).await
}

/// Encoded updates with `seq > after_seq`, in sequence order (at most `limit`).
pub async fn updates_after(
    conn: &mut RedisConn,
    order_ref: &str,
    after_seq: u64,
    limit: usize,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    redis::cmd("ZRANGEBYSCORE")
        .arg(key(order_ref, "updates"))
        .arg(format!("({after_seq}"))
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_order_id_of_two_merchants_lives_in_two_slots() {
        let acme = key(&order_ref("acme", "10001"), "seq");
        let other = key(&order_ref("other", "10001"), "seq");
        assert_eq!(acme, "{o:acme/10001}:seq");
        assert_ne!(acme, other);
    }

    #[test]
    fn append_keys_share_the_order_slot_in_script_order() {
        let keys = append_keys(&order_ref("acme", "10001"));
        assert_eq!(
            keys,
            [
                "{o:acme/10001}:ids",
                "{o:acme/10001}:seq",
                "{o:acme/10001}:updates",
                "{o:acme/10001}:merchant",
            ]
        );
    }
}
