//! Buyer messages against a real broker and Redis: dedup under resends and
//! replays, masking and localisation, burst merging, quiet hours.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use redis::AsyncCommands;
use support::{Env, WAIT, has, messages_of, shipment, update, utc};
use trackstream_notifier::config::{QuietHoursConfig, Template};
use trackstream_notifier::outbox;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerContact, BuyerNotification, Channel, Milestone, Reason, Severity,
    ShipmentUpdate, Status, UpdateKind,
};
use trackstream_proto::{time, topics};
use trackstream_runtime::order_log;

/// The order ref of `order` of merchant `m-acme`, as the notifier keys it.
fn acme(order: &str) -> String {
    order_log::order_ref("m-acme", order)
}

fn day() -> chrono::DateTime<chrono::Utc> {
    utc("2025-03-10T12:00:00+08:00")
}

fn exception_alert(order: &str, waybill: &str) -> Alert {
    Alert {
        alert_id: format!("{waybill}:carrier_exception:1"),
        rule: "carrier_exception".into(),
        state: AlertState::Opened as i32,
        severity: Severity::Warning as i32,
        carrier: "sf".into(),
        waybill: waybill.into(),
        order_id: order.into(),
        merchant_id: "m-acme".into(),
        reason: Reason::Address as i32,
        effective_at: Some(time::from_millis(1_741_600_100_000)),
        ..Alert::default()
    }
}

/// `update` as it happened at `when` (event time).
fn happened(mut update: ShipmentUpdate, when: chrono::DateTime<chrono::Utc>) -> ShipmentUpdate {
    if let Some(event) = update.event.as_mut() {
        event.occurred_at = Some(time::to_proto(when));
    }
    update
}

