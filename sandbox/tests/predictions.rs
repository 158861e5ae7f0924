//! Delivery intelligence through the whole stack (ingest, the broker,
//! normalize, the detector with its lane statistics consumer, the notifier,
//! Redis): predictions ride on updates in order, `promise_at_risk` opens
//! before the promise and resolves when the parcel is back on track, the
//! SHIPPED message names the day, `GetOrder` shows the prediction, and
//! scorecards count the caller's parcels apart from the platform baseline.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use trackstream_lanes::book::DayStats;
use trackstream_lanes::lane::Level;
use trackstream_lanes::parcel;
use trackstream_lanes::stage::Timeline;
use trackstream_lanes::store::LaneStore;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, GetOrderRequest, GetScorecardsRequest, Milestone,
    PredictionConfidence, Region, Scorecard, Shipment, ShipmentUpdate,
};
use trackstream_proto::{time, topics};
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::redis::RedisConn;
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox, authed};

const WAIT: Duration = Duration::from_secs(60);

/// The lane of these tests, as the detector keys it.
fn lane_shipment() -> Shipment {
    Shipment {
        carrier: "zto".into(),
        service_level: "standard".into(),
        origin: Some(Region {
            province: "浙江省".into(),
            city: "杭州市".into(),
            ..Region::default()
        }),
        destination: Some(Region {
            province: "四川省".into(),
            city: "成都市".into(),
            ..Region::default()
        }),
        ..Shipment::default()
    }
}

fn registration(order: &str, waybill: &str, promised: chrono::DateTime<Utc>) -> serde_json::Value {
    json!({
        "order_id": order, "carrier": "zto", "waybill": waybill, "service_level": "standard",
        "origin": {"province": "浙江省", "city": "杭州市"},
        "destination": {"province": "四川省", "city": "成都市"},
        "promised_delivery_at": promised.to_rfc3339(),
        "buyer": {"phone": "13812345678", "locale": "zh-CN"}
    })
}

/// Two weeks of the lane's history (and today's), 300 deliveries a day:
/// pickup → out for delivery 40–58 h, out for delivery → delivered 2–6 h.
async fn seed(sandbox: &Sandbox) {
    let conn = RedisConn::connect(&RedisConfig {
        url: sandbox.redis.url(),
        cluster_nodes: Vec::new(),
    })
    .await
    .expect("redis");
    let store = LaneStore::new(conn, "seed", 15);
    let mut stats = DayStats::default();
    for i in 0..300u32 {
        let haul = 40.0 + f64::from(i % 19);
        let last = 2.0 + f64::from(i % 5);
        stats.record(&Timeline {
            ordered_at: Some(0.0),
            picked_up_at: Some(6.0),
            out_for_delivery_at: Some(6.0 + haul),
            delivered_at: Some(6.0 + haul + last),
            ..Timeline::default()
        });
    }
    let today = Utc::now().timestamp().div_euclid(86_400);
    let lane = parcel::lane(&lane_shipment());
    for (_, key) in lane.keys() {
        for day in today - 14..=today + 1 {
            store.write(&key, day, &stats, -1).await.expect("seeded");
        }
    }
}

