//! Waybill ownership, checked synchronously: ingest is the only stage that can
//! still answer the merchant, so it is where "this waybill is someone else's"
//! becomes a 409 instead of a silent takeover downstream.
//!
//! A claim is the Redis key `runtime::ownership::owner_key(carrier, waybill)`
//! holding the owning merchant id, set with `SET NX`-like semantics and an
//! expiry (`ownership.claim_ttl`). The detector refreshes the expiry with the
//! parcel's retention, so ownership ends when the parcel's data does.
//!
//! **All or nothing, per request.** Every shipment of a request is claimed
//! before anything is written to Kafka, one small script per key (the keys hash
//! to different Redis Cluster slots, so one script over all of them is not
//! possible there), in one round trip: pipelined on standalone Redis, sent
//! concurrently on Cluster (which refuses cross-slot pipelines). If any key is owned by
//! another merchant, the claims this request *created* are released again
//! (compare-and-delete: only if they still name this merchant) and nothing is
//! written. Claims that already named this merchant are left as they were,
//! their expiry extended. A registration that then fails permanently at the
//! broker (413, 422) releases its new claims too; one that fails with 503 keeps
//! them, because some of its records may have been written and the merchant
//! will retry.
//!
//! Known edge: two concurrent requests of the *same* merchant naming the same
//! new waybill, where the one that created the claim then conflicts on another
//! item, release the claim the other one relied on. The other request's
//! registration is still written under the right merchant; the waybill is then
//! unclaimed until the merchant registers it again or the detector refreshes
//! it, and the detector refuses another merchant's record for a waybill it
//! already holds a registration of.

use std::time::Duration;

use redis::{Cmd, Value};
use trackstream_runtime::ApiError;
use trackstream_runtime::ownership::owner_key;
use trackstream_runtime::redis::RedisConn;

/// Claims `KEYS[1]` for `ARGV[1]` for `ARGV[2]` ms. 1 = created, 2 = already
/// this merchant's (expiry extended to at least `ARGV[2]`, never shortened: the
/// detector may have set a longer retention), 0 = another merchant's.
const CLAIM: &str = r"
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if owner == ARGV[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl >= 0 and ttl < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return 2
end
return 0
";

/// Deletes `KEYS[1]` only if it still names `ARGV[1]`.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Why a set of claims could not be taken, typed by what the caller does.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Item `index` is owned by another merchant: reject (409). Nothing of the
    /// request is claimed any more.
    #[error("item {index} is registered by another merchant")]
    Conflict {
        /// Position of the first conflicting item in the request.
        index: usize,
    },
    /// Redis did not answer (in time): retry (503).
    #[error("ownership store unavailable: {0}")]
    Unavailable(String),
}

impl From<ClaimError> for ApiError {
    fn from(err: ClaimError) -> Self {
        match err {
            // The caller phrases the conflict with the item's waybill.
            ClaimError::Conflict { index } => {
                ApiError::Conflict(format!("item {index} is registered by another merchant"))
            }
            ClaimError::Unavailable(_) => {
                ApiError::Unavailable("ownership store unavailable, retry later".into())
            }
        }
    }
}

/// The claims a successful [`Claims::claim_all`] created (to release them if
/// the request fails permanently afterwards).
#[derive(Debug, Default)]
pub struct Created {
    keys: Vec<String>,
}

impl Created {
    /// How many claims the request created (the rest were already the merchant's).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when every claim already existed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Claims and looks up waybill owners in Redis.
#[derive(Clone)]
pub struct Claims {
    redis: RedisConn,
    ttl_ms: u64,
    timeout: Duration,
}

impl Claims {
    /// Claims over `redis`, expiring after `ttl` unless refreshed; each
    /// round trip may take at most `timeout`.
    pub fn new(redis: RedisConn, ttl: Duration, timeout: Duration) -> Self {
        Claims {
            redis,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            timeout,
        }
    }

    /// Claims every `(carrier, waybill)` for `merchant`, or none of them.
    pub async fn claim_all(
        &self,
        merchant: &str,
        waybills: &[(&str, &str)],
    ) -> Result<Created, ClaimError> {
        let keys: Vec<String> = waybills.iter().map(|(c, w)| owner_key(c, w)).collect();
        let commands = keys
            .iter()
            .map(|key| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(CLAIM)
                    .arg(1)
                    .arg(key)
                    .arg(merchant)
                    .arg(self.ttl_ms);
                cmd
            })
            .collect();
        let results = self.run(commands).await?;
        let mut created = Created::default();
        let mut conflict = None;
        for (index, (key, result)) in keys.into_iter().zip(results).enumerate() {
            match redis::from_redis_value::<i64>(result) {
                Ok(1) => created.keys.push(key),
                Ok(0) if conflict.is_none() => conflict = Some(index),
                Ok(_) => {}
                Err(err) => {
                    // Not the script's answer: treat the store as unusable,
                    // and undo what this request created.
                    self.release(merchant, created).await;
                    return Err(ClaimError::Unavailable(format!(
                        "unexpected claim reply: {err}"
                    )));
                }
            }
        }
        match conflict {
            None => Ok(created),
            Some(index) => {
                self.release(merchant, created).await;
                Err(ClaimError::Conflict { index })
            }
        }
    }

    /// Releases claims created by a request that then wrote nothing. A failure
    /// is logged: the claims then expire with their TTL, and the merchant's
    /// retry finds them already its own.
    pub async fn release(&self, merchant: &str, created: Created) {
        if created.is_empty() {
            return;
        }
        let commands = created
            .keys
            .iter()
            .map(|key| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(RELEASE).arg(1).arg(key).arg(merchant);
                cmd
            })
            .collect();
        if let Err(err) = self.run(commands).await {
            tracing::warn!(%err, merchant_id = merchant, claims = created.len(),
                "could not release the claims of a refused registration; they expire with their TTL");
        }
    }

    /// The owning merchant of each `(carrier, waybill)`, `None` when unclaimed.
    pub async fn owners(
        &self,
        waybills: &[(&str, &str)],
    ) -> Result<Vec<Option<String>>, ClaimError> {
        let commands = waybills
            .iter()
            .map(|(carrier, waybill)| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(owner_key(carrier, waybill));
                cmd
            })
            .collect();
        let values = self.run(commands).await?;
        Ok(values
            .into_iter()
            .map(|v| redis::from_redis_value::<Option<String>>(v).ok().flatten())
            .collect())
    }

    /// Runs `commands` (one key each) in one round trip and returns their
    /// replies in order. Standalone Redis: one pipeline. Redis Cluster refuses
    /// a pipeline across slots, and each waybill's key has its own slot, so
    /// there the commands go out concurrently over the multiplexed connection.
    async fn run(&self, commands: Vec<Cmd>) -> Result<Vec<Value>, ClaimError> {
        let work = async {
            match &self.redis {
                RedisConn::Single(_) => {
                    let mut pipe = redis::pipe();
                    for cmd in commands {
                        pipe.add_command(cmd);
                    }
                    let mut conn = self.redis.clone();
                    pipe.query_async::<Vec<Value>>(&mut conn).await
                }
                RedisConn::Cluster(_) => {
                    futures::future::try_join_all(commands.into_iter().map(|cmd| {
                        let mut conn = self.redis.clone();
                        async move { cmd.query_async::<Value>(&mut conn).await }
                    }))
                    .await
                }
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(err)) => Err(ClaimError::Unavailable(err.category().to_owned())),
            Err(_) => Err(ClaimError::Unavailable(format!(
                "no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}
