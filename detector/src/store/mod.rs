//! Redis layout and the atomic operations on it.
//!
//! Per partition `p` (hash tag `{p<p>}`, so a partition's keys share one Cluster
//! slot and one Lua script may touch them together):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{pP}:wb:<carrier:waybill>` | hash | `v` version, `s` state (protobuf), `r` registration |
//! | `{pP}:ev:<carrier:waybill>` | hash | event id → event (history; doubles as the dedup set) |
//! | `{pP}:timers` | zset | `<carrier:waybill>\|<rule>` → deadline (ms) |
//! | `{pP}:outbox` | hash | emission id → output not yet acknowledged by Kafka |
//! | `{pP}:wm` | string | event-time watermark (ms), for `clock = "event"` |
//!
//! Per order `O` of merchant `M` (hash tag `{o:M/O}`; written `{o:O}` below;
//! layout and entry encoding documented in `trackstream_runtime::order_log`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{o:O}:seq` | string | last sequence number |
//! | `{o:O}:ids` | hash | update id → sequence number (makes assignment idempotent) |
//! | `{o:O}:updates` | zset | seq → encoded `ShipmentUpdate` (WatchOrder replay) |
//! | `{o:O}:merchant` | string | owning merchant id (scopes gRPC reads) |
//!
//! One write path. Whatever the input — a consumer batch's scans and
//! registrations, or the timer loop's due deadlines — the service loads a
//! partition's waybills ([`Store::load_partition`]), folds them in memory, and
//! commits them with the one commit script ([`Store::commit_partition`],
//! `lua/commit.lua`): per waybill a compare-and-set on its version, then
//! state, history, timers and outbox entries. Updates get their sequence
//! numbers from the one append function (`lua/order_log.lua`): inside the
//! commit on a standalone server, or per update in its order's slot
//! ([`Store::sequence`]) in Redis Cluster and on outbox re-delivery. Outputs
//! are produced, then cleared from the outbox ([`Store::finish_partition`]), so
//! a crash anywhere re-delivers the same ids instead of losing them.
//!
//! Lifecycle (see [`crate::lifecycle`]): every commit sets an absolute expiry
//! (`PEXPIREAT`, from the detector's wall clock) on the waybill's `wb` and `ev`
//! keys, and every append on the order's keys; the ownership claim gets the
//! waybill's expiry in a separate command ([`Store::expire_owners`]). The
//! per-partition timer zset and outbox do not expire: a timer member of an
//! expired waybill is dropped when it comes due, and outbox entries live only
//! until produced or dead-lettered.
//!
//! Files: [`keys`] the layout, [`scripts`] the Lua (one `.lua` file each,
//! opening with its KEYS/ARGV contract), [`codec`] what is stored as bytes,
//! then the operations: `load` (reads before a fold), `commit` (the write and
//! the append), `outbox` (after a commit), `timers` (timer set, watermark);
//! [`repartition`] moves the state when the topics' partition count changes
//! (an offline operator step).

mod codec;
mod commit;
pub mod keys;
mod load;
mod outbox;
pub mod repartition;
pub mod scripts;
mod timers;

use trackstream_runtime::redis::RedisConn;

pub use codec::Encoded;
pub use commit::{Change, Committed};
pub use keys::{
    history_key, order_key, outbox_key, state_key, timer_member, timers_key, watermark_key,
};
pub use load::{LoadRequest, Loaded};
pub use timers::Due;

/// The detector's Redis operations.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    scripts: scripts::Scripts,
    /// Whether updates are appended to their order logs inside the partition's
    /// commit script: only on a standalone server, because in Redis Cluster the
    /// order keys live in other slots than the partition's.
    inline_sequence: bool,
}

impl Store {
    /// A store over `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Store {
            inline_sequence: matches!(conn, RedisConn::Single(_)),
            conn,
            scripts: scripts::Scripts::default(),
        }
    }

    /// The connection (for tests' and the timer loop's own queries).
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }
}
