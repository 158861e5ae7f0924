//! The notifier's part of the trust work, against a real broker and Redis:
//! contacts only from registrations, undecodable inputs dead-lettered, and the
//! lifetime of an order's keys on the notifier's clock. (Request validation is
//! in the security suite, `sandbox/tests/security/notifier.rs`.)
#![allow(clippy::unwrap_used)]

mod support;

use support::{Env, WAIT, has, messages_of, shipment, update, utc};
use trackstream_notifier::clock::Clock;
use trackstream_notifier::outbox;
use trackstream_proto::topics;
use trackstream_proto::v1::{Channel, Milestone, Status};
use trackstream_runtime::dlq::headers;
use trackstream_runtime::kafka::OutRecord;
use trackstream_runtime::order_log;

fn day() -> chrono::DateTime<chrono::Utc> {
    utc("2025-03-10T12:00:00+08:00")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_comes_from_the_registration_never_from_an_update() {
    let env = Env::start(day(), |_| {}).await;
    // Registered without a contact; the update carries one (as an older
    // detector or a forged record would): it must not be used.
    let mut registered = shipment("O-NOREG", "SF70", "m-acme");
    registered.buyer = None;
    env.register(&registered).await;
    let from_update = shipment("O-NOREG", "SF70", "m-acme");
    // A registered contact, and an update with a different one.
    let proper = shipment("O-REG", "SF71", "m-acme");
    env.register(&proper).await;
    let mut forged = shipment("O-REG", "SF71", "m-acme");
    if let Some(buyer) = forged.buyer.as_mut() {
        buyer.phone = "13900009999".into();
    }
    let mut reader = env.messages();
    // Wait until both registrations are stored before the updates arrive.
    support_wait_parcels(&env, &["O-NOREG", "O-REG"]).await;
    env.replay(&update(&from_update, Status::PickedUp, 1, "n1"), "sf:SF70")
        .await;
    env.replay(&update(&forged, Status::PickedUp, 1, "r1"), "sf:SF71")
        .await;
    reader
        .until(WAIT, "both shipped messages", |r| {
            has(r, "O-NOREG", Milestone::Shipped) && has(r, "O-REG", Milestone::Shipped)
        })
        .await;
    let unregistered = &messages_of(&reader, "O-NOREG")[0];
    assert_eq!(unregistered.contact_masked, "");
    assert_eq!(unregistered.channels, [Channel::App as i32]);
    let registered_message = &messages_of(&reader, "O-REG")[0];
    assert_eq!(registered_message.contact_masked, "138****5678");
    // Neither the held message nor the update-derived parcel kept a contact.
    let mut conn = env.conn.clone();
    let order = order_log::order_ref("m-acme", "O-NOREG");
    let stored: Vec<Vec<u8>> = redis::cmd("HVALS")
        .arg(order_log::key(&order, "parcels"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|b| !b.windows(11).any(|w| w == b"13812345678")),
        "no contact from an update stored"
    );
    env.shutdown().await;
}

async fn support_wait_parcels(env: &Env, orders: &[&str]) {
    for order in orders {
        let key = order_log::key(&order_log::order_ref("m-acme", order), "parcels");
        let conn = env.conn.clone();
        trackstream_testkit::eventually(WAIT, "registration stored", || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move {
                let n: i64 = redis::cmd("HLEN")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (n > 0).then_some(())
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_input_is_dead_lettered_and_the_partition_moves_on() {
    let env = Env::start(day(), |_| {}).await;
    let parcel = shipment("O-POISON", "SF80", "m-acme");
    // Stored before the update comes, as the detector guarantees: on the
    // manual clock a message for a parcel not yet seen registered waits a
    // settle that never passes.
    env.register_stored(&parcel).await;
    // Same key, so the same partition as the good update after it.
    env.producer
        .send(OutRecord::new(
            topics::TRACKING_UPDATES,
            "sf:SF80",
            vec![0xff, 0xff, 0xff, 0x07],
        ))
        .await
        .unwrap();
    env.replay(&update(&parcel, Status::PickedUp, 1, "p1"), "sf:SF80")
        .await;
    let mut reader = env.messages();
    reader
        .until(WAIT, "the message after the poison", |r| {
            has(r, "O-POISON", Milestone::Shipped)
        })
        .await;
    let mut letters =
        trackstream_testkit::kafka::TopicReader::new(&env.broker.bootstrap(), topics::TRACKING_DLQ);
    let records = letters.until(WAIT, "the letter", |r| !r.is_empty()).await;
    let letter = &records[0];
    let header = |name: &str| letter.header(name);
    assert_eq!(header(headers::STAGE), Some("notifier"));
    assert_eq!(header(headers::CAUSE), Some("undecodable"));
    assert_eq!(
        header(headers::SOURCE_TOPIC),
        Some(topics::TRACKING_UPDATES)
    );
    assert_eq!(letter.payload, [0xff, 0xff, 0xff, 0x07]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_keys_expire_after_terminal_or_silence_on_the_notifiers_clock() {
    // Now (whole milliseconds): Redis applies the expiry on its own clock.
    let start = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .unwrap_or_default();
    let env = Env::start(start, |config| {
        config.retention = trackstream_notifier::config::RetentionConfig::default();
    })
    .await;
    let first = shipment("O-LIFE", "SF90", "m-acme");
    let second = shipment("O-LIFE", "SF91", "m-acme");
    env.register(&first).await;
    env.register(&second).await;
    support_wait_parcels(&env, &["O-LIFE"]).await;
    let order = order_log::order_ref("m-acme", "O-LIFE");
    let expiry = |key: String| {
        let conn = env.conn.clone();
        async move {
            let mut conn = conn.clone();
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            at
        }
    };
    let day_ms = 86_400_000;
    let t0 = start.timestamp_millis();
    let parcels = order_log::key(&order, "parcels");
    trackstream_testkit::eventually(WAIT, "silence expiry on registration", || {
        let fut = expiry(parcels.clone());
        async move { (fut.await == t0 + 120 * day_ms).then_some(()) }
    })
    .await;

    // One parcel delivered an hour later: the order is not finished.
    env.clock.advance(chrono::Duration::hours(1));
    let t1 = t0 + 3_600_000;
    env.replay(&update(&first, Status::Delivered, 1, "d1"), "sf:SF90")
        .await;
    let ms = order_log::key(&order, "ms");
    trackstream_testkit::eventually(WAIT, "still the silence expiry", || {
        let fut = expiry(ms.clone());
        async move { (fut.await == t1 + 120 * day_ms).then_some(()) }
    })
    .await;

    // The second one a day later: every key now lives 30 days from then, and a
    // replay later does not extend it.
    env.clock.advance(chrono::Duration::days(1));
    let t2 = t1 + day_ms;
    env.replay(&update(&second, Status::Delivered, 2, "d2"), "sf:SF91")
        .await;
    trackstream_testkit::eventually(WAIT, "terminal expiry on every key", || {
        let futs: Vec<_> = ["parcels", "ms", "final", "hw:delivered"]
            .into_iter()
            .map(|s| expiry(order_log::key(&order, s)))
            .collect();
        async move {
            for fut in futs {
                if fut.await != t2 + 30 * day_ms {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    env.clock.advance(chrono::Duration::days(2));
    env.replay(&update(&second, Status::Delivered, 2, "d2"), "sf:SF91")
        .await;
    // A sentinel order after the replay on the same key: once its message is
    // out, the replay was handled.
    // It happens now and is registered: an event older than the catch-up
    // settle, or one whose registration is not in yet, would wait for the
    // settle on this clock, which no longer moves.
    let sentinel = shipment("O-LIFE-S", "SF91", "m-acme");
    env.register_stored(&sentinel).await;
    let mut picked = update(&sentinel, Status::PickedUp, 3, "s1");
    if let Some(event) = picked.event.as_mut() {
        event.occurred_at = Some(trackstream_proto::time::to_proto(env.clock.now()));
    }
    env.replay(&picked, "sf:SF91").await;
    let mut reader = env.messages();
    reader
        .until(WAIT, "the sentinel", |r| {
            has(r, "O-LIFE-S", Milestone::Shipped)
        })
        .await;
    assert_eq!(expiry(parcels.clone()).await, t2 + 30 * day_ms);
    assert!(
        outbox::order_keys(&order).len() >= 6,
        "parcels, returns, final, ms, held, alerts and each milestone's parcels"
    );
    env.shutdown().await;
}
