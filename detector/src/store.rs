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
//! Per order `O` of merchant `M` (hash tag `{o:M/O}`; written `{o:O}` below):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{o:O}:seq` | string | last sequence number |
//! | `{o:O}:ids` | hash | update id → sequence number (makes assignment idempotent) |
//! | `{o:O}:updates` | zset | seq → encoded `ShipmentUpdate` (WatchOrder replay) |
//! | `{o:O}:merchant` | string | owning merchant id (scopes gRPC reads) |
//!
//! Lifecycle (see [`crate::lifecycle`]): every commit sets an absolute expiry
//! (`PEXPIREAT`, from the detector's wall clock) on the waybill's `wb` and `ev`
//! keys, and the sequence step on the order's keys; the ownership claim gets
//! the waybill's expiry in a separate command ([`Store::expire_owners`]). The
//! per-partition timer zset and outbox do not expire: a timer member of an
//! expired waybill is dropped when it comes due, and outbox entries live only
//! until produced or dead-lettered.
//!
//! Scripts live in `lua/*.lua`, each opening with its KEYS/ARGV contract. No
//! script unpacks an unbounded list: multi-value commands are issued in chunks
//! (Lua's `unpack` fails past ~8 000 values, after the script's earlier
//! writes).
//!
//! A waybill change is committed by a Lua script: compare the version, write
//! state, history, timers and outbox entries in one step. Outputs are then
//! delivered (sequence assigned, produced, acknowledged) and only then removed
//! from the outbox, so a crash anywhere re-delivers the same ids instead of
//! losing them.
//!
//! The consumer's batch path works a partition at a time with a constant number
//! of round trips ([`Store::load_partition`], [`Store::commit_partition`],
//! [`Store::finish_partition`]): per-waybill commands cost Redis about as much
//! in per-command overhead as in work, and the detector used to spend five
//! round trips per scan. The commit script still compares and sets each
//! waybill's version on its own, so concurrent instances stay correct; on a
//! standalone server it also assigns the updates' sequence numbers (in Redis
//! Cluster the order keys live in other slots, so [`Store::sequence`] does it
//! per update). The timer loop and outbox re-delivery use the single-waybill
//! operations ([`Store::load`], [`Store::commit`], [`Store::prepare`]).
//!
//! Size: over the 700-line guide; the Lua now lives in `lua/*.lua`. The
//! remaining split (layout, batch load, commit, timers, outbox) follows issue
//! 11's single write path, which removes one of the two commit scripts.

use std::collections::HashMap;

use prost::Message;
use redis::Script;
use trackstream_proto::v1::{Alert, Shipment, ShipmentUpdate, TrackingEvent};
use trackstream_runtime::redis::RedisConn;

use crate::engine::{Output, Waybill, WaybillState};

/// Keys of one partition.
pub fn state_key(partition: i32, waybill_key: &str) -> String {
    format!("{{p{partition}}}:wb:{waybill_key}")
}

/// History hash of a waybill.
pub fn history_key(partition: i32, waybill_key: &str) -> String {
    format!("{{p{partition}}}:ev:{waybill_key}")
}

/// Timer set of a partition.
pub fn timers_key(partition: i32) -> String {
    format!("{{p{partition}}}:timers")
}

/// Outbox of a partition.
pub fn outbox_key(partition: i32) -> String {
    format!("{{p{partition}}}:outbox")
}

/// Watermark of a partition.
pub fn watermark_key(partition: i32) -> String {
    format!("{{p{partition}}}:wm")
}

/// Order keys share the `{o:<merchant>/<order>}` tag: order ids are unique only
/// within a merchant (layout in `trackstream_runtime::order_log`).
pub fn order_key(merchant_id: &str, order_id: &str, suffix: &str) -> String {
    use trackstream_runtime::order_log;
    order_log::key(&order_log::order_ref(merchant_id, order_id), suffix)
}

/// The commit scripts' registration argument: the encoded registration when it
/// changed, empty for "leave the stored one as it is".
fn registration_arg(waybill: &crate::engine::Waybill) -> Vec<u8> {
    match (&waybill.registration, waybill.registration_changed) {
        (Some(registration), true) => registration.encode_to_vec(),
        _ => Vec::new(),
    }
}

