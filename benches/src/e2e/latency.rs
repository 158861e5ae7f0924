//! Latencies from what the follower saw: webhook acknowledged → update, hop
//! by hop, and the notifier's own time from the record that completed a
//! buyer message.

use std::collections::HashMap;
use std::time::Duration;

use crate::report::{Percentiles, percentiles};

use super::follower::Observed;

/// Per-hop latency of one step.
pub(crate) const HOPS: [&str; 6] = [
    "bench → ingest received",
    "ingest: received → scans.raw record",
    "scans.raw record → webhook answered",
    "normalize: scans.raw → tracking.events",
    "detector: tracking.events → tracking.updates",
    "follower fetch: tracking.updates → read",
];

pub(crate) struct StepResult {
    pub(crate) offered: f64,
    pub(crate) achieved: f64,
    pub(crate) webhooks_per_s: f64,
    pub(crate) scans_per_s: f64,
    pub(crate) failed: usize,
    pub(crate) unmatched: usize,
    pub(crate) to_update: Percentiles,
    pub(crate) to_update_read: Percentiles,
    pub(crate) messages: MessageLatencies,
    pub(crate) request: Percentiles,
    /// Labels a step offered again at the end of the run (`--no-repeat` to skip).
    pub(crate) again: bool,
    pub(crate) hops: Vec<Percentiles>,
    pub(crate) cpu: Vec<(String, f64, f64)>,
    pub(crate) machine_busy: f64,
    pub(crate) redis_mib: f64,
    /// From the first push sent to the last one answered (for the log).
    pub(crate) sent_in: Duration,
}

/// A latency sample from a difference of ms timestamps. Record timestamps are
/// whole ms while ours are not, so up to 1 ms below zero is clock resolution
/// (counted as 0); anything more negative is not a latency of this hop (a scan
/// first carried by a later push than the one it is matched to) and is dropped.
pub(crate) fn ms(delta: f64) -> Option<Duration> {
    (delta.is_finite() && delta >= -1.0).then(|| Duration::from_secs_f64(delta.max(0.0) / 1000.0))
}

/// A push as sent: when, and when answered (ms since the epoch).
#[derive(Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) sent: f64,
    pub(crate) answered: f64,
}

/// Latencies of one step's accepted pushes.
pub(crate) struct Latencies {
    pub(crate) to_update: Percentiles,
    pub(crate) to_update_read: Percentiles,
    pub(crate) request: Percentiles,
    pub(crate) hops: Vec<Percentiles>,
}

/// The latencies of one step's accepted pushes, from what the follower saw.
pub(crate) fn step_latencies(acked: &HashMap<u64, (Sent, String)>, seen: &Observed) -> Latencies {
    let mut to_update = Vec::new();
    let mut to_update_read = Vec::new();
    let mut request = Vec::new();
    let mut hops: Vec<Vec<Duration>> = vec![Vec::new(); HOPS.len()];
    for (tag, (at, _)) in acked {
        request.extend(ms(at.answered - at.sent));
        let received = seen.ingest_received.get(tag).map(|t| *t as f64);
        let raw = seen.raw_at.get(tag).map(|t| *t as f64);
        let event = seen.event_at.get(tag).map(|t| *t as f64);
        let update = seen.update_at.get(tag).map(|t| *t as f64);
        let read = seen.update_seen.get(tag).copied();
        let pairs = [
            (Some(at.sent), received),
            (received, raw),
            (raw, Some(at.answered)),
            (raw, event),
            (event, update),
            (update, read),
        ];
        for (samples, (from, to)) in hops.iter_mut().zip(pairs) {
            if let (Some(from), Some(to)) = (from, to) {
                samples.extend(ms(to - from));
            }
        }
        if let Some(update) = update {
            to_update.extend(ms(update - at.answered));
        }
        if let Some(read) = read {
            to_update_read.extend(ms(read - at.answered));
        }
    }
    Latencies {
        to_update: percentiles(&mut to_update),
        to_update_read: percentiles(&mut to_update_read),
        request: percentiles(&mut request),
        hops: hops.iter_mut().map(|s| percentiles(s)).collect(),
    }
}

/// The notifier's `messages.burst_window` default (the benchmark does not
/// set it): a message still held when it ends is sent anyway, so a message that
/// came this long after its last parcel's record waited for the window, not
/// for processing.
pub(crate) const BURST_WINDOW_MS: f64 = 600_000.0;

