//! Key layout: every key the detector writes, built in one place (the tables
//! are in the [`crate::store`] module doc). Partition keys carry the hash tag
//! `{p<P>}` so one script may touch a partition's keys together in Redis
//! Cluster; order keys come from `trackstream_runtime::order_log`, which owns
//! that layout for the notifier too.

use trackstream_runtime::order_log;

/// State hash of a waybill.
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
    order_log::key(&order_log::order_ref(merchant_id, order_id), suffix)
}

/// Timer member of a waybill's rule.
pub fn timer_member(waybill_key: &str, rule: &str) -> String {
    format!("{waybill_key}|{rule}")
}

/// The waybill key and rule of a timer member (`None` if it is not one).
pub fn parse_timer_member(member: &str) -> Option<(&str, &str)> {
    member.rsplit_once('|')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_shares_one_hash_tag() {
        for key in [
            state_key(3, "sf:1"),
            history_key(3, "sf:1"),
            timers_key(3),
            outbox_key(3),
            watermark_key(3),
        ] {
            assert!(key.starts_with("{p3}:"), "{key}");
        }
    }

    #[test]
    fn a_timer_member_round_trips_even_with_a_bar_in_the_key() {
        let member = timer_member("sf:a|b", "st");
        assert_eq!(parse_timer_member(&member), Some(("sf:a|b", "st")));
    }
}
