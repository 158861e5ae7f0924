//! A week of ordinary traffic: stalls happen, one parcel at a time, here and
//! there — and no incident opens.

use chrono::{SubsecRound, Utc};
use trackstream_proto::topics;
use trackstream_proto::v1::{Alert, AlertState, IncidentState};
use trackstream_runtime::kafka::partition::partition_for;
use trackstream_sandbox::Sandbox;

use crate::world::{
    CITIES, Parcel, WAIT, has_state, hours, incidents, latest, minutes, push, reader, register,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_normal_traffic_with_random_stalls_opens_no_incident() {
    let sandbox = Sandbox::start().await;
    let now = Utc::now().trunc_subsecs(0);
    // 2 000 parcels picked up over 7 days; about one in 40 waits 30 h at its
    // hub before going on (a stall that opens and resolves), at every hub.
    let mut stalls = 0;
    let parcels: Vec<Parcel> = (0..2_000usize)
        .map(|i| {
            let t0 = now - hours(7 * 24) + minutes(5 * i as i64);
            let (origin, hub, dest) = (i % 6, (i / 6) % 6, (i + 2) % 6);
            let mut parcel = Parcel::new("ZW", i, i % 3 == 0);
            // A deterministic scatter of stalls.
            if (i * 7_919) % 25 == 0 && t0 + hours(60) < now {
                stalls += 1;
                parcel.scan("picked_up", t0, origin, "揽收网点");
                parcel.scan("in_transit", t0 + hours(6), hub, CITIES[hub].2);
                parcel.scan("in_transit", t0 + hours(36), hub, CITIES[hub].2);
                parcel.scan("in_transit", t0 + hours(44), dest, CITIES[dest].2);
                parcel.scan("delivered", t0 + hours(50), dest, "派送网点");
                parcel
            } else {
                parcel.journey(t0, origin, hub, dest, now)
            }
        })
        .collect();
    assert!(stalls >= 45, "{stalls} stalls");
    register(&sandbox, &parcels).await;
    let mut records = reader(&sandbox);
    push(&sandbox, &parcels).await;
    // Every stall opened and resolved.
    let mut alerts = sandbox.reader(topics::TRACKING_ALERTS);
    alerts
        .until(WAIT, "every stall opened and resolved", |r| {
            let decoded: Vec<Alert> = r
                .iter()
                .filter_map(|r| prost::Message::decode(r.payload.as_slice()).ok())
                .collect();
            decoded
                .iter()
                .filter(|a| a.state == AlertState::Resolved as i32)
                .count()
                >= stalls
        })
        .await;
    let opened = alerts
        .decoded::<Alert>()
        .iter()
        .filter(|a| a.state == AlertState::Opened as i32 && a.rule == "stalled_in_transit")
        .count();
    assert_eq!(opened, stalls, "only the scattered stalls");

    // A barrier: 20 parcels (5 per partition) stranded at a seventh place
    // after all of that. The incident they open can only open once the
    // incident detector read past every earlier alert on every partition.
    let mut marker = Vec::new();
    let mut per_partition = [0usize; 4];
    let mut n = 0;
    while marker.len() < 20 {
        let p = Parcel::new("ZM", n, false);
        n += 1;
        let partition = partition_for(p.key().as_bytes(), 4) as usize;
        if per_partition[partition] == 5 {
            continue;
        }
        per_partition[partition] += 1;
        let mut p = p;
        p.scans.clear();
        p.scans.push(serde_json::json!({
            "carrier": "zto", "waybill": p.waybill, "status": "in_transit",
            "occurred_at": (now - hours(30)).to_rfc3339(),
            "location": {"text": "拉萨转运中心", "city": "拉萨市", "region": "西藏自治区"},
        }));
        marker.push(p);
    }
    register(&sandbox, &marker).await;
    push(&sandbox, &marker).await;
    records
        .until(WAIT, "the barrier's incident", |r| {
            let all: Vec<trackstream_proto::v1::Incident> = r
                .iter()
                .filter_map(|r| prost::Message::decode(r.payload.as_slice()).ok())
                .collect();
            has_state(&all, "西藏自治区/拉萨市", IncidentState::Opened)
        })
        .await;
    let all = incidents(&records);
    let others: Vec<_> = latest(&all, "")
        .into_iter()
        .filter(|i| i.place != "西藏自治区/拉萨市")
        .collect();
    assert!(
        others.is_empty(),
        "a normal week opened incidents: {others:?}"
    );
    sandbox.shutdown().await;
}
