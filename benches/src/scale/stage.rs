//! One consuming stage drained by `k` instances of one consumer group: start
//! them on the backlog its input topics hold, sample their record counters and
//! the CPU of every process until the backlog is consumed, stop them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use trackstream_proto::topics;
use trackstream_testkit::procfs::cpu_seconds;

use crate::e2e::stack::Service;

/// A consuming stage and the topics its (measured) consumer group reads.
pub(crate) struct Stage {
    pub(crate) name: &'static str,
    pub(crate) inputs: &'static [&'static str],
}

/// The three consuming stages, in pipeline order: each drains what the one
/// before it produced. The notifier's per-instance live group starts at the
/// log end (it fans out only what arrives while a client watches), so the
/// backlog is read by its message group alone.
pub(crate) const STAGES: [Stage; 3] = [
    Stage {
        name: "normalize",
        inputs: &[topics::SCANS_RAW],
    },
    Stage {
        name: "detector",
        inputs: &[topics::TRACKING_EVENTS, topics::SHIPMENTS],
    },
    Stage {
        name: "notifier",
        inputs: &[
            topics::TRACKING_UPDATES,
            topics::TRACKING_ALERTS,
            topics::SHIPMENTS,
        ],
    },
];

/// What a run has around the stage: where binaries and configs are, and the
/// processes whose CPU is charged to it.
pub(crate) struct Around<'a> {
    pub(crate) bin_dir: &'a Path,
    pub(crate) config_dir: &'a Path,
    pub(crate) brokers: &'a str,
    pub(crate) partitions: i32,
    pub(crate) redis_pids: Vec<u32>,
    pub(crate) redis_urls: Vec<String>,
    pub(crate) broker_pid: Option<u32>,
}

/// One stage's drain, measured.
#[derive(Debug, Clone)]
pub(crate) struct Drain {
    pub(crate) stage: &'static str,
    pub(crate) instances: usize,
    /// Input records of the backlog.
    pub(crate) records: u64,
    /// From starting the instances to the first record processed (start-up
    /// and the group's first assignment).
    pub(crate) first_record_s: f64,
    /// From starting the instances to the last record processed.
    pub(crate) drained_s: f64,
    /// Records/s between 10 % and 90 % of the backlog (steady state).
    pub(crate) rate: f64,
    /// CPU per record over the same window, µs: the stage's instances, Redis
    /// (all nodes), the broker.
    pub(crate) service_us: f64,
    pub(crate) redis_us: f64,
    pub(crate) broker_us: f64,
    /// Redis commands per record over the same window (all nodes).
    pub(crate) redis_ops: f64,
    /// Records each instance processed.
    pub(crate) per_instance: Vec<u64>,
}

/// One reading of the counters and CPU clocks.
struct Sample {
    at: Instant,
    total: u64,
    per_instance: Vec<u64>,
    service_cpu: f64,
    redis_cpu: f64,
    broker_cpu: f64,
    redis_ops: u64,
}

/// Drains `stage`'s backlog with `k` instances and measures it.
pub(crate) async fn drain(around: &Around<'_>, stage: &Stage, k: usize) -> anyhow::Result<Drain> {
    let records = end_offsets(around.brokers, stage.inputs, around.partitions).await?;
    if records == 0 {
        bail!("{}: nothing to drain", stage.name);
    }
    let mut instances = Vec::with_capacity(k);
    for _ in 0..k {
        let admin = trackstream_testkit::free_port()?;
        // Only the notifier has a listener besides the admin one.
        let mut env = Vec::new();
        if stage.name == "notifier" {
            let grpc = trackstream_testkit::free_port()?;
            env.push(("TRACKSTREAM__GRPC__LISTEN", format!("127.0.0.1:{grpc}")));
        }
        instances.push(Service::spawn(
            around.bin_dir,
            around.config_dir,
            stage.name,
            admin,
            &env,
        )?);
    }
    let started = Instant::now();
    let samples = sample_until_drained(around, stage, &mut instances, records).await;
    for instance in &mut instances {
        instance.terminate(Duration::from_secs(30)).await;
    }
    let samples = samples?;
    summarize(stage, k, records, started, &samples)
}

