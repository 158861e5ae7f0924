//! The incident detector's Redis layout.
//!
//! Per carrier × place, one hash tag `{i|<carrier>|<place>}` (so a place's
//! evaluation reads one slot and its commit is one script):
//! - `:m` hash waybill → the member (merchant, order, alert, rule, reason,
//!   since): parcels held up there; `:x` hash waybill → when it moved again;
//!   `:l` hash waybill → the incident it is linked to;
//! - `:a` zset `waybill␟merchant␟order` → newest scan time there: the
//!   parcels active at the place (a parcel leaves it when it is scanned
//!   elsewhere or reaches a final status);
//! - `:i` hash: `v` version, `j` the incident (JSON), `d` the version not yet
//!   published;
//! - `:so:<day>` / `:sa:<day>` HyperLogLogs of the stalls opened and the
//!   parcels seen per day, and `:pk` zset day → the most parcels stuck at
//!   once that day outside incidents (the baseline; idempotent, so a re-read
//!   batch counts nothing twice).
//!
//! Per parcel: `{ipos:<waybill>}` where its newest scan was (to take it out
//! of the previous place's active set) and `{istuck:<waybill>}` the place it
//! is a member of; `{incid:<id>}` the place of an incident (for a lift).
//! Index keys under `{inc}`: `:dirty` (places with a change
//! not yet published), `:declared` (places with an open declared incident),
//! `:places|<carrier>` (a carrier's places, for province-wide declarations),
//! `:holds|<carrier>[|<place>]` (the last 20
//! resolved incidents' median holds in hours, 90 days: the next incident's
//! expected delay).
//!
//! Every key expires `keep` (default 14 days) after its place's or parcel's
//! last change. No buyer contact is stored: order ids and waybills only.

use redis::AsyncCommands;
use trackstream_runtime::redis::RedisConn;

use crate::detect::{DAY_MS, Day, Member, Stored};

const SEP: char = '\u{1f}';
/// Days of peaks kept (more than any sensible `baseline_days`).
const PEAK_DAYS: i64 = 62;
/// Resolved incidents' holds remembered per place and per carrier.
const HOLDS: isize = 20;
/// How long that history lives after the last incident added to it.
const HOLDS_KEEP_MS: i64 = 90 * DAY_MS;

/// A carrier × place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlaceId {
    /// Carrier code.
    pub carrier: String,
    /// Place key (`place::of`).
    pub place: String,
}

impl PlaceId {
    fn tag(&self) -> String {
        format!("{{i|{}|{}}}", self.carrier, self.place)
    }

    fn key(&self, part: &str) -> String {
        format!("{}:{part}", self.tag())
    }

    /// `carrier␟place`, as index sets hold it.
    pub fn encode(&self) -> String {
        format!("{}{SEP}{}", self.carrier, self.place)
    }

    /// The inverse of [`PlaceId::encode`].
    pub fn decode(text: &str) -> Option<Self> {
        let (carrier, place) = text.split_once(SEP)?;
        Some(PlaceId {
            carrier: carrier.to_owned(),
            place: place.to_owned(),
        })
    }
}

/// Where a parcel's newest scan was.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The place.
    pub at: PlaceId,
    /// Its member string in the place's active set.
    pub member: String,
}

/// What one evaluation reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Members, with `moved` and `incident` filled in.
    pub members: Vec<Member>,
    /// Parcels active at the place.
    pub active: u32,
    /// The trailing baseline days, oldest first (`detect::Baseline::of`
    /// makes the place's normal of them).
    pub days: Vec<Day>,
    /// Its latest incident.
    pub current: Option<Stored>,
    /// The stored version (0 = none).
    pub version: u32,
    /// The version not yet published (0 = none).
    pub unpublished: u32,
}

/// The incident detector's store.
#[derive(Clone)]
pub struct IncidentStore {
    conn: RedisConn,
    keep_ms: i64,
}

/// Only the incident's version it read may be replaced: two instances that
/// evaluated the same place at once cannot both open an incident.
const COMMIT_LUA: &str = r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'j', ARGV[2], 'd', ARGV[3])
local n = tonumber(ARGV[5])
for i = 1, n do redis.call('HSET', KEYS[2], ARGV[6 + i], ARGV[6]) end
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
return 1
";