/// Timer member of a waybill's rule.
pub fn timer_member(waybill_key: &str, rule: &str) -> String {
    format!("{waybill_key}|{rule}")
}

/// Lua scripts, one file each; every file opens with its KEYS/ARGV contract.
mod lua {
    pub const COMMIT: &str = include_str!("lua/commit.lua");
    pub const SEQUENCE: &str = include_str!("lua/sequence.lua");
    pub const COMMIT_BATCH: &str = include_str!("lua/commit_batch.lua");
    pub const DROP_TIMER: &str = include_str!("lua/drop_timer.lua");
    pub const WATERMARK: &str = include_str!("lua/watermark.lua");
}

/// Sequence scripts in flight at once when re-delivering outputs.
const PREPARE_CONCURRENCY: usize = 64;

/// Prepends protobuf field 1 (`seq`, varint) to an update encoded without it —
/// the same bytes the sequence script stores, so replay and live agree exactly.
pub fn with_seq(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 11);
    out.push(0x08);
    prost::encoding::encode_varint(seq, &mut out);
    out.extend_from_slice(body);
    out
}

/// A loaded waybill plus the ids of the batch's events it already has.
pub struct Loaded {
    /// The waybill.
    pub waybill: Waybill,
    /// Event ids of the batch already in history (duplicates).
    pub known: std::collections::HashSet<String>,
}

/// The detector's Redis operations.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    commit: Script,
    sequence: Script,
    watermark: Script,
    drop_timer: Script,
    commit_batch: Script,
    /// Whether updates get their sequence numbers inside the partition's
    /// commit script: only on a standalone server, because in Redis Cluster the
    /// order keys live in other slots than the partition's.
    inline_sequence: bool,
}

/// An output ready for Kafka.
pub struct Delivery {
    /// Destination topic.
    pub topic: &'static str,
    /// Record key.
    pub key: String,
    /// Record value.
    pub payload: Vec<u8>,
    /// Outbox id to clear once acknowledged.
    pub outbox_id: String,
    /// Partition whose outbox holds it.
    pub partition: i32,
}

impl Store {
    /// A store over `conn`.
    pub fn new(conn: RedisConn) -> Self {
        Store {
            inline_sequence: matches!(conn, RedisConn::Single(_)),
            conn,
            commit: Script::new(lua::COMMIT),
            sequence: Script::new(lua::SEQUENCE),
            watermark: Script::new(lua::WATERMARK),
            drop_timer: Script::new(lua::DROP_TIMER),
            commit_batch: Script::new(lua::COMMIT_BATCH),
        }
    }

