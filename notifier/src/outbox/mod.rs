//! Held buyer messages in Redis: the state behind dedup, burst merging, quiet
//! hours and superseding, shared by every notifier instance.
//!
//! Functions take an order ref (`order_log::order_ref`: merchant id and order id,
//! since order ids are unique only within a merchant). Per order `O` (hash tag
//! `{o:O}` with `O` the order ref, so each script touches one Cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{o:O}:ms` | hash | milestone → `held` \| `sending:<lease-ms>:<instance>` \| `sent` \| `superseded` \| `dead` (dead-lettered) |
//! | `{o:O}:held` | hash | milestone → encoded [`Held`] of the message's creator; `<MILESTONE>/<waybill key>` → the [`Held`] of that parcel's earliest event (its shipment without contact, reason) |
//! | `{o:O}:hw:<milestone>` | hash | waybill key → location: the parcels that reached the milestone |
//! | `{o:O}:ht:<milestone>` | hash | waybill key → earliest event time (ms) the parcel reached the milestone: what composition and superseding are decided on ([`crate::messages::decide`]) |
//! | `{o:O}:parcels` | hash | waybill key → encoded `Shipment` (outbound parcels known for the order; the merchant's registration, with the buyer's contact, or a parcel seen only in an update, without) |
//! | `{o:O}:returns` | hash | waybill key → encoded `Shipment` (return shipments, likewise) |
//! | `{o:O}:alerts` | hash | alert id → rank + encoded `Alert` (the open-alert index of `GetOrder`) |
//! | `{o:O}:final` | hash | waybill key → ms its parcel reached a terminal status (notifier clock) |
//! | `{o:O}:incidents` | hash | waybill key → id of the incident the parcel is linked to (`GetOrder` fills its open alerts' `incident_id` from it; [`crate::incidents`]) |
//!
//! `:parcels` and `:returns` are the only keys holding a raw buyer contact
//! ([`crate::contact`]). Every key above expires together ([`crate::lifecycle`]).
//!
//! Due times live in `SHARDS` sorted sets `{nsched<k>}:due` (member
//! `<MILESTONE>:<order ref>`, score = due ms), shard = stable hash of the order ref.
//!
//! Life of a message: the first parcel reaching a milestone creates it `held`
//! (scheduled for when its decision can no longer change, or the end of quiet
//! hours); more parcels join it, each with its event time; it becomes due early
//! once every known parcel is in. Whoever flushes it (the consuming instance
//! inline, or any instance's flusher) reads a [`Snapshot`], decides on event
//! times, and claims the outcome atomically: a lease (`sending:`) to produce,
//! then `sent` and unscheduled; or `superseded`. A claim fails if a parcel
//! joined since the snapshot, and the decision is made again. A crash after
//! the lease re-sends after the lease expires with the same `notification_id`,
//! which gateways dedup on. The member is added to the schedule *before* the
//! message is created, so a crash between the two leaves a harmless stray
//! member, never a held message nobody will send.

use prost::Message;
use redis::AsyncCommands;
use trackstream_proto::keys;
use trackstream_proto::v1::{Milestone, Shipment};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use crate::quiet::stable_hash;
use crate::templates::{self, MILESTONES};

mod snapshot;

use snapshot::{CLAIM_LUA, FINISH_LUA};
pub use snapshot::{Claim, Claimed, Snapshot};

/// Number of schedule shards (spreads the schedule over Cluster slots).
pub const SHARDS: u32 = 16;

/// A message waiting to be sent: what is needed to render it at flush time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Held {
    /// The shipment of the first parcel (buyer, merchant, locale, time zone).
    #[prost(message, optional, tag = "1")]
    pub shipment: Option<Shipment>,
    /// `Reason` of a delay or exception.
    #[prost(int32, tag = "2")]
    pub reason: i32,
    /// When the milestone was reached (event or alert time).
    #[prost(message, optional, tag = "3")]
    pub created_at: Option<prost_types::Timestamp>,
    /// The delivery prediction of the update that reached the milestone.
    #[prost(message, optional, tag = "4")]
    pub prediction: Option<trackstream_proto::v1::DeliveryPrediction>,
    /// The incident of an INCIDENT milestone (what its message says).
    #[prost(message, optional, tag = "5")]
    pub incident: Option<IncidentNote>,
}