/// Clears the unpublished mark if it is still the version just published.
const PUBLISHED_LUA: &str = r"
if redis.call('HGET', KEYS[1], 'd') == ARGV[1] then redis.call('HDEL', KEYS[1], 'd') end
return redis.call('HEXISTS', KEYS[1], 'd')
";

fn encode_member(m: &Member) -> String {
    format!(
        "{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}",
        m.merchant, m.order, m.alert_id, m.rule, m.reason, m.since
    )
}

fn decode_member(waybill: &str, text: &str) -> Option<Member> {
    let mut parts = text.split(SEP);
    Some(Member {
        waybill: waybill.to_owned(),
        merchant: parts.next()?.to_owned(),
        order: parts.next()?.to_owned(),
        alert_id: parts.next()?.to_owned(),
        rule: parts.next()?.to_owned(),
        reason: parts.next()?.parse().ok()?,
        since: parts.next()?.parse().ok()?,
        ..Member::default()
    })
}

/// The active-set member of a parcel.
pub fn active_member(waybill: &str, merchant: &str, order: &str) -> String {
    format!("{waybill}{SEP}{merchant}{SEP}{order}")
}

/// Where an incident is (`{incid:<id>}` → place), for a lift.
fn id_key(incident: &str) -> String {
    format!("{{incid:{incident}}}")
}

fn index(part: &str) -> String {
    format!("{{inc}}:{part}")
}

/// The day of an event time (UTC days since the epoch).
pub fn day(at: i64) -> i64 {
    at.div_euclid(DAY_MS)
}

impl IncidentStore {
    /// A store whose keys live `keep_ms` after their last change.
    pub fn new(conn: RedisConn, keep_ms: i64) -> Self {
        IncidentStore {
            conn,
            keep_ms: keep_ms.max(DAY_MS),
        }
    }