    /// The connection (for the timer loop's own queries).
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Loads a waybill and checks which of `event_ids` it already has.
    pub async fn load(
        &self,
        partition: i32,
        waybill_key: &str,
        event_ids: &[String],
    ) -> redis::RedisResult<Loaded> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(state_key(partition, waybill_key))
            .query_async(&mut conn)
            .await?;
        let known = if event_ids.is_empty() || fields.is_empty() {
            Default::default()
        } else {
            let present: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(history_key(partition, waybill_key))
                .arg(event_ids)
                .query_async(&mut conn)
                .await?;
            event_ids
                .iter()
                .zip(present)
                .filter(|(_, v)| v.is_some())
                .map(|(id, _)| id.clone())
                .collect()
        };
        let version = fields
            .get("v")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let state = fields
            .get("s")
            .and_then(|s| WaybillState::decode(s.as_slice()).ok())
            .unwrap_or_default();
        let registration = fields
            .get("r")
            .and_then(|r| Shipment::decode(r.as_slice()).ok());
        Ok(Loaded {
            waybill: Waybill {
                key: waybill_key.to_owned(),
                partition,
                version,
                state,
                registration,
                registration_changed: false,
                hold_until: 0,
            },
            known,
        })
    }

    /// The waybill's whole history (for a registration that joins late).
    pub async fn history(
        &self,
        partition: i32,
        waybill_key: &str,
    ) -> redis::RedisResult<Vec<TrackingEvent>> {
        let mut conn = self.conn.clone();
        let values: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(history_key(partition, waybill_key))
            .query_async(&mut conn)
            .await?;
        Ok(values
            .iter()
            .filter_map(|v| TrackingEvent::decode(v.as_slice()).ok())
            .collect())
    }

    /// Commits a waybill's new state with its effects; its state and history
    /// expire at `expire_at` (ms since the epoch). `Ok(false)` means another
    /// writer got there first (version moved): reload and re-apply.
    pub async fn commit(
        &self,
        before: &WaybillState,
        waybill: &Waybill,
        history: &[TrackingEvent],
        outputs: &[Output],
        expire_at: i64,
    ) -> redis::RedisResult<bool> {
        let partition = waybill.partition;
        let mut invocation = self.commit.prepare_invoke();
        invocation
            .key(state_key(partition, &waybill.key))
            .key(history_key(partition, &waybill.key))
            .key(timers_key(partition))
            .key(outbox_key(partition))
            .arg(waybill.version)
            .arg(crate::engine::encode_state(&waybill.state))
            .arg(registration_arg(waybill))
            .arg(&waybill.key)
            .arg(expire_at);
        invocation.arg(history.len());
        for event in history {
            invocation.arg(&event.event_id).arg(event.encode_to_vec());
        }
        let (sets, deletes) = timer_changes(before, waybill);
        invocation.arg(sets.len());
        for (rule, score) in sets {
            invocation.arg(rule).arg(score);
        }
        invocation.arg(deletes.len());
        for rule in deletes {
            invocation.arg(rule);
        }
        invocation.arg(outputs.len());
        for output in outputs {
            invocation
                .arg(output.outbox_id())
                .arg(encode_output(output));
        }
        let mut conn = self.conn.clone();
        let result: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(result >= 0)
    }

    /// Turns outputs into Kafka records, assigning update sequence numbers
    /// (idempotently: a re-delivery gets the same number); an order log
    /// written here expires at `order_expire_at` (ms since the epoch).
    pub async fn prepare(
        &self,
        partition: i32,
        outputs: &[Output],
        order_expire_at: i64,
    ) -> redis::RedisResult<Vec<Delivery>> {
        // Bounded: a re-delivered outbox can hold thousands of updates (a
        // registration that joined a long history), and thousands of scripts
        // queued at once on one connection outlive its response timeout.
        let mut deliveries = Vec::with_capacity(outputs.len());
        for chunk in outputs.chunks(PREPARE_CONCURRENCY) {
            let prepared = futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|output| self.prepare_one(partition, output, order_expire_at)),
            )
            .await?;
            deliveries.extend(prepared);
        }
        Ok(deliveries)
    }

    async fn prepare_one(
        &self,
        partition: i32,
        output: &Output,
        order_expire_at: i64,
    ) -> redis::RedisResult<Delivery> {
        match output {
            Output::Update { id, update } => {
                let body = update.encode_to_vec();
                let mut conn = self.conn.clone();
                let seq: u64 = self
                    .sequence
                    .key(order_key(&update.merchant_id, &update.order_id, "ids"))
                    .key(order_key(&update.merchant_id, &update.order_id, "seq"))
                    .key(order_key(&update.merchant_id, &update.order_id, "updates"))
                    .key(order_key(&update.merchant_id, &update.order_id, "merchant"))
                    .arg(id)
                    .arg(&body)
                    .arg(&update.merchant_id)
                    .arg(order_expire_at)
                    .invoke_async(&mut conn)
                    .await?;
                let key = update
                    .event
                    .as_ref()
                    .map(|e| trackstream_proto::keys::waybill_key(&e.carrier, &e.waybill))
                    .unwrap_or_default();
                Ok(Delivery {
                    topic: trackstream_proto::topics::TRACKING_UPDATES,
                    key,
                    payload: with_seq(seq, &body),
                    outbox_id: id.clone(),
                    partition,
                })
            }
            Output::Alert(alert) => Ok(Delivery {
                topic: trackstream_proto::topics::TRACKING_ALERTS,
                key: trackstream_proto::keys::waybill_key(&alert.carrier, &alert.waybill),
                payload: alert.encode_to_vec(),
                outbox_id: output.outbox_id(),
                partition,
            }),
        }
    }

    /// Clears delivered outbox entries.
    pub async fn clear_outbox(&self, deliveries: &[Delivery]) -> redis::RedisResult<()> {
        let mut by_partition: HashMap<i32, Vec<&str>> = HashMap::new();
        for d in deliveries {
            by_partition
                .entry(d.partition)
                .or_default()
                .push(&d.outbox_id);
        }
        let futures = by_partition.into_iter().map(|(partition, ids)| {
            let mut conn = self.conn.clone();
            async move {
                redis::cmd("HDEL")
                    .arg(outbox_key(partition))
                    .arg(ids)
                    .query_async::<()>(&mut conn)
                    .await
            }
        });
        futures::future::try_join_all(futures).await.map(|_| ())
    }

    /// Outputs left in a partition's outbox (after a crash or a failed
    /// produce), and the ids of entries that do not decode (written by another
    /// version, or damaged): those can never be produced and are the caller's
    /// to set aside, or they would be read on every flush forever.
    pub async fn pending_outbox(
        &self,
        partition: i32,
    ) -> redis::RedisResult<(Vec<Output>, Vec<(String, Vec<u8>)>)> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(outbox_key(partition))
            .query_async(&mut conn)
            .await?;
        let mut outputs = Vec::with_capacity(entries.len());
        let mut undecodable = Vec::new();
        for (id, bytes) in entries {
            match decode_output(&id, &bytes) {
                Some(output) => outputs.push(output),
                None => undecodable.push((id, bytes)),
            }
        }
        Ok((outputs, undecodable))
    }

    /// Removes outbox entries that will never be produced (dead-lettered).
    pub async fn drop_outbox(&self, partition: i32, ids: &[&str]) -> redis::RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("HDEL")
            .arg(outbox_key(partition))
            .arg(ids)
            .query_async(&mut conn)
            .await
    }

    /// Gives ownership claims (`runtime::ownership::owner_key`) the expiry of
    /// their parcels: `(waybill key, expire-at ms)`. One pipeline, a command per
    /// claim: on Redis Cluster each claim lives in its own slot. A claim that
    /// does not exist (a parcel never registered through ingest) is left alone.
    pub async fn expire_owners(&self, claims: &[(String, i64)]) -> redis::RedisResult<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let command = |(waybill_key, at): &(String, i64)| {
            let mut cmd = redis::cmd("PEXPIREAT");
            cmd.arg(crate::lifecycle::owner_key_of(waybill_key))
                .arg(*at);
            cmd
        };
        let mut conn = self.conn.clone();
        if self.inline_sequence {
            // Standalone: one pipeline.
            let mut pipe = redis::pipe();
            for claim in claims {
                pipe.add_command(command(claim)).ignore();
            }
            return pipe.query_async(&mut conn).await;
        }
        // Cluster: a pipeline may not cross slots; the commands go out
        // together on the multiplexed connection instead.
        let sends = claims.iter().map(|claim| {
            let mut conn = conn.clone();
            let cmd = command(claim);
            async move { cmd.query_async::<()>(&mut conn).await }
        });
        futures::future::try_join_all(sends).await.map(|_| ())
    }

    /// Due timers of a partition: `(waybill key, rule, deadline)`.
    pub async fn due_timers(
        &self,
        partition: i32,
        now: i64,
        limit: usize,
    ) -> redis::RedisResult<Vec<(String, String, i64)>> {
        let mut conn = self.conn.clone();
        let due: Vec<(String, i64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(timers_key(partition))
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(due
            .into_iter()
            .filter_map(|(member, deadline)| {
                let (key, rule) = member.rsplit_once('|')?;
                Some((key.to_owned(), rule.to_owned(), deadline))
            })
            .collect())
    }

    /// Removes a timer member whose score no longer matches the state (stale),
    /// unless a commit re-armed it after it was read at `score`: the batch path
    /// and the timer loop run concurrently, and an unconditional remove could
    /// drop a deadline armed in between.
    pub async fn drop_timer(
        &self,
        partition: i32,
        waybill_key: &str,
        rule: &str,
        score: i64,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        self.drop_timer
            .key(timers_key(partition))
            .arg(timer_member(waybill_key, rule))
            .arg(score)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Raises a partition's event-time watermark (never lowers it); returns it.
    pub async fn advance_watermark(
        &self,
        partition: i32,
        candidate: i64,
    ) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        self.watermark
            .key(watermark_key(partition))
            .arg(candidate)
            .invoke_async(&mut conn)
            .await
    }

    /// A partition's event-time watermark (`i64::MIN` before any event).
    pub async fn watermark(&self, partition: i32) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        let value: Option<i64> = redis::cmd("GET")
            .arg(watermark_key(partition))
            .query_async(&mut conn)
            .await?;
        Ok(value.unwrap_or(i64::MIN))
    }
}

