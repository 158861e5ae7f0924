//! Deciding a held message: one read of everything the decision needs
//! ([`Snapshot`]), then an atomic claim of the outcome that fails if a parcel
//! joined in between, and the final marks (`sent`, `dead`).

use std::collections::BTreeMap;

use prost::Message;
use trackstream_proto::v1::{Milestone, Shipment};
use trackstream_runtime::order_log;

use super::{Held, Outbox, higher_than, ht_key, hw_key};
use crate::messages::Higher;

/// What claiming a decided message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Ours: leased for sending, or marked superseded, as asked.
    Done,
    /// Nothing to send (sent, superseded, or never created): unschedule it.
    Gone,
    /// Another instance holds an unexpired lease on it.
    Busy,
    /// A parcel joined it since the snapshot: decide again.
    Changed,
}

/// What [`Outbox::claim`] should do with a held message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim<'a> {
    /// Lease it for sending under this token.
    Send(&'a str),
    /// Mark it superseded (never sent).
    Supersede,
}

/// Everything the decision about one held message reads, in one round trip
/// (every key carries the order's hash tag).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The milestone's state (`held`, `sending:…`, `sent`, …).
    pub state: Option<String>,
    /// The [`Held`] written by whoever created the message (fallback for
    /// messages held before per-parcel entries existed).
    pub creator: Option<Held>,
    /// Waybill key → location of every parcel that reached the milestone.
    pub locations: BTreeMap<String, String>,
    /// Waybill key → earliest event time (ms) it reached the milestone.
    pub times: BTreeMap<String, i64>,
    /// Waybill key → the [`Held`] of its earliest event (shipment, reason).
    pub parcels: BTreeMap<String, Held>,
    /// Higher-ranked milestones of the order with their reach times.
    pub higher: Vec<Higher>,
    /// Every registration (or update-seen shipment) of the order.
    pub registrations: Vec<Shipment>,
}

pub(super) const CLAIM_LUA: &str = r"
-- KEYS: 1 ms, 2 held, 3 hw:<m>
-- ARGV: 1 milestone, 2 now ms, 3 lease token or '' to supersede, 4 parcels seen
local m = ARGV[1]
local state = redis.call('HGET', KEYS[1], m)
if not state then return 'gone' end
if state ~= 'held' then
  local lease = string.match(state, '^sending:(%d+):')
  if not lease then return 'gone' end
  if tonumber(lease) > tonumber(ARGV[2]) then return 'busy' end
end
if redis.call('HLEN', KEYS[3]) ~= tonumber(ARGV[4]) then return 'changed' end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], m, ARGV[3])
  return 'done'
end
redis.call('HSET', KEYS[1], m, 'superseded')
redis.call('HDEL', KEYS[2], m)
for _, wb in ipairs(redis.call('HKEYS', KEYS[3])) do redis.call('HDEL', KEYS[2], m .. '/' .. wb) end
return 'done'
";

pub(super) const FINISH_LUA: &str = r"
-- KEYS: 1 ms, 2 held, 3 hw:<m>. ARGV: 1 milestone, 2 final state
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
for _, wb in ipairs(redis.call('HKEYS', KEYS[3])) do
  redis.call('HDEL', KEYS[2], ARGV[1] .. '/' .. wb)
end
return 1
";

