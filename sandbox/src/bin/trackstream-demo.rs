//! `trackstream-demo`: drives a running stack with a few hundred parcels and
//! prints what came out.
//!
//! Each parcel gets a realistic lifecycle with event times over the last three
//! days: most are delivered, some are moving, some stalled long ago, some wait at
//! a locker, fail delivery, or were never picked up. `sf` parcels are pushed as
//! signed Kdniao snapshots (full trace every time), the others as signed generic
//! JSON. Deadlines of stalled parcels are already in the past, so the detector
//! fires them at once and the alerts show up within seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Duration as Span, FixedOffset, Utc};
use serde_json::json;
use trackstream_proto::topics;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    Alert, AlertState, BuyerNotification, GetOrderRequest, Milestone, ShipmentUpdate,
};
use trackstream_testkit::kafka::TopicReader;

struct Args {
    parcels: usize,
    ingest: String,
    grpc: String,
    brokers: String,
    token: String,
    generic_secret: String,
    kdniao_account: String,
    kdniao_appkey: String,
}

fn args() -> anyhow::Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str, default: &str| {
        raw.iter()
            .position(|a| a == flag)
            .and_then(|i| raw.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    };
    Ok(Args {
        parcels: get("--parcels", "300").parse().context("--parcels")?,
        ingest: get("--ingest", "http://127.0.0.1:8080"),
        grpc: get("--grpc", "http://127.0.0.1:50051"),
        brokers: get("--brokers", "127.0.0.1:19092"),
        token: get("--merchant-token", "demo-merchant-token"),
        generic_secret: get("--generic-secret", "demo-generic-secret"),
        kdniao_account: get("--kdniao-account", "1234567"),
        kdniao_appkey: get("--kdniao-appkey", "demo-kdniao-appkey"),
    })
}

