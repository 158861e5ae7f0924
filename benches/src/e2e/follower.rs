//! The follower: reads every pipeline topic from the beginning by manual
//! assignment and records, per scan tag, when each hop's record of it was
//! written, plus the alerts and buyer messages it saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trackstream_proto::topics;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, Milestone, RawScan, ShipmentUpdate, Status,
    TrackingEvent, UpdateKind,
};

use super::now_ms;

/// A consumer reading every partition of `topic` from the beginning by manual
/// assignment: no consumer group, so no join, no coordinator, no committed
/// offsets, and records written before it started are read too.
pub(crate) fn assigned_consumer(
    brokers: &str,
    topic: &str,
    partitions: i32,
    fetch_wait_ms: u64,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Required by librdkafka's consumer API; never joined (no subscribe).
        .set("group.id", format!("bench-{:08x}", rand::random::<u32>()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// One alert record as the follower saw it.
#[derive(Debug, Clone)]
pub(crate) struct AlertSeen {
    pub(crate) alert_id: String,
    pub(crate) waybill: String,
    pub(crate) rule: String,
    pub(crate) state: i32,
    pub(crate) tier: u32,
}

/// What the follower saw, keyed by scan tag (`#<tag>` in the scan text). Times
/// are ms since the epoch: record timestamps (CreateTime, stamped by the
/// producing service) for each hop, follower receipt for the last one.
#[derive(Default)]
pub(crate) struct Observed {
    /// Ingest's `received_at` of the first `scans.raw` record whose newest scan is the tag.
    pub(crate) ingest_received: HashMap<u64, i64>,
    /// CreateTime of that `scans.raw` record.
    pub(crate) raw_at: HashMap<u64, i64>,
    /// CreateTime of the first `tracking.events` record of the tag.
    pub(crate) event_at: HashMap<u64, i64>,
    /// CreateTime of the first `tracking.updates` record of the tag.
    pub(crate) update_at: HashMap<u64, i64>,
    /// When the follower received that update.
    pub(crate) update_seen: HashMap<u64, f64>,
    /// (order, milestone, waybill) → CreateTime of the first record that made
    /// that parcel reach the milestone in the notifier: a non-late update
    /// (`tracking.updates`) or an opened alert (`tracking.alerts`), see
    /// [`update_milestone`] and [`alert_milestone`].
    pub(crate) reached: HashMap<(OrderKey, i32, String), i64>,
    /// (order, milestone) → the first buyer message: CreateTime and the
    /// waybills it covers (several when the notifier merged a burst).
    pub(crate) messages: HashMap<(OrderKey, i32), (i64, Vec<String>)>,
    /// Alerts, one per (alert id, state, tier): redeliveries collapse here.
    pub(crate) alerts: BTreeMap<(String, i32, u32), AlertSeen>,
    /// Alert records that repeated an (alert id, state, tier) already seen.
    pub(crate) redelivered_alerts: usize,
    /// Records read, per topic.
    pub(crate) records: BTreeMap<&'static str, usize>,
    /// Updates that carried a delivery prediction, and those at high
    /// confidence: the lane statistics were really in play.
    pub(crate) predicted: (usize, usize),
}

/// Set when the run is over or interrupted: the broker is going away, so the
/// follower's connection errors are expected and not reported.
pub(crate) static STOPPING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The largest `#<tag>` (or URL-encoded `%23<tag>`) in `bytes`: the newest scan
/// of a push (tags grow along a parcel's scans; snapshots carry all of them).
pub(crate) fn newest_tag(bytes: &[u8]) -> Option<u64> {
    let mut best: Option<u64> = None;
    let mut i = 0;
    while i < bytes.len() {
        let start = if bytes[i] == b'#' {
            i + 1
        } else if bytes[i..].starts_with(b"%23") {
            i + 3
        } else {
            i += 1;
            continue;
        };
        let digits = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if let Some(tag) = std::str::from_utf8(&bytes[start..start + digits])
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        {
            best = Some(best.map_or(tag, |b| b.max(tag)));
        }
        i = start + digits;
    }
    best
}

pub(crate) fn text_tag(text: &str) -> Option<u64> {
    text.rsplit_once('#')
        .and_then(|(_, t)| t.trim().parse::<u64>().ok())
}

/// The topics the follower reads: every hop whose record time it reports, plus
/// alerts (scoring) and buyer messages.
pub(crate) const FOLLOWED: [&str; 5] = [
    topics::SCANS_RAW,
    topics::TRACKING_EVENTS,
    topics::TRACKING_UPDATES,
    topics::TRACKING_ALERTS,
    topics::BUYER_NOTIFICATIONS,
];

pub(crate) fn observe(
    seen: &mut Observed,
    topic: &'static str,
    message: &BorrowedMessage<'_>,
    now: f64,
) {
    *seen.records.entry(topic).or_default() += 1;
    let created = message.timestamp().to_millis().unwrap_or(0);
    let payload = message.payload().unwrap_or_default();
    match topic {
        topics::SCANS_RAW => {
            if let Ok(raw) = RawScan::decode(payload)
                && let Some(tag) = newest_tag(&raw.payload)
            {
                seen.raw_at.entry(tag).or_insert(created);
                seen.ingest_received
                    .entry(tag)
                    .or_insert_with(|| trackstream_proto::time::millis(raw.received_at.as_ref()));
            }
        }
        topics::TRACKING_EVENTS => {
            if let Ok(event) = TrackingEvent::decode(payload)
                && let Some(tag) = text_tag(&event.raw_text)
            {
                seen.event_at.entry(tag).or_insert(created);
            }
        }
        topics::TRACKING_UPDATES => {
            let Ok(update) = ShipmentUpdate::decode(payload) else {
                return;
            };
            if let Some(prediction) = &update.prediction {
                seen.predicted.0 += 1;
                seen.predicted.1 += usize::from(
                    prediction.confidence
                        == trackstream_proto::v1::PredictionConfidence::High as i32,
                );
            }
            if let Some(tag) = update.event.as_ref().and_then(|e| text_tag(&e.raw_text)) {
                seen.update_at.entry(tag).or_insert(created);
                seen.update_seen.entry(tag).or_insert(now);
            }
            if let Some(milestone) = update_milestone(&update)
                && let Some(shipment) = &update.shipment
            {
                let key = (
                    order_key(&shipment.merchant_id, &shipment.order_id),
                    milestone as i32,
                    shipment.waybill.clone(),
                );
                seen.reached.entry(key).or_insert(created);
            }
        }
        topics::BUYER_NOTIFICATIONS => {
            if let Ok(message) = BuyerNotification::decode(payload) {
                let key = (
                    order_key(&message.merchant_id, &message.order_id),
                    message.milestone,
                );
                seen.messages
                    .entry(key)
                    .or_insert((created, message.waybills));
            }
        }
        _ => {
            if let Ok(alert) = Alert::decode(payload) {
                if let Some(milestone) = alert_milestone(&alert) {
                    let key = (
                        order_key(&alert.merchant_id, &alert.order_id),
                        milestone as i32,
                        alert.waybill.clone(),
                    );
                    seen.reached.entry(key).or_insert(created);
                }
                let key = (alert.alert_id.clone(), alert.state, alert.tier);
                match seen.alerts.entry(key) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        seen.redelivered_alerts += 1;
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(AlertSeen {
                            alert_id: alert.alert_id,
                            waybill: alert.waybill,
                            rule: alert.rule,
                            state: alert.state,
                            tier: alert.tier,
                        });
                    }
                }
            }
        }
    }
}

/// An order as the notifier keys it: (merchant id, order id); two shops'
/// order 10001 are different orders.
pub(crate) type OrderKey = (String, String);

pub(crate) fn order_key(merchant_id: &str, order_id: &str) -> OrderKey {
    (merchant_id.to_owned(), order_id.to_owned())
}

/// The milestone a `tracking.updates` record makes its parcel reach in the
/// notifier, if any. Mirrors the notifier's `on_update` and
/// `templates::milestone_for_status` (the benches crate does not depend on the
/// notifier): late updates trigger nothing, a return delivered back is
/// RETURN_RECEIVED, a scan of an outbound parcel maps its event status.
pub(crate) fn update_milestone(update: &ShipmentUpdate) -> Option<Milestone> {
    let (event, shipment) = (update.event.as_ref()?, update.shipment.as_ref()?);
    if update.late || shipment.order_id.is_empty() {
        return None;
    }
    if update.kind == UpdateKind::ReturnReceived as i32 {
        return Some(Milestone::ReturnReceived);
    }
    if update.kind != UpdateKind::Scan as i32 || shipment.is_return {
        return None;
    }
    match Status::try_from(event.status).ok()? {
        Status::PickedUp | Status::InTransit => Some(Milestone::Shipped),
        Status::OutForDelivery => Some(Milestone::OutForDelivery),
        Status::AvailableForPickup => Some(Milestone::AvailableForPickup),
        Status::Delivered => Some(Milestone::Delivered),
        _ => None,
    }
}

/// The milestone an opened alert makes its parcel reach in the notifier
/// (mirrors the notifier's `on_alert`).
pub(crate) fn alert_milestone(alert: &Alert) -> Option<Milestone> {
    if alert.order_id.is_empty() || alert.state != AlertState::Opened as i32 {
        return None;
    }
    match alert.rule.as_str() {
        "stalled_in_transit"
        | "stalled_in_customs"
        | "promised_date_missed"
        | "out_for_delivery_not_delivered" => Some(Milestone::Delayed),
        "carrier_exception" => Some(Milestone::Exception),
        _ => None,
    }
}

/// Fetch wait of the follower's consumers whose read time is not measured.
/// Long, because an idle waiting fetch is not free on every broker: nisshi
/// re-reads every partition of a waiting fetch after half the remaining wait,
/// a quarter, …, so at 100 ms these four consumers alone kept nisshi/SQLite
/// near a full core and the benchmark measured its own observer.
pub(crate) const SLOW_FETCH_WAIT_MS: u64 = 1000;

/// Starts one assigned consumer per followed topic (one fetch request each, so a
/// broker that waits per partition delays each topic by its own partitions only).
pub(crate) fn follow(
    brokers: &str,
    partitions: i32,
    fetch_wait_ms: u64,
    observed: Arc<Mutex<Observed>>,
) -> anyhow::Result<()> {
    for topic in FOLLOWED {
        // Only the updates' read time is a latency of its own; every other topic
        // is timed by its record timestamps, so reading it late is fine, and a
        // slow poll spares the broker (tansu and nisshi spend CPU on every
        // waiting fetch and share the two cores with the pipeline).
        let wait = if topic == topics::TRACKING_UPDATES {
            fetch_wait_ms
        } else {
            SLOW_FETCH_WAIT_MS
        };
        let consumer = assigned_consumer(brokers, topic, partitions, wait)?;
        let observed = observed.clone();
        tokio::spawn(async move {
            let mut errors = 0u32;
            loop {
                let message = match consumer.recv().await {
                    Ok(message) => message,
                    Err(err) => {
                        errors += 1;
                        let stopping = STOPPING.load(std::sync::atomic::Ordering::Relaxed);
                        if errors <= 3 && !stopping {
                            eprintln!("[bench] follower {topic}: {err}");
                        }
                        continue;
                    }
                };
                let now = now_ms();
                let Ok(mut seen) = observed.lock() else {
                    return;
                };
                observe(&mut seen, topic, &message, now);
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn newest_tag_takes_the_largest_plain_or_url_encoded() {
        assert_eq!(newest_tag(b"{\"a\":\"x #12\",\"b\":\"y #7\"}"), Some(12));
        assert_eq!(
            newest_tag(b"RequestData=%7B%22t%22%3A%22x+%2331%22"),
            Some(31)
        );
        assert_eq!(newest_tag(b"no tags # here"), None);
    }

    #[test]
    fn update_milestones_follow_the_notifier() {
        use trackstream_proto::v1::Shipment;
        let update = |status: Status, late: bool, is_return: bool| ShipmentUpdate {
            late,
            kind: UpdateKind::Scan as i32,
            event: Some(TrackingEvent {
                status: status as i32,
                ..TrackingEvent::default()
            }),
            shipment: Some(Shipment {
                order_id: "O".into(),
                is_return,
                ..Shipment::default()
            }),
            ..ShipmentUpdate::default()
        };
        assert_eq!(
            update_milestone(&update(Status::InTransit, false, false)),
            Some(Milestone::Shipped)
        );
        assert_eq!(
            update_milestone(&update(Status::InTransit, true, false)),
            None
        );
        assert_eq!(
            update_milestone(&update(Status::Delivered, false, true)),
            None
        );
        assert_eq!(
            update_milestone(&update(Status::InfoReceived, false, false)),
            None
        );
    }
}
