//! The assignment check: a member compares the partitions it holds with what
//! the range assignor gives it, and rejoins when a coordinator left it stale.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;

use super::rebalance::RebalanceContext;
use crate::config::KafkaConfig;

/// Guards against a group coordinator that evicts a dead member without
/// rebalancing: the survivors rejoin into the *same* generation and get their
/// old assignment back, and the dead member's partitions are owned by nobody,
/// for good. tansu 0.6.0 does exactly that (its `Formed` heartbeat handler drops
/// the expired member but stays `Formed` with the stale assignments; see
/// docs/ARCHITECTURE.md). Every `kafka.assignment_check`, a member whose group is
/// `Stable` computes what the range assignor gives it for the live members
/// (DescribeGroups) and partition counts (metadata); if its assignment differs
/// on two checks in a row, it leaves the group and joins again, which forces the
/// coordinator into a new generation. On a correct broker the two never differ
/// in a stable group, so the check only costs a DescribeGroups and a metadata
/// request per interval; at worst (a batch longer than the interval while a
/// rebalance completes, so the new assignment is not yet applied at two checks)
/// it causes one needless rejoin, which commits first and so loses nothing.
pub(super) struct AssignmentCheck {
    pub(super) group: String,
    /// `<client.id>-`: the prefix of this member's id.
    pub(super) me: String,
    /// The mismatch seen by the previous check: (held, expected).
    pub(super) suspect: Option<(Owned, Owned)>,
}

pub(super) type Owned = BTreeMap<String, BTreeSet<i32>>;

impl AssignmentCheck {
    /// The check models the range assignor (librdkafka's default first choice)
    /// with dynamic membership and our own client ids; any other setup is left
    /// alone.
    pub(super) fn applies(cfg: &KafkaConfig) -> bool {
        if cfg.assignment_check.is_zero() {
            return false;
        }
        let range = cfg
            .extra
            .get("partition.assignment.strategy")
            .is_none_or(|s| s.split(',').next().map(str::trim) == Some("range"));
        // Static membership and rack-aware assignment order members differently;
        // a user-set client.id could be shared, and we could not find ourselves.
        ["group.instance.id", "client.id", "client.rack"]
            .iter()
            .all(|key| !cfg.extra.contains_key(*key))
            && range
    }

    /// What the range assignor gives member `me` (an id prefix) among
    /// `members`, for topics with the given partition counts; `None` if `me` is
    /// not (or ambiguously) among them. Members are ordered by id and each topic
    /// is split into contiguous ranges, the first `partitions % members` one
    /// larger — librdkafka's and the Java client's range assignor.
    pub(super) fn range_share(
        partitions: &BTreeMap<String, i32>,
        members: &[String],
        me: &str,
    ) -> Option<Owned> {
        let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        let mut mine = sorted.iter().enumerate().filter(|(_, m)| m.starts_with(me));
        let (index, _) = mine.next()?;
        if mine.next().is_some() {
            return None;
        }
        let n = i32::try_from(sorted.len()).ok()?;
        let i = i32::try_from(index).ok()?;
        let mut share = Owned::new();
        for (topic, count) in partitions {
            let (per, extra) = (count / n, count % n);
            let start = i * per + i.min(extra);
            let len = per + i32::from(i < extra);
            if len > 0 {
                share.insert(topic.clone(), (start..start + len).collect());
            }
        }
        Some(share)
    }

    /// Records a comparison; true when the same mismatch was seen twice in a
    /// row (a transient one, mid-rebalance, does not count).
    pub(super) fn mismatch_persists(&mut self, held: &Owned, expected: Option<Owned>) -> bool {
        let Some(expected) = expected.filter(|e| e != held) else {
            self.suspect = None;
            return false;
        };
        let seen = (held.clone(), expected);
        if self.suspect.as_ref() == Some(&seen) {
            self.suspect = None;
            true
        } else {
            self.suspect = Some(seen);
            false
        }
    }
}