/// One scan of a generated lifecycle: canonical status, Kdniao action, hours ago.
type Step = (&'static str, &'static str, i64, &'static str);

fn lifecycle(i: usize) -> (&'static str, Vec<Step>) {
    match i % 20 {
        0..=9 => (
            "delivered",
            vec![
                ("picked_up", "1", 50, "揽收 Picked up"),
                ("in_transit", "2", 40, "到达转运中心 Arrived at hub"),
                ("in_transit", "2", 26, "离开转运中心 Left hub"),
                ("out_for_delivery", "202", 6, "派送中 Out for delivery"),
                ("delivered", "301", 2, "已签收 Delivered"),
            ],
        ),
        10..=13 => (
            "moving",
            vec![
                ("picked_up", "1", 20, "揽收 Picked up"),
                ("in_transit", "2", 9, "运输中 In transit"),
                (
                    "in_transit",
                    "2",
                    3,
                    "到达目的地城市 Arrived in destination city",
                ),
            ],
        ),
        14 | 15 => (
            "stalled",
            vec![
                ("picked_up", "1", 70, "揽收 Picked up"),
                ("in_transit", "2", 52, "运输中 In transit"),
            ],
        ),
        16 => (
            "locker",
            vec![
                ("picked_up", "1", 48, "揽收 Picked up"),
                ("out_for_delivery", "202", 26, "派送中 Out for delivery"),
                ("available_for_pickup", "211", 22, "已放入快递柜 In locker"),
            ],
        ),
        17 => (
            "failed delivery",
            vec![
                ("picked_up", "1", 30, "揽收 Picked up"),
                ("out_for_delivery", "202", 8, "派送中 Out for delivery"),
                (
                    "delivery_attempt_failed",
                    "416",
                    5,
                    "联系不上收件人 Recipient unreachable",
                ),
            ],
        ),
        18 => (
            "no pickup",
            vec![("info_received", "0", 30, "已下单 Order info received")],
        ),
        _ => (
            "just shipped",
            vec![("picked_up", "1", 1, "揽收 Picked up")],
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let run = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let now = Utc::now();
    let carriers = ["sf", "yto", "zto", "jd"];

    // Readers first, so nothing is missed.
    let mut updates = TopicReader::new(&args.brokers, topics::TRACKING_UPDATES);
    let mut alerts = TopicReader::new(&args.brokers, topics::TRACKING_ALERTS);
    let mut messages = TopicReader::new(&args.brokers, topics::BUYER_NOTIFICATIONS);

    let mut shipments = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..args.parcels {
        // Every fifth order has two parcels (a split shipment).
        let order = if i % 5 == 1 { i - 1 } else { i };
        shipments.push(json!({
            "order_id": format!("DEMO-{run}-{order:04}"),
            "carrier": carriers[i % carriers.len()],
            "waybill": format!("{}{run}{i:05}", carriers[i % carriers.len()].to_uppercase()),
            "service_level": if i % 3 == 0 { "express" } else { "standard" },
            "buyer": {"name": "买家", "phone": format!("138{:08}", i * 7919 % 100_000_000),
                      "email": format!("buyer{i}@example.com"),
                      "locale": if i % 4 == 0 { "en" } else { "zh-CN" }, "time_zone": "Asia/Shanghai"}
        }));
    }
    let started = Instant::now();
    for chunk in shipments.chunks(100) {
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

    let mut webhooks = 0usize;
    let mut scans = 0usize;
    let mut expected_updates = 0usize;
    for i in 0..args.parcels {
        let carrier = carriers[i % carriers.len()];
        let waybill = format!("{}{run}{i:05}", carrier.to_uppercase());
        let (kind, steps) = lifecycle(i);
        *kinds.entry(kind).or_default() += 1;
        scans += steps.len();
        expected_updates += steps.len();
        let (path, headers, body) = if carrier == "sf" {
            kdniao_push(&args, &waybill, &steps, now)
        } else {
            generic_push(&args, carrier, &waybill, &steps, now)
        };
        let mut request = http.post(format!("{}{path}", args.ingest)).body(body);
        for (name, value) in headers {
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
    let posted_in = started.elapsed();
    println!("\n== trackstream demo (run {run}) ==");
    println!(
        "posted {} registrations, {webhooks} webhooks with {scans} scans in {:.2?}",
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
        let index: usize = alert
            .waybill
            .get(alert.waybill.len().saturating_sub(5)..)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        *by_rule
            .entry((alert.rule.clone(), state))
            .or_default()
            .entry(lifecycle(index).0)
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
    let mut request = tonic::Request::new(GetOrderRequest {
        order_id: format!("DEMO-{run}-0000"),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {}", args.token).parse()?);
    let order = grpc
        .get_order(request)
        .await
        .context("GetOrder")?
        .into_inner();
    println!(
        "\nGetOrder DEMO-{run}-0000: {} parcels, last_seq {}, statuses {:?}",
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
    Ok(())
}

fn generic_push(
    args: &Args,
    carrier: &str,
    waybill: &str,
    steps: &[Step],
    now: DateTime<Utc>,
) -> (&'static str, Vec<(&'static str, String)>, Vec<u8>) {
    let scans: Vec<_> = steps
        .iter()
        .map(|(status, _, hours, text)| {
            let mut scan = json!({
                "carrier": carrier, "waybill": waybill, "status": status,
                "occurred_at": (now - Span::hours(*hours)).to_rfc3339(), "description": text,
                "location": {"text": "Hangzhou", "city": "Hangzhou", "country": "CN"}
            });
            if *status == "delivery_attempt_failed" {
                scan["reason"] = json!("recipient_unreachable");
            }
            scan
        })
        .collect();
    let body = json!({ "scans": scans }).to_string().into_bytes();
    let signature = trackstream_carriers::generic::sign(&body, &args.generic_secret);
    (
        "/v1/webhooks/generic",
        vec![("x-trackstream-signature", signature)],
        body,
    )
}

fn kdniao_push(
    args: &Args,
    waybill: &str,
    steps: &[Step],
    now: DateTime<Utc>,
) -> (&'static str, Vec<(&'static str, String)>, Vec<u8>) {
    let china = FixedOffset::east_opt(8 * 3600)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC offset"));
    let fmt = |t: DateTime<Utc>| {
        t.with_timezone(&china)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let traces: Vec<_> = steps
        .iter()
        .map(|(_, action, hours, text)| {
            json!({
                "AcceptTime": fmt(now - Span::hours(*hours)), "AcceptStation": text,
                "Location": "深圳市", "Action": action
            })
        })
        .collect();
    let last = steps.last().map_or("2", |s| s.1);
    let state = &last[..1];
    let request_data = json!({
        "EBusinessID": args.kdniao_account, "PushTime": fmt(now), "Count": 1,
        "Data": [{
            "EBusinessID": args.kdniao_account, "ShipperCode": "SF", "LogisticCode": waybill,
            "Success": true, "State": state, "StateEx": last, "Location": "深圳市", "Traces": traces
        }]
    })
    .to_string();
    let body =
        trackstream_carriers::kdniao::form_body(request_data.as_bytes(), &args.kdniao_appkey);
    (
        "/v1/webhooks/kdniao",
        vec![(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        )],
        body,
    )
}
