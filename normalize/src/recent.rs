//! Event ids this instance has recently written, so a resent snapshot is not
//! written again.
//!
//! Kdniao and Kuaidi100 push a waybill's whole trace every time, and aggregators
//! resend on every change: in the benchmark's mix a webhook carries about 2.4 scans
//! of which most were already written. Every one of them would cross the broker
//! and cost the detector a dedup lookup, only to be dropped there. normalize owns
//! a waybill's partition of `scans.raw`, so the events it wrote recently are the
//! ones a resend repeats; remembering their ids drops the repeats at the source.
//!
//! This is an optimisation, not the dedup the pipeline relies on: the detector
//! still dedups by event id in Redis. Ids are remembered only after the broker
//! acknowledged them, so a forgotten id (restart, rebalance, eviction) means one
//! more duplicate downstream, never a lost event.
//!
//! Memory is bounded by two generations of fingerprints: when the current
//! generation is full it becomes the previous one and the oldest is dropped, so
//! a resend within the last `capacity` to `2 × capacity` written events is caught
//! (a 64-bit fingerprint per id: about 10 MB per generation at the default
//! 500 000).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// A bounded memory of written event ids (see the module docs).
#[derive(Debug)]
pub struct RecentEvents {
    capacity: usize,
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl RecentEvents {
    /// Remembers up to `capacity` to `2 × capacity` ids; 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        RecentEvents {
            capacity,
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    /// Whether `event_id` was remembered (and not yet aged out).
    pub fn contains(&self, event_id: &str) -> bool {
        let fingerprint = fingerprint(event_id);
        self.current.contains(&fingerprint) || self.previous.contains(&fingerprint)
    }

    /// Remembers `event_id`, ageing out the oldest generation when full.
    pub fn insert(&mut self, event_id: &str) {
        if self.capacity == 0 {
            return;
        }
        if self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(fingerprint(event_id));
    }
}

/// A 64-bit fingerprint: a collision only suppresses a re-emission of an
/// unrelated event with probability ~n/2^64, and even then the detector would
/// have needed it only if it was new.
fn fingerprint(event_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    event_id.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_two_generations_have_passed() {
        let mut recent = RecentEvents::new(2);
        recent.insert("a");
        recent.insert("b");
        assert!(recent.contains("a") && recent.contains("b"));
        recent.insert("c"); // a, b become the previous generation
        assert!(recent.contains("a"), "still within two generations");
        recent.insert("d");
        recent.insert("e"); // a, b aged out; c, d previous
        assert!(!recent.contains("a") && !recent.contains("b"));
        assert!(recent.contains("c") && recent.contains("e"));
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut recent = RecentEvents::new(0);
        recent.insert("a");
        assert!(!recent.contains("a"));
    }
}