/// What an INCIDENT message says about its incident, kept with the held
/// message so it is rendered from the record that linked the parcel. Nothing
/// of the buyer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IncidentNote {
    /// The incident's id (logs).
    #[prost(string, tag = "1")]
    pub incident_id: String,
    /// `IncidentReason`.
    #[prost(int32, tag = "2")]
    pub reason: i32,
    /// Where the parcels are held up, as a buyer reads it (the city, else the
    /// place's last part or the region).
    #[prost(string, tag = "3")]
    pub place: String,
    /// Expected extra delay in hours; 0 = unknown.
    #[prost(uint32, tag = "4")]
    pub expected_delay_hours: u32,
    /// A declared incident's expected end.
    #[prost(message, optional, tag = "5")]
    pub until: Option<prost_types::Timestamp>,
}

/// What adding a parcel to a milestone's message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The milestone was already sent, superseded or is being sent.
    Duplicate,
    /// The message is held; `covered` parcels of `known` reached it.
    Held {
        /// Whether this call created it.
        created: bool,
        /// Parcels that reached the milestone.
        covered: u64,
        /// Parcels known for the order (of the message's direction).
        known: u64,
        /// The earliest event time (ms) at which a parcel reached it.
        anchor: i64,
    },
}

const ADD_LUA: &str = r"
-- KEYS: 1 ms, 2 held, 3 hw:<m>, 4 parcels (or returns), 5 ht:<m>
-- ARGV: 1 milestone, 2 waybill key, 3 location, 4 held bytes, 5 event ms
local state = redis.call('HGET', KEYS[1], ARGV[1])
if state and state ~= 'held' then return {0, 0, 0, 0} end
if not state then
  redis.call('HSET', KEYS[1], ARGV[1], 'held')
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
end
-- The parcel's earliest event wins (time, location, held copy), whatever order
-- its events arrive in.
local at = tonumber(ARGV[5])
local current = tonumber(redis.call('HGET', KEYS[5], ARGV[2]) or '')
if not current or at < current then
  redis.call('HSET', KEYS[5], ARGV[2], ARGV[5])
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1] .. '/' .. ARGV[2], ARGV[4])
end
local anchor = at
for _, v in ipairs(redis.call('HVALS', KEYS[5])) do
  local t = tonumber(v)
  if t and t < anchor then anchor = t end
end
return {state and 2 or 1, redis.call('HLEN', KEYS[3]), redis.call('HLEN', KEYS[4]), anchor}
";

const RELEASE_LUA: &str = r"
-- KEYS: 1 ms. ARGV: 1 milestone, 2 our lease token
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], 'held')
  return 1
end
return 0
";

/// Progress rank of a milestone: a message may be superseded by a higher-ranked
/// one of the same order that all its parcels reached soon enough
/// ([`crate::messages::decide`]). Return-received stands apart (0).
pub fn rank(milestone: Milestone) -> u8 {
    match milestone {
        Milestone::Shipped | Milestone::Delayed => 1,
        Milestone::OutForDelivery | Milestone::Exception | Milestone::Incident => 2,
        Milestone::AvailableForPickup => 3,
        Milestone::Delivered => 4,
        _ => 0,
    }
}

/// The Redis side of held messages.
#[derive(Clone)]
pub struct Outbox {
    conn: RedisConn,
    add: redis::Script,
    claim: redis::Script,
    finish: redis::Script,
    release: redis::Script,
}

/// Every notifier key of an order, `:parcels`, `:returns` and `:final` first
/// (the lifecycle script relies on that order).
pub fn order_keys(order_ref: &str) -> Vec<String> {
    let mut keys: Vec<String> = [
        "parcels",
        "returns",
        "final",
        "ms",
        "held",
        "alerts",
        "incidents",
    ]
    .into_iter()
    .map(|suffix| order_log::key(order_ref, suffix))
    .collect();
    keys.extend(MILESTONES.into_iter().map(|m| hw_key(order_ref, m)));
    keys.extend(MILESTONES.into_iter().map(|m| ht_key(order_ref, m)));
    keys
}

fn hw_key(order_ref: &str, milestone: Milestone) -> String {
    order_log::key(
        order_ref,
        &format!("hw:{}", templates::milestone_name(milestone)),
    )
}

fn ht_key(order_ref: &str, milestone: Milestone) -> String {
    order_log::key(
        order_ref,
        &format!("ht:{}", templates::milestone_name(milestone)),
    )
}

