//! Waybill ownership: which merchant a `(carrier, waybill)` belongs to.
//!
//! A parcel belongs to the merchant that registered it first. ingest checks and
//! claims ownership synchronously at registration (`SET NX` on [`owner_key`]),
//! so another merchant's registration of the same waybill is refused with 409
//! before anything is written; the detector refreshes the claim's expiry with
//! the parcel's own retention, so ownership ends when the parcel's data does.
//! The key lives here so both sides build it the same way.

/// The Redis key holding the owning merchant id of `carrier:waybill`. Its own
/// hash tag: on Redis Cluster the claim is independent of the detector's
/// per-partition keys.
pub fn owner_key(carrier: &str, waybill: &str) -> String {
    format!("own:{{{carrier}:{waybill}}}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_owner_key_is_tagged_by_the_waybill_key() {
        assert_eq!(super::owner_key("sf", "SF1"), "own:{sf:SF1}");
    }
}