/// Buyer-message latencies of one step's orders (taken at the end of the run:
/// a notifier behind at saturation sends late, after the step's updates).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct MessageLatencies {
    /// The notifier's own latency: from the record that completed the message
    /// (for each waybill the message lists, the first record that made it reach
    /// the milestone; the latest of those) to the message record, both
    /// CreateTime. A single-parcel order's message is completed by its one
    /// record, a merged one by its last parcel's; either is then sent at once.
    pub(crate) processing: Percentiles,
    /// Messages that waited for other parcels of their order (merged: more than
    /// one waybill; or sent when the burst window ran out): from the *first*
    /// parcel's record to the message. This is the burst policy, not the
    /// notifier's speed, so it is kept out of `processing`.
    pub(crate) held: Percentiles,
    /// (order, milestone) pairs reached in these orders with no message at the
    /// end of the run: still held for a parcel that has not arrived (the window
    /// is longer than the run), or superseded by a later milestone.
    pub(crate) pending: usize,
    /// Messages listing a waybill for which no triggering record was seen (not
    /// expected; counted so that a mismatch with the notifier shows).
    pub(crate) unattributed: usize,
}

/// Buyer-message latencies for the orders in `orders` (order ids).
pub(crate) fn message_latencies(
    orders: &std::collections::HashSet<&str>,
    seen: &Observed,
) -> MessageLatencies {
    let mut processing = Vec::new();
    let mut held = Vec::new();
    let mut unattributed = 0;
    for ((order, milestone), (at, waybills)) in &seen.messages {
        if !orders.contains(order.1.as_str()) {
            continue;
        }
        let times: Option<Vec<i64>> = waybills
            .iter()
            .map(|w| {
                seen.reached
                    .get(&(order.clone(), *milestone, w.clone()))
                    .copied()
            })
            .collect();
        let (Some(first), Some(last)) = (
            times.as_ref().and_then(|t| t.iter().min().copied()),
            times.as_ref().and_then(|t| t.iter().max().copied()),
        ) else {
            unattributed += 1;
            continue;
        };
        let (at, first, last) = (*at as f64, first as f64, last as f64);
        let window_ran_out = at - last >= BURST_WINDOW_MS * 0.9;
        if waybills.len() > 1 || window_ran_out {
            held.extend(ms(at - first));
        }
        if !window_ran_out {
            processing.extend(ms(at - last));
        }
    }
    let pending = seen
        .reached
        .keys()
        .filter(|(order, _, _)| orders.contains(order.1.as_str()))
        .map(|(order, milestone, _)| (order, *milestone))
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .filter(|(order, milestone)| !seen.messages.contains_key(&((*order).clone(), *milestone)))
        .count();
    MessageLatencies {
        processing: percentiles(&mut processing),
        held: percentiles(&mut held),
        pending,
        unattributed,
    }
}

#[cfg(test)]
mod tests {
    use trackstream_proto::v1::Milestone;

    use super::*;
    use crate::e2e::follower::order_key;
    #[test]
    fn buyer_messages_are_timed_from_the_record_that_completed_them() {
        let mut seen = Observed::default();
        let order = |o: &str| order_key("m", o);
        let shipped = Milestone::Shipped as i32;
        let reach = |seen: &mut Observed, o: &str, w: &str, at: i64| {
            seen.reached.insert((order(o), shipped, w.into()), at);
        };
        // Single parcel: update at 1 000, message at 1 020.
        reach(&mut seen, "A", "WA", 1_000);
        seen.messages
            .insert((order("A"), shipped), (1_020, vec!["WA".into()]));
        // Two parcels merged: first at 2 000, the second (completing) at 5 000,
        // message at 5 010.
        reach(&mut seen, "B", "WB1", 2_000);
        reach(&mut seen, "B", "WB2", 5_000);
        seen.messages.insert(
            (order("B"), shipped),
            (5_010, vec!["WB1".into(), "WB2".into()]),
        );
        // Sent when the burst window ran out.
        reach(&mut seen, "C", "WC1", 10_000);
        seen.messages
            .insert((order("C"), shipped), (610_500, vec!["WC1".into()]));
        // Reached, still held at the end.
        reach(&mut seen, "D", "WD1", 3_000);
        // Another step's order.
        reach(&mut seen, "E", "WE", 1_000);
        seen.messages
            .insert((order("E"), shipped), (9_000, vec!["WE".into()]));
        let orders = ["A", "B", "C", "D"].into_iter().collect();
        let m = message_latencies(&orders, &seen);
        assert_eq!((m.processing.count, m.processing.max), (2, 20.0));
        assert_eq!(m.processing.p50, 10.0);
        assert_eq!(
            (m.held.count, m.held.p50, m.held.max),
            (2, 3_010.0, 600_500.0)
        );
        assert_eq!((m.pending, m.unattributed), (1, 0));
    }
}
