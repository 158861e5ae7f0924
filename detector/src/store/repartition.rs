//! Moving the detector's state when the partition count of `shipments` and
//! `tracking.events` changes.
//!
//! A waybill's keys carry its partition's hash tag (`{pP}`, see
//! [`super::keys`]), so after the topics grow from `from` to `to` partitions,
//! a waybill whose key now hashes elsewhere would be folded under keys it has
//! never written: its registration, history and armed deadlines would be
//! lost, and its next scan would look like a first one. This moves each
//! waybill whose partition changes — state hash, history hash and timer set
//! members — to the keys of its new partition (where the Java `murmur2`
//! partitioner, which every producer uses, will put its records:
//! `trackstream_runtime::kafka::partition`). About `1 - from/to` of the
//! waybills move when the count doubles.
//!
//! The detector group must be stopped while it runs (the procedure is in
//! `docs/SCALING.md`); it refuses to start while an outbox still holds
//! outputs, since those belong to the old layout's partitions. It is
//! idempotent: each key is copied (`DUMP`/`RESTORE … REPLACE`, expiry kept)
//! before the old one is deleted, and each timer member added before it is
//! removed, so running it again after a crash finishes the move. Every
//! partition's event-time watermark is set to the lowest old one: a waybill
//! moved to a partition whose watermark ran ahead must not see its deadlines
//! fire early (lowering a watermark only delays them).

use redis::AsyncCommands;
use trackstream_runtime::kafka::partition::partition_for;
use trackstream_runtime::redis::RedisConn;

use super::keys::{
    history_key, outbox_key, parse_timer_member, state_key, timers_key, watermark_key,
};

/// What a run did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Waybills found under the old layout.
    pub waybills: u64,
    /// Waybills whose partition changed.
    pub waybills_moved: u64,
    /// Keys copied and deleted (state and history hashes).
    pub keys_moved: u64,
    /// Timer members moved to their new partition's set.
    pub timers_moved: u64,
    /// The watermark every partition now holds, if any partition had one.
    pub watermark: Option<i64>,
}

/// Why a repartition did not run: each names what the operator does next.
#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    /// Partition counts that cannot be a change.
    #[error("partition counts must be positive and differ (from {from}, to {to})")]
    Counts {
        /// Old count.
        from: i32,
        /// New count.
        to: i32,
    },
    /// Outputs not yet produced under the old layout.
    #[error(
        "partition {partition}'s outbox holds {entries} outputs not yet produced: start the detector on the old partition count until its outboxes are empty, stop it gracefully, then run this again"
    )]
    OutboxNotEmpty {
        /// The partition.
        partition: i32,
        /// Entries in its outbox.
        entries: u64,
    },
    /// Redis failed; the move is idempotent, so run it again.
    #[error("redis (run it again: the move is idempotent): {0}")]
    Redis(#[from] redis::RedisError),
}

/// Moves every waybill of partitions `0..from` to its partition of `to`.
/// `nodes` are the URLs scanned for state keys (the server, or every master of
/// a Cluster); `conn` runs the moves. With `dry_run` nothing is written.
pub async fn repartition(
    conn: &RedisConn,
    nodes: &[String],
    from: i32,
    to: i32,
    dry_run: bool,
) -> Result<Moved, RepartitionError> {
    if from <= 0 || to <= 0 || from == to {
        return Err(RepartitionError::Counts { from, to });
    }
    let mut conn = conn.clone();
    for partition in 0..from {
        let entries: u64 = conn.hlen(outbox_key(partition)).await?;
        if entries > 0 {
            return Err(RepartitionError::OutboxNotEmpty { partition, entries });
        }
    }
    let mut moved = Moved::default();
    for node in nodes {
        for key in state_keys(node).await? {
            let Some((partition, waybill)) = parse_state_key(&key) else {
                continue;
            };
            if partition >= from {
                continue;
            }
            moved.waybills += 1;
            let target = partition_for(waybill.as_bytes(), to);
            if target == partition {
                continue;
            }
            moved.waybills_moved += 1;
            for (old, new) in [
                (state_key(partition, waybill), state_key(target, waybill)),
                (
                    history_key(partition, waybill),
                    history_key(target, waybill),
                ),
            ] {
                if dry_run || move_key(&mut conn, &old, &new).await? {
                    moved.keys_moved += 1;
                }
            }
        }
    }
    let mut lowest: Option<i64> = None;
    for partition in 0..from {
        let members: Vec<(String, f64)> =
            conn.zrange_withscores(timers_key(partition), 0, -1).await?;
        for (member, score) in members {
            let Some((waybill, _)) = parse_timer_member(&member) else {
                continue;
            };
            let target = partition_for(waybill.as_bytes(), to);
            if target == partition {
                continue;
            }
            if !dry_run {
                let _: () = conn.zadd(timers_key(target), &member, score).await?;
                let _: () = conn.zrem(timers_key(partition), &member).await?;
            }
            moved.timers_moved += 1;
        }
        let watermark: Option<i64> = conn.get(watermark_key(partition)).await?;
        if let Some(watermark) = watermark {
            lowest = Some(lowest.map_or(watermark, |l| l.min(watermark)));
        }
    }
    if let Some(watermark) = lowest {
        if !dry_run {
            for partition in 0..to.max(from) {
                let _: () = conn.set(watermark_key(partition), watermark).await?;
            }
        }
        moved.watermark = Some(watermark);
    }
    Ok(moved)
}

/// Copies `old` to `new` (value and expiry) and deletes `old`; `false` when
/// `old` is gone (moved by an earlier run, or expired).
async fn move_key(conn: &mut RedisConn, old: &str, new: &str) -> redis::RedisResult<bool> {
    let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(old).query_async(conn).await?;
    let Some(dump) = dump else {
        return Ok(false);
    };
    let ttl: i64 = conn.pttl(old).await?;
    redis::cmd("RESTORE")
        .arg(new)
        .arg(ttl.max(0))
        .arg(dump)
        .arg("REPLACE")
        .query_async::<()>(conn)
        .await?;
    let _: () = conn.del(old).await?;
    Ok(true)
}

/// Every waybill state key on the node at `url` (`SCAN`, so a large keyspace
/// is read in steps without blocking the server).
async fn state_keys(url: &str) -> redis::RedisResult<Vec<String>> {
    let mut node = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("{p*}:wb:*")
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut node)
            .await?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// `{pP}:wb:<waybill key>` → `(P, waybill key)`.
fn parse_state_key(key: &str) -> Option<(i32, &str)> {
    let rest = key.strip_prefix("{p")?;
    let (partition, waybill) = rest.split_once("}:wb:")?;
    Some((partition.parse().ok()?, waybill))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_keys_parse_back_to_partition_and_waybill() {
        let key = state_key(7, "sf:SF1|x");
        assert_eq!(parse_state_key(&key), Some((7, "sf:SF1|x")));
        assert_eq!(parse_state_key(&history_key(7, "sf:1")), None);
        assert_eq!(parse_state_key("{p}:wb:sf:1"), None);
    }
}
