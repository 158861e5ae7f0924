//! Incidents (`tracking.incidents`) against a real broker and Redis: one
//! INCIDENT message takes over a stalled parcel's DELAYED within
//! `messages.incident_grace`, a stall without an incident still gets its
//! DELAYED after the grace, `ListIncidents` / `WatchIncidents` are scoped to
//! the caller's merchant, and `GetOrder`'s open alerts name their incident.
//! The clock is manual: the grace passes with one call, never a wait.
#![allow(clippy::unwrap_used)]

mod support;

use support::{ACME_TOKEN, Env, OTHER_TOKEN, WAIT, has, messages_of, shipment, utc};
use trackstream_notifier::outbox;
use trackstream_proto::v1::{
    AffectedParcel, Alert, AlertState, GetOrderRequest, Incident, IncidentReason, IncidentSource,
    IncidentState, ListIncidentsRequest, Location, Milestone, Severity, Shipment,
    WatchIncidentsRequest,
};
use trackstream_proto::{time, topics};
use trackstream_runtime::order_log;
use trackstream_testkit::grpc::authed;

fn day() -> chrono::DateTime<chrono::Utc> {
    utc("2025-03-10T12:00:00+08:00")
}

fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

/// A parcel of `m-acme` whose buyer reads Chinese.
fn zh_parcel(order: &str, waybill: &str) -> Shipment {
    let mut parcel = shipment(order, waybill, "m-acme");
    if let Some(buyer) = parcel.buyer.as_mut() {
        buyer.locale = "zh-CN".into();
    }
    parcel
}

/// The detector's stall alert for `parcel`, effective at `at`.
fn stall(parcel: &Shipment, at: chrono::DateTime<chrono::Utc>) -> Alert {
    Alert {
        alert_id: format!("{}:stalled_in_transit:1", parcel.waybill),
        rule: "stalled_in_transit".into(),
        state: AlertState::Opened as i32,
        severity: Severity::Warning as i32,
        carrier: parcel.carrier.clone(),
        waybill: parcel.waybill.clone(),
        order_id: parcel.order_id.clone(),
        merchant_id: parcel.merchant_id.clone(),
        opened_at: Some(time::to_proto(at)),
        effective_at: Some(time::to_proto(at)),
        ..Alert::default()
    }
}

/// One affected parcel (carrier `sf`), stuck since `since`.
fn affected(order: &str, waybill: &str, since: chrono::DateTime<chrono::Utc>) -> AffectedParcel {
    AffectedParcel {
        order_id: order.into(),
        carrier: "sf".into(),
        waybill: waybill.into(),
        alert_id: format!("{waybill}:stalled_in_transit:1"),
        rule: "stalled_in_transit".into(),
        since: Some(time::to_proto(since)),
        moved: false,
    }
}

/// A per-merchant record of a weather incident in Hangzhou (platform-wide
/// when `merchant` is empty: no parcels), opened at `opened`.
fn incident(
    id: &str,
    merchant: &str,
    state: IncidentState,
    version: u32,
    opened: chrono::DateTime<chrono::Utc>,
    parcels: Vec<AffectedParcel>,
) -> Incident {
    Incident {
        incident_id: id.into(),
        state: state as i32,
        severity: Severity::Warning as i32,
        source: IncidentSource::Detected as i32,
        reason: IncidentReason::Weather as i32,
        carrier: "sf".into(),
        place: "浙江省/杭州市".into(),
        location: Some(Location {
            region: "浙江省".into(),
            city: "杭州市".into(),
            ..Location::default()
        }),
        merchant_id: merchant.into(),
        affected: u32::try_from(parcels.len()).unwrap(),
        parcels,
        opened_at: Some(time::to_proto(opened)),
        effective_at: Some(time::to_proto(opened)),
        expected_delay_hours: 20,
        version,
        ..Incident::default()
    }
}

/// The record key the detector uses.
fn incident_key(record: &Incident) -> String {
    if record.merchant_id.is_empty() {
        record.incident_id.clone()
    } else {
        format!("{}/{}", record.merchant_id, record.incident_id)
    }
}

