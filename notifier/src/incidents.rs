//! Incidents as a merchant sees them: the newest record of each incident that
//! affects the merchant's parcels (from `tracking.incidents`), for
//! `ListIncidents`, and which incident each parcel of an order is linked to,
//! for `GetOrder`'s alerts.
//!
//! The detector's incident stage writes one record per merchant per change
//! (key `<merchant_id>/<incident_id>`, that merchant's parcels only, a full
//! snapshot) and a platform-wide one (no merchant, ignored here). `version`
//! grows with every emission; re-deliveries and replays may repeat or reorder
//! records, so the store keeps the highest version and an older or equal one
//! changes nothing.
//!
//! Keys (hash tag `{mi:<merchant>}`, so a merchant's keys share one Cluster
//! slot and one script touches them all):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{mi:M}:inc` | hash | incident id → version (10 digits) + encoded `Incident` (the newest record) |
//! | `{mi:M}:inc:opened` | zset | incident id, score = `opened_at` ms (listing, newest first) |
//! | `{mi:M}:inc:expires` | zset | incident id, score = when its entry goes (ms) |
//! | `{o:O}:incidents` | hash | waybill key → incident id (per order, [`crate::outbox::order_keys`]) |
//!
//! **Lifetime.** A resolved incident's entry goes `retention.after_terminal`
//! (default `30d`, at least a day) after its `resolved_at`, which covers
//! `ListIncidents`' longest look back (30 days) with the default; an incident
//! that never resolves (its detector state lost) goes `retention.after_silence`
//! (default `120d`) after its last record's `effective_at`. Both are event
//! times, so a replay of long-resolved records stores nothing. Each write purges
//! the merchant's due entries and sets the expiry of the three keys to the
//! latest entry's, so a merchant without incidents holds no keys. The per-order
//! link hash expires with the order's other keys ([`crate::lifecycle`]).

use std::collections::HashMap;

use prost::Message;
use trackstream_proto::time;
use trackstream_proto::v1::{Incident, IncidentState};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;

use crate::config::RetentionConfig;

/// Incidents looked at per `ListIncidents` (newest first).
pub const MAX_SCANNED: usize = 1_000;

/// Keeps the highest version of an incident, purges due entries and sets the
/// keys' expiry to the latest entry's.
const RECORD_LUA: &str = r"
-- KEYS: 1 inc, 2 inc:opened, 3 inc:expires
-- ARGV: 1 id, 2 version, 3 encoded incident, 4 opened ms, 5 expires ms, 6 now ms
local now = tonumber(ARGV[6])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local version = tonumber(ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
local held = current and tonumber(string.sub(current, 1, 10))
local outcome
if held and held > version then
  outcome = 'stale'
elseif held and held == version then
  outcome = 'duplicate'
elseif tonumber(ARGV[5]) <= now then
  outcome = 'expired'
else
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%010d', version) .. ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
  outcome = 'stored'
end
local last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if last[2] then
  local at = string.format('%d', tonumber(last[2]))
  for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], at) end
end
return outcome
";

/// What recording an incident record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A newer version than the stored one: stored.
    Stored,
    /// The stored version again (a re-delivery): nothing changed.
    Duplicate,
    /// Older than the stored version (a replay, reordering): ignored.
    Stale,
    /// Its entry would already have expired (an old replay): not stored.
    Expired,
}

impl Recorded {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Stored => "stored",
            Recorded::Duplicate => "duplicate",
            Recorded::Stale => "stale",
            Recorded::Expired => "expired",
        }
    }

    /// Whether the record is the newest of its incident, so what it says about
    /// parcels (links, buyer messages) applies. A duplicate does: the batch
    /// that stored it may have failed before applying it.
    pub fn is_current(self) -> bool {
        matches!(self, Recorded::Stored | Recorded::Duplicate)
    }
}

/// A merchant's incidents and orders' incident links in Redis.
#[derive(Clone)]
pub struct IncidentStore {
    conn: RedisConn,
    record: redis::Script,
    after_terminal_ms: i64,
    after_silence_ms: i64,
}

/// The keys of `merchant`'s incidents: the records, by opening, by expiry.
pub fn merchant_keys(merchant: &str) -> [String; 3] {
    [
        format!("{{mi:{merchant}}}:inc"),
        format!("{{mi:{merchant}}}:inc:opened"),
        format!("{{mi:{merchant}}}:inc:expires"),
    ]
}

/// The per-order link hash (waybill key → incident id).
pub fn link_key(order_ref: &str) -> String {
    order_log::key(order_ref, "incidents")
}

/// Whether the incident has resolved.
pub fn is_resolved(incident: &Incident) -> bool {
    incident.state == IncidentState::Resolved as i32
}

/// When the entry of `incident` goes (ms): `after_terminal_ms` after it
/// resolved, else `after_silence_ms` after its latest event time (`now_ms` when
/// it has none).
pub fn entry_expires_at(
    incident: &Incident,
    after_terminal_ms: i64,
    after_silence_ms: i64,
    now_ms: i64,
) -> i64 {
    let latest = [
        incident.effective_at.as_ref(),
        incident.opened_at.as_ref(),
        incident.resolved_at.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|t| time::millis(Some(t)))
    .max()
    .unwrap_or(now_ms);
    if is_resolved(incident) {
        let resolved = incident
            .resolved_at
            .as_ref()
            .map_or(latest, |t| time::millis(Some(t)));
        resolved.saturating_add(after_terminal_ms)
    } else {
        latest.saturating_add(after_silence_ms)
    }
}

