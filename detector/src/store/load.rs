//! Reads before a fold: a partition's waybills in one pipelined round trip,
//! and (rarely) one waybill's whole history.

use std::collections::HashSet;

use prost::Message;
use redis::{FromRedisValue, Value};
use trackstream_proto::v1::TrackingEvent;

use super::Store;
use super::codec::decode_waybill;
use super::keys::{history_key, state_key, watermark_key};
use crate::engine::Waybill;

/// A loaded waybill plus the ids of the batch's events it already has.
pub struct Loaded {
    /// The waybill.
    pub waybill: Waybill,
    /// Event ids of the batch already in history (duplicates).
    pub known: HashSet<String>,
}

/// One waybill's part in a batch load: its key and the ids of the batch's
/// events for it (to find duplicates; empty for a due deadline).
pub struct LoadRequest<'a> {
    /// `carrier:waybill`.
    pub key: &'a str,
    /// Event ids of the batch for this waybill.
    pub event_ids: &'a [String],
}

impl Store {
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
        let values: Vec<Value> = pipe.query_async(&mut conn).await?;
        let mut values = values.into_iter();
        let mut next = || values.next().unwrap_or(Value::Nil);
        let mark = if watermark {
            Option::<i64>::from_redis_value(next())?.unwrap_or(i64::MIN)
        } else {
            i64::MIN
        };
        let mut loaded = Vec::with_capacity(requests.len());
        for request in requests {
            let fields: Vec<Option<Vec<u8>>> = FromRedisValue::from_redis_value(next())?;
            let known = if request.event_ids.is_empty() {
                HashSet::new()
            } else {
                let present: Vec<Option<Vec<u8>>> = FromRedisValue::from_redis_value(next())?;
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
                waybill: decode_waybill(partition, request.key, field(0), field(1), field(2)),
                known,
            });
        }
        Ok((mark, loaded))
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
}
