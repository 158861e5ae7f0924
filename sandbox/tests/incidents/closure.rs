//! Hub closures: one incident per closed hub, exactly its stranded parcels,
//! resolved when they move.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveTime, SubsecRound, Utc};
use trackstream_proto::time;
use trackstream_proto::topics;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, GetOrderRequest, Incident, IncidentReason,
    IncidentSource, IncidentState, ListIncidentsRequest, Milestone, Severity,
};
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox, authed};
use trackstream_testkit::kafka::decode;

use crate::world::{
    CHENGDU, CITIES, GUANGZHOU, HANGZHOU, Parcel, WAIT, has_state, hours, incidents, latest,
    listed, minutes, push, reader, register,
};

/// 1 800 parcels moving normally between the six cities (a sixth of them
/// through each hub), in flight or delivered, no gap over 10 h.
fn normal_traffic(n: usize, now: chrono::DateTime<Utc>) -> Vec<Parcel> {
    (0..n)
        .map(|i| {
            let t0 = now - hours(40) + minutes(6 * (i % 380) as i64);
            Parcel::new("ZN", i, i % 4 == 0).journey(t0, i % 6, (i / 6) % 6, (i + 2) % 6, now)
        })
        .collect()
}

/// `n` parcels stranded at `hub`'s transfer centre, arriving 2 minutes apart
/// until `last`; every fourth is the other shop's.
fn stranded(group: &str, n: usize, hub: usize, last: chrono::DateTime<Utc>) -> Vec<Parcel> {
    (0..n)
        .map(|i| {
            let origin = (hub + 1 + i % 5) % 6;
            Parcel::new(group, i, i % 4 == 3).stranded(origin, hub, last - minutes(2 * i as i64))
        })
        .collect()
}

fn waybills(parcels: &[Parcel], merchant: &str) -> BTreeSet<String> {
    parcels
        .iter()
        .filter(|p| p.merchant == merchant)
        .map(|p| p.waybill.clone())
        .collect()
}

/// When the hub stopped (the newest stranded parcel's arrival, 30 to 54 h
/// before `now`): the 200 stall thresholds fall 24 h after the arrivals, 2
/// minutes apart, and this puts a UTC midnight just after the 150th of them.
/// A pile-up that began the day before is the case where a place's baseline
/// (the days before the evaluated one) would count the pile-up's own stalls
/// and raise its bar: a backlog read at once is evaluated after midnight,
/// where 150 stalls "normal" yesterday would need over 200. Fixing the
/// midnight's place keeps the scenario from moving with the time of day the
/// test runs at (it failed at 10:09 UTC, ~75 stalls before midnight).
fn closure_time(now: DateTime<Utc>) -> DateTime<Utc> {
    // The 150th stall is at last + 24 h − 2 × 50 min; midnight a minute later.
    let offset = hours(24) - minutes(99);
    let midnight = (now - hours(30) + offset)
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc();
    midnight - offset
}

