//! Attacks on normalize (see `main.rs`): an event over our size limit, an event
//! the producer's (broker's) own limit refuses, and a scan dated in the future. Each poison record must cost only its own dead letter
//! on `scans.dlq`, while the partition — asserted with traffic behind it —
//! moves on.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use trackstream_proto::time::to_proto;
use trackstream_proto::topics;
use trackstream_proto::v1::{
    BuyerNotification, Milestone, Provider, RawScan, ShipmentUpdate, Status, TrackingEvent,
};
use trackstream_sandbox::Sandbox;
use trackstream_testkit::kafka::{Record, all};

const WAIT: Duration = Duration::from_secs(60);

fn scan(waybill: &str, status: &str, at: DateTime<Utc>) -> serde_json::Value {
    json!({"carrier": "sf", "waybill": waybill, "status": status,
        "occurred_at": at.to_rfc3339(), "description": "scan",
        "location": {"text": "Shenzhen hub", "city": "Shenzhen", "country": "CN"}})
}

fn header<'a>(record: &'a Record, name: &str) -> &'a str {
    record.header(name).unwrap_or_default()
}

fn waybills(records: &[Record]) -> BTreeSet<String> {
    records.iter().filter_map(waybill_of).collect()
}

/// Writes a generic-format `RawScan` straight to `scans.raw`, as ingest would
/// (same key, same partitioner): whatever limits ingest puts on webhook fields,
/// normalize must hold its own line.
async fn produce_raw(sandbox: &Sandbox, waybill: &str, scans: &serde_json::Value) {
    produce_raw_as(sandbox, Provider::Generic, waybill, scans).await;
}

