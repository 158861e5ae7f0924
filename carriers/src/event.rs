//! Building canonical events the same way for every provider.

use chrono::{DateTime, Utc};
use trackstream_proto::time::to_proto;
use trackstream_proto::v1::{
    EventSource, Location, ProofOfDelivery, Provider, RawScan, Reason, Status, TrackingEvent,
    ZoneSource,
};

use crate::time::ParsedTime;

/// The stable event id: a hash of what identifies a scan (carrier, waybill, time,
/// raw code, location). A resent snapshot reproduces every id exactly, which is
/// what makes resends a no-op downstream. 128 bits of SHA-256, hex.
pub fn event_id(
    carrier: &str,
    waybill: &str,
    occurred_at: DateTime<Utc>,
    raw_code: &str,
    location: &str,
) -> String {
    let millis = occurred_at.timestamp_millis().to_string();
    // Unit separators keep ("a","bc") and ("ab","c") apart.
    let digest = crate::signature::sha256(&[
        carrier.as_bytes(),
        b"\x1f",
        waybill.as_bytes(),
        b"\x1f",
        millis.as_bytes(),
        b"\x1f",
        raw_code.as_bytes(),
        b"\x1f",
        location.as_bytes(),
    ]);
    hex::encode(&digest[..16])
}

/// The provider-specific facts of one scan; [`ScanFacts::into_event`] adds what
/// every event shares (ids, receive time, provenance).
#[derive(Debug, Clone)]
pub struct ScanFacts {
    /// Canonical status.
    pub status: Status,
    /// Canonical reason (`Unspecified` when none applies).
    pub reason: Reason,
    /// Provider's code, verbatim.
    pub raw_code: String,
    /// Provider's description, verbatim.
    pub raw_text: String,
    /// When it happened, with zone provenance; `None` falls back to received-at.
    pub occurred_at: Option<ParsedTime>,
    /// Where.
    pub location: Location,
    /// Carrier ordinal, 0 when not given.
    pub carrier_sequence: i64,
    /// Proof of delivery, when given.
    pub proof_of_delivery: Option<ProofOfDelivery>,
    /// Carrier estimate, when given.
    pub estimated_delivery_at: Option<DateTime<Utc>>,
}

impl ScanFacts {
    /// Facts with a status and raw code; other fields empty.
    pub fn new(status: Status, reason: Reason, raw_code: impl Into<String>) -> Self {
        ScanFacts {
            status,
            reason,
            raw_code: raw_code.into(),
            raw_text: String::new(),
            occurred_at: None,
            location: Location::default(),
            carrier_sequence: 0,
            proof_of_delivery: None,
            estimated_delivery_at: None,
        }
    }

    /// Adds what tracker-style providers (AfterShip, EasyPost) give per tracker
    /// rather than per scan: the scan's 1-based position in their list, the
    /// signer (kept only on the delivery scan) and the carrier's estimate.
    pub fn with_tracker_context(
        mut self,
        index: usize,
        signer: &str,
        estimate: Option<DateTime<Utc>>,
    ) -> Self {
        self.carrier_sequence = i64::try_from(index.saturating_add(1)).unwrap_or(i64::MAX);
        if self.status == Status::Delivered && !signer.is_empty() {
            self.proof_of_delivery = Some(ProofOfDelivery {
                signer: signer.to_owned(),
                photo_url: String::new(),
            });
        }
        self.estimated_delivery_at = estimate;
        self
    }

    /// Completes the event for the waybill of `raw`.
    pub fn into_event(self, raw: &RawScan, provider: Provider) -> TrackingEvent {
        let received_at = raw
            .received_at
            .as_ref()
            .and_then(trackstream_proto::time::from_proto)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let time = self.occurred_at.unwrap_or(ParsedTime {
            utc: received_at,
            zone: "UTC".to_owned(),
            source: ZoneSource::ReceivedAt,
        });
        TrackingEvent {
            event_id: event_id(
                &raw.carrier,
                &raw.waybill,
                time.utc,
                &self.raw_code,
                &self.location.text,
            ),
            carrier: raw.carrier.clone(),
            waybill: raw.waybill.clone(),
            provider: provider as i32,
            status: self.status as i32,
            reason: self.reason as i32,
            raw_code: self.raw_code,
            raw_text: self.raw_text,
            occurred_at: Some(to_proto(time.utc)),
            source_time_zone: time.zone,
            zone_source: time.source as i32,
            received_at: raw.received_at,
            location: Some(self.location),
            carrier_sequence: self.carrier_sequence,
            source: if raw.source == 0 {
                EventSource::Push as i32
            } else {
                raw.source
            },
            proof_of_delivery: self.proof_of_delivery,
            estimated_delivery_at: self.estimated_delivery_at.map(to_proto),
            ingest_id: raw.ingest_id.clone(),
        }
    }
}

/// Joins the non-blank parts of an address (`city, state, country`), the
/// location text providers that send structured addresses lack.
pub fn join_nonempty(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| part.trim())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A code table row: provider code → canonical status and reason. Providers keep
/// their tables as `&[CodeRow]` data so a test can walk every code.
pub type CodeRow = (&'static str, Status, Reason);

/// Looks up `code`; unknown codes get `fallback` and reason `UNKNOWN` so the scan
/// is kept and counted, not dropped.
pub fn lookup(table: &[CodeRow], code: &str, fallback: Status) -> (Status, Reason) {
    table
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or((fallback, Reason::Unknown), |(_, s, r)| (*s, *r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_is_stable_and_separates_fields() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("valid");
        let a = event_id("sf", "SF1", t, "2", "Shenzhen");
        assert_eq!(a, event_id("sf", "SF1", t, "2", "Shenzhen"));
        assert_ne!(a, event_id("sf", "SF", t, "12", "Shenzhen"));
        assert_eq!(a.len(), 32);
    }
}
