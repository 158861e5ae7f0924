//! An operator declares a closure ("zto closed Guangzhou until …"): the
//! incident links the parcels active there, and is lifted.

use std::collections::BTreeSet;

use chrono::{SubsecRound, Utc};
use prost::Message as _;
use trackstream_proto::v1::{IncidentDeclaration, IncidentReason, IncidentSource, IncidentState};
use trackstream_proto::{time, topics};
use trackstream_runtime::kafka::OutRecord;
use trackstream_sandbox::Sandbox;

use crate::world::{
    CITIES, GUANGZHOU, HANGZHOU, Parcel, WAIT, has_state, hours, incidents, latest, listed, push,
    reader, register,
};

async fn declare(sandbox: &Sandbox, declaration: &IncidentDeclaration) {
    trackstream_testkit::kafka::produce(
        &sandbox.bootstrap(),
        vec![OutRecord::new(
            topics::INCIDENTS_DECLARED,
            declaration.carrier.clone(),
            declaration.encode_to_vec(),
        )],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_declared_closure_links_the_parcels_in_its_area_and_is_lifted() {
    let sandbox = Sandbox::start().await;
    let now = Utc::now().trunc_subsecs(0);
    // 30 parcels at the Guangzhou hub now, 20 that passed through it and went
    // on to Hangzhou, 10 delivered in Guangzhou, 20 elsewhere.
    let mut parcels = Vec::new();
    for i in 0..30 {
        let mut p = Parcel::new("ZG", i, i % 3 == 0);
        p.scan("picked_up", now - hours(8), HANGZHOU, "揽收网点");
        p.scan("in_transit", now - hours(2), GUANGZHOU, CITIES[GUANGZHOU].2);
        parcels.push(p);
    }
    for i in 30..50 {
        let mut p = Parcel::new("ZG", i, false);
        p.scan("in_transit", now - hours(6), GUANGZHOU, CITIES[GUANGZHOU].2);
        p.scan("in_transit", now - hours(3), HANGZHOU, CITIES[HANGZHOU].2);
        parcels.push(p);
    }
    for i in 50..60 {
        let mut p = Parcel::new("ZG", i, false);
        p.scan("out_for_delivery", now - hours(5), GUANGZHOU, "派送网点");
        p.scan("delivered", now - hours(4), GUANGZHOU, "派送网点");
        parcels.push(p);
    }
    for i in 60..80 {
        let mut p = Parcel::new("ZG", i, false);
        p.scan("in_transit", now - hours(2), 3, CITIES[3].2);
        parcels.push(p);
    }
    register(&sandbox, &parcels).await;
    let scans = push(&sandbox, &parcels).await;
    // Declarations link what is there when they arrive: wait until the
    // detector's updates of every scan are out.
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    updates
        .until(WAIT, "every scan's update", |r| r.len() >= scans)
        .await;

    let mut records = reader(&sandbox);
    let until = now + hours(36);
    declare(
        &sandbox,
        &IncidentDeclaration {
            carrier: "ZTO".into(),
            province: "广东".into(),
            city: "广州市".into(),
            reason: IncidentReason::Weather as i32,
            starts_at: Some(time::to_proto(now)),
            until: Some(time::to_proto(until)),
            note: "台风停发".into(),
            declared_by: "ops@example".into(),
            ..IncidentDeclaration::default()
        },
    )
    .await;
    let guangzhou = format!("{}/{}", CITIES[GUANGZHOU].0, CITIES[GUANGZHOU].1);
    records
        .until(WAIT, "the declared incident", |r| {
            let all: Vec<trackstream_proto::v1::Incident> = r
                .iter()
                .filter_map(|r| trackstream_proto::v1::Incident::decode(r.payload.as_slice()).ok())
                .collect();
            latest(&all, "")
                .iter()
                .any(|i| i.place == guangzhou && i.affected_total == 30)
                && latest(&all, "m-acme").iter().any(|i| i.affected == 20)
                && latest(&all, "m-other").iter().any(|i| i.affected == 10)
        })
        .await;
    let all = incidents(&records);
    let incident = latest(&all, "").pop().expect("declared incident");
    assert_eq!(incident.source, IncidentSource::Declared as i32);
    assert_eq!(incident.reason, IncidentReason::Weather as i32);
    assert_eq!(incident.state, IncidentState::Opened as i32);
    assert_eq!(incident.expected_delay_hours, 36);
    assert_eq!(
        time::millis(incident.until.as_ref()),
        until.timestamp_millis()
    );
    let at_hub = |merchant: &str| -> BTreeSet<String> {
        parcels[..30]
            .iter()
            .filter(|p| p.merchant == merchant)
            .map(|p| p.waybill.clone())
            .collect()
    };
    assert_eq!(
        listed(&all, "m-acme", &incident.incident_id),
        at_hub("m-acme")
    );
    assert_eq!(
        listed(&all, "m-other", &incident.incident_id),
        at_hub("m-other")
    );

    // Lifted by the operator.
    declare(
        &sandbox,
        &IncidentDeclaration {
            lift_incident_id: incident.incident_id.clone(),
            starts_at: Some(time::to_proto(now + hours(1))),
            declared_by: "ops@example".into(),
            ..IncidentDeclaration::default()
        },
    )
    .await;
    records
        .until(WAIT, "the lifted incident", |r| {
            let all: Vec<trackstream_proto::v1::Incident> = r
                .iter()
                .filter_map(|r| trackstream_proto::v1::Incident::decode(r.payload.as_slice()).ok())
                .collect();
            has_state(&all, &guangzhou, IncidentState::Resolved)
                && latest(&all, "m-acme")
                    .iter()
                    .any(|i| i.state == IncidentState::Resolved as i32)
        })
        .await;
    let lifted = latest(&incidents(&records), "").pop().expect("lifted");
    assert_eq!(lifted.incident_id, incident.incident_id);
    assert_eq!(
        time::millis(lifted.resolved_at.as_ref()),
        (now + hours(1)).timestamp_millis()
    );
    sandbox.shutdown().await;
}