/// One waybill's part in a batch load: its key and the ids of the batch's
/// events for it (to find duplicates).
pub struct LoadRequest<'a> {
    /// `carrier:waybill`.
    pub key: &'a str,
    /// Event ids of the batch for this waybill.
    pub event_ids: &'a [String],
}

/// An output encoded once, for the outbox, the commit script and the record.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Destination topic.
    pub topic: &'static str,
    /// Record key.
    pub key: String,
    /// Outbox id (for updates also the sequence id).
    pub outbox_id: String,
    /// The update (without `seq`) or the alert, protobuf-encoded.
    pub body: Vec<u8>,
    /// Updates: `(order id, merchant id)`; alerts: `None`.
    pub order: Option<(String, String)>,
}

impl Encoded {
    /// Encodes an output.
    pub fn new(output: &Output) -> Self {
        match output {
            Output::Update { id, update } => Encoded {
                topic: trackstream_proto::topics::TRACKING_UPDATES,
                key: update
                    .event
                    .as_ref()
                    .map(|e| trackstream_proto::keys::waybill_key(&e.carrier, &e.waybill))
                    .unwrap_or_default(),
                outbox_id: id.clone(),
                body: update.encode_to_vec(),
                order: Some((update.order_id.clone(), update.merchant_id.clone())),
            },
            Output::Alert(alert) => Encoded {
                topic: trackstream_proto::topics::TRACKING_ALERTS,
                key: trackstream_proto::keys::waybill_key(&alert.carrier, &alert.waybill),
                outbox_id: output.outbox_id(),
                body: alert.encode_to_vec(),
                order: None,
            },
        }
    }