    /// `SET` options: the value lives `keep` after this write.
    fn expiring(&self) -> redis::SetOptions {
        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(
            u64::try_from(self.keep_ms).unwrap_or(u64::MAX),
        ))
    }

    /// Where each parcel's newest scan was.
    pub async fn positions(
        &self,
        waybill: &str,
    ) -> redis::RedisResult<(Option<Position>, Option<PlaceId>)> {
        let mut conn = self.conn.clone();
        let (pos, stuck): (Option<String>, Option<String>) = redis::pipe()
            .get(format!("{{ipos:{waybill}}}"))
            .get(format!("{{istuck:{waybill}}}"))
            .query_async(&mut conn)
            .await?;
        let pos = pos.and_then(|text| {
            let (at, member) = text.split_once('\n')?;
            Some(Position {
                at: PlaceId::decode(at)?,
                member: member.to_owned(),
            })
        });
        Ok((pos, stuck.as_deref().and_then(PlaceId::decode)))
    }

    /// The place `waybill` is a member of, if any.
    pub async fn stuck(&self, waybill: &str) -> redis::RedisResult<Option<PlaceId>> {
        let mut conn = self.conn.clone();
        let stuck: Option<String> = conn.get(format!("{{istuck:{waybill}}}")).await?;
        Ok(stuck.as_deref().and_then(PlaceId::decode))
    }

    /// A scan at `at` (place, event time) of a parcel last seen at `from`.
    pub async fn seen(
        &self,
        waybill: &str,
        from: Option<&Position>,
        at: &PlaceId,
        member: &str,
        when: i64,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        if let Some(from) = from.filter(|f| f.at != *at || f.member != member) {
            pipe.zrem(from.at.key("a"), &from.member).ignore();
        }
        let active = at.key("a");
        let seen = at.key(&format!("sa:{}", day(when)));
        pipe.cmd("ZADD")
            .arg(&active)
            .arg("GT")
            .arg(when)
            .arg(member)
            .ignore()
            .pexpire(&active, self.keep_ms)
            .ignore()
            // A parcel never scanned again (nor final) leaves after `keep`.
            .zrembyscore(&active, "-inf", when.saturating_sub(self.keep_ms))
            .ignore()
            .pfadd(&seen, waybill)
            .ignore()
            .pexpire(&seen, self.keep_ms)
            .ignore()
            .set_options(
                format!("{{ipos:{waybill}}}"),
                format!("{}\n{member}", at.encode()),
                self.expiring(),
            )
            .ignore()
            .sadd(index(&format!("places|{}", at.carrier)), &at.place)
            .ignore();
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }

    /// A parcel reached a final status: it is active nowhere.
    pub async fn gone(&self, waybill: &str, from: &Position) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .zrem(from.at.key("a"), &from.member)
            .ignore()
            .del(format!("{{ipos:{waybill}}}"))
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// The member of `waybill` at `at`, if any.
    pub async fn member(&self, at: &PlaceId, waybill: &str) -> redis::RedisResult<Option<Member>> {
        let mut conn = self.conn.clone();
        let text: Option<String> = conn.hget(at.key("m"), waybill).await?;
        Ok(text.and_then(|t| decode_member(waybill, &t)))
    }

    /// `member` is held up at `at` (a new alert, or a declared incident's
    /// parcel: `only_new` keeps an existing member).
    pub async fn hold(
        &self,
        at: &PlaceId,
        member: &Member,
        only_new: bool,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn.clone();
        let members = at.key("m");
        let value = encode_member(member);
        let added: bool = if only_new {
            conn.hset_nx(&members, &member.waybill, value).await?
        } else {
            let mut pipe = redis::pipe();
            pipe.hset(&members, &member.waybill, value)
                .ignore()
                .hdel(at.key("x"), &member.waybill)
                .ignore()
                .hdel(at.key("l"), &member.waybill)
                .ignore();
            if !member.alert_id.is_empty() {
                let opened = at.key(&format!("so:{}", day(member.since)));
                pipe.pfadd(&opened, &member.alert_id)
                    .ignore()
                    .pexpire(&opened, self.keep_ms)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
            true
        };
        if added {
            let _: () = redis::pipe()
                .pexpire(&members, self.keep_ms)
                .ignore()
                .set_options(
                    format!("{{istuck:{}}}", member.waybill),
                    at.encode(),
                    self.expiring(),
                )
                .ignore()
                .query_async(&mut conn)
                .await?;
        }
        Ok(added)
    }

    /// The member moved again at `when` (kept once: the first move counts).
    pub async fn moved(&self, at: &PlaceId, waybill: &str, when: i64) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .hset_nx(at.key("x"), waybill, when)
            .ignore()
            .pexpire(at.key("x"), self.keep_ms)
            .ignore()
            .del(format!("{{istuck:{waybill}}}"))
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Everything one evaluation of `at` at event time `when` reads.
    pub async fn snapshot(
        &self,
        at: &PlaceId,
        when: i64,
        active_window_ms: i64,
        baseline_days: i64,
    ) -> redis::RedisResult<Snapshot> {
        let mut pipe = redis::pipe();
        pipe.hgetall(at.key("m"))
            .hgetall(at.key("x"))
            .hgetall(at.key("l"))
            .zcount(at.key("a"), when.saturating_sub(active_window_ms), "+inf")
            .cmd("HMGET")
            .arg(at.key("i"))
            .arg("v")
            .arg("j")
            .arg("d");
        let today = day(when);
        for d in (today - baseline_days)..today {
            pipe.pfcount(at.key(&format!("so:{d}")))
                .pfcount(at.key(&format!("sa:{d}")))
                .zscore(at.key("pk"), d);
        }
        let mut conn = self.conn.clone();
        let values: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut values = values.into_iter();
        let mut next = |what: &str| {
            values.next().ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "short pipeline reply",
                    what.to_owned(),
                ))
            })
        };
        let members: std::collections::HashMap<String, String> =
            redis::from_redis_value(next("members")?)?;
        let moved: std::collections::HashMap<String, i64> =
            redis::from_redis_value(next("moved")?)?;
        let links: std::collections::HashMap<String, String> =
            redis::from_redis_value(next("links")?)?;
        let active: u32 = redis::from_redis_value(next("active")?)?;
        let (version, json, unpublished): (Option<u32>, Option<String>, Option<u32>) =
            redis::from_redis_value(next("incident")?)?;
        let mut days = Vec::with_capacity(usize::try_from(baseline_days).unwrap_or(0));
        for d in (today - baseline_days)..today {
            days.push(Day {
                start: d * DAY_MS,
                opens: redis::from_redis_value(next("baseline")?)?,
                seen: redis::from_redis_value(next("baseline")?)?,
                peak: redis::from_redis_value::<Option<f64>>(next("baseline")?)?.unwrap_or(0.0),
            });
        }
        let mut members: Vec<Member> = members
            .iter()
            .filter_map(|(waybill, text)| decode_member(waybill, text))
            .map(|mut m| {
                m.moved = moved.get(&m.waybill).copied().unwrap_or(0);
                m.incident = links.get(&m.waybill).cloned().unwrap_or_default();
                m
            })
            .collect();
        members.sort_by(|a, b| a.waybill.cmp(&b.waybill));
        let current = json
            .as_deref()
            .and_then(|j| serde_json::from_str::<Stored>(j).ok());
        Ok(Snapshot {
            members,
            active,
            days,
            current,
            version: version.unwrap_or(0),
            unpublished: unpublished.unwrap_or(0),
        })
    }

    /// Raises the day's peak of parcels stuck at once at the place to
    /// `count` (never lowers it: a re-read batch changes nothing).
    pub async fn peak(&self, at: &PlaceId, when: i64, count: usize) -> redis::RedisResult<()> {
        let key = at.key("pk");
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("ZADD")
            .arg(&key)
            .arg("GT")
            .arg(count)
            .arg(day(when))
            .ignore()
            // Days before the baseline's reach go (a week of them per write, so
            // every old day is dropped by some later evaluation).
            .zrem(
                &key,
                (1..=7)
                    .map(|d| day(when) - PEAK_DAYS - d)
                    .collect::<Vec<_>>(),
            )
            .ignore()
            .pexpire(&key, self.keep_ms)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Forgets members that can no longer matter (moved or stuck long ago,
    /// in no open incident): their moves and links with them. Only this
    /// instance writes these waybills' members (their records share its
    /// partitions), so nothing it did not read can be lost.
    pub async fn trim(&self, at: &PlaceId, waybills: &[String]) -> redis::RedisResult<()> {
        if waybills.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::pipe()
            .hdel(at.key("m"), waybills)
            .ignore()
            .hdel(at.key("x"), waybills)
            .ignore()
            .hdel(at.key("l"), waybills)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Replaces the incident read at `version` with `incident`, links `link`
    /// to it; `false` when another instance
    /// changed the place meanwhile (evaluate again).
    pub async fn commit(
        &self,
        at: &PlaceId,
        version: u32,
        incident: &Stored,
        link: &[String],
    ) -> redis::RedisResult<bool> {
        let json = serde_json::to_string(incident).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "encoding an incident",
                e.to_string(),
            ))
        })?;
        let mut conn = self.conn.clone();
        // Indexes first: a crash after them and before the commit leaves an
        // index entry the republisher drops; the reverse would leave a change
        // nobody publishes.
        let _: () = redis::pipe()
            .sadd(index("dirty"), at.encode())
            .ignore()
            .set_options(id_key(&incident.id), at.encode(), self.expiring())
            .ignore()
            .query_async(&mut conn)
            .await?;
        let commit = redis::Script::new(COMMIT_LUA);
        let mut script = commit.prepare_invoke();
        script
            .key(at.key("i"))
            .key(at.key("l"))
            .arg(version)
            .arg(json)
            .arg(incident.version)
            .arg(self.keep_ms)
            .arg(link.len())
            .arg(&incident.id);
        for waybill in link {
            script.arg(waybill);
        }

        let done: i64 = script.invoke_async(&mut conn).await?;
        Ok(done == 1)
    }

    /// `version` of the place's incident is on the topic.
    pub async fn published(&self, at: &PlaceId, version: u32) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let pending: i64 = redis::Script::new(PUBLISHED_LUA)
            .key(at.key("i"))
            .arg(version)
            .invoke_async(&mut conn)
            .await?;
        if pending == 0 {
            let _: () = conn.srem(index("dirty"), at.encode()).await?;
        }
        Ok(())
    }

    /// Remembers how long a resolved incident held its parcels, for the
    /// place and for the carrier (the 20 latest each, 90 days).
    pub async fn record_hold(&self, at: &PlaceId, hours: u32) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for key in [
            index(&format!("holds|{}|{}", at.carrier, at.place)),
            index(&format!("holds|{}", at.carrier)),
        ] {
            pipe.lpush(&key, hours)
                .ignore()
                .ltrim(&key, 0, HOLDS - 1)
                .ignore()
                .pexpire(&key, HOLDS_KEEP_MS)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }

    /// The expected delay of a new incident at `at`, in hours: the median hold
    /// of the carrier's last incidents there (at least 2), else anywhere (at
    /// least 3); `None` when that history is too thin to say.
    pub async fn expected_hold(&self, at: &PlaceId) -> redis::RedisResult<Option<u32>> {
        let mut conn = self.conn.clone();
        let (here, carrier): (Vec<u32>, Vec<u32>) = redis::pipe()
            .lrange(index(&format!("holds|{}|{}", at.carrier, at.place)), 0, -1)
            .lrange(index(&format!("holds|{}", at.carrier)), 0, -1)
            .query_async(&mut conn)
            .await?;
        let median = |mut v: Vec<u32>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        Ok(if here.len() >= 2 {
            Some(median(here))
        } else if carrier.len() >= 3 {
            Some(median(carrier))
        } else {
            None
        })
    }

    /// Places with a change not yet published.
    pub async fn dirty(&self) -> redis::RedisResult<Vec<PlaceId>> {
        let mut conn = self.conn.clone();
        let places: Vec<String> = conn.smembers(index("dirty")).await?;
        Ok(places.iter().filter_map(|p| PlaceId::decode(p)).collect())
    }

    /// Places with an open declared incident.
    pub async fn declared(&self) -> redis::RedisResult<Vec<PlaceId>> {
        let mut conn = self.conn.clone();
        let places: Vec<String> = conn.smembers(index("declared")).await?;
        Ok(places.iter().filter_map(|p| PlaceId::decode(p)).collect())
    }

    /// Marks the place as having (or no longer having) an open declared
    /// incident.
    pub async fn set_declared(&self, at: &PlaceId, open: bool) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        if open {
            conn.sadd(index("declared"), at.encode()).await
        } else {
            conn.srem(index("declared"), at.encode()).await
        }
    }

    /// The places a carrier's parcels were seen at.
    pub async fn places(&self, carrier: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        conn.smembers(index(&format!("places|{carrier}"))).await
    }

    /// The place of an incident id.
    pub async fn place_of(&self, incident: &str) -> redis::RedisResult<Option<PlaceId>> {
        let mut conn = self.conn.clone();
        let at: Option<String> = conn.get(id_key(incident)).await?;
        Ok(at.as_deref().and_then(PlaceId::decode))
    }

    /// The parcels active at the place since `from`: (waybill, merchant,
    /// order, newest scan), and the newest scan time there.
    pub async fn active(&self, at: &PlaceId, from: i64) -> redis::RedisResult<Vec<(Member, i64)>> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, f64)> = conn
            .zrangebyscore_withscores(at.key("a"), from, "+inf")
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(member, score)| {
                let mut parts = member.split(SEP);
                let waybill = parts.next()?.to_owned();
                let merchant = parts.next().unwrap_or_default().to_owned();
                let order = parts.next().unwrap_or_default().to_owned();
                let since = score as i64;
                Some((
                    Member {
                        waybill,
                        merchant,
                        order,
                        since,
                        ..Member::default()
                    },
                    since,
                ))
            })
            .collect())
    }

    /// The newest scan time at the place (0 = none).
    pub async fn newest(&self, at: &PlaceId) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        let newest: Vec<(String, f64)> = conn.zrevrange_withscores(at.key("a"), 0, 0).await?;
        Ok(newest.first().map_or(0, |(_, s)| *s as i64))
    }
}
