//! A scaling run: for each Redis setup and instance count, a fresh broker,
//! Redis and backlog; then each consuming stage drains it in pipeline order.

use std::time::Duration;

use chrono::Utc;
use trackstream_loadgen::{self as loadgen, Mix, Secrets};
use trackstream_proto::topics;
use trackstream_testkit::cluster::RedisCluster;
use trackstream_testkit::processes::{Broker, RedisServer};
use trackstream_testkit::procfs::cpu_seconds;

use super::options::{Options, RedisMode};
use super::report::{self, Backlog, Run};
use super::stage::{Around, STAGES, drain, end_offsets, redis_info_sum, topic_bytes};
use crate::e2e::load::{Ingest, register, send_schedule};
use crate::e2e::stack::{
    Ports, RedisTarget, Service, Tuning, children_named, wait_healthy, warn_stale, write_configs,
};

/// Runs every configuration until done or `SIGINT`/`SIGTERM` (the children
/// go with the dropped run either way).
pub fn run_until_stopped(opts: &Options) -> anyhow::Result<()> {
    crate::until_stopped(run(opts), || {})
}

async fn run(opts: &Options) -> anyhow::Result<()> {
    warn_stale(&opts.bin_dir);
    let mut runs = Vec::new();
    for mode in &opts.redis {
        for k in &opts.instances {
            eprintln!("[scale] redis {}, {k} instance(s) per stage", mode.name());
            runs.push(one(opts, *mode, *k).await?);
            eprintln!("{}", report::markdown(opts, &runs));
        }
    }
    let text = report::markdown(opts, &runs);
    println!("{text}");
    if let Some(path) = &opts.results {
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// The Redis of one configuration, kept alive for its length.
enum Stores {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

impl Stores {
    async fn start(mode: RedisMode) -> anyhow::Result<Self> {
        Ok(match mode {
            RedisMode::Standalone => Stores::Standalone(RedisServer::start().await?),
            RedisMode::Cluster => Stores::Cluster(RedisCluster::start().await?),
        })
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Stores::Standalone(server) => vec![server.url()],
            Stores::Cluster(cluster) => cluster.urls(),
        }
    }

    fn target(&self) -> RedisTarget {
        match self {
            Stores::Standalone(server) => RedisTarget::Standalone(server.url()),
            Stores::Cluster(cluster) => RedisTarget::Cluster(cluster.urls()),
        }
    }
}

/// One configuration: fill the backlog through ingest, then drain it stage
/// by stage with `k` instances each.
async fn one(opts: &Options, mode: RedisMode, k: usize) -> anyhow::Result<Run> {
    let stores = Stores::start(mode).await?;
    let redis_baseline = redis_info_sum(&stores.urls(), "memory", "used_memory").await;
    let broker = Broker::start_direct(opts.broker_storage).await?;
    let brokers = broker.bootstrap();
    let all: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, opts.partitions)).collect();
    trackstream_testkit::kafka::create_topics(&brokers, &all)
        .await
        .map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let ports = Ports::pick()?;
    let secrets = Secrets::default();
    write_configs(
        dir.path(),
        &brokers,
        &stores.target(),
        &secrets,
        &ports,
        Tuning::default(),
    )?;
    let mut backlog = fill(opts, dir.path(), &ports, secrets).await?;
    let around = Around {
        bin_dir: &opts.bin_dir,
        config_dir: dir.path(),
        brokers: &brokers,
        partitions: opts.partitions,
        redis_pids: children_named("redis-server"),
        redis_urls: stores.urls(),
        broker_pid: broker.pid(),
    };
    let mut drains = Vec::new();
    for stage in &STAGES {
        let measured = drain(&around, stage, k).await?;
        eprintln!(
            "[scale]   {} ×{k}: {} records, {:.0}/s, first record after {:.1} s, drained in {:.1} s; CPU µs/record: service {:.1}, redis {:.1}, broker {:.1}; redis commands/record {:.2}; per instance {:?}",
            stage.name,
            measured.records,
            measured.rate,
            measured.first_record_s,
            measured.drained_s,
            measured.service_us,
            measured.redis_us,
            measured.broker_us,
            measured.redis_ops,
            measured.per_instance
        );
        drains.push(measured);
    }
    backlog.broker_records = end_offsets(&brokers, &topics::ALL, opts.partitions).await?;
    backlog.topic_bytes = topic_bytes(&brokers, opts.partitions, backlog.broker_records).await?;
    backlog.redis_bytes = redis_info_sum(&stores.urls(), "memory", "used_memory")
        .await
        .saturating_sub(redis_baseline);
    backlog.memory = super::memory::by_class(&stores.urls()).await?;
    Ok(Run {
        redis: mode,
        instances: k,
        backlog,
        drains,
    })
}

/// Registers the backlog's parcels and pushes their webhooks through one
/// ingest as fast as it accepts them, then stops ingest: the stages start on
/// a full `scans.raw` and `shipments`.
async fn fill(
    opts: &Options,
    config_dir: &std::path::Path,
    ports: &Ports,
    secrets: Secrets,
) -> anyhow::Result<Backlog> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut ingest_process =
        Service::spawn(&opts.bin_dir, config_dir, "ingest", ports.admin[0], &[])?;
    wait_healthy(&http, &mut ingest_process).await?;
    let ingest = Ingest {
        http,
        url: format!("http://127.0.0.1:{}", ports.http),
        secrets,
    };
    let mix = Mix::default();
    // ~3.8 pushes per parcel on average, duplicates included.
    let count = (opts.webhooks * 10 / 38).max(10);
    // In the past, as the end-to-end benchmark's steps: normalize refuses
    // scans dated after their receipt.
    let virtual_now = Utc::now() - chrono::Duration::days(4);
    let run = format!("S{:05x}", rand::random::<u32>() & 0xfffff);
    let parcels = loadgen::generate(count, &mix, 0, virtual_now, &run, 0);
    register(&ingest, &parcels).await?;
    let order = loadgen::schedule(&parcels, &mix, 0);
    eprintln!(
        "[scale]   writing the backlog: {} parcels, {} webhooks",
        parcels.len(),
        order.len()
    );
    let ingest_pid = ingest_process.child.id();
    let cpu_before = cpu_seconds(ingest_pid);
    let sending = send_schedule(&ingest, &parcels, &order, 1e6, opts.concurrency).await?;
    let ingest_cpu = cpu_seconds(ingest_pid) - cpu_before;
    ingest_process.terminate(Duration::from_secs(30)).await;
    if sending.failed > 0 {
        eprintln!(
            "[scale]   WARNING: {} webhooks were not accepted",
            sending.failed
        );
    }
    let (webhooks, scans) = sending.accepted;
    eprintln!(
        "[scale]   backlog: {webhooks} webhooks ({scans} scans) accepted in {:.1} s",
        sending.sent_in.as_secs_f64()
    );
    Ok(Backlog {
        parcels: parcels.len(),
        webhooks,
        scans,
        ingest_us: ingest_cpu / webhooks.max(1) as f64 * 1e6,
        ingest_rate: webhooks as f64 / sending.sent_in.as_secs_f64().max(1e-3),
        topic_bytes: 0,
        broker_records: 0,
        redis_bytes: 0,
        memory: Default::default(),
    })
}
