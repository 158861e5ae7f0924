//! The `trackstream.v1` contract: every record on every topic, and the gRPC API.
//!
//! Layout:
//! - `proto/trackstream/v1/trackstream.proto` — the source of truth (versioned,
//!   additive-only changes);
//! - [`v1`] — types and tonic stubs generated from it at build time;
//! - [`time`] — conversions between protobuf timestamps and `chrono`, so services
//!   never hand-roll them;
//! - [`topics`] and [`keys`] — topic names and record keys fixed by DESIGN.md, so
//!   producers and consumers cannot drift apart.
#![forbid(unsafe_code)]

/// Generated `trackstream.v1` messages, enums and the `TrackingService` stubs.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("trackstream.v1");

    /// Encoded `FileDescriptorSet` of the contract, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("trackstream_v1_descriptor");
}

pub use prost::Message;

/// Topic names. One place, so a typo cannot route records into the void.
pub mod topics {
    /// Raw provider pushes, one record per waybill, key `carrier:waybill`.
    pub const SCANS_RAW: &str = "scans.raw";
    /// Raw records normalize could not parse, with the cause in headers.
    pub const SCANS_DLQ: &str = "scans.dlq";
    /// Shipment registrations, key `carrier:waybill`; co-partitioned with events.
    pub const SHIPMENTS: &str = "shipments";
    /// Canonical events, key `carrier:waybill`.
    pub const TRACKING_EVENTS: &str = "tracking.events";
    /// Per-order updates with sequence numbers, key `carrier:waybill`.
    pub const TRACKING_UPDATES: &str = "tracking.updates";
    /// Alert lifecycle records, key `carrier:waybill`.
    pub const TRACKING_ALERTS: &str = "tracking.alerts";
    /// Rendered buyer messages, key `<merchant_id>/<order_id>`.
    pub const BUYER_NOTIFICATIONS: &str = "buyer.notifications";
    /// Records the detector or the notifier could not process (permanent errors:
    /// undecodable, an output too large for the broker, a script error), the input
    /// record unchanged with `dlq.*` headers naming the stage and the cause.
    pub const TRACKING_DLQ: &str = "tracking.dlq";
    /// Platform-wide lane scorecards ([`crate::v1::Scorecard`]), key = lane
    /// key, compacted: the latest scorecard of every lane.
    pub const TRACKING_LANES: &str = "tracking.lanes";

    /// Incidents ([`crate::v1::Incident`]): per merchant, key
    /// `<merchant_id>/<incident_id>`, and platform-wide, key `<incident_id>`.
    pub const TRACKING_INCIDENTS: &str = "tracking.incidents";
    /// Operators' incident declarations ([`crate::v1::IncidentDeclaration`]),
    /// key = carrier.
    pub const INCIDENTS_DECLARED: &str = "incidents.declared";

    /// Every topic the pipeline uses, for stack scripts and the test kit.
    pub const ALL: [&str; 11] = [
        SCANS_RAW,
        SCANS_DLQ,
        SHIPMENTS,
        TRACKING_EVENTS,
        TRACKING_UPDATES,
        TRACKING_ALERTS,
        BUYER_NOTIFICATIONS,
        TRACKING_DLQ,
        TRACKING_LANES,
        TRACKING_INCIDENTS,
        INCIDENTS_DECLARED,
    ];
}

/// Record keys. Waybill keys decide partitioning, and with it which detector
/// instance owns a parcel, so every producer must build them the same way.
pub mod keys {
    /// `"<carrier>:<waybill>"` — the key of every per-parcel topic.
    pub fn waybill_key(carrier: &str, waybill: &str) -> String {
        format!("{carrier}:{waybill}")
    }

    /// Splits a waybill key back into `(carrier, waybill)`; `None` when malformed.
    pub fn split_waybill_key(key: &str) -> Option<(&str, &str)> {
        key.split_once(':')
            .filter(|(c, w)| !c.is_empty() && !w.is_empty())
    }
}

/// Timestamp conversions between `prost_types::Timestamp` and `chrono`.
pub mod time {
    use chrono::{DateTime, TimeZone, Utc};

    /// Wraps a UTC instant for a protobuf field.
    pub fn to_proto(at: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
        }
    }

    /// Reads a protobuf timestamp; out-of-range values (from a hostile or buggy
    /// producer) become `None` rather than a panic.
    pub fn from_proto(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(ts.nanos).ok()?;
        Utc.timestamp_opt(ts.seconds, nanos).single()
    }

    /// Milliseconds since the epoch of an optional timestamp (0 when absent), the
    /// unit the detector stores deadlines in.
    pub fn millis(ts: Option<&prost_types::Timestamp>) -> i64 {
        ts.and_then(from_proto).map_or(0, |t| t.timestamp_millis())
    }

    /// A protobuf timestamp from epoch milliseconds.
    pub fn from_millis(ms: i64) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waybill_keys_round_trip_and_reject_malformed() {
        let key = keys::waybill_key("sf", "SF123:456");
        assert_eq!(keys::split_waybill_key(&key), Some(("sf", "SF123:456")));
        assert_eq!(keys::split_waybill_key("nocolon"), None);
        assert_eq!(keys::split_waybill_key(":x"), None);
    }

    #[test]
    fn timestamps_round_trip_through_millis() {
        let ts = time::from_millis(-1_500);
        assert_eq!((ts.seconds, ts.nanos), (-2, 500_000_000));
        assert_eq!(time::millis(Some(&ts)), -1_500);
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(time::from_proto(&bad), None);
    }
}
