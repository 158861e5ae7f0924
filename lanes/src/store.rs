//! The day buckets in Redis, so every instance of the stream component adds
//! to one set of statistics and every reader merges the same.
//!
//! Layout: one hash per key, `{l:<key>}` — the hash tag keeps all of a key's
//! buckets in one Cluster slot (one round trip per window) while different
//! keys spread over the cluster. Field `<day>/<instance>` holds what that
//! instance counted that day (JSON [`DayStats`]). An instance only writes its
//! own fields and writes its cumulative bucket whole, so a retried write
//! stores the same bytes and two instances never overwrite each other;
//! readers merge the fields of the window's days (DDSketches merge exactly).
//! Each write sets the hash to expire `keep_days` after the bucket's day and
//! drops the writer's field of the day that just left the window, so a key
//! holds at most `keep_days` days per instance (bound in `docs/`; measured in
//! `lanes/tests/store.rs`).

use redis::AsyncCommands;
use trackstream_runtime::redis::RedisConn;

use crate::book::DayStats;

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The buckets of the lanes statistics in Redis.
#[derive(Clone)]
pub struct LaneStore {
    conn: RedisConn,
    instance: String,
    keep_days: i64,
}

/// The Redis key of a lane key's buckets.
pub fn redis_key(key: &str) -> String {
    format!("{{l:{key}}}")
}

impl LaneStore {
    /// A store writing as `instance` (unique per running instance, stable
    /// across its restarts so it keeps adding to its own buckets) and keeping
    /// `keep_days` days.
    pub fn new(conn: RedisConn, instance: impl Into<String>, keep_days: i64) -> Self {
        LaneStore {
            conn,
            instance: instance.into(),
            keep_days: keep_days.max(1),
        }
    }

    /// Stores this instance's bucket of `key` for `day` (days since the Unix
    /// epoch, UTC).
    pub async fn write(&self, key: &str, day: i64, stats: &DayStats) -> redis::RedisResult<()> {
        let bytes = serde_json::to_vec(stats).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "encoding a bucket", e.to_string()))
        })?;
        let redis_key = redis_key(key);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset(&redis_key, format!("{day}/{}", self.instance), bytes)
            .ignore()
            .hdel(
                &redis_key,
                format!("{}/{}", day - self.keep_days, self.instance),
            )
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&redis_key)
            .arg((day + self.keep_days + 1) * DAY_MS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// `key`'s statistics over the `days` whole days before `day`, every
    /// instance's buckets merged. A field that does not decode (written by an
    /// incompatible version) is skipped, not fatal.
    pub async fn window(&self, key: &str, day: i64, days: i64) -> redis::RedisResult<DayStats> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, Vec<u8>)> = conn.hgetall(redis_key(key)).await?;
        let mut merged = DayStats::default();
        for (field, bytes) in fields {
            let Some(bucket_day) = field
                .split_once('/')
                .and_then(|(d, _)| d.parse::<i64>().ok())
            else {
                continue;
            };
            if bucket_day < day - days || bucket_day >= day {
                continue;
            }
            if let Ok(stats) = serde_json::from_slice::<DayStats>(&bytes) {
                merged.merge(&stats);
            }
        }
        Ok(merged)
    }
}
