//! The demo's hub closure: `--stranded` parcels of `zto` whose last scan was at
//! the Hangzhou transfer centre 30 hours ago, registered and pushed as signed
//! generic webhooks. Each stalls on its own; the incident detector groups them
//! into one incident, which the demo prints from `tracking.incidents`, from
//! `ListIncidents` (as the merchant sees it) and from the buyer messages that
//! name it.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{SubsecRound, Utc};
use serde_json::json;
use trackstream_proto::topics;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    BuyerNotification, Incident, IncidentReason, ListIncidentsRequest, Milestone,
};
use trackstream_testkit::grpc::authed;
use trackstream_testkit::kafka::TopicReader;

use super::Args;

const PLACE: &str = "浙江省/杭州市";

/// Strands the parcels, waits for their incident and prints it.
pub async fn run(
    http: &reqwest::Client,
    args: &Args,
    run: &str,
    grpc: &mut TrackingServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    if args.stranded == 0 {
        return Ok(());
    }
    let now = Utc::now().trunc_subsecs(0);
    let orders: Vec<String> = (0..args.stranded)
        .map(|i| format!("DEMO-{run}-HUB-{i:03}"))
        .collect();
    let waybill = |i: usize| format!("ZTH{run}{i:04}");
    let registrations: Vec<serde_json::Value> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            json!({
                "order_id": order, "carrier": "zto", "waybill": waybill(i),
                "origin": {"province": "广东省", "city": "广州市"},
                "destination": {"province": "浙江省", "city": "杭州市"},
                "buyer": {"email": format!("hub{i}@example.com"), "locale": if i % 2 == 0 { "zh-CN" } else { "en" }},
            })
        })
        .collect();
    let response = http
        .post(format!("{}/v1/shipments", args.ingest))
        .bearer_auth(&args.token)
        .json(&json!({ "shipments": registrations }))
        .send()
        .await
        .context("registering the stranded parcels")?;
    if !response.status().is_success() {
        bail!("registration failed: {}", response.status());
    }
    let mut incidents = TopicReader::new(&args.brokers, topics::TRACKING_INCIDENTS);
    let mut messages = TopicReader::new(&args.brokers, topics::BUYER_NOTIFICATIONS);
    let scans: Vec<serde_json::Value> = (0..args.stranded)
        .flat_map(|i| {
            let arrived =
                now - chrono::Duration::hours(30) - chrono::Duration::minutes(3 * i as i64);
            [
                json!({"carrier": "zto", "waybill": waybill(i), "status": "picked_up",
                    "occurred_at": (arrived - chrono::Duration::hours(8)).to_rfc3339(),
                    "location": {"text": "广州白云网点", "city": "广州市", "region": "广东省"}}),
                json!({"carrier": "zto", "waybill": waybill(i), "status": "in_transit",
                    "occurred_at": arrived.to_rfc3339(), "description": "到达杭州转运中心",
                    "location": {"text": "杭州转运中心", "city": "杭州市", "region": "浙江省"}}),
            ]
        })
        .collect();
    let body = serde_json::to_vec(&scans)?;
    let signature = trackstream_carriers::generic::sign(&body, &args.generic_secret);
    let response = http
        .post(format!("{}/v1/webhooks/generic", args.ingest))
        .header("x-trackstream-signature", signature)
        .body(body)
        .send()
        .await
        .context("pushing the stranded parcels")?;
    if !response.status().is_success() {
        bail!("webhook failed: {}", response.status());
    }
    println!(
        "\nhub closure: {} zto parcels stuck at 杭州转运中心 since 30 h ago (each one stalls on its own)",
        args.stranded
    );
    let ours = |i: &Incident| i.merchant_id.is_empty() && i.place == PLACE;
    incidents
        .until(Duration::from_secs(90), "the hub's incident", |r| {
            trackstream_testkit::kafka::all::<Incident>(r, |all| {
                all.iter()
                    .any(|i| ours(i) && i.affected_total as usize >= args.stranded)
            })
        })
        .await;
    let all: Vec<Incident> = incidents.decoded();
    let incident = all
        .iter()
        .rev()
        .find(|i| ours(i))
        .cloned()
        .unwrap_or_default();
    println!(
        "incident on tracking.incidents: {} ({} records read so far) for {} parcels ({}); {}",
        incident.incident_id,
        all.len(),
        incident.affected_total,
        IncidentReason::try_from(incident.reason).map_or("?", |r| r.as_str_name()),
        incident.summary
    );
    // The notifier stores the merchant's record from the same topic; poll
    // (with a deadline) until it lists the incident with all its parcels.
    let wanted_id = incident.incident_id.clone();
    let listed = trackstream_testkit::within(Duration::from_secs(60), || {
        let mut grpc = grpc.clone();
        let wanted_id = wanted_id.clone();
        let token = args.token.clone();
        async move {
            let listed = grpc
                .list_incidents(authed(ListIncidentsRequest::default(), &token))
                .await
                .ok()?
                .into_inner()
                .incidents;
            listed
                .iter()
                .any(|i| i.incident_id == wanted_id && i.affected as usize >= args.stranded)
                .then_some(listed)
        }
    })
    .await
    .context("ListIncidents did not list the hub's incident within 60 s")?;
    for i in &listed {
        println!(
            "ListIncidents: {} {} {} — {} of the merchant's parcels (orders {}…), opened {}",
            i.incident_id,
            i.carrier,
            i.place,
            i.affected,
            i.parcels
                .iter()
                .take(3)
                .map(|p| p.order_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            i.opened_at
                .and_then(|t| trackstream_proto::time::from_proto(&t))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        );
    }
    let wanted: BTreeSet<&str> = orders.iter().map(String::as_str).collect();
    let incident_messages = |r: &[trackstream_testkit::kafka::Record]| {
        trackstream_testkit::kafka::all::<BuyerNotification>(r, |m| {
            m.iter()
                .filter(|m| {
                    m.milestone == Milestone::Incident as i32
                        && wanted.contains(m.order_id.as_str())
                })
                .count()
                >= wanted.len()
        })
    };
    messages
        .until(
            Duration::from_secs(90),
            "the incident's buyer messages",
            incident_messages,
        )
        .await;
    let sent: Vec<BuyerNotification> = messages
        .decoded::<BuyerNotification>()
        .into_iter()
        .filter(|m| wanted.contains(m.order_id.as_str()))
        .collect();
    let count = |milestone: Milestone| {
        sent.iter()
            .filter(|m| m.milestone == milestone as i32)
            .count()
    };
    println!(
        "buyer messages for the stranded orders: {} naming the incident, {} generic DELAYED",
        count(Milestone::Incident),
        count(Milestone::Delayed)
    );
    for locale in ["zh-CN", "en"] {
        if let Some(m) = sent
            .iter()
            .find(|m| m.locale == locale && m.milestone == Milestone::Incident as i32)
        {
            println!("  ({locale}) {} — {}", m.title, m.body);
        }
    }
    Ok(())
}
