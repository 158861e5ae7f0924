//! The machine's own ceilings: raw broker produce→consume through rdkafka
//! with the pipeline's settings, and pipelined Redis `SET`s.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::follower::assigned_consumer;
use super::options::Options;

/// Raw broker rate: produce `n` records of `size` bytes with the pipeline's
/// producer settings, consume them back (same partition count and fetch wait as
/// the services); records/s from first send to last receive. `topic` is created
/// fresh for each measurement: tansu's memory storage lists every stored batch
/// of a partition on each fetch that has data, so a topic that already holds
/// records measures a slower broker.
pub(crate) async fn broker_ceiling(
    brokers: &str,
    topic: &str,
    n: usize,
    size: usize,
    partitions: i32,
    fetch_wait_ms: u64,
) -> anyhow::Result<(f64, f64)> {
    trackstream_testkit::kafka::create_topics(brokers, &[(topic, partitions)])
        .await
        .map_err(anyhow::Error::msg)?;
    let consumer = assigned_consumer(brokers, topic, partitions, fetch_wait_ms)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("partitioner", "murmur2_random")
        .create()?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let received = tokio::spawn(async move {
        let mut count = 0usize;
        while count < n {
            match tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await {
                Ok(Ok(_)) => count += 1,
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
        (count, Instant::now())
    });
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("sf:CEIL{i}");
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    for delivery in pending {
        let _ = delivery.await;
    }
    let produced = n as f64 / started.elapsed().as_secs_f64();
    let (count, last) = received.await?;
    if count < n {
        eprintln!("[bench] ceiling consumer read {count} of {n} records");
    }
    let end_to_end = count as f64 / last.duration_since(started).as_secs_f64();
    Ok((produced, end_to_end))
}

pub(crate) fn redis_ceiling(port: u16) -> anyhow::Result<f64> {
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-P",
            "32",
            "-n",
            "1000000",
            "-t",
            "set",
            "-q",
        ])
        .output()
        .context("running redis-benchmark (Debian package redis-tools)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "SET: 1234567.00 requests per second, p50=..." (last \r-separated chunk).
    text.split(['\r', '\n'])
        .filter_map(|line| line.strip_prefix("SET: "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .next_back()
        .context("unexpected redis-benchmark output")
}

/// The ceilings measured before the services start.
pub(crate) struct Ceilings {
    /// Broker produce rate, records/s.
    pub(crate) produce_rate: f64,
    /// Broker produce→consume rate, records/s.
    pub(crate) broker_rate: f64,
    /// Redis pipelined `SET`s, commands/s.
    pub(crate) redis_rate: f64,
}

/// Measures and logs the broker and Redis ceilings at the start of a run.
pub(crate) async fn measure_start(
    brokers: &str,
    redis_port: u16,
    opts: &Options,
    fetch_wait: u64,
) -> anyhow::Result<Ceilings> {
    eprintln!("[bench] measuring ceilings");
    let (produce_rate, broker_rate) = broker_ceiling(
        brokers,
        "bench.ceiling.start",
        opts.ceiling_records,
        600,
        opts.partitions,
        fetch_wait,
    )
    .await?;
    let redis_rate = redis_ceiling(redis_port)?;
    eprintln!(
        "[bench] broker: produce {produce_rate:.0}/s, produce→consume {broker_rate:.0}/s; redis SET -P32 {redis_rate:.0}/s"
    );
    Ok(Ceilings {
        produce_rate,
        broker_rate,
        redis_rate,
    })
}