fn quiet_nights(config: &mut trackstream_notifier::Config) {
    config.messages.quiet_hours = Some(QuietHoursConfig {
        spread: std::time::Duration::ZERO,
        ..QuietHoursConfig::default()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_and_replays_never_send_a_milestone_twice() {
    let env = Env::start(day(), quiet_nights).await;
    let parcel = shipment("O-DUP", "SF1", "m-acme");
    env.register_stored(&parcel).await;
    let key = "sf:SF1";
    let mut reader = env.messages();
    // Carrier resends the pickup, then moves on within the same milestone.
    let picked = update(&parcel, Status::PickedUp, 1, "e1");
    let in_transit = update(&parcel, Status::InTransit, 2, "e2");
    let delivered = update(&parcel, Status::Delivered, 3, "e3");
    for u in [&picked, &picked, &in_transit] {
        env.replay(u, key).await;
    }
    reader
        .until(WAIT, "the SHIPPED message", |r| {
            has(r, "O-DUP", Milestone::Shipped)
        })
        .await;
    // The exception alert, re-emitted after a detector restart.
    let alert = exception_alert("O-DUP", "SF1");
    env.produce(topics::TRACKING_ALERTS, key, &alert).await;
    env.produce(topics::TRACKING_ALERTS, key, &alert).await;
    reader
        .until(WAIT, "the EXCEPTION message", |r| {
            has(r, "O-DUP", Milestone::Exception)
        })
        .await;
    env.replay(&delivered, key).await;
    env.replay(&delivered, key).await;
    reader
        .until(WAIT, "the DELIVERED message", |r| {
            has(r, "O-DUP", Milestone::Delivered)
        })
        .await;
    // The whole stream replayed (a consumer restarting from old offsets), then a
    // sentinel of the same order on the same partition: its message is keyed like
    // the others, so once it is read every duplicate would have been read too.
    for u in [&picked, &in_transit, &delivered] {
        env.replay(u, key).await;
    }
    env.produce(topics::TRACKING_ALERTS, key, &alert).await;
    let mut returned = shipment("O-DUP", "SF1R", "m-acme");
    returned.is_return = true;
    env.register_stored(&returned).await;
    let sentinel = ShipmentUpdate {
        kind: UpdateKind::ReturnReceived as i32,
        ..update(&returned, Status::Delivered, 9, "r1")
    };
    env.replay(&sentinel, key).await;
    reader
        .until(WAIT, "the sentinel's message", |r| {
            has(r, "O-DUP", Milestone::ReturnReceived)
        })
        .await;

    let sent = messages_of(&reader, "O-DUP");
    let milestones: Vec<i32> = sent.iter().map(|m| m.milestone).collect();
    assert_eq!(
        milestones,
        [
            Milestone::Shipped as i32,
            Milestone::Exception as i32,
            Milestone::Delivered as i32,
            Milestone::ReturnReceived as i32,
        ],
        "one message per milestone, in order"
    );
    let ids: Vec<&str> = sent.iter().map(|m| m.notification_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "m-acme/O-DUP:shipped",
            "m-acme/O-DUP:exception",
            "m-acme/O-DUP:delivered",
            "m-acme/O-DUP:return_received"
        ]
    );
    assert_eq!(sent[3].waybills, ["SF1R"]);
    let exception = &sent[1];
    assert!(
        exception.body.contains("address problem")
            && exception
                .body
                .contains("confirm your delivery address with Acme Live"),
        "reason and what happens next: {}",
        exception.body
    );
    assert_eq!(sent[0].waybills, ["SF1"]);
    env.shutdown().await;
}

/// In a backlog the notifier reads alerts, updates and registrations on
/// different partitions, so an alert can come before anything else of its
/// parcel: its message waits for the registration instead of being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_read_before_its_registration_still_gets_its_message() {
    let env = Env::start(day(), |_| {}).await;
    let parcel = shipment("O-EARLY", "SF30", "m-acme");
    let key = "sf:SF30";
    let mut reader = env.messages();
    env.produce(
        topics::TRACKING_ALERTS,
        key,
        &exception_alert("O-EARLY", "SF30"),
    )
    .await;
    let copy = env
        .wait_parcel(&parcel, "the alert's contact-less copy", |_| true)
        .await;
    assert_eq!(
        copy.buyer, None,
        "nothing of the buyer before the registration"
    );
    env.register(&parcel).await;
    env.wait_parcel(&parcel, "the registration over the copy", |s| {
        s.buyer.is_some()
    })
    .await;
    // Past the catch-up settle the message is decided, with the contact.
    env.clock.advance(chrono::Duration::minutes(1));
    reader
        .until(WAIT, "the EXCEPTION message", |r| {
            has(r, "O-EARLY", Milestone::Exception)
        })
        .await;
    let sent = messages_of(&reader, "O-EARLY");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].notification_id, "m-acme/O-EARLY:exception");
    assert_eq!(sent[0].waybills, ["SF30"]);
    assert!(
        sent[0].contact_masked.ends_with("5678") && sent[0].contact_masked.contains('*'),
        "the registered contact, masked: {:?}",
        sent[0].contact_masked
    );
    assert!(sent[0].body.contains("address problem"), "{}", sent[0].body);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_masked_localised_and_follow_merchant_overrides() {
    let env = Env::start(day(), |config| {
        config.messages.overrides.insert(
            "m-other".into(),
            BTreeMap::from([(
                "en".into(),
                BTreeMap::from([(
                    "delivered".into(),
                    Template {
                        title: "{merchant}: it's there".into(),
                        body: "Order {order_id} arrived ({count} parcel). Questions? We reply to {contact}.".into(),
                    },
                )]),
            )]),
        );
    })
    .await;
    let mut zh = shipment("O-ZH", "SF20", "m-acme");
    zh.buyer = Some(BuyerContact {
        phone: "+86 138-1234-5678".into(),
        locale: "zh-CN".into(),
        time_zone: "Asia/Shanghai".into(),
        ..BuyerContact::default()
    });
    let mut email_only = shipment("O-MAIL", "SF21", "m-other");
    email_only.buyer = Some(BuyerContact {
        email: "john@example.com".into(),
        locale: "en".into(),
        ..BuyerContact::default()
    });
    env.register_stored(&zh).await;
    env.register_stored(&email_only).await;
    env.replay(&update(&zh, Status::AvailableForPickup, 1, "z1"), "sf:SF20")
        .await;
    env.replay(&update(&email_only, Status::Delivered, 1, "m1"), "sf:SF21")
        .await;

    let mut reader = env.messages();
    let records = reader
        .until(WAIT, "both messages", |r| {
            has(r, "O-ZH", Milestone::AvailableForPickup) && has(r, "O-MAIL", Milestone::Delivered)
        })
        .await;
    for record in records {
        for raw in [&b"13812345678"[..], b"1234-5678", b"john@"] {
            assert!(
                !record.payload.windows(raw.len()).any(|w| w == raw),
                "raw contact {:?} in a message",
                String::from_utf8_lossy(raw)
            );
        }
    }
    let zh_message = &messages_of(&reader, "O-ZH")[0];
    assert_eq!(zh_message.locale, "zh-CN");
    assert_eq!(zh_message.title, "包裹待取件");
    assert!(
        zh_message.body.contains("Shenzhen Nanshan Locker #12")
            && zh_message.body.contains("Acme Live"),
        "pickup point and merchant: {}",
        zh_message.body
    );
    assert_eq!(zh_message.contact_masked, "+86****5678");
    assert_eq!(
        zh_message.channels,
        [
            Channel::App as i32,
            Channel::Sms as i32,
            Channel::Wechat as i32
        ]
    );

    let mail: &BuyerNotification = &messages_of(&reader, "O-MAIL")[0];
    assert_eq!(
        mail.title, "Other Shop: it's there",
        "name from the merchant directory"
    );
    assert_eq!(
        mail.body,
        "Order O-MAIL arrived (1 parcel). Questions? We reply to j***@example.com."
    );
    assert_eq!(mail.contact_masked, "j***@example.com");
    assert_eq!(mail.channels, [Channel::App as i32, Channel::Email as i32]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parcels_reaching_a_milestone_together_get_one_message_listing_every_waybill() {
    let env = Env::start(day(), |_| {}).await;
    let waybills: Vec<String> = (1..=5).map(|i| format!("SF30{i}")).collect();
    let parcels: Vec<_> = waybills
        .iter()
        .map(|w| shipment("O-BURST", w, "m-acme"))
        .collect();
    let partial: Vec<_> = ["SF401", "SF402", "SF403"]
        .iter()
        .map(|w| shipment("O-PART", w, "m-acme"))
        .collect();
    for parcel in parcels.iter().chain(&partial) {
        env.register(parcel).await;
    }
    let mut conn = env.conn.clone();
    trackstream_testkit::eventually(WAIT, "registrations recorded", || {
        let mut conn = conn.clone();
        async move {
            let burst: usize = conn
                .hlen(order_log::key(&acme("O-BURST"), "parcels"))
                .await
                .ok()?;
            let part: usize = conn
                .hlen(order_log::key(&acme("O-PART"), "parcels"))
                .await
                .ok()?;
            (burst == 5 && part == 3).then_some(())
        }
    })
    .await;

    // Five parcels on five keys (so several partitions and consumers' batches).
    for (i, parcel) in parcels.iter().enumerate() {
        let u = update(parcel, Status::OutForDelivery, 10, &format!("b{i}"));
        env.replay(&u, &format!("sf:{}", parcel.waybill)).await;
    }
    let mut reader = env.messages();
    reader
        .until(WAIT, "the merged out-for-delivery message", |r| {
            has(r, "O-BURST", Milestone::OutForDelivery)
        })
        .await;
    let burst = messages_of(&reader, "O-BURST");
    assert_eq!(burst.len(), 1);
    assert_eq!(burst[0].waybills, waybills, "every waybill, sorted");
    assert!(
        burst[0].body.contains("SF301, SF302, SF303, SF304, SF305"),
        "{}",
        burst[0].body
    );

    // Two of three parcels go out: held for the third until the window ends.
    for parcel in &partial[..2] {
        let u = update(
            parcel,
            Status::OutForDelivery,
            10,
            &format!("p-{}", parcel.waybill),
        );
        env.replay(&u, &format!("sf:{}", parcel.waybill)).await;
    }
    let hw = order_log::key(&acme("O-PART"), "hw:out_for_delivery");
    trackstream_testkit::eventually(WAIT, "two parcels held", || {
        let mut conn = conn.clone();
        let hw = hw.clone();
        async move {
            let n: usize = conn.hlen(&hw).await.ok()?;
            (n == 2).then_some(())
        }
    })
    .await;
    let state = trackstream_notifier::messages::milestone_state(
        &mut conn,
        &acme("O-PART"),
        Milestone::OutForDelivery,
    )
    .await
    .unwrap();
    assert_eq!(state.as_deref(), Some("held"));

    env.clock.advance(chrono::Duration::seconds(601));
    reader
        .until(WAIT, "the partial burst after its window", |r| {
            has(r, "O-PART", Milestone::OutForDelivery)
        })
        .await;
    // The straggler reaches the milestone later: no second message; its
    // delivery (same partition, after it) is the sentinel.
    let late = &partial[2];
    env.replay(
        &update(late, Status::OutForDelivery, 20, "p-late"),
        "sf:SF403",
    )
    .await;
    env.replay(&update(late, Status::Delivered, 30, "p-done"), "sf:SF403")
        .await;
    // Delivered waits for the order's other parcels too, until its own window ends.
    let hw = order_log::key(&acme("O-PART"), "hw:delivered");
    trackstream_testkit::eventually(WAIT, "the delivery held", || {
        let mut conn = conn.clone();
        let hw = hw.clone();
        async move {
            let n: usize = conn.hlen(&hw).await.ok()?;
            (n == 1).then_some(())
        }
    })
    .await;
    env.clock.advance(chrono::Duration::seconds(601));
    reader
        .until(WAIT, "the straggler's delivery", |r| {
            has(r, "O-PART", Milestone::Delivered)
        })
        .await;
    let part = messages_of(&reader, "O-PART");
    let summary: Vec<(i32, Vec<String>)> = part
        .iter()
        .map(|m| (m.milestone, m.waybills.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Milestone::OutForDelivery as i32,
                vec!["SF401".to_owned(), "SF402".to_owned()]
            ),
            (Milestone::Delivered as i32, vec!["SF403".to_owned()]),
        ]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_non_urgent_messages_until_the_buyers_morning() {
    let night = utc("2025-03-10T23:30:00+08:00");
    let env = Env::start(night, quiet_nights).await;
    let sleeping = shipment("O-NIGHT", "SF50", "m-acme");
    let courier = shipment("O-URGENT", "SF51", "m-acme");
    let mut new_york = shipment("O-NY", "SF52", "m-acme");
    if let Some(buyer) = new_york.buyer.as_mut() {
        buyer.time_zone = "America/New_York".into();
    }
    let superseded = shipment("O-SUPER", "SF53", "m-acme");
    for (parcel, status) in [
        (&sleeping, Status::PickedUp),
        (&courier, Status::OutForDelivery),
        (&new_york, Status::PickedUp),
        (&superseded, Status::PickedUp),
    ] {
        env.register_stored(parcel).await;
        // Live: the scans happen now, in the night.
        let u = happened(
            update(parcel, status, 1, &format!("n-{}", parcel.waybill)),
            night,
        );
        env.replay(&u, &format!("sf:{}", parcel.waybill)).await;
    }
    let mut reader = env.messages();
    reader
        .until(WAIT, "the urgent and the daytime message", |r| {
            has(r, "O-URGENT", Milestone::OutForDelivery) && has(r, "O-NY", Milestone::Shipped)
        })
        .await;
    let urgent = &messages_of(&reader, "O-URGENT")[0];
    assert_eq!(
        urgent.deliver_at,
        Some(time::to_proto(night)),
        "sent at once"
    );

    // The sleeping buyers' messages are held for 08:00 Shanghai time.
    let morning = utc("2025-03-11T08:00:00+08:00");
    let conn = env.conn.clone();
    for order in ["O-NIGHT", "O-SUPER"] {
        let due = trackstream_testkit::eventually(WAIT, "the held message scheduled", || {
            let mut conn = conn.clone();
            async move {
                let score: Option<f64> = conn
                    .zscore(
                        outbox::shard_key_of(&acme(order)),
                        outbox::member(&acme(order), Milestone::Shipped),
                    )
                    .await
                    .ok()?;
                let state = trackstream_notifier::messages::milestone_state(
                    &mut conn,
                    &acme(order),
                    Milestone::Shipped,
                )
                .await
                .ok()?;
                (state.as_deref() == Some("held")).then_some(score)?
            }
        })
        .await;
        #[allow(clippy::cast_precision_loss)]
        let expected = morning.timestamp_millis() as f64;
        assert!((due - expected).abs() < 1.0, "{order}: due {due}");
    }

    // 07:30: the other parcel goes out for delivery (urgent: sent now), before
    // the morning its "shipped" waits for: that makes the held "shipped" moot.
    let early = utc("2025-03-11T07:30:00+08:00");
    env.clock.set(early);
    env.replay(
        &happened(
            update(&superseded, Status::OutForDelivery, 2, "n-ofd"),
            early,
        ),
        "sf:SF53",
    )
    .await;
    reader
        .until(WAIT, "the early courier message", |r| {
            has(r, "O-SUPER", Milestone::OutForDelivery)
        })
        .await;
    assert!(
        messages_of(&reader, "O-NIGHT").is_empty(),
        "still night: nothing for the sleeping buyer"
    );

    env.clock.set(morning);
    reader
        .until(WAIT, "the morning message", |r| {
            has(r, "O-NIGHT", Milestone::Shipped)
        })
        .await;
    let held = &messages_of(&reader, "O-NIGHT")[0];
    assert_eq!(held.deliver_at, Some(time::to_proto(morning)));
    assert_eq!(
        held.created_at,
        Some(time::to_proto(night)),
        "created when the parcel was picked up"
    );
    // At its due time the held "shipped" is decided: superseded, never sent.
    trackstream_testkit::eventually(WAIT, "the shipped message superseded", || {
        let mut conn = conn.clone();
        async move {
            let state = trackstream_notifier::messages::milestone_state(
                &mut conn,
                &acme("O-SUPER"),
                Milestone::Shipped,
            )
            .await
            .ok()?;
            (state.as_deref() == Some("superseded")).then_some(())
        }
    })
    .await;
    // The superseded message leaves the schedule without being sent: once it is
    // unscheduled, the order's next message (same output partition) comes after
    // anything sent for it.
    trackstream_testkit::eventually(WAIT, "the superseded message unscheduled", || {
        let mut conn = conn.clone();
        async move {
            let score: Option<f64> = conn
                .zscore(
                    outbox::shard_key_of(&acme("O-SUPER")),
                    outbox::member(&acme("O-SUPER"), Milestone::Shipped),
                )
                .await
                .ok()?;
            score.is_none().then_some(())
        }
    })
    .await;
    env.replay(
        &happened(update(&superseded, Status::Delivered, 3, "n-done"), morning),
        "sf:SF53",
    )
    .await;
    reader
        .until(WAIT, "the sentinel delivery", |r| {
            has(r, "O-SUPER", Milestone::Delivered)
        })
        .await;
    let super_milestones: Vec<i32> = messages_of(&reader, "O-SUPER")
        .iter()
        .map(|m| m.milestone)
        .collect();
    assert_eq!(
        super_milestones,
        [
            Milestone::OutForDelivery as i32,
            Milestone::Delivered as i32
        ]
    );
    assert_eq!(
        env.metric("trackstream_notifier_buyer_messages_superseded_total{milestone=\"shipped\"}")
            .await,
        1.0
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_each_message_once_and_either_serves_any_watch() {
    let env = Env::start(day(), |_| {}).await;
    let second = env.start_instance().await;
    env.wait_live().await;
    env.wait_live_at(second.running.grpc_addr).await;
    const ORDERS: usize = 8;
    let orders: Vec<Vec<_>> = (0..ORDERS)
        .map(|o| {
            (1..=3)
                .map(|p| shipment(&format!("O-SCALE-{o}"), &format!("SC{o}{p}"), "m-acme"))
                .collect()
        })
        .collect();
    for parcel in orders.iter().flatten() {
        env.register(parcel).await;
    }
    let conn = env.conn.clone();
    trackstream_testkit::eventually(WAIT, "registrations recorded", || {
        let mut conn = conn.clone();
        async move {
            for o in 0..ORDERS {
                let n: usize = conn
                    .hlen(order_log::key(&acme(&format!("O-SCALE-{o}")), "parcels"))
                    .await
                    .ok()?;
                if n != 3 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    // A buyer app watches order 0 on the second instance; the updates are
    // consumed for messages by whichever instance owns their partitions.
    let mut watch = support::client_of(second.running.grpc_addr)
        .await
        .watch_order(trackstream_testkit::grpc::authed(
            trackstream_proto::v1::WatchOrderRequest {
                order_id: "O-SCALE-0".into(),
                after_seq: 0,
            },
            support::ACME_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();

    for status in [Status::OutForDelivery, Status::Delivered] {
        for parcel in orders.iter().flatten() {
            let u = update(
                parcel,
                status,
                status as u64,
                &format!("{}-{}", parcel.waybill, status as i32),
            );
            env.record_update(u).await;
        }
        let milestone = if status == Status::Delivered {
            Milestone::Delivered
        } else {
            Milestone::OutForDelivery
        };
        let mut reader = env.messages();
        reader
            .until(WAIT, "every order's merged message", |r| {
                (0..ORDERS).all(|o| has(r, &format!("O-SCALE-{o}"), milestone))
            })
            .await;
    }
    let mut reader = env.messages();
    reader
        .until(WAIT, "all messages", |r| {
            (0..ORDERS).all(|o| has(r, &format!("O-SCALE-{o}"), Milestone::Delivered))
        })
        .await;
    for (o, parcels) in orders.iter().enumerate() {
        let sent = messages_of(&reader, &format!("O-SCALE-{o}"));
        let summary: Vec<(i32, usize)> = sent
            .iter()
            .map(|m| (m.milestone, m.waybills.len()))
            .collect();
        assert_eq!(
            summary,
            [
                (Milestone::OutForDelivery as i32, parcels.len()),
                (Milestone::Delivered as i32, parcels.len())
            ],
            "order {o}: once per group, every parcel in it"
        );
    }
    let mut seqs = Vec::new();
    while seqs.len() < 6 {
        let update = tokio::time::timeout(WAIT, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seqs.push(update.seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    second.shutdown().await;
    env.shutdown().await;
}
