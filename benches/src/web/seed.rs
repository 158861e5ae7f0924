//! The benchmark's world: a notifier with its web face over a real Redis and
//! broker, and buyers with orders that have a registration and a history.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use prometheus_client::registry::Registry;
use prost::Message as _;
use trackstream_proto::v1::{
    BuyerContact, Location, Shipment, ShipmentUpdate, Status, TrackingEvent, UpdateKind,
};
use trackstream_proto::{keys, time, topics};
use trackstream_runtime::CancellationToken;
use trackstream_runtime::config::{KafkaConfig, RedisConfig};
use trackstream_runtime::kafka::{OutRecord, Producer};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::{Broker, RedisServer};
use trackstream_web::links::{Link, Scope};
use trackstream_web::{Links, WebConfig};

use super::Options;

/// Scans in each order's history.
pub const SCANS: usize = 6;
const MERCHANT: &str = "m-acme";
const STATUSES: [Status; SCANS] = [
    Status::InfoReceived,
    Status::PickedUp,
    Status::InTransit,
    Status::InTransit,
    Status::InTransit,
    Status::OutForDelivery,
];

/// A buyer: the link its messages carry and its orders.
pub struct Buyer {
    /// The link token.
    pub token: String,
    /// Its order ids.
    pub orders: Vec<String>,
}

/// The running world.
pub struct World {
    /// The web face's base URL.
    pub base: String,
    /// The buyers.
    pub buyers: Vec<Buyer>,
    /// How long seeding took.
    pub seeded_in: Duration,
    conn: RedisConn,
    producer: Producer,
    shutdown: CancellationToken,
    task:
        tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), trackstream_runtime::Error>>>>,
}

/// What the live measurement saw.
pub struct Live {
    /// Streams open.
    pub streams: usize,
    /// Process memory added by opening them (MiB).
    pub memory_mib: f64,
    /// Produce → page, sorted, for the updates that arrived.
    pub latencies: Vec<Duration>,
}

fn update(order: &str, waybill: &str, i: usize, at_ms: i64) -> ShipmentUpdate {
    let status = STATUSES.get(i).copied().unwrap_or(Status::Delivered);
    ShipmentUpdate {
        order_id: order.to_owned(),
        merchant_id: MERCHANT.into(),
        event: Some(TrackingEvent {
            event_id: format!("{waybill}-{i}"),
            carrier: "sf".into(),
            waybill: waybill.to_owned(),
            status: status as i32,
            occurred_at: Some(time::from_millis(at_ms)),
            raw_text: format!("【杭州市】scan {i}"),
            location: Some(Location {
                city: "杭州市".into(),
                text: "杭州转运中心".into(),
                ..Location::default()
            }),
            ..TrackingEvent::default()
        }),
        current_status: status as i32,
        kind: UpdateKind::Scan as i32,
        ..ShipmentUpdate::default()
    }
}

