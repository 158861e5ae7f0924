//! The order pushes go out in: event-time order, with resends and late
//! deliveries at the rates in [`Mix`].

use chrono::{DateTime, Duration as Span, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Mix, Parcel};

/// The order of pushes for `parcels`: push `n` of a parcel carries its first `n`
/// scans. Pushes go out in event-time order of their newest scan (as a carrier
/// would have sent them, days compressed into seconds); some are sent twice (a
/// resend five minutes later), and some are delivered late, by up to
/// [`Mix::reorder_within`] of event time, overtaking whatever comes sooner,
/// including the parcel's own next push.
pub fn schedule(parcels: &[Parcel], mix: &Mix, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let window_ms = mix.reorder_within.num_milliseconds().max(0);
    let mut timed: Vec<(DateTime<Utc>, usize, usize)> = Vec::new();
    for parcel in parcels {
        for (i, scan) in parcel.scans.iter().enumerate() {
            let mut at = scan.at;
            if window_ms > 0 && rng.random::<f64>() < mix.reorder_rate {
                at += Span::milliseconds(rng.random_range(0..=window_ms));
            }
            timed.push((at, parcel.index, i + 1));
            if rng.random::<f64>() < mix.duplicate_rate {
                // A resend shortly after the original.
                timed.push((scan.at + Span::minutes(5), parcel.index, i + 1));
            }
        }
    }
    timed.sort();
    timed.into_iter().map(|(_, p, n)| (p, n)).collect()
}
