//! The one write: a partition's folded waybills committed by `lua/commit.lua`
//! (each on its own compare-and-set), and the order-log append
//! (`runtime::order_log::append_one`) for updates the commit could not sequence itself.

use std::collections::HashMap;

use prost::Message;
use trackstream_proto::v1::TrackingEvent;
use trackstream_runtime::order_log;

use super::Store;
use super::codec::{Encoded, registration_arg};
use super::keys::{history_key, outbox_key, state_key, timer_member, timers_key};
use super::scripts::{self, eval_sha};
use crate::engine::{Waybill, WaybillState};

/// One waybill's change in a commit.
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

/// What the commit did for one waybill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Written; with inline sequencing, the sequence number of each update
    /// output in order (empty otherwise: append them with [`Store::sequence`]).
    Done(Vec<u64>),
    /// Another writer changed the waybill first: reload and re-apply it.
    Conflict,
}

impl Store {
    /// Whether [`Store::commit_partition`] appends updates to their order logs
    /// itself (a standalone server; in Redis Cluster the order keys live in
    /// other slots than the partition's).
    pub fn inline_sequence(&self) -> bool {
        self.inline_sequence
    }

    /// Commits the changed waybills of one partition with one script call,
    /// each on its own compare-and-set; with inline sequencing (standalone
    /// Redis) updates are appended to their order logs in the same step.
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
        // Built as one command, keys first: a partition's commit carries tens
        // of kilobytes.
        let mut keys = vec![timers_key(partition), outbox_key(partition)];
        for change in changes {
            let key = &change.waybill.key;
            keys.push(state_key(partition, key));
            keys.push(history_key(partition, key));
            if self.inline_sequence {
                for (order, merchant) in change.outputs.iter().filter_map(|o| o.order.as_ref()) {
                    keys.extend(order_log::append_keys(&order_log::order_ref(
                        merchant, order,
                    )));
                }
            }
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts.commit.get_hash())
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
                let merchant = output.order.as_ref().map_or("", |(_, m)| m.as_str());
                cmd.arg(output.kind())
                    .arg(&output.outbox_id)
                    .arg(&output.body)
                    .arg(merchant);
            }
        }
        let mut conn = self.conn.clone();
        let results: Vec<Vec<i64>> = eval_sha(&mut conn, &cmd, &scripts::COMMIT).await?;
        Ok(results.into_iter().map(committed).collect())
    }

    /// Appends an update to its order's log in the order's slot, assigning
    /// its sequence number (idempotent: the same id always gets the same
    /// number); returns the number. Used when
    /// the commit did not sequence inline (Redis Cluster) and on outbox
    /// re-delivery. The order's keys expire at `order_expire_at` (ms since
    /// the epoch).
    pub async fn sequence(
        &self,
        update: &Encoded,
        order_expire_at: i64,
    ) -> redis::RedisResult<u64> {
        let (order, merchant) = update.order.clone().unwrap_or_default();
        let mut conn = self.conn.clone();
        order_log::append_one(
            &mut conn,
            &order_log::order_ref(&merchant, &order),
            &update.outbox_id,
            &update.body,
            &merchant,
            order_expire_at,
        )
        .await
    }
}

/// One waybill's reply: `{-1}`, or `{version, seq*}`.
fn committed(reply: Vec<i64>) -> Committed {
    match reply.split_first() {
        Some((version, seqs)) if *version >= 0 => Committed::Done(
            seqs.iter()
                .map(|s| u64::try_from(*s).unwrap_or(0))
                .collect(),
        ),
        _ => Committed::Conflict,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_a_conflict_or_the_seqs_in_order() {
        assert_eq!(committed(vec![-1]), Committed::Conflict);
        assert_eq!(committed(vec![]), Committed::Conflict);
        assert_eq!(committed(vec![3, 7, 8]), Committed::Done(vec![7, 8]));
    }
}
