//! Buyer messages do not depend on processing lag (issue 16 item 4): the same
//! `shipments`, `tracking.updates` and `tracking.alerts` records, fed once live
//! (the notifier running, its clock at each record's event time, each record
//! applied before the next is produced) and once as a backlog (records produced
//! while no notifier runs, then one starts days later), give the same
//! `buyer.notifications`, record by record: ids, milestones, parcels, text,
//! masked contact, locale, channels, creation time. A third run is live for
//! the first half and restarted after a downtime for the second. Only
//! `deliver_at` (when it was sent) may differ.
//!
//! The records exercise every decision that used to depend on batching:
//! superseding by a later milestone (staleness window and quiet hours, both in
//! event time), burst merging (a parcel outside the window is left out), and
//! the lead parcel of a merged message (its contact and locale).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use redis::AsyncCommands;
use support::{Env, WAIT, produce_with, shipment, update, utc};
use trackstream_notifier::config::QuietHoursConfig;
use trackstream_notifier::outbox;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerContact, BuyerNotification, Milestone, Reason, Severity, Shipment,
    ShipmentUpdate, Status,
};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::kafka::Producer;
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::kafka::TopicReader;

/// One input record and the event time it happened at.
#[derive(Clone)]
enum Input {
    Register(Box<Shipment>),
    Update(Box<ShipmentUpdate>, Milestone),
    Alert(Box<Alert>, Milestone),
}

struct Timed {
    at: DateTime<Utc>,
    input: Input,
}