impl Outbox {
    /// Reads the message of `milestone` and what its decision depends on.
    pub async fn snapshot(
        &self,
        order_ref: &str,
        milestone: Milestone,
    ) -> redis::RedisResult<Snapshot> {
        let higher = higher_than(milestone);
        let ms = order_log::key(order_ref, "ms");
        let mut pipe = redis::pipe();
        pipe.hget(&ms, milestone.as_str_name())
            .hgetall(order_log::key(order_ref, "held"))
            .hgetall(hw_key(order_ref, milestone))
            .hgetall(ht_key(order_ref, milestone))
            .hvals(order_log::key(order_ref, "parcels"))
            .hvals(order_log::key(order_ref, "returns"));
        for m in &higher {
            pipe.hget(&ms, m.as_str_name())
                .hgetall(ht_key(order_ref, *m));
        }
        let mut conn = self.conn.clone();
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut values = values.into_iter();
        let mut next = || values.next().unwrap_or(redis::Value::Nil);
        let state: Option<String> = redis::from_redis_value(next())?;
        let held: BTreeMap<String, Vec<u8>> = redis::from_redis_value(next())?;
        let locations: BTreeMap<String, String> = redis::from_redis_value(next())?;
        let times: BTreeMap<String, String> = redis::from_redis_value(next())?;
        let outbound: Vec<Vec<u8>> = redis::from_redis_value(next())?;
        let returns: Vec<Vec<u8>> = redis::from_redis_value(next())?;
        let mut snapshot = Snapshot {
            state,
            creator: held
                .get(milestone.as_str_name())
                .and_then(|b| Held::decode(b.as_slice()).ok()),
            times: parse_times(times),
            registrations: outbound
                .iter()
                .chain(returns.iter())
                .filter_map(|b| Shipment::decode(b.as_slice()).ok())
                .collect(),
            ..Snapshot::default()
        };
        let prefix = format!("{}/", milestone.as_str_name());
        snapshot.parcels = held
            .iter()
            .filter_map(|(field, bytes)| {
                let key = field.strip_prefix(&prefix)?;
                Some((key.to_owned(), Held::decode(bytes.as_slice()).ok()?))
            })
            .collect();
        // A parcel held before reach times were recorded counts from the
        // message's creation.
        let created = snapshot
            .creator
            .as_ref()
            .map(|h| trackstream_proto::time::millis(h.created_at.as_ref()))
            .unwrap_or_default();
        for key in locations.keys() {
            snapshot.times.entry(key.clone()).or_insert(created);
        }
        snapshot.locations = locations;
        for m in higher {
            let state: Option<String> = redis::from_redis_value(next())?;
            let times: BTreeMap<String, String> = redis::from_redis_value(next())?;
            snapshot.higher.push(Higher {
                milestone: m,
                state,
                times: parse_times(times),
            });
        }
        Ok(snapshot)
    }

    /// Applies a decision made on a snapshot that saw `parcels_seen` parcels:
    /// leases the message for sending, or marks it superseded.
    pub async fn claim(
        &self,
        order_ref: &str,
        milestone: Milestone,
        now_ms: i64,
        claim: Claim<'_>,
        parcels_seen: usize,
    ) -> redis::RedisResult<Claimed> {
        let token = match claim {
            Claim::Send(token) => token,
            Claim::Supersede => "",
        };
        let mut conn = self.conn.clone();
        let reply: String = self
            .claim
            .key(order_log::key(order_ref, "ms"))
            .key(order_log::key(order_ref, "held"))
            .key(hw_key(order_ref, milestone))
            .arg(milestone.as_str_name())
            .arg(now_ms)
            .arg(token)
            .arg(parcels_seen)
            .invoke_async(&mut conn)
            .await?;
        Ok(match reply.as_str() {
            "done" => Claimed::Done,
            "busy" => Claimed::Busy,
            "changed" => Claimed::Changed,
            _ => Claimed::Gone,
        })
    }

    /// Marks a produced message `sent` for good.
    pub async fn done(&self, order_ref: &str, milestone: Milestone) -> redis::RedisResult<()> {
        self.finish(order_ref, milestone, "sent").await
    }

    /// Marks a message that can never be produced `dead` (it was dead-lettered):
    /// like `sent`, it is never taken again, but it supersedes nothing.
    pub async fn dead(&self, order_ref: &str, milestone: Milestone) -> redis::RedisResult<()> {
        self.finish(order_ref, milestone, "dead").await
    }

    async fn finish(
        &self,
        order_ref: &str,
        milestone: Milestone,
        state: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .finish
            .key(order_log::key(order_ref, "ms"))
            .key(order_log::key(order_ref, "held"))
            .key(hw_key(order_ref, milestone))
            .arg(milestone.as_str_name())
            .arg(state)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// Reach times as stored (decimal ms); an unreadable one is left out.
fn parse_times(raw: BTreeMap<String, String>) -> BTreeMap<String, i64> {
    raw.into_iter()
        .filter_map(|(key, at)| Some((key, at.parse().ok()?)))
        .collect()
}