    /// The Kafka record, once an update has its sequence number.
    pub fn delivery(self, partition: i32, seq: Option<u64>) -> Delivery {
        let payload = match seq {
            Some(seq) => with_seq(seq, &self.body),
            None => self.body,
        };
        Delivery {
            topic: self.topic,
            key: self.key,
            payload,
            outbox_id: self.outbox_id,
            partition,
        }
    }
}

/// One waybill's change in a batch commit.
pub struct Change<'a> {
    /// The state as loaded (its timers are what the set holds now).
    pub before: &'a WaybillState,
    /// The waybill after the fold (carries the expected version).
    pub waybill: &'a Waybill,
    /// New history entries.
    pub history: &'a [TrackingEvent],
    /// Its outputs, encoded.
    pub outputs: &'a [Encoded],
    /// When its state and history expire (ms since the epoch).
    pub expire_at: i64,
}

/// What the batch commit did for one waybill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Written; with inline sequencing, the sequence number of each update
    /// output in order (empty otherwise: assign them with [`Store::sequence`]).
    Done(Vec<u64>),
    /// Another writer changed the waybill first: reload and re-apply it.
    Conflict,
}

impl Store {
    /// Whether [`Store::commit_partition`] assigns update sequence numbers itself.
    pub fn inline_sequence(&self) -> bool {
        self.inline_sequence
    }