fn place(city: usize) -> String {
    format!("{}/{}", CITIES[city].0, CITIES[city].1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_closure_stranding_200_of_2000_parcels_is_one_incident_that_resolves_when_they_move()
{
    // A 40-hour backlog read at once: the incident's opening instant can
    // move back as the other partitions' earlier stalls are read, and a
    // stall's DELAYED is decided after the catch-up settle. Longer than the
    // default 10 s, so the records behind it are in on a loaded machine (the
    // setting's documented trade-off for long backlogs).
    let sandbox = Sandbox::start_with(|c| {
        c.notifier.messages.catch_up_settle = std::time::Duration::from_secs(30);
    })
    .await;
    let now = Utc::now().trunc_subsecs(0);
    let normal = normal_traffic(1_800, now);
    // The Hangzhou hub stopped sending parcels on 30 to 54 h ago.
    let stuck = stranded("ZS", 200, HANGZHOU, closure_time(now));
    register(&sandbox, &normal).await;
    register(&sandbox, &stuck).await;
    let mut records = reader(&sandbox);
    push(&sandbox, normal.iter().chain(&stuck)).await;

    let hangzhou = place(HANGZHOU);
    let (acme, other) = (waybills(&stuck, "m-acme"), waybills(&stuck, "m-other"));
    assert_eq!((acme.len(), other.len()), (150, 50));
    records
        .until(
            WAIT,
            "the hub incident linking all 200 parcels, escalated",
            |r| {
                let all = decode::<Incident>(r);
                // The opening record may already hold all 200 (a backlog is read
                // at once); the escalation it is past follows in later records.
                latest(&all, "").iter().any(|i| {
                    i.place == hangzhou
                        && i.affected_total == 200
                        && i.severity == Severity::Critical as i32
                }) && latest(&all, "m-acme").iter().any(|i| i.affected == 150)
                    && latest(&all, "m-other").iter().any(|i| i.affected == 50)
            },
        )
        .await;
    let all = incidents(&records);
    let ids: BTreeSet<&str> = all.iter().map(|i| i.incident_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one incident, not one per parcel: {ids:?}");
    let first = &all[all
        .iter()
        .position(|i| i.merchant_id.is_empty())
        .expect("platform record")];
    assert_eq!(
        first.state,
        IncidentState::Opened as i32,
        "it starts OPENED"
    );
    assert_eq!(
        (first.carrier.as_str(), first.place.as_str()),
        ("zto", hangzhou.as_str())
    );
    assert_eq!(first.source, IncidentSource::Detected as i32);
    assert_eq!(first.reason, IncidentReason::Unknown as i32);
    assert!(
        first.parcels.is_empty(),
        "the platform record lists no parcels"
    );
    let id = first.incident_id.clone();
    // Exactly the stranded parcels, each shop its own.
    assert_eq!(listed(&all, "m-acme", &id), acme);
    assert_eq!(listed(&all, "m-other", &id), other);
    assert!(
        all.iter()
            .filter(|i| i.merchant_id == "m-other")
            .all(|i| i.parcels.iter().all(|p| other.contains(&p.waybill)))
    );
    // 200 stuck is past its tiers (2× and 4× the count it needs): critical.
    let newest = latest(&all, "").pop().expect("platform record");
    assert!(newest.tier >= 1, "{newest:?}");
    assert_eq!(newest.severity, Severity::Critical as i32);
    assert!(
        newest.active_total >= 200 && newest.share > 0.05,
        "{newest:?}"
    );

    // Opened at the instant the parcel it needed passed the stall threshold
    // (2 minutes apart): the floor of 20, or 5 % of the place's few hundred
    // active parcels — not a bar the pile-up's own stalls before midnight
    // raised.
    let mut alert_reader = sandbox.reader(topics::TRACKING_ALERTS);
    // The hub stopped up to 54 h ago: some stalls have escalated too.
    let thresholds = stall_thresholds(
        alert_reader
            .until(WAIT, "the 200 stall alerts", |r| {
                stall_thresholds(r).len() >= 200
            })
            .await,
    );
    assert_eq!(thresholds.len(), 200, "only the stranded parcels stalled");
    // The newest record's: stalls read after the opening move it back.
    let opened = time::millis(newest.opened_at.as_ref());
    assert!(
        thresholds.contains(&opened),
        "opened at a stall's threshold"
    );
    assert!(
        opened >= thresholds[19] && opened <= thresholds[29],
        "opened {} min after the first threshold",
        (opened - thresholds[0]) / 60_000
    );

    // Buyers: one message per stranded order naming the incident, and not
    // the generic DELAYED the stall alert alone would have sent.
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    let orders: BTreeSet<String> = stuck.iter().map(|p| p.order.clone()).collect();
    messages
        .until(WAIT, "an incident message for every stranded order", |r| {
            let sent: BTreeSet<String> = decode::<BuyerNotification>(r)
                .into_iter()
                .filter(|n| n.milestone == Milestone::Incident as i32)
                .map(|n| n.order_id)
                .collect();
            sent == orders
        })
        .await;
    let sent = messages.decoded::<BuyerNotification>();
    let incident_messages: Vec<&BuyerNotification> = sent
        .iter()
        .filter(|n| n.milestone == Milestone::Incident as i32)
        .collect();
    assert_eq!(incident_messages.len(), 200, "one per order");
    assert!(
        incident_messages
            .iter()
            .all(|n| n.body.contains("杭州市") && !n.body.contains("13812345678"))
    );
    let delayed: Vec<&str> = sent
        .iter()
        .filter(|n| n.milestone == Milestone::Delayed as i32 && orders.contains(&n.order_id))
        .map(|n| n.order_id.as_str())
        .collect();
    assert!(
        delayed.is_empty(),
        "generic DELAYED beside the incident: {delayed:?}"
    );

    // Merchants: ListIncidents shows each shop its own parcels only, and an
    // order's open alert names the incident.
    let mut grpc = sandbox.grpc().await;
    for (token, n) in [(ACME_TOKEN, 150), (OTHER_TOKEN, 50)] {
        let listed = grpc
            .list_incidents(authed(ListIncidentsRequest::default(), token))
            .await
            .expect("ListIncidents")
            .into_inner()
            .incidents;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (listed[0].incident_id.as_str(), listed[0].affected),
            (id.as_str(), n)
        );
        assert_eq!(
            listed[0].affected_total, 200,
            "the place-wide size, as a number"
        );
    }
    let acme_order = stuck
        .iter()
        .find(|p| p.merchant == "m-acme")
        .expect("acme parcel");
    let order = grpc
        .get_order(authed(
            GetOrderRequest {
                order_id: acme_order.order.clone(),
            },
            ACME_TOKEN,
        ))
        .await
        .expect("GetOrder")
        .into_inner();
    assert!(
        order
            .open_alerts
            .iter()
            .any(|a| a.rule == "stalled_in_transit" && a.incident_id == id),
        "{:?}",
        order.open_alerts
    );

    // The hub reopens: 160 of the 200 (80 %) leave it an hour ago.
    let departed = now - hours(1);
    let mut moving: Vec<Parcel> = stuck.iter().take(160).cloned().collect();
    for parcel in &mut moving {
        parcel.scans.clear();
        parcel.scan("in_transit", departed, CHENGDU, CITIES[CHENGDU].2);
    }
    push(&sandbox, &moving).await;
    records
        .until(WAIT, "the incident resolved", |r| {
            let all = decode::<Incident>(r);
            has_state(&all, &hangzhou, IncidentState::Resolved)
                && latest(&all, "m-acme")
                    .iter()
                    .any(|i| i.state == IncidentState::Resolved as i32)
        })
        .await;
    let all = incidents(&records);
    let resolved = latest(&all, "").pop().expect("platform record");
    assert_eq!(resolved.incident_id, id, "the same incident resolves");
    assert_eq!(resolved.state, IncidentState::Resolved as i32);
    assert_eq!(
        time::millis(resolved.resolved_at.as_ref()),
        departed.timestamp_millis()
    );
    assert!(resolved.moved_total >= 150, "{resolved:?}");
    let acme_view = latest(&all, "m-acme").pop().expect("acme record");
    assert!(acme_view.parcels.iter().filter(|p| p.moved).count() >= 110);
    sandbox.shutdown().await;
}

/// The opening instants of the stall alerts read, earliest first.
fn stall_thresholds(records: &[trackstream_testkit::kafka::Record]) -> Vec<i64> {
    let mut thresholds: Vec<i64> = decode::<Alert>(records)
        .iter()
        .filter(|a| a.state == AlertState::Opened as i32 && a.rule == "stalled_in_transit")
        .map(|a| time::millis(a.effective_at.as_ref()))
        .collect();
    thresholds.sort_unstable();
    thresholds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_closures_in_two_cities_stay_two_incidents() {
    let sandbox = Sandbox::start().await;
    let now = Utc::now().trunc_subsecs(0);
    let normal = normal_traffic(800, now);
    let hangzhou = stranded("ZH", 100, HANGZHOU, now - hours(30));
    let chengdu = stranded("ZC", 60, CHENGDU, now - hours(28));
    register(&sandbox, &normal).await;
    register(&sandbox, &hangzhou).await;
    register(&sandbox, &chengdu).await;
    let mut records = reader(&sandbox);
    push(&sandbox, normal.iter().chain(&hangzhou).chain(&chengdu)).await;
    let expected = |city: usize, parcels: &[Parcel], all: &[Incident]| {
        latest(all, "")
            .iter()
            .find(|i| i.place == place(city))
            .is_some_and(|i| {
                listed(all, "m-acme", &i.incident_id) == waybills(parcels, "m-acme")
                    && listed(all, "m-other", &i.incident_id) == waybills(parcels, "m-other")
            })
    };
    records
        .until(WAIT, "both incidents with all their parcels", |r| {
            let all = decode::<Incident>(r);
            expected(HANGZHOU, &hangzhou, &all) && expected(CHENGDU, &chengdu, &all)
        })
        .await;
    let all = incidents(&records);
    let platform = latest(&all, "");
    assert_eq!(platform.len(), 2, "{platform:?}");
    assert_ne!(platform[0].incident_id, platform[1].incident_id);
    for (city, parcels) in [(HANGZHOU, &hangzhou), (CHENGDU, &chengdu)] {
        let incident = platform
            .iter()
            .find(|i| i.place == place(city))
            .expect("incident");
        assert_eq!(
            listed(&all, "m-acme", &incident.incident_id),
            waybills(parcels, "m-acme")
        );
        assert_eq!(
            listed(&all, "m-other", &incident.incident_id),
            waybills(parcels, "m-other")
        );
    }
    assert!(platform.iter().all(|i| i.place != place(GUANGZHOU)));
    sandbox.shutdown().await;
}
