//! The day buckets in Redis, so every instance of the stream component adds
//! to one set of statistics and every reader merges the same.
//!
//! Layout: one hash per key, `{l:<key>}` — the hash tag keeps all of a key's
//! buckets in one Cluster slot (one round trip per window) while different
//! keys spread over the cluster. Field `<day>/<instance>` holds what that
//! instance counted that day (JSON [`DayStats`]). An instance only writes its
//! own fields and writes its cumulative bucket whole, so a retried write
//! stores the same bytes and two instances never overwrite each other. The
//! stream's instance is a partition of `tracking.updates` (one consumer owns
//! it at a time), and its bucket carries the offset of the last record it
//! counted (`upto`): a record re-read after a crash or a rebalance is skipped,
//! so every update is counted once whoever reads it;
//! readers merge the fields of the window's days (DDSketches merge exactly).
//! Each write sets the hash to expire `keep_days` after the bucket's day and
//! drops the writer's field of the day that just left the window, so a key
//! holds at most `keep_days` days per instance (bound in `docs/`; measured in
//! `lanes/tests/store.rs`).

use std::collections::BTreeMap;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use trackstream_runtime::redis::RedisConn;

use crate::book::DayStats;

const DAY_MS: i64 = 86_400_000;

/// One instance's bucket of one key and day, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Offset of the last record counted in it (-1: none; see the module doc).
    #[serde(default = "no_offset")]
    pub upto: i64,
    /// What was counted.
    #[serde(flatten)]
    pub stats: DayStats,
}

fn no_offset() -> i64 {
    -1
}

/// The buckets of the keys of one instance.
#[derive(Clone)]
pub struct LaneStore {
    conn: RedisConn,
    instance: String,
    keep_days: i64,
}

/// The Redis key of a statistics key: its own hash tag.
pub fn redis_key(key: &str) -> String {
    format!("{{l:{key}}}")
}

/// The statistics key of `key` counted over one merchant's parcels only.
pub fn merchant_key(merchant: &str, key: &str) -> String {
    format!("m:{}|{key}", merchant.replace(['{', '}', '|'], "_"))
}

/// The set of the keys a merchant's parcels were counted under (carrier and
/// lane levels), which its scorecards list.
pub fn merchant_index(merchant: &str) -> String {
    redis_key(&format!("idx|{}", merchant.replace(['{', '}', '|'], "_")))
}

fn encoding_error(e: serde_json::Error) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "encoding a bucket", e.to_string()))
}

impl LaneStore {
    /// A store writing as `instance`, keeping `keep_days` days.
    pub fn new(conn: RedisConn, instance: impl Into<String>, keep_days: i64) -> Self {
        LaneStore {
            conn,
            instance: instance.into(),
            keep_days: keep_days.max(1),
        }
    }

    /// Days kept.
    pub fn keep_days(&self) -> i64 {
        self.keep_days
    }

    /// The same store writing as another instance.
    pub fn as_instance(&self, instance: impl Into<String>) -> Self {
        LaneStore {
            instance: instance.into(),
            ..self.clone()
        }
    }

    /// Stores this instance's cumulative bucket of `key` for `day`, counted up
    /// to offset `upto`, drops its bucket of the day that left the window and
    /// sets the key's expiry.
    pub async fn write(
        &self,
        key: &str,
        day: i64,
        stats: &DayStats,
        upto: i64,
    ) -> redis::RedisResult<()> {
        // Encoded from a borrow: the same JSON as a [`Bucket`], no copy of
        // the sketches.
        #[derive(Serialize)]
        struct Borrowed<'a> {
            upto: i64,
            #[serde(flatten)]
            stats: &'a DayStats,
        }
        let bytes = serde_json::to_vec(&Borrowed { upto, stats }).map_err(encoding_error)?;
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

    /// This instance's own bucket of `key` for `day` (what it adds to).
    pub async fn own(&self, key: &str, day: i64) -> redis::RedisResult<Bucket> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = conn
            .hget(redis_key(key), format!("{day}/{}", self.instance))
            .await?;
        Ok(bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    }

    /// Every day of `key`, each merged over the instances (one round trip).
    pub async fn days(&self, key: &str) -> redis::RedisResult<BTreeMap<i64, DayStats>> {
        let mut conn = self.conn.clone();
        let fields: Vec<(String, Vec<u8>)> = conn.hgetall(redis_key(key)).await?;
        let mut days: BTreeMap<i64, DayStats> = BTreeMap::new();
        for (field, bytes) in fields {
            let Some(day) = field
                .split_once('/')
                .and_then(|(d, _)| d.parse::<i64>().ok())
            else {
                continue;
            };
            // An unreadable bucket (a newer version's, a damaged one) is
            // left out rather than failing every reader of the key.
            if let Ok(bucket) = serde_json::from_slice::<Bucket>(&bytes) {
                days.entry(day).or_default().merge(&bucket.stats);
            }
        }
        Ok(days)
    }

    /// `key`'s statistics over the `days` whole days before `day`.
    pub async fn window(&self, key: &str, day: i64, days: i64) -> redis::RedisResult<DayStats> {
        Ok(window_of(&self.days(key).await?, day, days))
    }

    /// Notes that `merchant`'s parcels were counted under `keys`.
    pub async fn index(&self, merchant: &str, keys: &[String]) -> redis::RedisResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let index = merchant_index(merchant);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .sadd(&index, keys)
            .ignore()
            .expire(&index, self.keep_days * 86_400)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// The keys `merchant`'s parcels were counted under.
    pub async fn indexed(&self, merchant: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = conn.smembers(merchant_index(merchant)).await?;
        keys.sort();
        Ok(keys)
    }
}

/// The merge of `all`'s days in `[day - days, day)`.
pub fn window_of(all: &BTreeMap<i64, DayStats>, day: i64, days: i64) -> DayStats {
    let mut merged = DayStats::default();
    for stats in all.range(day - days..day).map(|(_, s)| s) {
        merged.merge(stats);
    }
    merged
}
