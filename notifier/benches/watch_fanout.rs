//! Bench (not a test): how many concurrent WatchOrder streams one notifier
//! instance holds, what they cost in memory, and how long an update takes to
//! reach its watchers.
//!
//! Runs the real `trackstream-notifier` binary (release build, default settings
//! apart from addresses) against a real redis-server and broker started by the
//! harness, so the RSS measured is the notifier's alone. The bench process plays
//! the detector (order log in Redis + `tracking.updates`) and the clients.
//!
//! ```text
//! cargo bench -p trackstream-notifier --bench watch_fanout
//! TRACKSTREAM_BENCH_WATCHERS=20000 cargo bench -p trackstream-notifier --bench watch_fanout
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use trackstream_proto::v1::tracking_service_client::TrackingServiceClient;
use trackstream_proto::v1::{
    Shipment, ShipmentUpdate, Status, TrackingEvent, UpdateKind, WatchOrderRequest,
};
use trackstream_proto::{time, topics};
use trackstream_runtime::config::KafkaConfig;
use trackstream_runtime::kafka::{OutRecord, Producer};
use trackstream_runtime::order_log;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::grpc::authed;
use trackstream_testkit::processes::{Broker, RedisServer};

const TOKEN: &str = "bench-merchant-token";
const STREAMS_PER_CONNECTION: usize = 500;
const SEQUENTIAL_UPDATES: usize = 200;
const BURST_ORDERS: usize = 1_000;
const HOT_WATCHERS: usize = 1_000;

struct Notifier(Child);

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
    )
}

struct Detector {
    conn: RedisConn,
    producer: Producer,
}

impl Detector {
    fn update(order: &str, n: u64) -> ShipmentUpdate {
        let shipment = Shipment {
            order_id: order.into(),
            merchant_id: "m-bench".into(),
            carrier: "sf".into(),
            waybill: format!("W-{order}"),
            ..Shipment::default()
        };
        ShipmentUpdate {
            seq: 0,
            order_id: order.into(),
            merchant_id: "m-bench".into(),
            event: Some(TrackingEvent {
                event_id: format!("{order}-{n}"),
                carrier: "sf".into(),
                waybill: shipment.waybill.clone(),
                status: Status::InTransit as i32,
                raw_text: "Departed sorting centre".into(),
                occurred_at: Some(time::from_millis(
                    1_741_600_000_000 + 1_000 * i64::try_from(n).unwrap_or(0),
                )),
                ..TrackingEvent::default()
            }),
            current_status: Status::InTransit as i32,
            late: false,
            kind: UpdateKind::Scan as i32,
            shipment: Some(shipment),
            ..ShipmentUpdate::default()
        }
    }

    /// What the detector does before producing: next seq + order log.
    async fn prepare(&self, updates: Vec<ShipmentUpdate>) -> (Vec<OutRecord>, Vec<u64>) {
        let mut conn = self.conn.clone();
        let mut records = Vec::with_capacity(updates.len());
        let mut seqs = Vec::with_capacity(updates.len());
        for mut update in updates {
            // The detector's own append (one encoder of log entries); `update`
            // carries no seq yet, so its encoding is the body the append wants.
            let order = order_log::order_ref(&update.merchant_id, &update.order_id);
            let update_id = update
                .event
                .as_ref()
                .map(|e| e.event_id.clone())
                .unwrap_or_default();
            let seq = order_log::append_one(
                &mut conn,
                &order,
                &update_id,
                &update.encode_to_vec(),
                &update.merchant_id,
                4_102_444_800_000, // 2100-01-01: not within a run
            )
            .await
            .unwrap();
            update.seq = seq;
            let bytes = update.encode_to_vec();
            let key = format!("sf:W-{}", update.order_id);
            records.push(OutRecord::new(topics::TRACKING_UPDATES, key, bytes));
            seqs.push(seq);
        }
        (records, seqs)
    }

    /// Produces and waits for the broker's acknowledgement.
    async fn send(&self, records: Vec<OutRecord>) {
        self.producer.send_all(records).await.unwrap();
    }
}

/// (watcher index, seq, when received)
type Receipt = (usize, u64, Instant);