fn t0() -> DateTime<Utc> {
    utc("2025-03-10T10:00:00+08:00")
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn config(config: &mut trackstream_notifier::Config) {
    config.messages.quiet_hours = Some(QuietHoursConfig {
        spread: Duration::ZERO,
        ..QuietHoursConfig::default()
    });
    config.messages.supersede_window = Duration::from_secs(30 * 60);
}

fn buyer(phone: &str, email: &str, locale: &str) -> BuyerContact {
    BuyerContact {
        name: "Li Lei".into(),
        phone: phone.into(),
        email: email.into(),
        locale: locale.into(),
        time_zone: "Asia/Shanghai".into(),
    }
}

fn scan(parcel: &Shipment, status: Status, at: DateTime<Utc>, milestone: Milestone) -> Timed {
    let mut u = update(
        parcel,
        status,
        0,
        &format!("{}-{}", parcel.waybill, status as i32),
    );
    if let Some(event) = u.event.as_mut() {
        event.occurred_at = Some(time::to_proto(at));
    }
    // Updates carry no contact (the detector strips it).
    if let Some(b) = u.shipment.as_mut().and_then(|s| s.buyer.as_mut()) {
        b.name.clear();
        b.phone.clear();
        b.email.clear();
    }
    Timed {
        at,
        input: Input::Update(Box::new(u), milestone),
    }
}

fn alert(parcel: &Shipment, rule: &str, reason: Reason, at: DateTime<Utc>) -> Timed {
    let milestone = if rule == "carrier_exception" {
        Milestone::Exception
    } else {
        Milestone::Delayed
    };
    Timed {
        at,
        input: Input::Alert(
            Box::new(Alert {
                alert_id: format!("{}:{rule}:1", parcel.waybill),
                rule: rule.into(),
                state: AlertState::Opened as i32,
                severity: Severity::Warning as i32,
                carrier: parcel.carrier.clone(),
                waybill: parcel.waybill.clone(),
                order_id: parcel.order_id.clone(),
                merchant_id: parcel.merchant_id.clone(),
                reason: reason as i32,
                effective_at: Some(time::to_proto(at)),
                ..Alert::default()
            }),
            milestone,
        ),
    }
}

/// The records, in event-time order, and the notification ids they must give.
fn scenario() -> (Vec<Timed>, Vec<&'static str>) {
    let t0 = t0();
    let solo = shipment("O-SOLO", "S1", "m-acme");
    let night = shipment("O-NIGHT", "N1", "m-acme");
    // Three parcels, three contacts and locales: the lowest waybill key (M1,
    // English) leads, although M2 (Chinese) is the first to move.
    let mut m1 = shipment("O-MULTI", "M1", "m-acme");
    m1.buyer = Some(buyer("13811110001", "", "en"));
    let mut m2 = shipment("O-MULTI", "M2", "m-acme");
    m2.buyer = Some(buyer("13822220002", "", "zh-CN"));
    let mut m3 = shipment("O-MULTI", "M3", "m-acme");
    m3.buyer = Some(buyer("", "wang@example.com", "zh-CN"));
    let evening = utc("2025-03-10T23:00:00+08:00");
    let morning = utc("2025-03-11T07:10:00+08:00");
    let next_day = t0 + chrono::Duration::days(1);
    let mut records: Vec<Timed> = [&solo, &night, &m1, &m2, &m3]
        .into_iter()
        .map(|parcel| Timed {
            at: t0 - minutes(60),
            input: Input::Register(Box::new(parcel.clone())),
        })
        .collect();
    records.extend([
        // Shipped and delayed stand (the next milestone is hours later);
        // out for delivery is superseded by the delivery 20 min later.
        scan(&solo, Status::PickedUp, t0, Milestone::Shipped),
        alert(
            &solo,
            "stalled_in_transit",
            Reason::Unspecified,
            t0 + minutes(120),
        ),
        scan(
            &solo,
            Status::OutForDelivery,
            t0 + minutes(300),
            Milestone::OutForDelivery,
        ),
        scan(
            &solo,
            Status::Delivered,
            t0 + minutes(320),
            Milestone::Delivered,
        ),
        // Merged shipped message: all three parcels within 10 min.
        scan(&m2, Status::PickedUp, t0 + minutes(1), Milestone::Shipped),
        scan(&m3, Status::InTransit, t0 + minutes(2), Milestone::Shipped),
        scan(&m1, Status::PickedUp, t0 + minutes(4), Milestone::Shipped),
        // One parcel's exception: a message for it alone, in its locale.
        alert(&m3, "carrier_exception", Reason::Address, t0 + minutes(360)),
        // Picked up in the buyer's night, out for delivery before the morning:
        // the held "shipped" is moot.
        scan(&night, Status::PickedUp, evening, Milestone::Shipped),
        scan(
            &night,
            Status::OutForDelivery,
            morning,
            Milestone::OutForDelivery,
        ),
        scan(
            &night,
            Status::Delivered,
            morning + minutes(110),
            Milestone::Delivered,
        ),
        // Delivered: M1 and M3 within the window, M2 20 min after M1 is not.
        scan(&m1, Status::Delivered, next_day, Milestone::Delivered),
        scan(
            &m3,
            Status::Delivered,
            next_day + minutes(5),
            Milestone::Delivered,
        ),
        scan(
            &m2,
            Status::Delivered,
            next_day + minutes(20),
            Milestone::Delivered,
        ),
    ]);
    records.sort_by_key(|r| r.at);
    let expected = vec![
        "m-acme/O-MULTI:delivered",
        "m-acme/O-MULTI:exception",
        "m-acme/O-MULTI:shipped",
        "m-acme/O-NIGHT:delivered",
        "m-acme/O-NIGHT:out_for_delivery",
        "m-acme/O-SOLO:delayed",
        "m-acme/O-SOLO:delivered",
        "m-acme/O-SOLO:shipped",
    ];
    (records, expected)
}

/// Produces one record as ingest or the detector would.
async fn feed(producer: &Producer, record: &Timed) {
    match &record.input {
        Input::Register(s) => {
            let key = keys::waybill_key(&s.carrier, &s.waybill);
            produce_with(producer, topics::SHIPMENTS, &key, s.as_ref()).await;
        }
        Input::Update(u, _) => {
            let s = u.shipment.as_ref().unwrap();
            let key = keys::waybill_key(&s.carrier, &s.waybill);
            produce_with(producer, topics::TRACKING_UPDATES, &key, u.as_ref()).await;
        }
        Input::Alert(a, _) => {
            let key = keys::waybill_key(&a.carrier, &a.waybill);
            produce_with(producer, topics::TRACKING_ALERTS, &key, a.as_ref()).await;
        }
    }
}

/// Whether the notifier has applied `record`: the registration is stored, or
/// the parcel's reach time is recorded for its milestone (or the milestone was
/// already decided, so there was nothing to record).
async fn applied(conn: &RedisConn, record: &Timed) -> bool {
    let mut conn = conn.clone();
    let (merchant, order, waybill_key, milestone) = match &record.input {
        Input::Register(s) => {
            let order = order_log::order_ref(&s.merchant_id, &s.order_id);
            let key = keys::waybill_key(&s.carrier, &s.waybill);
            // The registration itself (with the contact), not the contact-less
            // copy an update may have stored first.
            let stored: Option<Vec<u8>> = conn
                .hget(order_log::key(&order, "parcels"), key)
                .await
                .ok()
                .flatten();
            return stored
                .and_then(|b| Shipment::decode(b.as_slice()).ok())
                .is_some_and(|s| {
                    s.buyer
                        .is_some_and(|b| !b.phone.is_empty() || !b.email.is_empty())
                });
        }
        Input::Update(u, m) => {
            let s = u.shipment.as_ref().unwrap();
            (
                &s.merchant_id,
                &s.order_id,
                keys::waybill_key(&s.carrier, &s.waybill),
                *m,
            )
        }
        Input::Alert(a, m) => (
            &a.merchant_id,
            &a.order_id,
            keys::waybill_key(&a.carrier, &a.waybill),
            *m,
        ),
    };
    let order = order_log::order_ref(merchant, order);
    let name = trackstream_notifier::templates::milestone_name(milestone);
    let reached: bool = conn
        .hexists(order_log::key(&order, &format!("ht:{name}")), &waybill_key)
        .await
        .unwrap_or(false);
    let state = trackstream_notifier::messages::milestone_state(&mut conn, &order, milestone)
        .await
        .ok()
        .flatten();
    reached || state.is_some_and(|s| s != "held")
}

async fn wait_applied(conn: &RedisConn, record: &Timed) {
    trackstream_testkit::eventually(WAIT, "the record applied", || async {
        applied(conn, record).await.then_some(())
    })
    .await;
}

/// Waits until nothing is scheduled any more, then reads every message sent
/// (as many as milestones marked `sent`), keyed by notification id.
async fn settled_messages(env: &Env) -> BTreeMap<String, BuyerNotification> {
    let conn = env.conn.clone();
    let orders = ["O-SOLO", "O-NIGHT", "O-MULTI"];
    let sent = trackstream_testkit::eventually(WAIT, "every message decided", || {
        let mut conn = conn.clone();
        async move {
            for shard in 0..outbox::SHARDS {
                let n: usize = conn.zcard(outbox::shard_key(shard)).await.ok()?;
                if n > 0 {
                    return None;
                }
            }
            let mut sent = 0;
            for order in orders {
                let states: BTreeMap<String, String> = conn
                    .hgetall(order_log::key(&order_log::order_ref("m-acme", order), "ms"))
                    .await
                    .ok()?;
                if states
                    .values()
                    .any(|s| s == "held" || s.starts_with("sending"))
                {
                    return None;
                }
                sent += states.values().filter(|s| *s == "sent").count();
            }
            Some(sent)
        }
    })
    .await;
    let mut reader = TopicReader::new(&env.broker.bootstrap(), topics::BUYER_NOTIFICATIONS);
    reader
        .until(WAIT, "every sent message", |records| records.len() >= sent)
        .await;
    let messages = reader.decoded::<BuyerNotification>();
    assert_eq!(messages.len(), sent, "each message once");
    messages
        .into_iter()
        .map(|m| (m.notification_id.clone(), m))
        .collect()
}

/// The notifier running while the records are produced one by one, its clock
/// at each record's event time (no processing lag).
async fn live(records: &[Timed]) -> BTreeMap<String, BuyerNotification> {
    let env = Env::start(records[0].at, config).await;
    for record in records {
        env.clock.set(record.at);
        feed(&env.producer, record).await;
        wait_applied(&env.conn, record).await;
    }
    // Past every window and horizon.
    env.clock
        .set(records[records.len() - 1].at + chrono::Duration::days(2));
    let messages = settled_messages(&env).await;
    env.shutdown().await;
    messages
}

/// The records produced while no notifier runs; one starts two days after the
/// last of them and works through the backlog.
async fn backlog(records: &[Timed]) -> BTreeMap<String, BuyerNotification> {
    let later = records[records.len() - 1].at + chrono::Duration::days(2);
    let parked = Env::parked(later, config).await;
    for record in records {
        feed(&parked.producer, record).await;
    }
    let env = parked.start().await;
    for record in records {
        wait_applied(&env.conn, record).await;
    }
    // Past the catch-up settle.
    env.clock.advance(chrono::Duration::minutes(1));
    let messages = settled_messages(&env).await;
    env.shutdown().await;
    messages
}

/// Live for the first half of the records; then the notifier is stopped, the
/// second half is produced, and it starts again two days after the last (a
/// restart in the middle of the order lifecycles, with messages still held).
async fn restarted(records: &[Timed]) -> BTreeMap<String, BuyerNotification> {
    let (first, second) = records.split_at(records.len() / 2);
    let env = Env::start(first[0].at, config).await;
    for record in first {
        env.clock.set(record.at);
        feed(&env.producer, record).await;
        wait_applied(&env.conn, record).await;
    }
    let parked = env.park().await;
    for record in second {
        feed(&parked.producer, record).await;
    }
    parked
        .clock
        .set(records[records.len() - 1].at + chrono::Duration::days(2));
    let env = parked.start().await;
    for record in second {
        wait_applied(&env.conn, record).await;
    }
    env.clock.advance(chrono::Duration::minutes(1));
    let messages = settled_messages(&env).await;
    env.shutdown().await;
    messages
}

/// What a buyer receives, without when it was sent.
fn content(m: &BuyerNotification) -> BuyerNotification {
    BuyerNotification {
        deliver_at: None,
        ..m.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_or_a_restart_sends_what_a_live_run_sends() {
    let (records, expected) = scenario();
    let live = live(&records).await;
    let backlog = backlog(&records).await;
    let restarted = restarted(&records).await;

    let ids: Vec<&str> = live.keys().map(String::as_str).collect();
    assert_eq!(ids, expected, "the live run's messages");
    let backlog_ids: Vec<&str> = backlog.keys().map(String::as_str).collect();
    assert_eq!(backlog_ids, expected, "the backlog's messages");
    let restarted_ids: Vec<&str> = restarted.keys().map(String::as_str).collect();
    assert_eq!(restarted_ids, expected, "the restarted run's messages");
    for (id, message) in &live {
        assert_eq!(
            content(message),
            content(&backlog[id]),
            "{id}: live and backlog differ"
        );
        assert_eq!(
            content(message),
            content(&restarted[id]),
            "{id}: live and restarted differ"
        );
    }

    // And they say what the rules say.
    let shipped = &live["m-acme/O-MULTI:shipped"];
    assert_eq!(shipped.waybills, ["M1", "M2", "M3"]);
    assert_eq!(
        (shipped.locale.as_str(), shipped.contact_masked.as_str()),
        ("en", "138****0001"),
        "the lead parcel M1's locale and contact"
    );
    assert_eq!(
        shipped.created_at,
        Some(time::to_proto(t0() + minutes(1))),
        "when the first parcel (M2) was picked up"
    );
    let exception = &live["m-acme/O-MULTI:exception"];
    assert_eq!(exception.waybills, ["M3"]);
    assert_eq!(
        (exception.locale.as_str(), exception.contact_masked.as_str()),
        ("zh-CN", "w***@example.com")
    );
    assert_eq!(
        live["m-acme/O-MULTI:delivered"].waybills,
        ["M1", "M3"],
        "M2 was delivered after the burst window"
    );
    env_free_checks(&live);
}

/// No raw contact in any message.
fn env_free_checks(messages: &BTreeMap<String, BuyerNotification>) {
    for message in messages.values() {
        for raw in ["13811110001", "13822220002", "13812345678", "wang@"] {
            assert!(
                !message.body.contains(raw) && !message.contact_masked.contains(raw),
                "raw contact {raw} in {}",
                message.notification_id
            );
        }
    }
}
