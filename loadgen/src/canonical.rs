//! Canonical records for benchmarks that feed the detector directly, skipping
//! ingest and normalize: waybill `i`'s key, a registration and a scan as the
//! pipeline would have made them. Times are epoch milliseconds so callers can
//! lay out simulated hours and days without time-zone arithmetic.

use trackstream_proto::time;
use trackstream_proto::v1::{BuyerContact, Shipment, Status, TrackingEvent};

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The record key (`carrier:waybill`) of synthetic waybill `i`.
pub fn waybill_key(i: u64) -> String {
    format!("sf:SF{i:010}")
}

/// A canonical scan of `key` (`carrier:waybill`) with `status` at `at_ms`,
/// received at the same instant; its event id is unique per key, time and
/// status, as normalize's are.
pub fn scan(key: &str, status: Status, at_ms: i64) -> TrackingEvent {
    let (carrier, waybill) = key.split_once(':').unwrap_or(("sf", key));
    TrackingEvent {
        event_id: format!("{key}@{at_ms}/{}", status as i32),
        carrier: carrier.into(),
        waybill: waybill.into(),
        status: status as i32,
        raw_code: "30".into(),
        raw_text: "Departed sorting center".into(),
        occurred_at: Some(time::from_millis(at_ms)),
        received_at: Some(time::from_millis(at_ms)),
        ..Default::default()
    }
}

/// The registration of `key` as order `ORD-<i>` of merchant `m-acme`,
/// registered at `at_ms` with a delivery promise three days later and a
/// (synthetic) buyer contact, so the detector's registration path and the
/// notifier's contact handling carry their real weight.
pub fn registration(key: &str, i: u64, at_ms: i64) -> Shipment {
    let (carrier, waybill) = key.split_once(':').unwrap_or(("sf", key));
    Shipment {
        order_id: format!("ORD-{i:010}"),
        merchant_id: "m-acme".into(),
        carrier: carrier.into(),
        waybill: waybill.into(),
        buyer: Some(BuyerContact {
            name: "Li Lei".into(),
            phone: "13812345678".into(),
            email: "lilei@example.com".into(),
            locale: "zh-CN".into(),
            time_zone: "Asia/Shanghai".into(),
        }),
        promised_delivery_at: Some(time::from_millis(at_ms + 72 * HOUR_MS)),
        service_level: "standard".into(),
        registered_at: Some(time::from_millis(at_ms)),
        ..Default::default()
    }
}