/// What the range assignor gives member `me` of `group` for the live members
/// and partition counts of `topics`; `None` when the group is not `Stable`
/// (mid-rebalance the answer would be meaningless). Blocking: librdkafka's
/// admin calls wait on the network, so the loop runs this on a blocking thread.
pub(super) fn expected_share(
    consumer: &StreamConsumer<RebalanceContext>,
    group: &str,
    topics: &[String],
    me: &str,
) -> Result<Option<Owned>, KafkaError> {
    let timeout = Duration::from_secs(2);
    let groups = consumer.fetch_group_list(Some(group), timeout)?;
    let Some(info) = groups.groups().iter().find(|g| g.name() == group) else {
        return Ok(None);
    };
    let members: Vec<String> = info.members().iter().map(|m| m.id().to_owned()).collect();
    tracing::debug!(group, state = info.state(), members = ?members, "group described");
    if info.state() != "Stable" {
        return Ok(None);
    }
    let mut partitions = BTreeMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            let count = i32::try_from(t.partitions().len()).unwrap_or(i32::MAX);
            partitions.insert(t.name().to_owned(), count);
        }
    }
    Ok(AssignmentCheck::range_share(&partitions, &members, me))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(entries: &[(&str, &[i32])]) -> Owned {
        entries
            .iter()
            .map(|(t, ps)| ((*t).to_owned(), ps.iter().copied().collect()))
            .collect()
    }

    fn counts(entries: &[(&str, i32)]) -> BTreeMap<String, i32> {
        entries.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn range_share_splits_each_topic_by_sorted_member_id() {
        let partitions = counts(&[("events", 4), ("shipments", 5)]);
        let members = ids(&["g.bbbb-2", "g.aaaa-1"]);
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &members, "g.aaaa-"),
            Some(owned(&[("events", &[0, 1]), ("shipments", &[0, 1, 2])]))
        );
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &members, "g.bbbb-"),
            Some(owned(&[("events", &[2, 3]), ("shipments", &[3, 4])]))
        );
        // Alone: everything.
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &ids(&["g.bbbb-2"]), "g.bbbb-"),
            Some(owned(&[
                ("events", &[0, 1, 2, 3]),
                ("shipments", &[0, 1, 2, 3, 4])
            ]))
        );
        // More members than partitions: the last ones get nothing.
        let many = ids(&["a-1", "b-1", "c-1", "d-1", "e-1"]);
        assert_eq!(
            AssignmentCheck::range_share(&counts(&[("events", 4)]), &many, "e-"),
            Some(Owned::new())
        );
        // Not found, or not unique: no opinion.
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &members, "g.cccc-"),
            None
        );
        assert_eq!(
            AssignmentCheck::range_share(&partitions, &ids(&["g.a-1", "g.a-2"]), "g.a-"),
            None
        );
    }

    #[test]
    fn the_check_runs_only_where_it_models_the_assignor() {
        let mut cfg = KafkaConfig::default();
        assert!(
            AssignmentCheck::applies(&cfg),
            "defaults: range, dynamic ids"
        );
        cfg.assignment_check = std::time::Duration::ZERO;
        assert!(!AssignmentCheck::applies(&cfg), "0 disables it");
        for (key, value) in [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("group.instance.id", "detector-0"),
            ("client.id", "shared"),
        ] {
            let mut cfg = KafkaConfig::default();
            cfg.extra.insert(key.into(), value.into());
            assert!(!AssignmentCheck::applies(&cfg), "{key}={value}");
        }
        let mut cfg = KafkaConfig::default();
        cfg.extra.insert(
            "partition.assignment.strategy".into(),
            "range,roundrobin".into(),
        );
        assert!(AssignmentCheck::applies(&cfg), "range first");
    }

    #[test]
    fn only_a_mismatch_seen_twice_in_a_row_triggers_a_rejoin() {
        let mut check = AssignmentCheck {
            group: "g".into(),
            me: "g.aaaa-".into(),
            suspect: None,
        };
        let half = owned(&[("events", &[2, 3])]);
        let all = owned(&[("events", &[0, 1, 2, 3])]);
        assert!(
            !check.mismatch_persists(&all, Some(all.clone())),
            "consistent"
        );
        assert!(!check.mismatch_persists(&half, None), "no opinion");
        // The stale state tansu 0.6.0 leaves a survivor in: alone, half the partitions.
        assert!(
            !check.mismatch_persists(&half, Some(all.clone())),
            "first sighting"
        );
        assert!(
            check.mismatch_persists(&half, Some(all.clone())),
            "persists: rejoin"
        );
        assert!(
            !check.mismatch_persists(&half, Some(all.clone())),
            "counting restarts"
        );
        // A transient mismatch that resolves does not count.
        assert!(!check.mismatch_persists(&Owned::new(), Some(all.clone())));
        assert!(!check.mismatch_persists(&all, Some(all.clone())));
        assert!(!check.mismatch_persists(&Owned::new(), Some(all.clone())));
        // Nor does a mismatch that changes (a rebalance under way).
        assert!(!check.mismatch_persists(&half, Some(all)));
    }
}
