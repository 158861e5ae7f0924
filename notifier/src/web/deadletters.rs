//! Dead-letter counts per merchant, for the console: a consumer group of its
//! own (`<group>-deadletters`) reads `scans.dlq` and `tracking.dlq` and counts
//! each letter under the merchant it concerns, by stage and cause, per UTC day
//! (`{dl:<merchant>}:<day>` hash `stage|cause` → count, kept 8 days).
//!
//! A letter names its merchant by its key: an order reference
//! (`<merchant>/<order>`: the notifier's and the detector's order outputs) or a
//! waybill key (`carrier:waybill`: scans and registrations), whose owner is the
//! merchant that registered it (`trackstream_runtime::ownership`). A letter for
//! a waybill nobody registered belongs to no merchant and is counted only in
//! the platform's `dead_letters` metric. Counts are at least once (a batch
//! retried after a crash can count twice); they are a console signal, not a
//! ledger.

use trackstream_runtime::dlq::headers;
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound};
use trackstream_runtime::ownership;
use trackstream_runtime::redis::RedisConn;
use trackstream_web::backend::DeadLetterCount;

/// How long a day's counts are kept.
const KEEP_MS: i64 = 8 * 86_400_000;

fn day_key(merchant_id: &str, day: i64) -> String {
    format!("{{dl:{merchant_id}}}:{day}")
}

/// The merchant's counts over the `days` UTC days ending with `today`.
pub async fn counts(
    conn: &RedisConn,
    merchant_id: &str,
    today: i64,
    days: i64,
) -> redis::RedisResult<Vec<DeadLetterCount>> {
    let mut pipe = redis::pipe();
    for day in (today - days + 1)..=today {
        pipe.hgetall(day_key(merchant_id, day));
    }
    let mut conn = conn.clone();
    let per_day: Vec<Vec<(String, u64)>> = pipe.query_async(&mut conn).await?;
    let mut total: std::collections::BTreeMap<String, u64> = Default::default();
    for (field, count) in per_day.into_iter().flatten() {
        *total.entry(field).or_default() += count;
    }
    Ok(total
        .into_iter()
        .map(|(field, count)| {
            let (stage, cause) = field.split_once('|').unwrap_or((field.as_str(), ""));
            DeadLetterCount {
                stage: stage.to_owned(),
                cause: cause.to_owned(),
                count,
            }
        })
        .collect())
}

/// Counts letters per merchant (see the module doc).
pub struct DeadLetterCounter {
    /// Redis.
    pub conn: RedisConn,
    /// Configured merchant ids (an order reference names one of them).
    pub merchants: Vec<String>,
}

fn header<'a>(record: &'a Inbound, name: &str) -> &'a str {
    record
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or("")
}

impl DeadLetterCounter {
    async fn merchant_of(&self, key: &str) -> redis::RedisResult<Option<String>> {
        if let Some((merchant, _)) = key.split_once('/')
            && self.merchants.iter().any(|m| m == merchant)
        {
            return Ok(Some(merchant.to_owned()));
        }
        let Some((carrier, waybill)) = key.split_once(':') else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(ownership::owner_key(carrier, waybill))
            .query_async(&mut conn)
            .await
    }
}

impl BatchHandler for DeadLetterCounter {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let retry = |e: redis::RedisError| HandlerError(format!("dead-letter counts: {e}"));
        let day = chrono::Utc::now().timestamp().div_euclid(86_400);
        let mut pipe = redis::pipe();
        let mut counted = 0;
        for record in batch {
            let Some(merchant) = self.merchant_of(&record.key_str()).await.map_err(retry)? else {
                continue;
            };
            let key = day_key(&merchant, day);
            let field = format!(
                "{}|{}",
                header(record, headers::STAGE),
                header(record, headers::CAUSE)
            );
            pipe.hincr(&key, field, 1)
                .ignore()
                .pexpire(&key, KEEP_MS)
                .ignore();
            counted += 1;
        }
        if counted > 0 {
            let mut conn = self.conn.clone();
            pipe.query_async::<()>(&mut conn).await.map_err(retry)?;
            tracing::info!(counted, "dead letters counted for the console");
        }
        Ok(())
    }
}