/// The milestones ranked above `milestone` (none for unranked ones).
fn higher_than(milestone: Milestone) -> Vec<Milestone> {
    let own = rank(milestone);
    MILESTONES
        .into_iter()
        .filter(|m| own > 0 && rank(*m) > own)
        .collect()
}

/// The schedule shard key of `order_ref`.
pub fn shard_key_of(order_ref: &str) -> String {
    shard_key(u32::try_from(stable_hash(order_ref) % u64::from(SHARDS)).unwrap_or(0))
}

/// The schedule key of shard `shard`.
pub fn shard_key(shard: u32) -> String {
    format!("{{nsched{shard}}}:due")
}

/// The schedule member of a milestone of an order.
pub fn member(order_ref: &str, milestone: Milestone) -> String {
    format!("{}:{order_ref}", milestone.as_str_name())
}

fn parse_member(member: &str) -> Option<(String, Milestone)> {
    let (name, order) = member.split_once(':')?;
    let milestone = Milestone::from_str_name(name)?;
    (!order.is_empty()).then(|| (order.to_owned(), milestone))
}

impl Outbox {
    /// An outbox on `conn`. Expiry of its keys is [`crate::lifecycle`]'s job.
    pub fn new(conn: RedisConn) -> Self {
        Outbox {
            conn,
            add: redis::Script::new(ADD_LUA),
            claim: redis::Script::new(CLAIM_LUA),
            finish: redis::Script::new(FINISH_LUA),
            release: redis::Script::new(RELEASE_LUA),
        }
    }