    /// Loads the waybills of one partition in one pipelined round trip (every
    /// key shares the partition's slot): state, registration, and which of the
    /// batch's event ids each already has. With `watermark`, also the
    /// partition's event-time watermark (`i64::MIN` before any).
    pub async fn load_partition(
        &self,
        partition: i32,
        requests: &[LoadRequest<'_>],
        watermark: bool,
    ) -> redis::RedisResult<(i64, Vec<Loaded>)> {
        let mut pipe = redis::pipe();
        if watermark {
            pipe.cmd("GET").arg(watermark_key(partition));
        }
        for request in requests {
            pipe.cmd("HMGET")
                .arg(state_key(partition, request.key))
                .arg("v")
                .arg("s")
                .arg("r");
            if !request.event_ids.is_empty() {
                pipe.cmd("HMGET")
                    .arg(history_key(partition, request.key))
                    .arg(request.event_ids);
            }
        }
        let mut conn = self.conn.clone();
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut values = values.into_iter();
        let mark = if watermark {
            let value: Option<i64> = redis::FromRedisValue::from_redis_value(
                values.next().unwrap_or(redis::Value::Nil),
            )?;
            value.unwrap_or(i64::MIN)
        } else {
            i64::MIN
        };
        let mut loaded = Vec::with_capacity(requests.len());
        for request in requests {
            let fields: Vec<Option<Vec<u8>>> = redis::FromRedisValue::from_redis_value(
                values.next().unwrap_or(redis::Value::Nil),
            )?;
            let known = if request.event_ids.is_empty() {
                Default::default()
            } else {
                let present: Vec<Option<Vec<u8>>> = redis::FromRedisValue::from_redis_value(
                    values.next().unwrap_or(redis::Value::Nil),
                )?;
                request
                    .event_ids
                    .iter()
                    .zip(present)
                    .filter(|(_, v)| v.is_some())
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            let field = |i: usize| fields.get(i).and_then(Option::as_deref);
            loaded.push(Loaded {
                waybill: Waybill {
                    key: request.key.to_owned(),
                    partition,
                    version: field(0)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    state: field(1)
                        .and_then(|s| WaybillState::decode(s).ok())
                        .unwrap_or_default(),
                    registration: field(2).and_then(|r| Shipment::decode(r).ok()),
                    registration_changed: false,
                    hold_until: 0,
                },
                known,
            });
        }
        Ok((mark, loaded))
    }

    /// Commits the changed waybills of one partition with one script call,
    /// each on its own compare-and-set; with inline sequencing (standalone
    /// Redis) update sequence numbers are assigned in the same step.
    ///
    /// Order keys written inline expire at `order_expire_at` (ms since the
    /// epoch).
    pub async fn commit_partition(
        &self,
        partition: i32,
        changes: &[Change<'_>],
        order_expire_at: i64,
    ) -> redis::RedisResult<Vec<Committed>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // EVALSHA built as one command (keys first, then arguments): a script
        // invocation would hold every argument in its own buffer and copy them
        // all again, and a partition's commit carries tens of kilobytes.
        let mut keys = vec![timers_key(partition), outbox_key(partition)];
        for change in changes {
            let key = &change.waybill.key;
            keys.push(state_key(partition, key));
            keys.push(history_key(partition, key));
            if self.inline_sequence {
                for (order, merchant) in change.outputs.iter().filter_map(|o| o.order.as_ref()) {
                    for suffix in ["ids", "seq", "updates", "merchant"] {
                        keys.push(order_key(merchant, order, suffix));
                    }
                }
            }
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.commit_batch.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(if self.inline_sequence { "1" } else { "0" })
            .arg(changes.len())
            .arg(order_expire_at);
        for change in changes {
            let waybill = change.waybill;
            cmd.arg(waybill.version)
                .arg(crate::engine::encode_state(&waybill.state))
                .arg(registration_arg(waybill))
                .arg(change.expire_at)
                .arg(change.history.len());
            for event in change.history {
                cmd.arg(&event.event_id).arg(event.encode_to_vec());
            }
            let (sets, deletes) = timer_changes(change.before, waybill);
            cmd.arg(sets.len());
            for (rule, score) in sets {
                cmd.arg(timer_member(&waybill.key, rule)).arg(score);
            }
            cmd.arg(deletes.len());
            for rule in deletes {
                cmd.arg(timer_member(&waybill.key, rule));
            }
            cmd.arg(change.outputs.len());
            for output in change.outputs {
                let (kind, merchant) = match &output.order {
                    Some((_, merchant)) => ("u", merchant.as_str()),
                    None => ("a", ""),
                };
                cmd.arg(kind)
                    .arg(&output.outbox_id)
                    .arg(&output.body)
                    .arg(merchant);
            }
        }
        let mut conn = self.conn.clone();
        let results: Vec<Vec<i64>> = match cmd.query_async(&mut conn).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // First use on this server (or after SCRIPT FLUSH / failover):
                // load it (on every node of a cluster) and run it again.
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(lua::COMMIT_BATCH)
                    .query_async::<()>(&mut conn)
                    .await?;
                cmd.query_async(&mut conn).await?
            }
            other => other?,
        };
        Ok(results
            .into_iter()
            .map(|r| match r.split_first() {
                Some((version, seqs)) if *version >= 0 => Committed::Done(
                    seqs.iter()
                        .map(|s| u64::try_from(*s).unwrap_or(0))
                        .collect(),
                ),
                _ => Committed::Conflict,
            })
            .collect())
    }

    /// Assigns an update its order's sequence number (idempotent: the same id
    /// always gets the same number) and appends it to the order's log, in the
    /// order's slot. Used when sequencing is not inline (Redis Cluster).
    /// The order's keys expire at `order_expire_at` (ms since the epoch).
    pub async fn sequence(
        &self,
        update: &Encoded,
        order_expire_at: i64,
    ) -> redis::RedisResult<u64> {
        let (order, merchant) = update.order.clone().unwrap_or_default();
        let mut conn = self.conn.clone();
        self.sequence
            .key(order_key(&merchant, &order, "ids"))
            .key(order_key(&merchant, &order, "seq"))
            .key(order_key(&merchant, &order, "updates"))
            .key(order_key(&merchant, &order, "merchant"))
            .arg(&update.outbox_id)
            .arg(&update.body)
            .arg(merchant)
            .arg(order_expire_at)
            .invoke_async(&mut conn)
            .await
    }

    /// After a batch is produced: clears its delivered outbox entries and, for
    /// the event clock, raises the partition's watermark to `watermark`
    /// (`None` = leave it), in one pipelined round trip per partition.
    pub async fn finish_partition(
        &self,
        partition: i32,
        outbox_ids: &[&str],
        watermark: Option<i64>,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        if !outbox_ids.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("HDEL")
                .arg(outbox_key(partition))
                .arg(outbox_ids)
                .ignore();
            // The raise is a script (never lowers); run it on the same trip.
            if let Some(mark) = watermark {
                pipe.invoke_script(self.watermark.key(watermark_key(partition)).arg(mark))
                    .ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                }
                other => return other,
            }
        }
        // No outbox entries, or the script was not loaded yet (invoke loads it).
        if let Some(mark) = watermark {
            self.advance_watermark(partition, mark).await?;
        }
        Ok(())
    }
}

