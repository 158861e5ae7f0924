//! The web face's benchmark behind `trackstream-web`
//! (`cargo run --release -p trackstream-benches --bin trackstream-web`).
//!
//! A real notifier (in this process, with its web face) over a real Redis and
//! broker, seeded with buyers whose orders have a registration (through
//! `shipments`, so the messenger builds the buyer index as in production) and
//! a scan history in the order log. Two measurements:
//!
//! 1. **Buyer views**: `--clients` concurrent clients each open a random
//!    buyer's link (`GET /api/v1/track/{token}`: verify the link, read the
//!    buyer index, read and render every order) for `--seconds`: answers per
//!    second and latency percentiles.
//! 2. **Live pages**: `--streams` open buyer event streams (one per order, as
//!    pages hold them); then one new update per order is appended to its log
//!    and produced to `tracking.updates`, and each stream's time from the
//!    produce to the `update` event is measured — the live follower, the hub
//!    and the SSE path together; plus the process's memory per open stream.
//!
//! Client and server share the process (and its CPU): the numbers are what
//! one notifier instance answers with this machine's two cores split between
//! them, a lower bound for a notifier on its own cores.

mod seed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use trackstream_testkit::kafka::create_topics;
use trackstream_testkit::processes::{Broker, RedisServer};

pub use seed::World;

/// The command line.
#[derive(clap::Parser)]
#[command(name = "trackstream-web", version)]
pub struct Options {
    /// Buyers (each with 1–3 orders of one parcel, 6 scans each).
    #[arg(long, default_value_t = 1000)]
    pub buyers: usize,
    /// Concurrent clients opening buyer views.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// How long the buyer views are measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Buyer event streams held open for the live measurement (at most one per order).
    #[arg(long, default_value_t = 1000)]
    pub streams: usize,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Runs the benchmark.
pub fn main(opts: &Options) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?
        .block_on(run(opts))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run(opts: &Options) -> anyhow::Result<()> {
    let redis = RedisServer::start()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let broker = Broker::start().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let topics: Vec<(&str, i32)> = trackstream_proto::topics::ALL
        .iter()
        .map(|t| (*t, 4))
        .collect();
    create_topics(&broker.bootstrap(), &topics)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let world = World::start(&redis, &broker, opts).await?;
    println!(
        "seeded {} buyers, {} orders ({} scans) in {:.1}s; web face at {}",
        world.buyers.len(),
        world.orders(),
        world.orders() * seed::SCANS,
        world.seeded_in.as_secs_f64(),
        world.base
    );

    // 1. Buyer views.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients)
        .build()
        .context("http client")?;
    let world = Arc::new(world);
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let mut tasks = Vec::new();
    for client in 0..opts.clients {
        let (http, world) = (http.clone(), world.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = client;
            while Instant::now() < deadline {
                let buyer = &world.buyers[(i * 7919) % world.buyers.len()];
                i += opts_step();
                let started = Instant::now();
                let ok = http
                    .get(format!("{}/api/v1/track/{}", world.base, buyer.token))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("client task")?);
    }
    latencies.sort();
    println!(
        "\nbuyer views: {} answered in {}s by {} clients = {:.0}/s; latency p50 {}, p99 {}, p99.9 {}, max {}",
        latencies.len(),
        opts.seconds,
        opts.clients,
        latencies.len() as f64 / opts.seconds as f64,
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or_default()),
    );

    // 2. Live pages.
    let live = world.live(opts.streams).await?;
    println!(
        "live pages: {} streams open (process memory +{:.1} MiB, {:.1} KiB per stream); \
         {} of {} updates reached their page; produce → page p50 {}, p99 {}, max {}",
        live.streams,
        live.memory_mib,
        live.memory_mib * 1024.0 / live.streams.max(1) as f64,
        live.latencies.len(),
        live.streams,
        ms(percentile(&live.latencies, 0.5)),
        ms(percentile(&live.latencies, 0.99)),
        ms(live.latencies.last().copied().unwrap_or_default()),
    );
    world.stop().await;
    Ok(())
}

/// How far each client steps through the buyers (a prime, so every client
/// walks all of them in its own order).
fn opts_step() -> usize {
    104_729
}
