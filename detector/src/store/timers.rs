//! The clock side of a partition: its timer set (what comes due, stale members
//! dropped) and its event-time watermark.

use super::Store;
use super::keys::{parse_timer_member, timer_member, timers_key, watermark_key};

/// A due timer member: `(waybill key, rule, score it was read with)`.
pub type Due = (String, String, i64);

impl Store {
    /// Due timers of a partition, earliest first (at most `limit`).
    pub async fn due_timers(
        &self,
        partition: i32,
        now: i64,
        limit: usize,
    ) -> redis::RedisResult<Vec<Due>> {
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
                let (key, rule) = parse_timer_member(&member)?;
                Some((key.to_owned(), rule.to_owned(), deadline))
            })
            .collect())
    }

    /// Removes timer members whose score no longer matches the state (stale),
    /// each unless a commit re-armed it after it was read at its score: the
    /// batch path and the timer loop run concurrently, and an unconditional
    /// remove could drop a deadline armed in between. One pipeline (the
    /// members share the partition's slot).
    pub async fn drop_timers(&self, partition: i32, stale: &[&Due]) -> redis::RedisResult<()> {
        if stale.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, rule, score) in stale {
            pipe.invoke_script(
                self.scripts
                    .drop_timer
                    .key(timers_key(partition))
                    .arg(timer_member(key, rule))
                    .arg(*score),
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Err(err) if super::scripts::is_no_script(&err) => {
                // First use on this server: loading goes with a single
                // invocation, then the pipeline again.
                let Some((key, rule, score)) = stale.first() else {
                    return Ok(());
                };
                self.scripts
                    .drop_timer
                    .key(timers_key(partition))
                    .arg(timer_member(key, rule))
                    .arg(*score)
                    .invoke_async::<i64>(&mut conn)
                    .await?;
                pipe.query_async(&mut conn).await
            }
            other => other,
        }
    }

    /// Raises a partition's event-time watermark (never lowers it); returns it.
    pub async fn advance_watermark(
        &self,
        partition: i32,
        candidate: i64,
    ) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        self.scripts
            .watermark
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