/// Timer-set changes of a commit: members to (re)set with their score, and
/// members to remove. A rule whose deadline is unchanged keeps its member's
/// score (which may carry an earlier hold), except that a held deadline is
/// always re-scored to the new hold.
fn timer_changes<'a>(
    before: &'a WaybillState,
    waybill: &'a Waybill,
) -> (Vec<(&'a str, i64)>, Vec<&'a str>) {
    let old: HashMap<&str, i64> = before.deadlines().collect();
    let sets = waybill
        .state
        .deadlines()
        .zip(waybill.timer_scores())
        .filter(|((rule, deadline), (_, score))| {
            old.get(rule) != Some(deadline) || score != deadline
        })
        .map(|(_, scored)| scored)
        .collect();
    let deletes = old
        .keys()
        .filter(|r| !waybill.state.deadlines().any(|(n, _)| n == **r))
        .copied()
        .collect();
    (sets, deletes)
}

fn encode_output(output: &Output) -> Vec<u8> {
    match output {
        Output::Update { update, .. } => {
            let mut bytes = vec![b'u'];
            bytes.extend(update.encode_to_vec());
            bytes
        }
        Output::Alert(alert) => {
            let mut bytes = vec![b'a'];
            bytes.extend(alert.encode_to_vec());
            bytes
        }
    }
}

fn decode_output(id: &str, bytes: &[u8]) -> Option<Output> {
    let (tag, body) = bytes.split_first()?;
    match tag {
        b'u' => Some(Output::Update {
            id: id.to_owned(),
            update: Box::new(ShipmentUpdate::decode(body).ok()?),
        }),
        b'a' => Some(Output::Alert(Box::new(Alert::decode(body).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_prefix_decodes_as_the_update_with_seq() {
        let update = ShipmentUpdate {
            order_id: "O1".into(),
            ..Default::default()
        };
        let bytes = with_seq(300, &update.encode_to_vec());
        let decoded = ShipmentUpdate::decode(bytes.as_slice()).expect("valid protobuf");
        assert_eq!(decoded.seq, 300);
        assert_eq!(decoded.order_id, "O1");
    }
}
