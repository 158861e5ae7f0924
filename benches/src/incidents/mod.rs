//! The incident benchmark behind `trackstream-incidents`
//! (`cargo run --release -p trackstream-benches --bin trackstream-incidents`).
//!
//! Weeks of generated traffic ([`world`]: three carriers, 30 cities with
//! Zipf-sized hubs, random stalls, late trucks holding a handful of parcels
//! at once, and — after a warm-up week that builds every place's baseline —
//! injected hub closures) are fed in event-time order, as a live run reads
//! them, through the real incident detector (`trackstream_incidents::stream::
//! IncidentDetector`) against a real Redis, publishing to a real broker. It
//! reports how long after the stall threshold each closure was detected,
//! how many incidents opened without a closure (per week of traffic; the
//! goal is 0), how many parcels each linked and how precisely, the merchant
//! notifications and buyer messages with and without incidents, and the cost
//! per input record (the detector's CPU and Redis's).

mod report;
mod world;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use trackstream_incidents::IncidentsConfig;
use trackstream_incidents::store::IncidentStore;
use trackstream_incidents::stream::IncidentDetector;
use trackstream_proto::topics;
use trackstream_proto::v1::Incident;
use trackstream_runtime::config::{KafkaConfig, RedisConfig};
use trackstream_runtime::kafka::{BatchHandler as _, Inbound, Producer};
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::kafka::{TopicReader, create_topics};
use trackstream_testkit::processes::{Broker, RedisServer};
use trackstream_testkit::procfs::own_cpu_seconds;

/// The command line.
#[derive(clap::Parser)]
#[command(name = "trackstream-incidents", version)]
pub struct Options {
    /// Days of traffic.
    #[arg(long, default_value_t = 21)]
    pub days: i64,
    /// Days before closures are injected and incidents are scored (every
    /// place's baseline builds up meanwhile).
    #[arg(long, default_value_t = 7)]
    pub warm_up_days: i64,
    /// Orders picked up per day (15 % have two parcels).
    #[arg(long, default_value_t = 4000)]
    pub per_day: usize,
    /// Hub closures injected per week after the warm-up.
    #[arg(long, default_value_t = 2)]
    pub closures_per_week: usize,
    /// Share of parcels with one random stall (25–48 h without a scan).
    #[arg(long, default_value_t = 0.02)]
    pub stall_rate: f64,
    /// Late trucks per day: one carrier's hub holds an hour of arrivals
    /// 25–30 h (correlated stalls of 10–50 parcels: a small real group hold,
    /// which the detector reports once it reaches the floor). 0 = the
    /// independent random stalls only.
    #[arg(long, default_value_t = 0.0)]
    pub late_trucks_per_day: f64,
    /// `incidents.floor` (default: the shipped default).
    #[arg(long)]
    pub floor: Option<u32>,
    /// `incidents.baseline_factor` (default: the shipped default).
    #[arg(long)]
    pub baseline_factor: Option<f64>,
    /// Records per batch handed to the detector.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Random seed.
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
}

/// What the run cost: records fed, wall time, the process's CPU seconds
/// (the detector and its producer), Redis's CPU seconds and memory at the end.
struct Cost {
    records: usize,
    wall: Duration,
    detector_cpu: f64,
    redis_cpu: f64,
    redis_bytes: u64,
}

async fn redis_info(url: &str, section: &str) -> anyhow::Result<String> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await?)
}

fn info_field(info: &str, field: &str) -> f64 {
    info.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn redis_cpu(url: &str) -> anyhow::Result<f64> {
    let info = redis_info(url, "cpu").await?;
    Ok(info_field(&info, "used_cpu_user") + info_field(&info, "used_cpu_sys"))
}

/// Runs the benchmark until it ends or a signal stops it (Redis and the
/// broker stop with it).
pub fn main(opts: &Options) -> anyhow::Result<()> {
    crate::until_stopped(run(opts), || eprintln!("trackstream-incidents: stopping"))
}

/// Runs the benchmark and prints its report.
pub async fn run(opts: &Options) -> anyhow::Result<()> {
    let world = world::generate(opts);
    eprintln!(
        "generated {} parcels, {} records, {} closures, {} late trucks",
        world.parcels,
        world.inputs.len(),
        world.closures.len(),
        world.late_trucks()
    );
    let redis = RedisServer::start().await.context("redis")?;
    let broker = Broker::start().await.context("broker")?;
    create_topics(&broker.bootstrap(), &[(topics::TRACKING_INCIDENTS, 4)])
        .await
        .map_err(anyhow::Error::msg)?;
    let kafka = KafkaConfig {
        brokers: broker.bootstrap(),
        ..KafkaConfig::default()
    };
    let mut registry = Registry::default();
    let producer = Producer::new(&kafka, "trackstream-incidents-bench", &mut registry)?;
    let conn = RedisConn::connect(&RedisConfig {
        url: redis.url(),
        cluster_nodes: Vec::new(),
    })
    .await?;
    let mut config = IncidentsConfig::default();
    config.floor = opts.floor.unwrap_or(config.floor);
    config.baseline_factor = opts.baseline_factor.unwrap_or(config.baseline_factor);
    config.validate().map_err(anyhow::Error::msg)?;
    let floor = config.floor as usize;
    let keep = trackstream_runtime::config::duration::millis(config.keep);
    let detector = IncidentDetector::new(
        IncidentStore::new(conn, keep),
        producer,
        config,
        &mut registry,
    );

    let (cpu0, redis0, started) = (
        own_cpu_seconds(),
        redis_cpu(&redis.url()).await?,
        Instant::now(),
    );
    let mut offset = 0i64;
    for chunk in world.inputs.chunks(opts.batch.max(1)) {
        let batch: Vec<Inbound> = chunk
            .iter()
            .map(|input| {
                offset += 1;
                Inbound {
                    topic: input.topic.to_owned(),
                    partition: 0,
                    offset,
                    key: None,
                    payload: input.payload.clone(),
                    headers: Vec::new(),
                }
            })
            .collect();
        detector
            .handle(&batch)
            .await
            .map_err(|e| anyhow::anyhow!(e.0))?;
    }
    let cost = Cost {
        records: world.inputs.len(),
        wall: started.elapsed(),
        detector_cpu: own_cpu_seconds() - cpu0,
        redis_cpu: redis_cpu(&redis.url()).await? - redis0,
        redis_bytes: info_field(&redis_info(&redis.url(), "memory").await?, "used_memory") as u64,
    };
    let expected = detector.records_published();
    let mut reader = TopicReader::new(&broker.bootstrap(), topics::TRACKING_INCIDENTS);
    reader
        .until(
            Duration::from_secs(120),
            "every published incident record",
            |r| r.len() as u64 >= expected,
        )
        .await;
    let records: Vec<Incident> = reader.decoded();
    report::print(opts, floor, &world, &records, &cost);
    Ok(())
}
