//! Where a parcel goes travels with it: origin, destination and the order
//! time given at registration reach every update on `tracking.updates` (the
//! lanes' delivery statistics are keyed by them), and a malformed region is
//! refused with the field named — through ingest, the broker and the detector.

use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use trackstream_proto::time;
use trackstream_proto::topics;
use trackstream_proto::v1::{Region, ShipmentUpdate};
use trackstream_sandbox::Sandbox;
use trackstream_testkit::kafka::all;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_destination_and_order_time_reach_every_update() {
    let sandbox = Sandbox::start().await;
    let ordered = Utc::now().trunc_subsecs(0) - chrono::Duration::hours(20);
    let (status, body) = sandbox
        .register(&json!({
            "order_id": "O-LANE", "carrier": "zto", "waybill": "ZT900",
            "origin": {"province": "浙江省", "city": "杭州市", "admin_code": "330100"},
            "destination": {"province": "四川省", "city": "成都市"},
            "ordered_at": ordered.to_rfc3339()
        }))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));

    let (status, body) = sandbox
        .register(
            &json!({"order_id": "O-BAD", "carrier": "zto", "waybill": "ZT901",
            "destination": {"city": "成都{p1}"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("destination.city"),
        "{body}"
    );

    let at = Utc::now().trunc_subsecs(0) - chrono::Duration::seconds(5);
    for (status, offset) in [("picked_up", 0), ("in_transit", 1)] {
        let (code, body) = sandbox
            .post_generic(
                &json!({"carrier": "zto", "waybill": "ZT900", "status": status,
                "occurred_at": (at + chrono::Duration::seconds(offset)).to_rfc3339()}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let mut reader = sandbox.reader(topics::TRACKING_UPDATES);
    reader
        .until(WAIT, "both updates", |r| {
            all(r, |u: &[ShipmentUpdate]| {
                u.iter().filter(|u| u.order_id == "O-LANE").count() >= 2
            })
        })
        .await;
    let updates: Vec<ShipmentUpdate> = reader
        .decoded::<ShipmentUpdate>()
        .into_iter()
        .filter(|u: &ShipmentUpdate| u.order_id == "O-LANE")
        .collect();
    assert_eq!(updates.len(), 2);
    for update in &updates {
        let shipment = update
            .shipment
            .as_ref()
            .expect("registration on the update");
        assert_eq!(
            shipment.origin,
            Some(Region {
                province: "浙江省".into(),
                city: "杭州市".into(),
                admin_code: "330100".into(),
            })
        );
        assert_eq!(
            shipment.destination.as_ref().map(|d| d.city.as_str()),
            Some("成都市")
        );
        assert_eq!(
            time::millis(shipment.ordered_at.as_ref()),
            ordered.timestamp_millis()
        );
    }
    sandbox.shutdown().await;
}
