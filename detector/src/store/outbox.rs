//! After a commit: the outbox (cleared once its outputs are acknowledged, read
//! back on re-delivery, pruned of what can never be produced) and the
//! ownership claims' expiry.

use super::Store;
use super::codec::decode_outbox;
use super::keys::{outbox_key, watermark_key};
use super::scripts::is_no_script;
use crate::engine::Output;

impl Store {
    /// After a commit's outputs are produced: clears their outbox entries and,
    /// for the event clock, raises the partition's watermark to `watermark`
    /// (`None` = leave it), in one pipelined round trip.
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
                pipe.invoke_script(
                    self.scripts
                        .watermark
                        .key(watermark_key(partition))
                        .arg(mark),
                )
                .ignore();
            }
            match pipe.query_async::<()>(&mut conn).await {
                Err(err) if is_no_script(&err) => {}
                other => return other,
            }
        }
        // No outbox entries, or the script was not loaded yet (invoke loads it).
        if let Some(mark) = watermark {
            self.advance_watermark(partition, mark).await?;
        }
        Ok(())
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
            match decode_outbox(&id, &bytes) {
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
}