    /// The milestone's state (`held`, `sending:…`, `sent`, `superseded`), if any.
    pub async fn state(
        &self,
        order_ref: &str,
        milestone: Milestone,
    ) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        conn.hget(order_log::key(order_ref, "ms"), milestone.as_str_name())
            .await
    }

    /// Remembers a parcel of its order: a registration overwrites, a shipment
    /// seen in an update only fills a gap (the registration topic is newer) and
    /// is stored without the buyer's contact — contacts come from registrations
    /// only ([`crate::contact`]). Returns whether an update's shipment filled a
    /// gap: then the registration has not been read yet (an update can overtake
    /// it across partitions), and its message waits the catch-up settle.
    pub async fn record_parcel(
        &self,
        shipment: &Shipment,
        overwrite: bool,
    ) -> redis::RedisResult<bool> {
        if shipment.order_id.is_empty() {
            return Ok(false);
        }
        let stripped;
        let shipment = if overwrite {
            shipment
        } else {
            stripped = crate::contact::stripped(shipment.clone());
            &stripped
        };
        let key = order_log::key(
            &order_log::order_ref(&shipment.merchant_id, &shipment.order_id),
            if shipment.is_return {
                "returns"
            } else {
                "parcels"
            },
        );
        let field = keys::waybill_key(&shipment.carrier, &shipment.waybill);
        let mut conn = self.conn.clone();
        if overwrite {
            redis::cmd("HSET")
                .arg(&key)
                .arg(field)
                .arg(shipment.encode_to_vec())
                .query_async::<()>(&mut conn)
                .await?;
            Ok(false)
        } else {
            redis::cmd("HSETNX")
                .arg(&key)
                .arg(field)
                .arg(shipment.encode_to_vec())
                .query_async::<bool>(&mut conn)
                .await
        }
    }

    /// Every parcel (outbound and return) known for the order.
    pub async fn parcels(&self, order_ref: &str) -> redis::RedisResult<Vec<Shipment>> {
        let mut conn = self.conn.clone();
        let (outbound, returns): (Vec<Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
            .hvals(order_log::key(order_ref, "parcels"))
            .hvals(order_log::key(order_ref, "returns"))
            .query_async(&mut conn)
            .await?;
        Ok(outbound
            .iter()
            .chain(returns.iter())
            .filter_map(|b| Shipment::decode(b.as_slice()).ok())
            .collect())
    }

    /// One parcel of the order by waybill key.
    pub async fn parcel(
        &self,
        order_ref: &str,
        waybill_key: &str,
    ) -> redis::RedisResult<Option<Shipment>> {
        let mut conn = self.conn.clone();
        let (outbound, returned): (Option<Vec<u8>>, Option<Vec<u8>>) = redis::pipe()
            .hget(order_log::key(order_ref, "parcels"), waybill_key)
            .hget(order_log::key(order_ref, "returns"), waybill_key)
            .query_async(&mut conn)
            .await?;
        Ok(outbound
            .or(returned)
            .and_then(|b| Shipment::decode(b.as_slice()).ok()))
    }

    /// Schedules the message for `due_ms`, or earlier if it already is
    /// (`ZADD LT`): a due time only ever moves forward in time by [`Outbox::reschedule`].
    pub async fn schedule(
        &self,
        order_ref: &str,
        milestone: Milestone,
        due_ms: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("ZADD")
            .arg(shard_key_of(order_ref))
            .arg("LT")
            .arg(due_ms)
            .arg(member(order_ref, milestone))
            .query_async(&mut conn)
            .await
    }

    /// Moves the message's due time to `due_ms` whatever it was.
    pub async fn reschedule(
        &self,
        order_ref: &str,
        milestone: Milestone,
        due_ms: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        conn.zadd(
            shard_key_of(order_ref),
            member(order_ref, milestone),
            due_ms,
        )
        .await
    }

    /// Removes the message from the schedule.
    pub async fn unschedule(
        &self,
        order_ref: &str,
        milestone: Milestone,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        conn.zrem(shard_key_of(order_ref), member(order_ref, milestone))
            .await
    }

    /// Messages of `shard` due at `now_ms` (at most `limit`), earliest first.
    pub async fn due(
        &self,
        shard: u32,
        now_ms: i64,
        limit: usize,
    ) -> redis::RedisResult<Vec<(String, Milestone)>> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(shard_key(shard))
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(members.iter().filter_map(|m| parse_member(m)).collect())
    }

    /// Adds parcel `waybill_key` (at `location`, reached at event time `at_ms`)
    /// to the order's message for `milestone`, creating it from `held` if there
    /// is none. A parcel's earliest event wins, whatever the arrival order.
    #[allow(clippy::too_many_arguments)]
    pub async fn add(
        &self,
        order_ref: &str,
        milestone: Milestone,
        return_direction: bool,
        waybill_key: &str,
        location: &str,
        held: &Held,
        at_ms: i64,
    ) -> redis::RedisResult<Added> {
        let mut conn = self.conn.clone();
        let (code, covered, known, anchor): (i64, u64, u64, i64) = self
            .add
            .key(order_log::key(order_ref, "ms"))
            .key(order_log::key(order_ref, "held"))
            .key(hw_key(order_ref, milestone))
            .key(order_log::key(
                order_ref,
                if return_direction {
                    "returns"
                } else {
                    "parcels"
                },
            ))
            .key(ht_key(order_ref, milestone))
            .arg(milestone.as_str_name())
            .arg(waybill_key)
            .arg(location)
            .arg(held.encode_to_vec())
            .arg(at_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(match code {
            0 => Added::Duplicate,
            created => Added::Held {
                created: created == 1,
                covered,
                known,
                anchor,
            },
        })
    }

    /// Gives a lease back (the produce failed), so the message is retried at
    /// once instead of after the lease expires.
    pub async fn release(
        &self,
        order_ref: &str,
        milestone: Milestone,
        token: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .release
            .key(order_log::key(order_ref, "ms"))
            .arg(milestone.as_str_name())
            .arg(token)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_shards_are_stable() {
        let m = member("O:1", Milestone::OutForDelivery);
        assert_eq!(
            parse_member(&m),
            Some(("O:1".to_owned(), Milestone::OutForDelivery))
        );
        assert_eq!(parse_member("MILESTONE_NOPE:O"), None);
        assert_eq!(parse_member("MILESTONE_SHIPPED:"), None);
        assert_eq!(shard_key_of("O-1"), shard_key_of("O-1"));
        let shards: std::collections::BTreeSet<String> =
            (0..200).map(|i| shard_key_of(&format!("O-{i}"))).collect();
        assert_eq!(
            shards.len(),
            SHARDS as usize,
            "orders spread over every shard"
        );
    }

    #[test]
    fn later_progress_outranks_earlier_and_returns_stand_apart() {
        assert!(rank(Milestone::Delivered) > rank(Milestone::OutForDelivery));
        assert!(rank(Milestone::OutForDelivery) > rank(Milestone::Shipped));
        assert!(rank(Milestone::Delivered) > rank(Milestone::Exception));
        assert_eq!(rank(Milestone::Exception), rank(Milestone::OutForDelivery));
        assert_eq!(rank(Milestone::Incident), rank(Milestone::Exception));
        assert!(rank(Milestone::Incident) > rank(Milestone::Delayed));
        assert_eq!(rank(Milestone::ReturnReceived), 0);
    }
}