impl World {
    /// Starts the notifier and seeds `opts.buyers` buyers.
    pub async fn start(
        redis: &RedisServer,
        broker: &Broker,
        opts: &Options,
    ) -> anyhow::Result<Self> {
        let kafka = KafkaConfig {
            brokers: broker.bootstrap(),
            batch_linger: Duration::from_millis(2),
            ..KafkaConfig::default()
        };
        let redis_config = RedisConfig {
            url: redis.url(),
            cluster_nodes: Vec::new(),
        };
        let web = WebConfig {
            listen: "127.0.0.1:0".into(),
            link_secret: "bench-link-secret-0123456789abcdefgh".into(),
            phone_pepper: "bench-phone-pepper-0123456789abcdefgh".into(),
            ..WebConfig::default()
        };
        let links = Links::new(&web);
        let mut config = trackstream_notifier::Config {
            kafka: kafka.clone(),
            redis: redis_config.clone(),
            merchants: trackstream_testkit::merchants::two_merchants(),
            web: Some(web),
            ..Default::default()
        };
        config.grpc.listen = "127.0.0.1:0".into();
        config.admin.log_level = "warn".into();
        trackstream_runtime::telemetry::init_tracing(&config.admin);
        let shutdown = CancellationToken::new();
        let running = trackstream_notifier::start(config, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("notifier: {e}"))?;
        let base = format!("http://{}", running.web_addr.context("the web face")?);
        let conn = RedisConn::connect(&redis_config).await?;
        let producer = Producer::new(&kafka, "bench", &mut Registry::default())?;

        let started = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let expire = now_ms + 86_400_000;
        let mut buyers = Vec::new();
        let mut registrations = Vec::new();
        let mut histories = Vec::new();
        for b in 0..opts.buyers {
            let phone = format!("139{:08}", (b as u64 * 7919 + opts.seed) % 100_000_000);
            let key = links.phone_key(&phone).context("a phone")?;
            let mut orders = Vec::new();
            for k in 0..(1 + b % 3) {
                let order = format!("B{b}-{k}");
                let waybill = format!("SFB{b}K{k}");
                registrations.push(OutRecord::new(
                    topics::SHIPMENTS,
                    keys::waybill_key("sf", &waybill),
                    Shipment {
                        order_id: order.clone(),
                        merchant_id: MERCHANT.into(),
                        carrier: "sf".into(),
                        waybill: waybill.clone(),
                        buyer: Some(BuyerContact {
                            phone: phone.clone(),
                            locale: "zh-CN".into(),
                            time_zone: "Asia/Shanghai".into(),
                            ..BuyerContact::default()
                        }),
                        registered_at: Some(time::from_millis(now_ms - 10 * 3_600_000)),
                        ..Shipment::default()
                    }
                    .encode_to_vec(),
                ));
                for i in 0..SCANS {
                    let at = now_ms - (SCANS - i) as i64 * 3_600_000;
                    histories.push((order.clone(), update(&order, &waybill, i, at)));
                }
                orders.push(order);
            }
            let token = links
                .sign(&Link {
                    merchant_id: MERCHANT.into(),
                    scope: Scope::Buyer(key.clone()),
                    expires_at: now_ms / 1000 + 86_400,
                })
                .context("a link")?;
            buyers.push((Buyer { token, orders }, key));
        }
        let appended: Vec<anyhow::Result<u64>> = futures::stream::iter(histories)
            .map(|(order, update)| {
                let mut conn = conn.clone();
                async move {
                    let id = update
                        .event
                        .as_ref()
                        .map(|e| e.event_id.clone())
                        .unwrap_or_default();
                    let order_ref = order_log::order_ref(MERCHANT, &order);
                    Ok(order_log::append_one(
                        &mut conn,
                        &order_ref,
                        &id,
                        &update.encode_to_vec(),
                        MERCHANT,
                        expire,
                    )
                    .await?)
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for result in appended {
            result?;
        }
        producer
            .send_all(registrations)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        // The messenger indexes the registrations; wait until every buyer's
        // orders are in its index.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let mut pipe = redis::pipe();
            for (_, key) in &buyers {
                pipe.cmd("ZCARD").arg(format!("{{bi:{MERCHANT}|{key}}}"));
            }
            let mut c = conn.clone();
            let counts: Vec<usize> = pipe.query_async(&mut c).await?;
            if counts
                .iter()
                .zip(&buyers)
                .all(|(n, (b, _))| *n == b.orders.len())
            {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the buyer index was not built in 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(World {
            base,
            buyers: buyers.into_iter().map(|(b, _)| b).collect(),
            seeded_in: started.elapsed(),
            conn,
            producer,
            shutdown,
            task: tokio::sync::Mutex::new(Some(running.task)),
        })
    }

    /// Orders in the world.
    pub fn orders(&self) -> usize {
        self.buyers.iter().map(|b| b.orders.len()).sum()
    }

    /// Opens `streams` buyer event streams, then appends and produces one update
    /// per streamed order, and measures when each page gets it.
    pub async fn live(&self, streams: usize) -> anyhow::Result<Live> {
        let targets: Vec<(String, String)> = self
            .buyers
            .iter()
            .flat_map(|b| b.orders.iter().map(|o| (b.token.clone(), o.clone())))
            .take(streams)
            .collect();
        let rss_before = trackstream_testkit::procfs::rss_mib(std::process::id());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .context("http client")?;
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(targets.len().max(1));
        let mut readers = Vec::new();
        for (token, order) in &targets {
            let url = format!(
                "{}/api/v1/track/{token}/orders/{order}/events?after_seq={SCANS}",
                self.base
            );
            let (http, ready) = (http.clone(), ready_tx.clone());
            readers.push(tokio::spawn(async move {
                let mut response = http.get(url).send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let _ = ready.send(()).await;
                let mut seen = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    seen.push_str(&String::from_utf8_lossy(&chunk));
                    if seen.contains("event: update") {
                        return Some(Instant::now());
                    }
                }
                None
            }));
        }
        drop(ready_tx);
        let mut open = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while open < targets.len() {
            match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
                Ok(Some(())) => open += 1,
                _ => break,
            }
        }
        let memory_mib = trackstream_testkit::procfs::rss_mib(std::process::id()) - rss_before;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut sent_at = Vec::with_capacity(targets.len());
        for (_, order) in &targets {
            let waybill = order.replacen('B', "SFB", 1).replacen('-', "K", 1);
            let update = update(order, &waybill, SCANS, now_ms);
            let order_ref = order_log::order_ref(MERCHANT, order);
            let mut conn = self.conn.clone();
            let started = Instant::now();
            let seq = order_log::append_one(
                &mut conn,
                &order_ref,
                &format!("{waybill}-{SCANS}"),
                &update.encode_to_vec(),
                MERCHANT,
                now_ms + 86_400_000,
            )
            .await?;
            let record = ShipmentUpdate { seq, ..update };
            self.producer
                .send(OutRecord::new(
                    topics::TRACKING_UPDATES,
                    order_ref,
                    record.encode_to_vec(),
                ))
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            sent_at.push(started);
        }
        let mut latencies = Vec::new();
        for (reader, started) in readers.into_iter().zip(sent_at) {
            if let Ok(Ok(Some(at))) = tokio::time::timeout(Duration::from_secs(60), reader).await {
                latencies.push(at.saturating_duration_since(started));
            }
        }
        latencies.sort();
        Ok(Live {
            streams: open,
            memory_mib,
            latencies,
        })
    }

    /// Stops the notifier (before Redis and the broker go).
    pub async fn stop(&self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}