impl IncidentStore {
    /// A store on `conn` with `retention`'s lifetimes (see the module doc).
    pub fn new(conn: RedisConn, retention: &RetentionConfig) -> Self {
        IncidentStore {
            conn,
            record: redis::Script::new(RECORD_LUA),
            after_terminal_ms: retention.after_terminal_ms(),
            after_silence_ms: retention.after_silence_ms(),
        }
    }

    /// When the entry of `incident` goes (ms); see [`entry_expires_at`].
    pub fn expires_at(&self, incident: &Incident, now_ms: i64) -> i64 {
        entry_expires_at(
            incident,
            self.after_terminal_ms,
            self.after_silence_ms,
            now_ms,
        )
    }

    /// Stores a per-merchant record unless a newer (or the same) version is
    /// stored already; purges the merchant's due entries.
    pub async fn record(&self, incident: &Incident, now_ms: i64) -> redis::RedisResult<Recorded> {
        let [records, opened, expires] = merchant_keys(&incident.merchant_id);
        let opened_ms = incident
            .opened_at
            .as_ref()
            .or(incident.effective_at.as_ref())
            .map_or(now_ms, |t| time::millis(Some(t)));
        let mut conn = self.conn.clone();
        let outcome: String = self
            .record
            .key(records)
            .key(opened)
            .key(expires)
            .arg(&incident.incident_id)
            .arg(incident.version)
            .arg(incident.encode_to_vec())
            .arg(opened_ms)
            .arg(self.expires_at(incident, now_ms))
            .arg(now_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(match outcome.as_str() {
            "stored" => Recorded::Stored,
            "duplicate" => Recorded::Duplicate,
            "stale" => Recorded::Stale,
            _ => Recorded::Expired,
        })
    }

    /// `merchant`'s incidents, newest opened first: every open one, and with
    /// `resolved_since_ms` those resolved at or after it. Entries past their
    /// lifetime that no write has purged yet are left out.
    pub async fn list(
        &self,
        merchant: &str,
        now_ms: i64,
        resolved_since_ms: Option<i64>,
    ) -> redis::RedisResult<Vec<Incident>> {
        let [records, opened, _] = merchant_keys(merchant);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZREVRANGE")
            .arg(&opened)
            .arg(0)
            .arg(MAX_SCANNED - 1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&records)
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|bytes| Incident::decode(bytes.get(10..)?).ok())
            .filter(|i| i.merchant_id == merchant && self.expires_at(i, now_ms) > now_ms)
            .filter(|i| {
                !is_resolved(i)
                    || resolved_since_ms.is_some_and(|since| {
                        i.resolved_at
                            .as_ref()
                            .or(i.effective_at.as_ref())
                            .is_some_and(|t| time::millis(Some(t)) >= since)
                    })
            })
            .collect())
    }

    /// Links parcels (waybill key → incident id) of `order_ref`.
    pub async fn link(
        &self,
        order_ref: &str,
        links: &[(String, String)],
    ) -> redis::RedisResult<()> {
        if links.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(link_key(order_ref));
        for (waybill_key, incident_id) in links {
            cmd.arg(waybill_key).arg(incident_id);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<()>(&mut conn).await
    }

    /// The incident links of `order_ref` (waybill key → incident id).
    pub async fn links(&self, order_ref: &str) -> redis::RedisResult<HashMap<String, String>> {
        let mut conn = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(link_key(order_ref))
            .query_async(&mut conn)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merchants_keys_share_one_slot_and_are_its_own() {
        let keys = merchant_keys("m-acme");
        assert!(
            keys.iter().all(|k| k.starts_with("{mi:m-acme}:")),
            "{keys:?}"
        );
        assert_ne!(merchant_keys("m-other")[0], keys[0]);
        assert_eq!(
            link_key("m-acme/O1"),
            order_log::key("m-acme/O1", "incidents")
        );
    }

    #[test]
    fn a_resolved_incident_goes_after_terminal_an_open_one_after_silence() {
        const DAY: i64 = 86_400_000;
        let mut incident = Incident {
            state: IncidentState::Opened as i32,
            opened_at: Some(time::from_millis(10 * DAY)),
            effective_at: Some(time::from_millis(12 * DAY)),
            ..Incident::default()
        };
        assert_eq!(
            entry_expires_at(&incident, 30 * DAY, 120 * DAY, 0),
            132 * DAY
        );
        incident.state = IncidentState::Resolved as i32;
        incident.resolved_at = Some(time::from_millis(13 * DAY));
        assert_eq!(
            entry_expires_at(&incident, 30 * DAY, 120 * DAY, 0),
            43 * DAY
        );
        assert_eq!(
            entry_expires_at(&Incident::default(), 30 * DAY, 120 * DAY, 5),
            5 + 120 * DAY,
            "no event time: from now"
        );
    }
}
