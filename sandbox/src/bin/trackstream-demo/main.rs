//! `trackstream-demo`: drives a running stack with a few hundred parcels and
//! prints what came out.
//!
//! The parcels come from the load generator (`trackstream-loadgen`, the
//! benchmark's too): realistic lifecycles with event times over the last three
//! days — most delivered, some moving, some stalled long ago, some waiting at a
//! locker, failing delivery, or never picked up. `sf` parcels are pushed as
//! signed Kdniao snapshots (full trace every time), the others as signed
//! generic JSON, one push per scan in event-time order: the local stack
//! configures secrets for those two providers only. Deadlines of stalled
//! parcels are already in the past, so the detector fires them at once and the
//! alerts show up within seconds. Then a hub closure ([`closure`]): parcels
//! stuck at one transfer centre become one incident.

mod closure;
mod web;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use serde_json::json;
use trackstream_loadgen::{self as loadgen, Format, Mix, Parcel, Secrets};
use trackstream_proto::topics;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, GetOrderRequest, Milestone, ShipmentUpdate,
};
use trackstream_testkit::grpc::authed;
use trackstream_testkit::kafka::TopicReader;

/// Drives a running local stack with synthetic parcels and prints what came
/// out (updates, alerts, buyer messages, one order over gRPC).
#[derive(clap::Parser)]
#[command(name = "trackstream-demo", version)]
struct Args {
    /// Parcels to register and push.
    #[arg(long, default_value_t = 300)]
    parcels: usize,
    /// ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingest: String,
    /// The notifier's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// Kafka bootstrap servers (to read what the services wrote).
    #[arg(long, default_value = "127.0.0.1:19092")]
    brokers: String,
    /// The merchant's bearer token (deploy/local/config).
    #[arg(long = "merchant-token", default_value = "demo-merchant-token")]
    token: String,
    /// The generic webhook's HMAC secret.
    #[arg(long, default_value = "demo-generic-secret")]
    generic_secret: String,
    /// Kdniao EBusinessID.
    #[arg(long, default_value = "1234567")]
    kdniao_account: String,
    /// Kdniao AppKey (the signing key).
    #[arg(long, default_value = "demo-kdniao-appkey")]
    kdniao_appkey: String,
    /// The notifier's web face (tracking page, console, HTTP API).
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    web: String,
    /// Parcels stranded at one hub after the main load (0 = no closure).
    #[arg(long, default_value_t = 40)]
    stranded: usize,
}

/// The formats the local stack has secrets for (deploy/local/config/ingest.toml).
const FORMATS: [Format; 2] = [Format::Generic, Format::Kdniao];