async fn sample_until_drained(
    around: &Around<'_>,
    stage: &Stage,
    instances: &mut [Service],
    records: u64,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples: Vec<Sample> = Vec::new();
    let mut progressed = Instant::now();
    loop {
        for instance in instances.iter_mut() {
            instance.check_running()?;
        }
        let sample = read(around, instances).await;
        if samples.last().is_none_or(|last| sample.total > last.total) {
            progressed = Instant::now();
        }
        let total = sample.total;
        samples.push(sample);
        if total >= records {
            return Ok(samples);
        }
        if progressed.elapsed() > Duration::from_secs(60) {
            bail!(
                "{}: stuck at {total} of {records} records for 60 s; a log ends:\n{}",
                stage.name,
                instances.first().map(Service::log_tail).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read(around: &Around<'_>, instances: &[Service]) -> Sample {
    let mut per_instance = Vec::with_capacity(instances.len());
    for instance in instances {
        let addr = SocketAddr::from(([127, 0, 0, 1], instance.admin_port));
        let metrics = trackstream_testkit::admin::get(addr, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        per_instance.push(records_processed(&metrics));
    }
    Sample {
        at: Instant::now(),
        total: per_instance.iter().sum(),
        per_instance,
        service_cpu: instances.iter().map(|s| cpu_seconds(s.child.id())).sum(),
        redis_cpu: around.redis_pids.iter().map(|p| cpu_seconds(*p)).sum(),
        broker_cpu: around.broker_pid.map_or(0.0, cpu_seconds),
        redis_ops: redis_info_sum(&around.redis_urls, "stats", "total_commands_processed").await,
    }
}

/// `trackstream_<service>_consumer_records_total` of the instance's own
/// groups: the notifier's live group (`…_live_consumer_records_total`) is left
/// out.
fn records_processed(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| {
            line.split_once('{').is_some_and(|(name, _)| {
                name.ends_with("_consumer_records_total")
                    && !name.ends_with("_live_consumer_records_total")
            })
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The sum over every Redis node at `urls` of the `INFO <section>` field
/// `field` (an unreachable node counts 0: the reading is a measurement, not a
/// check).
pub(crate) async fn redis_info_sum(urls: &[String], section: &str, field: &str) -> u64 {
    let mut total = 0;
    for url in urls {
        let Ok(client) = redis::Client::open(url.as_str()) else {
            continue;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        total += info
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

fn summarize(
    stage: &Stage,
    k: usize,
    records: u64,
    started: Instant,
    samples: &[Sample],
) -> anyhow::Result<Drain> {
    let at_share = |share: f64| {
        samples
            .iter()
            .find(|s| s.total as f64 >= share * records as f64)
    };
    let (Some(first), Some(low), Some(high), Some(last)) = (
        at_share(f64::MIN_POSITIVE),
        at_share(0.1),
        at_share(0.9),
        samples.last(),
    ) else {
        bail!("{}: too few samples", stage.name);
    };
    let window = high.at.duration_since(low.at).as_secs_f64();
    let done = (high.total - low.total) as f64;
    if window <= 0.0 || done <= 0.0 {
        bail!(
            "{}: the backlog went in under one sample; raise --webhooks",
            stage.name
        );
    }
    let per_record_us = |cpu: f64| cpu / done * 1e6;
    Ok(Drain {
        stage: stage.name,
        instances: k,
        records,
        first_record_s: first.at.duration_since(started).as_secs_f64(),
        drained_s: last.at.duration_since(started).as_secs_f64(),
        rate: done / window,
        service_us: per_record_us(high.service_cpu - low.service_cpu),
        redis_us: per_record_us(high.redis_cpu - low.redis_cpu),
        broker_us: per_record_us(high.broker_cpu - low.broker_cpu),
        redis_ops: high.redis_ops.saturating_sub(low.redis_ops) as f64 / done,
        per_instance: last.per_instance.clone(),
    })
}

/// Records in `topics` (sum of every partition's high watermark; the topics
/// are fresh, so the log start is 0).
pub(crate) async fn end_offsets(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "trackstream-scale-watermarks")
        .create()?;
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        for topic in &topics {
            for partition in 0..partitions {
                let (_, high) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
                total += u64::try_from(high).unwrap_or(0);
            }
        }
        Ok(total)
    })
    .await?
}

/// Key + value bytes of every record of every topic (read from the start by
/// assignment, no group), stopping once `records` were read or 60 s passed.
pub(crate) async fn topic_bytes(
    brokers: &str,
    partitions: i32,
    records: u64,
) -> anyhow::Result<u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "trackstream-scale-bytes")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics::ALL {
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    tokio::task::spawn_blocking(move || {
        let (mut read, mut bytes) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(60);
        while read < records && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                read += 1;
                bytes += (message.key_len() + message.payload_len()) as u64;
            }
        }
        bytes
    })
    .await
    .map_err(anyhow::Error::from)
}