async fn publish(env: &Env, record: &Incident) {
    env.produce(topics::TRACKING_INCIDENTS, &incident_key(record), record)
        .await;
}

/// Waits until the order's message for `milestone` is in `state`.
async fn wait_state(env: &Env, order: &str, milestone: Milestone, state: &str) {
    let conn = env.conn.clone();
    let order = order_log::order_ref("m-acme", order);
    trackstream_testkit::eventually(WAIT, &format!("{milestone:?} {state}"), || {
        let (mut conn, order) = (conn.clone(), order.clone());
        async move {
            let current =
                trackstream_notifier::messages::milestone_state(&mut conn, &order, milestone)
                    .await
                    .ok()?;
            (current.as_deref() == Some(state)).then_some(())
        }
    })
    .await;
}

/// When (ms) the order's message for `milestone` is scheduled.
async fn scheduled_at(env: &Env, order: &str, milestone: Milestone) -> Option<i64> {
    let order = order_log::order_ref("m-acme", order);
    let mut conn = env.conn.clone();
    let score: Option<f64> = redis::AsyncCommands::zscore(
        &mut conn,
        outbox::shard_key_of(&order),
        outbox::member(&order, milestone),
    )
    .await
    .unwrap();
    #[allow(clippy::cast_possible_truncation)]
    score.map(|s| s as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_within_the_grace_sends_one_message_naming_it_instead_of_delayed() {
    let env = Env::start(day(), |_| {}).await;
    let parcel = zh_parcel("O-INC", "SF900");
    env.register_stored(&parcel).await;
    let mut reader = env.messages();
    env.produce(topics::TRACKING_ALERTS, "sf:SF900", &stall(&parcel, day()))
        .await;
    // The DELAYED message is held for the grace (2h by default, event time).
    wait_state(&env, "O-INC", Milestone::Delayed, "held").await;
    assert_eq!(
        scheduled_at(&env, "O-INC", Milestone::Delayed).await,
        Some((day() + chrono::Duration::hours(2)).timestamp_millis())
    );

    // Half an hour later the incident detector groups the stalled parcels.
    let opened = day() + minutes(30);
    let record = incident(
        "inc-hz-1",
        "m-acme",
        IncidentState::Opened,
        1,
        opened,
        vec![affected("O-INC", "SF900", day())],
    );
    publish(&env, &record).await;
    reader
        .until(WAIT, "the INCIDENT message", |r| {
            has(r, "O-INC", Milestone::Incident)
        })
        .await;

    // The grace ends: the held DELAYED is decided, and the incident took it over.
    env.clock.advance(chrono::Duration::hours(2) + minutes(1));
    wait_state(&env, "O-INC", Milestone::Delayed, "superseded").await;
    let sent = messages_of(&reader, "O-INC");
    let milestones: Vec<i32> = sent.iter().map(|m| m.milestone).collect();
    assert_eq!(milestones, [Milestone::Incident as i32], "one message");
    let message = &sent[0];
    assert_eq!(message.notification_id, "m-acme/O-INC:incident");
    assert_eq!(message.waybills, ["SF900"]);
    assert!(
        message
            .body
            .contains("因暴雨等恶劣天气在杭州市滞留，预计延误1-2天"),
        "reason, place and delay: {}",
        message.body
    );
    assert!(
        !message.body.contains("13812345678") && !message.body.contains("5678"),
        "no contact in the text: {}",
        message.body
    );
    assert_eq!(
        message.created_at,
        Some(time::to_proto(opened)),
        "reached when the incident opened"
    );
    assert_eq!(
        env.metric("trackstream_notifier_delayed_superseded_by_incident_total")
            .await,
        1.0
    );
    assert_eq!(
        env.metric("trackstream_notifier_incident_records_total{outcome=\"stored\"}")
            .await,
        1.0
    );

    // GetOrder's open alert names the incident its parcel is linked to.
    let addr = env.running.grpc_addr;
    let alert = trackstream_testkit::eventually(WAIT, "the open alert", || async move {
        let order = support::client_of(addr)
            .await
            .get_order(authed(
                GetOrderRequest {
                    order_id: "O-INC".into(),
                },
                ACME_TOKEN,
            ))
            .await
            .ok()?
            .into_inner();
        order.open_alerts.into_iter().next()
    })
    .await;
    assert_eq!(alert.alert_id, "SF900:stalled_in_transit:1");
    assert_eq!(alert.incident_id, "inc-hz-1");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_without_an_incident_gets_its_delayed_message_after_the_grace() {
    let env = Env::start(day(), |_| {}).await;
    let parcel = shipment("O-STALL", "SF910", "m-acme");
    env.register_stored(&parcel).await;
    let mut reader = env.messages();
    env.produce(topics::TRACKING_ALERTS, "sf:SF910", &stall(&parcel, day()))
        .await;
    wait_state(&env, "O-STALL", Milestone::Delayed, "held").await;
    assert_eq!(
        scheduled_at(&env, "O-STALL", Milestone::Delayed).await,
        Some((day() + chrono::Duration::hours(2)).timestamp_millis()),
        "held for the grace"
    );
    env.clock.advance(chrono::Duration::hours(2) + minutes(1));
    reader
        .until(WAIT, "the DELAYED message", |r| {
            has(r, "O-STALL", Milestone::Delayed)
        })
        .await;
    let sent = messages_of(&reader, "O-STALL");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].notification_id, "m-acme/O-STALL:delayed");
    assert!(
        sent[0].body.contains("is delayed"),
        "the generic delay message: {}",
        sent[0].body
    );
    env.shutdown().await;
}

async fn list(
    env: &Env,
    token: &str,
    include_resolved: bool,
    days: u32,
) -> Result<Vec<Incident>, tonic::Status> {
    env.client()
        .await
        .list_incidents(authed(
            ListIncidentsRequest {
                include_resolved,
                days,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().incidents)
}

fn waybills(incident: &Incident) -> Vec<String> {
    let mut waybills: Vec<String> = incident.parcels.iter().map(|p| p.waybill.clone()).collect();
    waybills.sort();
    waybills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_incidents_shows_the_callers_incidents_with_only_its_parcels() {
    let env = Env::start(day(), |_| {}).await;
    let t = day() - minutes(120);
    let resolved_long_ago = Incident {
        resolved_at: Some(time::to_proto(day() - chrono::Duration::days(10))),
        ..incident(
            "inc-old",
            "m-acme",
            IncidentState::Resolved,
            4,
            day() - chrono::Duration::days(12),
            vec![affected("O-A0", "A0", day() - chrono::Duration::days(12))],
        )
    };
    let first = incident(
        "inc-1",
        "m-acme",
        IncidentState::Opened,
        1,
        t,
        vec![affected("O-A1", "A1", t), affected("O-A2", "A2", t)],
    );
    let grown = incident(
        "inc-1",
        "m-acme",
        IncidentState::Updated,
        2,
        t,
        vec![
            affected("O-A1", "A1", t),
            affected("O-A2", "A2", t),
            affected("O-A1", "A3", t + minutes(5)),
        ],
    );
    let second = incident(
        "inc-2",
        "m-acme",
        IncidentState::Opened,
        1,
        t + minutes(60),
        vec![affected("O-A4", "A4", t + minutes(60))],
    );
    // One partition (one key), so this is the order they are applied in: the
    // replayed first version comes after the second and must change nothing,
    // and `inc-2` last tells the test everything before it was applied.
    for record in [&resolved_long_ago, &first, &grown, &first, &second] {
        env.produce(topics::TRACKING_INCIDENTS, "m-acme/inc-1", record)
            .await;
    }
    let theirs = incident(
        "inc-1",
        "m-other",
        IncidentState::Updated,
        2,
        t,
        vec![affected("O-B1", "B1", t)],
    );
    let platform = incident("inc-1", "", IncidentState::Updated, 2, t, Vec::new());
    for record in [&platform, &theirs] {
        env.produce(topics::TRACKING_INCIDENTS, "m-other/inc-1", record)
            .await;
    }
    let open = trackstream_testkit::eventually(WAIT, "both of acme's incidents", || async {
        let listed = list(&env, ACME_TOKEN, false, 0).await.ok()?;
        listed
            .iter()
            .any(|i| i.incident_id == "inc-2")
            .then_some(listed)
    })
    .await;
    let ids: Vec<&str> = open.iter().map(|i| i.incident_id.as_str()).collect();
    assert_eq!(ids, ["inc-2", "inc-1"], "open ones, newest first");
    assert_eq!(open[1].version, 2, "the replayed version 1 changed nothing");
    assert_eq!(waybills(&open[1]), ["A1", "A2", "A3"]);
    assert!(open.iter().all(|i| i.merchant_id == "m-acme"));

    let theirs_listed = trackstream_testkit::eventually(WAIT, "the other's incident", || async {
        let listed = list(&env, OTHER_TOKEN, false, 0).await.ok()?;
        (!listed.is_empty()).then_some(listed)
    })
    .await;
    assert_eq!(theirs_listed.len(), 1, "none of acme's: {theirs_listed:?}");
    assert_eq!(theirs_listed[0].incident_id, "inc-1");
    assert_eq!(waybills(&theirs_listed[0]), ["B1"], "its own parcels only");
    assert_eq!(
        env.metric("trackstream_notifier_incident_records_total{outcome=\"platform\"}")
            .await,
        1.0,
        "the platform-wide record is not stored"
    );
    assert_eq!(
        env.metric("trackstream_notifier_incident_records_total{outcome=\"stale\"}")
            .await,
        1.0
    );

    // Resolved ones on request, within the look back.
    let week = list(&env, ACME_TOKEN, true, 0).await.unwrap();
    assert_eq!(
        week.len(),
        2,
        "resolved 10 days ago is outside the default week"
    );
    let month = list(&env, ACME_TOKEN, true, 30).await.unwrap();
    let ids: Vec<&str> = month.iter().map(|i| i.incident_id.as_str()).collect();
    assert_eq!(ids, ["inc-2", "inc-1", "inc-old"]);

    let too_far = list(&env, ACME_TOKEN, true, 31).await.unwrap_err();
    assert_eq!(too_far.code(), tonic::Code::InvalidArgument, "{too_far:?}");
    let anonymous = env
        .client()
        .await
        .list_incidents(ListIncidentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_incidents_streams_the_callers_records_only() {
    let env = Env::start(day(), |_| {}).await;
    env.wait_live().await;
    let watch = |token: &'static str| {
        let addr = env.running.grpc_addr;
        async move {
            support::client_of(addr)
                .await
                .watch_incidents(authed(WatchIncidentsRequest {}, token))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut acme = watch(ACME_TOKEN).await;
    let mut other = watch(OTHER_TOKEN).await;
    let t = day() - minutes(30);
    let theirs = incident(
        "inc-w",
        "m-other",
        IncidentState::Opened,
        1,
        t,
        vec![affected("O-WB", "WB1", t)],
    );
    let platform = incident("inc-w", "", IncidentState::Opened, 1, t, Vec::new());
    let ours = incident(
        "inc-w",
        "m-acme",
        IncidentState::Opened,
        1,
        t,
        vec![affected("O-WA", "WA1", t)],
    );
    // One key, so one partition: acme's record is the last of the three, and
    // the first one acme's watcher receives must be it.
    for record in [&theirs, &platform, &ours] {
        env.produce(topics::TRACKING_INCIDENTS, "inc-w", record)
            .await;
    }
    let received = tokio::time::timeout(WAIT, acme.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(received.merchant_id, "m-acme");
    assert_eq!(waybills(&received), ["WA1"]);
    let theirs_received = tokio::time::timeout(WAIT, other.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(theirs_received.merchant_id, "m-other");
    assert_eq!(waybills(&theirs_received), ["WB1"]);
    env.shutdown().await;
}