/// Registers `parcels` (with an e-mail contact, so buyer messages have a
/// channel) and posts every push of the schedule, in order; returns how many
/// webhooks were posted.
async fn post_load(
    http: &reqwest::Client,
    args: &Args,
    parcels: &[Parcel],
    mix: &Mix,
    seed: u64,
) -> anyhow::Result<usize> {
    let registrations: Vec<serde_json::Value> = parcels
        .iter()
        .map(|parcel| {
            let mut registration = parcel.registration();
            registration["buyer"]["email"] = json!(format!("buyer{}@example.com", parcel.index));
            registration
        })
        .collect();
    for chunk in registrations.chunks(100) {
        let response = http
            .post(format!("{}/v1/shipments", args.ingest))
            .bearer_auth(&args.token)
            .json(&json!({ "shipments": chunk }))
            .send()
            .await
            .context("registering shipments")?;
        if !response.status().is_success() {
            bail!(
                "registration failed: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
    }
    let secrets = Secrets {
        generic: args.generic_secret.clone(),
        kdniao_account: args.kdniao_account.clone(),
        kdniao_appkey: args.kdniao_appkey.clone(),
        ..Secrets::default()
    };
    let mut webhooks = 0;
    for (index, upto) in loadgen::schedule(parcels, mix, seed) {
        let Some(parcel) = parcels.get(index) else {
            continue;
        };
        let push = parcel.push(upto, &secrets);
        let mut request = http
            .post(format!("{}{}", args.ingest, push.path))
            .body(push.body);
        for (name, value) in push.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.context("posting webhook")?;
        if !response.status().is_success() {
            bail!(
                "webhook failed: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        webhooks += 1;
    }
    Ok(webhooks)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let seed = rand::random::<u64>();
    // One push per scan, in event-time order: no resends or late pushes, so
    // every scan is one update and the demo knows how many to wait for.
    let mix = Mix {
        duplicate_rate: 0.0,
        reorder_rate: 0.0,
        ..Mix::default()
    };
    let mut parcels = loadgen::generate_in(&FORMATS, args.parcels, &mix, seed, Utc::now(), &run, 0);
    for parcel in &mut parcels {
        parcel.order_id = parcel.order_id.replacen("BENCH", "DEMO", 1);
    }
    let expected_updates: usize = parcels.iter().map(|p| p.scans.len()).sum();
    let kind_of: HashMap<&str, &str> = parcels
        .iter()
        .map(|p| (p.waybill.as_str(), p.kind.name()))
        .collect();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for parcel in &parcels {
        *kinds.entry(parcel.kind.name()).or_default() += 1;
    }

    // Readers first, so nothing is missed.
    let mut updates = TopicReader::new(&args.brokers, topics::TRACKING_UPDATES);
    let mut alerts = TopicReader::new(&args.brokers, topics::TRACKING_ALERTS);
    let mut messages = TopicReader::new(&args.brokers, topics::BUYER_NOTIFICATIONS);

    let started = Instant::now();
    let webhooks = post_load(&http, &args, &parcels, &mix, seed).await?;
    let posted_in = started.elapsed();
    println!("\n== trackstream demo (run {run}) ==");
    println!(
        "posted {} registrations, {webhooks} webhooks with {expected_updates} scans in {:.2?}",
        args.parcels, posted_in
    );
    println!("lifecycles: {kinds:?}");

    // Wait for the pipeline to settle: all updates through, then quiet.
    let deadline = Duration::from_secs(180);
    let ours = |u: &ShipmentUpdate| u.order_id.contains(&run);
    let settle = Instant::now();
    updates
        .until(deadline, "all updates", |r| {
            trackstream_testkit::kafka::all::<ShipmentUpdate>(r, |u| {
                u.iter().filter(|u| ours(u)).count() >= expected_updates
            })
        })
        .await;
    let latency = settle.elapsed();
    alerts
        .until(Duration::from_secs(60), "alerts", |r| !r.is_empty())
        .await;
    messages
        .until(Duration::from_secs(60), "buyer messages", |r| !r.is_empty())
        .await;
    // Give late alerts and messages (timers fire every 200 ms) a moment to land.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    let _ = tokio::time::timeout(
        quiet_until - Instant::now(),
        alerts.until(Duration::from_secs(4), "more", |_| false),
    )
    .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        messages.until(Duration::from_secs(3), "more", |_| false),
    )
    .await;

    let updates: Vec<ShipmentUpdate> = updates
        .decoded::<ShipmentUpdate>()
        .into_iter()
        .filter(|u| ours(u))
        .collect();
    let alerts: Vec<Alert> = alerts
        .decoded::<Alert>()
        .into_iter()
        .filter(|a| a.order_id.contains(&run))
        .collect();
    let messages: Vec<BuyerNotification> = messages
        .decoded::<BuyerNotification>()
        .into_iter()
        .filter(|m| m.order_id.contains(&run))
        .collect();
    println!(
        "all {} updates on tracking.updates {latency:.2?} after the last webhook",
        updates.len()
    );

    // Alerts by rule and state, and which generated lifecycles raised them.
    let mut by_rule: BTreeMap<(String, &str), BTreeMap<&str, usize>> = BTreeMap::new();
    for alert in &alerts {
        let state = AlertState::try_from(alert.state)
            .map_or("?", |s| s.as_str_name().trim_start_matches("ALERT_STATE_"));
        *by_rule
            .entry((alert.rule.clone(), state))
            .or_default()
            .entry(kind_of.get(alert.waybill.as_str()).copied().unwrap_or("?"))
            .or_default() += 1;
    }
    println!(
        "\nalerts on tracking.alerts: {} (by rule, state; lifecycles that raised them)",
        alerts.len()
    );
    for ((rule, state), kinds) in &by_rule {
        println!(
            "  {rule:<32} {state:<10} {:>4}  {kinds:?}",
            kinds.values().sum::<usize>()
        );
    }
    let mut resolved_by_carrier: BTreeMap<&str, usize> = BTreeMap::new();
    for alert in alerts
        .iter()
        .filter(|a| a.rule == "stalled_in_transit" && a.state == AlertState::Resolved as i32)
    {
        *resolved_by_carrier
            .entry(alert.carrier.as_str())
            .or_default() += 1;
    }
    if !resolved_by_carrier.is_empty() {
        println!(
            "  (resolved stalls by carrier: {resolved_by_carrier:?} — parcels that really went longer \
             than a tier between two scans, e.g. sf express with its 12 h override in \
             detector.toml: opened at the gap's deadline and resolved by the next scan, as the \
             event-time fold says)"
        );
    }
    let mut by_milestone: BTreeMap<&str, usize> = BTreeMap::new();
    for message in &messages {
        let name = Milestone::try_from(message.milestone)
            .map_or("?", |m| m.as_str_name().trim_start_matches("MILESTONE_"));
        *by_milestone.entry(name).or_default() += 1;
    }
    println!(
        "\nbuyer messages on buyer.notifications: {}",
        messages.len()
    );
    for (milestone, n) in &by_milestone {
        println!("  {milestone:<24} {n}");
    }

    if let Some(update) = updates.iter().find(|u| u.late || u.seq > 1) {
        let event = update.event.clone().unwrap_or_default();
        println!(
            "\nsample update: order {} seq {} waybill {}:{} status {:?} at {} ({}, zone {}) \"{}\"",
            update.order_id,
            update.seq,
            event.carrier,
            event.waybill,
            trackstream_proto::v1::Status::try_from(event.status)
                .map(|s| s.as_str_name())
                .unwrap_or("?"),
            trackstream_proto::time::from_proto(&event.occurred_at.unwrap_or_default())
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            event.source_time_zone,
            event.zone_source,
            event.raw_text
        );
    }
    if let Some(alert) = alerts
        .iter()
        .find(|a| a.state == AlertState::Escalated as i32)
        .or(alerts.first())
    {
        println!("sample alert:  {}", alert.summary);
    }
    for locale in ["zh-CN", "en"] {
        if let Some(message) = messages.iter().find(|m| m.locale == locale) {
            println!(
                "sample message ({locale}, to {}): {} — {}",
                message.contact_masked, message.title, message.body
            );
        }
    }

    let mut grpc = TrackingServiceClient::connect(args.grpc.clone())
        .await
        .context("connecting to gRPC")?;
    let first_order = parcels
        .first()
        .map(|p| p.order_id.clone())
        .unwrap_or_default();
    let request = authed(
        GetOrderRequest {
            order_id: first_order.clone(),
        },
        &args.token,
    );
    let order = grpc
        .get_order(request)
        .await
        .context("GetOrder")?
        .into_inner();
    println!(
        "\nGetOrder {first_order}: {} parcels, last_seq {}, statuses {:?}",
        order.parcels.len(),
        order.last_seq,
        order
            .parcels
            .iter()
            .map(
                |p| trackstream_proto::v1::Status::try_from(p.current_status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("?")
            )
            .collect::<Vec<_>>()
    );

    // Delivery intelligence: predictions ride on updates once a lane has
    // statistics from days before; scorecards count what was delivered.
    let predicted: Vec<_> = updates
        .iter()
        .filter_map(|u| u.prediction.as_ref())
        .collect();
    let high = predicted
        .iter()
        .filter(|p| p.confidence == trackstream_proto::v1::PredictionConfidence::High as i32)
        .count();
    let cold = if predicted.is_empty() {
        " — a cold start: predictions need deliveries on the days before"
    } else {
        ""
    };
    println!(
        "\nupdates with a delivery prediction: {} of {} ({high} high confidence){cold}; promise_at_risk alerts: {}",
        predicted.len(),
        updates.len(),
        alerts
            .iter()
            .filter(|a| a.rule == "promise_at_risk")
            .count()
    );
    let request = authed(
        trackstream_proto::v1::GetScorecardsRequest::default(),
        &args.token,
    );
    let cards = grpc
        .get_scorecards(request)
        .await
        .context("GetScorecards")?
        .into_inner();
    println!(
        "GetScorecards: {} carrier and lane scorecards for the merchant (+ the platform baseline)",
        cards.merchant.len()
    );
    for card in cards
        .merchant
        .iter()
        .filter(|c| c.level == "carrier")
        .take(4)
    {
        let promise = if card.promised == 0 {
            "no promises registered".to_owned()
        } else {
            format!(
                "on time vs promise {:.0} %",
                card.on_time_vs_promise * 100.0
            )
        };
        println!(
            "  {:<10} {:>4} delivered, transit p50 {:.1} h / p90 {:.1} h, {promise}",
            card.carrier, card.deliveries, card.transit_p50_hours, card.transit_p90_hours,
        );
    }
    web::show(&http, &args, &messages, &parcels).await?;
    closure::run(&http, &args, &run, &mut grpc).await
}