async fn post(sandbox: &Sandbox, waybill: &str, status: &str, at: chrono::DateTime<Utc>) {
    let (code, body) = sandbox
        .post_generic(
            &json!({"carrier": "zto", "waybill": waybill, "status": status,
            "occurred_at": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

fn alerts_of(reader: &trackstream_testkit::kafka::TopicReader, rule: &str) -> Vec<Alert> {
    reader
        .decoded::<Alert>()
        .into_iter()
        .filter(|a| a.rule == rule && a.waybill == "ZTP1")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parcel_predicted_late_opens_promise_at_risk_before_the_promise_and_resolves() {
    let sandbox = Sandbox::start().await;
    seed(&sandbox).await;
    let now = Utc::now().trunc_subsecs(0);
    let promise = now + chrono::Duration::hours(20);
    let (status, body) = sandbox
        .register(&registration("O-PRED", "ZTP1", promise))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    let mut alerts = sandbox.reader(topics::TRACKING_ALERTS);

    // Picked up: the lane takes ~50 h from pickup, the promise is 20 h away.
    post(
        &sandbox,
        "ZTP1",
        "picked_up",
        now - chrono::Duration::minutes(30),
    )
    .await;
    alerts
        .until(WAIT, "promise_at_risk opened", |r| {
            trackstream_testkit::kafka::all(r, |a: &[Alert]| {
                a.iter()
                    .any(|a| a.rule == "promise_at_risk" && a.waybill == "ZTP1")
            })
        })
        .await;
    let opened = alerts_of(&alerts, "promise_at_risk");
    let first = &opened[0];
    assert_eq!(first.state, AlertState::Opened as i32, "{first:?}");
    let opened_at = time::millis(first.opened_at.as_ref());
    assert!(
        opened_at < promise.timestamp_millis(),
        "opened before the promise"
    );
    assert_eq!(
        first.lead_seconds,
        (promise.timestamp_millis() - opened_at) / 1000,
        "lead time recorded"
    );
    assert!(first.lead_seconds > 19 * 3600, "{first:?}");

    // Out for delivery: 2–6 h left, well inside the promise — back on track.
    post(
        &sandbox,
        "ZTP1",
        "out_for_delivery",
        now - chrono::Duration::minutes(10),
    )
    .await;
    alerts
        .until(WAIT, "promise_at_risk resolved", |r| {
            trackstream_testkit::kafka::all(r, |a: &[Alert]| {
                a.iter().any(|a| {
                    a.rule == "promise_at_risk"
                        && a.waybill == "ZTP1"
                        && a.state == AlertState::Resolved as i32
                })
            })
        })
        .await;
    updates
        .until(WAIT, "two updates", |r| {
            trackstream_testkit::kafka::all(r, |u: &[ShipmentUpdate]| {
                u.iter().filter(|u| u.order_id == "O-PRED").count() >= 2
            })
        })
        .await;
    let order: Vec<ShipmentUpdate> = {
        let mut all: Vec<ShipmentUpdate> = updates
            .decoded::<ShipmentUpdate>()
            .into_iter()
            .filter(|u| u.order_id == "O-PRED")
            .collect();
        all.sort_by_key(|u| u.seq);
        all
    };
    let (shipped, out) = (&order[0], &order[1]);
    let p1 = shipped.prediction.as_ref().expect("a prediction on pickup");
    let p2 = out
        .prediction
        .as_ref()
        .expect("a prediction out for delivery");
    assert_eq!(
        (p1.stage.as_str(), p2.stage.as_str()),
        ("in transit", "out for delivery")
    );
    assert_eq!(p1.level, "lane");
    assert_eq!(p1.confidence, PredictionConfidence::High as i32);
    let at = |ts: &Option<prost_types::Timestamp>| time::millis(ts.as_ref());
    assert!(
        at(&p1.earliest_at) <= at(&p1.most_likely_at)
            && at(&p1.most_likely_at) <= at(&p1.latest_at)
    );
    assert!(
        at(&p2.most_likely_at) < at(&p1.most_likely_at),
        "out for delivery is sooner"
    );
    assert!(
        at(&p1.most_likely_at) > promise.timestamp_millis(),
        "{p1:?}"
    );
    assert!(at(&p2.latest_at) < promise.timestamp_millis(), "{p2:?}");
    let first = parcel::kept(p1);
    assert_eq!(shipped.first_prediction.as_ref(), Some(&first));
    assert_eq!(
        out.first_prediction.as_ref(),
        Some(&first),
        "the first is kept"
    );

    // GetOrder shows the latest prediction.
    let mut grpc = sandbox.grpc().await;
    let view = grpc
        .get_order(authed(
            GetOrderRequest {
                order_id: "O-PRED".into(),
            },
            ACME_TOKEN,
        ))
        .await
        .expect("GetOrder")
        .into_inner();
    assert_eq!(view.parcels[0].prediction.as_ref(), Some(p2));

    // The SHIPPED message names the most likely day, in the buyer's zone.
    let expected = {
        let local = time::from_proto(p1.most_likely_at.as_ref().expect("p50"))
            .expect("time")
            .with_timezone(&chrono_tz::Asia::Shanghai);
        format!("预计 {}送达", local.format("%-m月%-d日"))
    };
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    messages
        .until(WAIT, "the SHIPPED message", |r| {
            trackstream_testkit::kafka::all(r, |m: &[BuyerNotification]| {
                m.iter()
                    .any(|m| m.order_id == "O-PRED" && m.milestone == Milestone::Shipped as i32)
            })
        })
        .await;
    let shipped_message = messages
        .decoded::<BuyerNotification>()
        .into_iter()
        .find(|m| m.order_id == "O-PRED" && m.milestone == Milestone::Shipped as i32)
        .expect("shipped");
    assert!(
        shipped_message.body.contains(&expected),
        "{}",
        shipped_message.body
    );

    // Delivered: nothing left to predict; the first prediction stays.
    post(
        &sandbox,
        "ZTP1",
        "delivered",
        now - chrono::Duration::minutes(1),
    )
    .await;
    updates
        .until(WAIT, "the delivered update", |r| {
            trackstream_testkit::kafka::all(r, |u: &[ShipmentUpdate]| {
                u.iter().filter(|u| u.order_id == "O-PRED").count() >= 3
            })
        })
        .await;
    let delivered = updates
        .decoded::<ShipmentUpdate>()
        .into_iter()
        .filter(|u| u.order_id == "O-PRED")
        .max_by_key(|u| u.seq)
        .expect("delivered");
    assert!(delivered.prediction.is_none(), "{delivered:?}");
    assert_eq!(delivered.first_prediction, Some(parcel::kept(p1)));
    let rule_alerts = alerts_of(&alerts, "promise_at_risk");
    assert_eq!(
        rule_alerts
            .iter()
            .filter(|a| a.state == AlertState::Opened as i32)
            .count(),
        1,
        "one episode"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scorecards_count_the_callers_parcels_beside_a_labelled_platform_baseline() {
    let sandbox = Sandbox::start_with(|c| {
        c.detector.lanes.publish_interval = Duration::ZERO;
    })
    .await;
    let now = Utc::now().trunc_subsecs(0);
    let parcels = [
        (ACME_TOKEN, "ZTS1"),
        (ACME_TOKEN, "ZTS2"),
        (ACME_TOKEN, "ZTS3"),
        (OTHER_TOKEN, "ZTS4"),
        (OTHER_TOKEN, "ZTS5"),
    ];
    for (i, (token, waybill)) in parcels.iter().enumerate() {
        // Acme's promises are kept, the other merchant's are not.
        let promised = if *token == ACME_TOKEN {
            now + chrono::Duration::hours(5)
        } else {
            now - chrono::Duration::hours(5)
        };
        let (status, body) = sandbox
            .register_as(token, &registration(&format!("O-S{i}"), waybill, promised))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (_, waybill) in &parcels {
        post(
            &sandbox,
            waybill,
            "picked_up",
            now - chrono::Duration::hours(30),
        )
        .await;
        post(
            &sandbox,
            waybill,
            "out_for_delivery",
            now - chrono::Duration::hours(3),
        )
        .await;
        post(
            &sandbox,
            waybill,
            "delivered",
            now - chrono::Duration::hours(1),
        )
        .await;
    }
    let lane = parcel::lane(&lane_shipment()).key(Level::Lane);
    let grpc = sandbox.grpc().await;
    let cards = |token: &'static str| {
        let mut grpc = grpc.clone();
        async move {
            grpc.get_scorecards(authed(GetScorecardsRequest::default(), token))
                .await
                .expect("GetScorecards")
                .into_inner()
        }
    };
    let find = |cards: &[Scorecard], key: &str| cards.iter().find(|c| c.key == key).cloned();
    // Each delivery is counted under 8 keys (4 levels, platform-wide and the
    // merchant's), written concurrently: wait for every key the test reads.
    let acme = trackstream_testkit::eventually(WAIT, "every delivery counted", || async {
        let acme = cards(ACME_TOKEN).await;
        let count = |cards: &[Scorecard], key: &str| find(cards, key).map_or(0, |c| c.deliveries);
        (count(&acme.global_baseline, &lane) == 5
            && count(&acme.merchant, &lane) == 3
            && count(&acme.merchant, "c|zto") == 3)
            .then_some(acme)
    })
    .await;
    let own = find(&acme.merchant, &lane).expect("acme's lane card");
    assert_eq!(
        (own.deliveries, own.promised, own.on_time_vs_promise),
        (3, 3, 1.0)
    );
    assert_eq!((own.level.as_str(), own.carrier.as_str()), ("lane", "zto"));
    assert_eq!(own.destination, "四川省/成都市");
    assert!((own.transit_p50_hours - 29.0).abs() < 1.0, "{own:?}");
    let carrier = find(&acme.merchant, "c|zto").expect("acme's carrier card");
    assert_eq!(carrier.deliveries, 3);
    let baseline = find(&acme.global_baseline, &lane).expect("baseline");
    assert_eq!((baseline.deliveries, baseline.promised), (5, 5));
    assert!((baseline.on_time_vs_promise - 0.6).abs() < 1e-9);
    assert_eq!(acme.merchant.len(), acme.global_baseline.len());

    let other =
        trackstream_testkit::eventually(WAIT, "the other shop's deliveries counted", || async {
            let other = cards(OTHER_TOKEN).await;
            find(&other.merchant, &lane)
                .is_some_and(|c| c.deliveries == 2)
                .then_some(other)
        })
        .await;
    let theirs = find(&other.merchant, &lane).expect("the other merchant's card");
    assert_eq!((theirs.deliveries, theirs.on_time_vs_promise), (2, 0.0));
    assert!(
        other.merchant.iter().all(|c| c.deliveries <= 2),
        "{other:?}"
    );

    let mut grpc = grpc.clone();
    let refused = grpc
        .get_scorecards(authed(
            GetScorecardsRequest {
                days: 99,
                ..Default::default()
            },
            ACME_TOKEN,
        ))
        .await
        .expect_err("too long a window");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let unauthenticated = grpc
        .get_scorecards(tonic::Request::new(GetScorecardsRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);

    // The platform dashboard's topic: the lane's latest scorecard.
    let mut lanes = sandbox.reader(topics::TRACKING_LANES);
    lanes
        .until(
            WAIT,
            "the lane's scorecard with every delivery",
            |records| {
                records
                    .iter()
                    .rev()
                    .find(|r| r.key == lane)
                    .and_then(|r| <Scorecard as prost::Message>::decode(r.payload.as_slice()).ok())
                    .is_some_and(|c| c.deliveries == 5)
            },
        )
        .await;
    sandbox.shutdown().await;
}