async fn open_watchers(
    clients: &[TrackingServiceClient<Channel>],
    orders: impl Iterator<Item = (usize, String)>,
    receipts: &mpsc::UnboundedSender<Receipt>,
    opened: &Arc<AtomicUsize>,
) -> usize {
    let mut count = 0;
    for (index, order) in orders {
        let mut client = clients[index % clients.len()].clone();
        let receipts = receipts.clone();
        let opened = opened.clone();
        tokio::spawn(async move {
            let request = authed(
                WatchOrderRequest {
                    order_id: order,
                    after_seq: 0,
                },
                TOKEN,
            );
            let mut stream = match client.watch_order(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    eprintln!("watch {index} refused: {status}");
                    return;
                }
            };
            opened.fetch_add(1, Ordering::AcqRel);
            while let Ok(Some(update)) = stream.message().await {
                if receipts.send((index, update.seq, Instant::now())).is_err() {
                    return;
                }
            }
        });
        count += 1;
    }
    count
}

async fn metric(admin: &str, name: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://{admin}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let watchers: usize = std::env::var("TRACKSTREAM_BENCH_WATCHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let redis = RedisServer::start().await.unwrap();
    let broker = Broker::start().await.unwrap();
    let all: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, 4)).collect();
    trackstream_testkit::kafka::create_topics(&broker.bootstrap(), &all)
        .await
        .unwrap();
    let grpc_port = trackstream_testkit::free_port().unwrap();
    let admin_port = trackstream_testkit::free_port().unwrap();
    let dir = tempfile_dir();
    let config_path = dir.join("notifier.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"[kafka]
brokers = "{brokers}"
[redis]
url = "{redis}"
[admin]
listen = "127.0.0.1:{admin_port}"
log_level = "warn"
[grpc]
listen = "127.0.0.1:{grpc_port}"
max_watchers = {max_watchers}
[[merchants]]
id = "m-bench"
name = "Bench"
tokens = ["{TOKEN}"]
"#,
            brokers = broker.bootstrap(),
            redis = redis.url(),
            max_watchers = (watchers + HOT_WATCHERS).max(20_000),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("notifier.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_trackstream-notifier"))
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    let _notifier = Notifier(child);
    let grpc_url = format!("http://127.0.0.1:{grpc_port}");
    let admin = format!("127.0.0.1:{admin_port}");

    wait_for(
        "the notifier to serve",
        Duration::from_secs(60),
        async || {
            let Ok(channel) = Endpoint::from_shared(grpc_url.clone())
                .unwrap()
                .connect()
                .await
            else {
                return false;
            };
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: "trackstream.v1.TrackingService".into(),
                })
                .await
                .is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32)
        },
    )
    .await;

    let redis_config = trackstream_runtime::config::RedisConfig {
        url: redis.url(),
        cluster_nodes: Vec::new(),
    };
    let conn = RedisConn::connect(&redis_config).await.unwrap();
    let kafka = KafkaConfig {
        brokers: broker.bootstrap(),
        ..KafkaConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let detector = Detector {
        conn: conn.clone(),
        producer: Producer::new(&kafka, "bench", &mut registry).unwrap(),
    };
    // Orders exist (owner recorded) before anyone watches them.
    let mut seed = conn.clone();
    for chunk in (0..watchers).collect::<Vec<_>>().chunks(1_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.set(
                order_log::key(
                    &order_log::order_ref("m-bench", &format!("B-{i}")),
                    "merchant",
                ),
                "m-bench",
            )
            .ignore();
        }
        let _: () = pipe.query_async(&mut seed).await.unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg(order_log::key(
            &order_log::order_ref("m-bench", "HOT"),
            "merchant",
        ))
        .arg("m-bench")
        .query_async(&mut seed)
        .await
        .unwrap();

    // Let the idle process settle, then measure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);

    let connections = watchers.div_ceil(STREAMS_PER_CONNECTION).max(1);
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(grpc_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(TrackingServiceClient::new(channel));
    }
    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<Receipt>();
    let opened = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    open_watchers(
        &clients,
        (0..watchers).map(|i| (i, format!("B-{i}"))),
        &receipts_tx,
        &opened,
    )
    .await;
    wait_for("every watch open", Duration::from_secs(300), async || {
        opened.load(Ordering::Acquire) >= watchers
    })
    .await;
    let open_time = started.elapsed();
    #[allow(clippy::cast_precision_loss)]
    let expected = watchers as f64;
    wait_for(
        "the server to count them",
        Duration::from_secs(60),
        async || metric(&admin, "trackstream_notifier_grpc_watchers").await >= expected,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_streams = rss_kib(pid);

    // (a) One update at a time to one watched order: detector → Kafka → live
    // follower → hub → gRPC → client.
    let mut sequential = Vec::with_capacity(SEQUENTIAL_UPDATES);
    let mut acks = Vec::with_capacity(SEQUENTIAL_UPDATES);
    for k in 0..SEQUENTIAL_UPDATES {
        let index = (k * 7_919) % watchers;
        let order = format!("B-{index}");
        let (records, seqs) = detector
            .prepare(vec![Detector::update(&order, k as u64)])
            .await;
        let sent = Instant::now();
        detector.send(records).await;
        acks.push(sent.elapsed());
        let seq = seqs[0];
        loop {
            let (who, got, at) = tokio::time::timeout(Duration::from_secs(30), receipts.recv())
                .await
                .expect("update delivered")
                .unwrap();
            if who == index && got == seq {
                sequential.push(at - sent);
                break;
            }
        }
    }

    // (b) A burst: one update to each of 1 000 different orders at once.
    let burst_orders: Vec<usize> = (0..BURST_ORDERS.min(watchers))
        .map(|k| (k * 13 + 1) % watchers)
        .collect();
    let (records, _) = detector
        .prepare(
            burst_orders
                .iter()
                .map(|i| Detector::update(&format!("B-{i}"), 1_000_000))
                .collect(),
        )
        .await;
    let sent = Instant::now();
    detector.send(records).await;
    let mut burst = Vec::with_capacity(burst_orders.len());
    while burst.len() < burst_orders.len() {
        let (_, _, at) = tokio::time::timeout(Duration::from_secs(30), receipts.recv())
            .await
            .expect("burst delivered")
            .unwrap();
        burst.push(at - sent);
    }
    let burst_total = burst.iter().max().copied().unwrap_or_default();

    // (c) A hot order: 1 000 more watchers of one order, one update.
    let hot_opened = Arc::new(AtomicUsize::new(0));
    open_watchers(
        &clients,
        (watchers..watchers + HOT_WATCHERS).map(|i| (i, "HOT".to_owned())),
        &receipts_tx,
        &hot_opened,
    )
    .await;
    wait_for("hot watches open", Duration::from_secs(120), async || {
        hot_opened.load(Ordering::Acquire) >= HOT_WATCHERS
    })
    .await;
    #[allow(clippy::cast_precision_loss)]
    let expected_total = (watchers + HOT_WATCHERS) as f64;
    wait_for(
        "the server to count them",
        Duration::from_secs(60),
        async || metric(&admin, "trackstream_notifier_grpc_watchers").await >= expected_total,
    )
    .await;
    let (records, _) = detector.prepare(vec![Detector::update("HOT", 1)]).await;
    let sent = Instant::now();
    detector.send(records).await;
    let mut hot = Vec::with_capacity(HOT_WATCHERS);
    while hot.len() < HOT_WATCHERS {
        let (who, _, at) = tokio::time::timeout(Duration::from_secs(30), receipts.recv())
            .await
            .expect("hot update delivered")
            .unwrap();
        if who >= watchers {
            hot.push(at - sent);
        }
    }
    let rss_end = rss_kib(pid);
    let cutoffs = metric(&admin, "trackstream_notifier_grpc_watch_cutoffs_total").await;

    #[allow(clippy::cast_precision_loss)]
    let per_stream = (rss_streams.saturating_sub(rss_idle) as f64 * 1024.0) / watchers as f64;
    println!("## notifier watch_fanout bench");
    println!();
    println!(
        "- concurrent WatchOrder streams held: {watchers} (+{HOT_WATCHERS} on one hot order), over {connections} HTTP/2 connections; opened in {:.1} s",
        open_time.as_secs_f64()
    );
    println!(
        "- notifier RSS: idle {:.1} MiB; with {watchers} streams {:.1} MiB (≈ {:.1} KiB per stream); at the end {:.1} MiB",
        rss_idle as f64 / 1024.0,
        rss_streams as f64 / 1024.0,
        per_stream / 1024.0,
        rss_end as f64 / 1024.0
    );
    println!("- watchers cut off during the run: {cutoffs}");
    println!();
    println!("| produce → client latency | n | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("one update, one watcher (sequential)", sequential)
    );
    println!("{}", summary("(of which: producer acknowledged)", acks));
    println!(
        "{}",
        summary(
            &format!("burst: 1 update to each of {} orders", burst_orders.len()),
            burst
        )
    );
    println!(
        "{}",
        summary(
            &format!("hot order: 1 update, {HOT_WATCHERS} watchers"),
            hot
        )
    );
    println!();
    println!(
        "burst fully delivered in {:.1} ms",
        burst_total.as_secs_f64() * 1e3
    );
    drop(receipts_tx);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("trackstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