async fn produce_raw_as(
    sandbox: &Sandbox,
    provider: Provider,
    waybill: &str,
    payload: &serde_json::Value,
) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", sandbox.bootstrap())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let raw = RawScan {
        ingest_id: format!("test-{waybill}"),
        provider: provider as i32,
        carrier: "sf".into(),
        waybill: waybill.into(),
        payload: payload.to_string().into_bytes(),
        received_at: Some(to_proto(Utc::now())),
        ..RawScan::default()
    };
    let payload = prost::Message::encode_to_vec(&raw);
    let key = format!("sf:{waybill}");
    producer
        .send(
            FutureRecord::to(topics::SCANS_RAW)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_is_dead_lettered_while_other_waybills_keep_flowing() {
    // Small enough that an event with every free-text field near its 512-byte
    // cap (about 5 KB) does not fit; an ordinary event (~300 B) does.
    let sandbox = Sandbox::start_with(|c| c.normalize.kafka.max_record_bytes = 3_000).await;
    let t0 = Utc::now().trunc_subsecs(0) - TimeDelta::minutes(30);
    let (status, _) = sandbox
        .post_generic(&json!([scan("SFOK-A", "picked_up", t0)]))
        .await;
    assert_eq!(status, 200);
    let long = "x".repeat(500);
    let mut big = scan("SFBIG", "in_transit", t0);
    big["description"] = json!(long);
    big["location"] = json!({"text": long, "city": long, "region": long,
        "country": long, "postal_code": long, "admin_area_code": long});
    big["signer"] = json!(long);
    big["photo_url"] = json!(long);
    produce_raw(
        &sandbox,
        "SFBIG",
        &json!([big, scan("SFBIG", "picked_up", t0)]),
    )
    .await;

    let mut dlq = sandbox.reader(topics::SCANS_DLQ);
    dlq.until(WAIT, "the oversized push's letter", |r| !r.is_empty())
        .await;
    let letter = dlq.records[0].clone();
    assert_eq!(letter.key, "sf:SFBIG");
    assert_eq!(header(&letter, "dlq.cause"), "output_too_large");
    assert_eq!(header(&letter, "dlq.stage"), "normalize");
    assert_eq!(header(&letter, "dlq.source.topic"), topics::SCANS_RAW);
    assert!(
        header(&letter, "dlq.detail").contains("3000-byte limit"),
        "{}",
        header(&letter, "dlq.detail")
    );
    let poisoned: i32 = header(&letter, "dlq.source.partition")
        .parse()
        .unwrap_or_else(|e| panic!("dlq.source.partition: {e}"));

    // Traffic behind the poison: 40 waybills, so some share its partition
    // (tracking.events is co-partitioned with scans.raw).
    let later: Vec<String> = (0..40).map(|i| format!("SFAFTER{i:02}")).collect();
    let push: Vec<serde_json::Value> = later
        .iter()
        .map(|w| scan(w, "in_transit", t0 + TimeDelta::minutes(1)))
        .collect();
    let (status, _) = sandbox.post_generic(&json!(push)).await;
    assert_eq!(status, 200);
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "every healthy waybill's event", |r| {
            let seen = waybills(r);
            seen.contains("SFOK-A")
                && seen.contains("SFBIG")
                && later.iter().all(|w| seen.contains(w))
        })
        .await;
    assert!(
        events
            .records
            .iter()
            .any(|r| r.partition == poisoned
                && waybill_of(r).is_some_and(|w| w.starts_with("SFAFTER"))),
        "scans after the poison were written on its partition {poisoned}"
    );
    let big_events: Vec<TrackingEvent> = events
        .decoded::<TrackingEvent>()
        .into_iter()
        .filter(|e| e.waybill == "SFBIG")
        .collect();
    assert_eq!(
        big_events.iter().map(|e| e.status).collect::<Vec<_>>(),
        [Status::PickedUp as i32],
        "the oversized event is not written; its push's other scan is"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_broker_refuses_is_dead_lettered_and_the_partition_moves_on() {
    // The producer's own limit (librdkafka `message.max.bytes`, as a broker's
    // would be) below `kafka.max_record_bytes`: our size check passes the event,
    // Kafka refuses it. Retrying the batch would fail forever.
    let sandbox = Sandbox::start_with(|c| {
        c.normalize
            .kafka
            .extra
            .insert("message.max.bytes".into(), "1000".into());
    })
    .await;
    // Kdniao copies a trace's location into `text` and `city`: 510 bytes once
    // in the input, twice in the event.
    let shanghai = Utc::now() + TimeDelta::hours(8);
    let local = |back: i64| {
        (shanghai - TimeDelta::hours(back))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let item = json!({"ShipperCode": "SF", "LogisticCode": "SFKD1", "State": "2",
    "Traces": [
        {"AcceptTime": local(3), "AcceptStation": "揽收", "Location": "深圳"},
        {"AcceptTime": local(2), "AcceptStation": "到达", "Location": "深".repeat(170)}
    ]});
    produce_raw_as(&sandbox, Provider::Kdniao, "SFKD1", &item).await;

    let mut dlq = sandbox.reader(topics::SCANS_DLQ);
    dlq.until(WAIT, "the refused event's letter", |r| !r.is_empty())
        .await;
    let letter = dlq.records[0].clone();
    assert_eq!(letter.key, "sf:SFKD1");
    assert_eq!(header(&letter, "dlq.cause"), "output_too_large");
    assert_eq!(header(&letter, "dlq.stage"), "normalize");
    let poisoned: i32 = header(&letter, "dlq.source.partition")
        .parse()
        .unwrap_or_else(|e| panic!("dlq.source.partition: {e}"));

    let t0 = Utc::now().trunc_subsecs(0) - TimeDelta::minutes(10);
    let later: Vec<String> = (0..40).map(|i| format!("SFNEXT{i:02}")).collect();
    let push: Vec<serde_json::Value> = later.iter().map(|w| scan(w, "in_transit", t0)).collect();
    let (status, _) = sandbox.post_generic(&json!(push)).await;
    assert_eq!(status, 200);
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "the traffic behind the refused record", |r| {
            let seen = waybills(r);
            seen.contains("SFKD1") && later.iter().all(|w| seen.contains(w))
        })
        .await;
    assert!(
        events
            .records
            .iter()
            .any(|r| r.partition == poisoned
                && waybill_of(r).is_some_and(|w| w.starts_with("SFNEXT"))),
        "records after the refused one were written on its partition {poisoned}"
    );
    // The other event may be written twice (once by the batch call that
    // failed, once when the batch is written output by output); the detector
    // deduplicates by id.
    let kdniao: BTreeSet<String> = events
        .decoded::<TrackingEvent>()
        .into_iter()
        .filter(|e| e.waybill == "SFKD1")
        .map(|e| e.raw_text)
        .collect();
    assert_eq!(
        kdniao,
        BTreeSet::from(["揽收".to_owned()]),
        "the input's other event is written, the refused one is not"
    );
    assert!(
        header(&letter, "dlq.detail").contains("refused by Kafka"),
        "{}",
        header(&letter, "dlq.detail")
    );
    sandbox.shutdown().await;
}

fn waybill_of(record: &Record) -> Option<String> {
    prost::Message::decode(record.payload.as_slice())
        .ok()
        .map(|e: TrackingEvent| e.waybill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_scan_is_dead_lettered_and_later_scans_still_message_the_buyer() {
    let sandbox = Sandbox::start().await;
    let (status, _) = sandbox
        .register(&json!({
            "order_id": "O-FUTURE", "carrier": "SF", "waybill": "SFFUT1",
            "buyer": {"name": "Li Lei", "phone": "13812345678", "locale": "en"}
        }))
        .await;
    assert_eq!(status, 200);
    let now = Utc::now().trunc_subsecs(0);

    // A "delivered" two days ahead (a zone bug or a forged push).
    let (status, _) = sandbox
        .post_generic(&scan("SFFUT1", "delivered", now + TimeDelta::days(2)))
        .await;
    assert_eq!(status, 200);
    let mut dlq = sandbox.reader(topics::SCANS_DLQ);
    dlq.until(WAIT, "the future-dated scan's letter", |r| !r.is_empty())
        .await;
    assert_eq!(dlq.records[0].key, "sf:SFFUT1");
    assert_eq!(header(&dlq.records[0], "dlq.cause"), "future_dated");
    assert_eq!(header(&dlq.records[0], "dlq.stage"), "normalize");

    // Real scans after it: they move the parcel and message the buyer.
    for (status, at) in [
        ("picked_up", now - TimeDelta::minutes(30)),
        ("out_for_delivery", now - TimeDelta::minutes(1)),
    ] {
        let (code, _) = sandbox.post_generic(&scan("SFFUT1", status, at)).await;
        assert_eq!(code, 200);
    }
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    updates
        .until(WAIT, "two updates for SFFUT1", |r| {
            all::<ShipmentUpdate>(r, |u| u.len() >= 2)
        })
        .await;
    let seen: Vec<(i32, bool, i32)> = updates
        .decoded::<ShipmentUpdate>()
        .iter()
        .map(|u| {
            (
                u.event.as_ref().map_or(0, |e| e.status),
                u.late,
                u.current_status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (Status::PickedUp as i32, false, Status::PickedUp as i32),
            (
                Status::OutForDelivery as i32,
                false,
                Status::OutForDelivery as i32
            ),
        ],
        "no future delivery announced, later scans not late"
    );
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    messages
        .until(WAIT, "a buyer message for O-FUTURE", |r| {
            all::<BuyerNotification>(r, |m| m.iter().any(|m| m.order_id == "O-FUTURE"))
        })
        .await;
    assert!(
        messages
            .decoded::<BuyerNotification>()
            .iter()
            .all(|m| m.milestone != Milestone::Delivered as i32),
        "nothing says delivered"
    );
    sandbox.shutdown().await;
}
