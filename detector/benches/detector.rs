//! Detector bench (not a test): throughput per instance, Redis memory per
//! active waybill, and timer firing rate and lateness with 1 000 000 armed
//! deadlines, against a local redis-server the test kit starts.
//!
//! `cargo bench -p trackstream-detector --bench detector` (release build).
//! `DETECTOR_BENCH_SCALE=0.1` shrinks every population for a quick look;
//! `DETECTOR_BENCH_ONLY=throughput|memory|timers|cluster` runs the listed
//! parts (comma-separated; `cluster`, the throughput load against a
//! three-master Redis Cluster, runs only when listed).
//! Results and their reading: `benches/results/detector.md`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prost::Message;
use trackstream_detector::config::ClockMode;
use trackstream_detector::engine::{Effects, Engine, Input, Waybill};
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::store;
use trackstream_proto::v1::{Alert, Status};
use trackstream_proto::{time, topics};
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::kafka::Inbound;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::RedisServer;

mod fixtures;

use fixtures::*;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

fn scale(n: usize) -> usize {
    let factor: f64 = std::env::var("DETECTOR_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64) * factor).max(1.0) as usize
}

async fn run() -> anyhow::Result<()> {
    let server = RedisServer::start().await.context("redis-server")?;
    println!(
        "redis-server {} on 127.0.0.1:{}",
        redis_version(&server).await?,
        server.port
    );
    let only = std::env::var("DETECTOR_BENCH_ONLY").unwrap_or_default();
    let runs = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    if runs("throughput") {
        throughput(&server).await?;
    }
    // Opt-in: a three-master cluster on the same two cores.
    if only.split(',').any(|p| p == "cluster") {
        throughput_cluster().await?;
    }
    if runs("memory") {
        memory(&server).await?;
    }
    if runs("timers") {
        timers(&server).await?;
    }
    Ok(())
}

async fn raw(server: &RedisServer) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?)
}

async fn redis_version(server: &RedisServer) -> anyhow::Result<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut raw(server).await?)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned())
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("used_memory in INFO")
}

async fn flush(server: &RedisServer) -> anyhow::Result<()> {
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut raw(server).await?)
        .await?;
    Ok(())
}

/// Events/s through `apply_batch` (dedup, fold, Lua commit, outbox, sequence
/// numbers; the sink is memory, so Kafka is not in the number).
async fn throughput(server: &RedisServer) -> anyhow::Result<()> {
    flush(server).await?;
    drive_throughput(
        "throughput",
        connect(server).await?,
        vec![raw(server).await?],
    )
    .await
}

/// The same load against a three-master Redis Cluster (all on this machine):
/// sequence numbers are then assigned by a script per update in the order's
/// slot instead of inside the partition's commit.
async fn throughput_cluster() -> anyhow::Result<()> {
    let cluster = trackstream_testkit::cluster::RedisCluster::start()
        .await
        .context("redis cluster")?;
    let conn = RedisConn::connect(&RedisConfig {
        url: String::new(),
        cluster_nodes: cluster.urls(),
    })
    .await?;
    let mut nodes = Vec::new();
    for url in cluster.urls() {
        nodes.push(
            redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?,
        );
    }
    drive_throughput("cluster throughput", conn, nodes).await
}

/// Drives the throughput load through `conn`; `nodes` are direct connections
/// to every server, for CPU and command statistics (summed).
async fn drive_throughput(
    label: &str,
    conn: RedisConn,
    mut nodes: Vec<redis::aio::MultiplexedConnection>,
) -> anyhow::Result<()> {
    let parcels = scale(20_000);
    let t0 = 1_704_067_200_000;
    let mut records = Vec::new();
    let statuses = [
        (Status::PickedUp, 2),
        (Status::InTransit, 10),
        (Status::InTransit, 20),
        (Status::OutForDelivery, 30),
        (Status::Delivered, 33),
    ];
    let mut timed: Vec<(i64, Inbound)> = Vec::new();
    for i in 0..parcels {
        let k = key(i);
        let start = t0 + i64::try_from(i % 1000).unwrap_or(0) * 60_000;
        timed.push((
            start,
            record(
                topics::SHIPMENTS,
                partition(i),
                &k,
                registration(&k, i, start).encode_to_vec(),
            ),
        ));
        for (status, h) in statuses {
            let at = start + h * H;
            timed.push((
                at,
                record(
                    topics::TRACKING_EVENTS,
                    partition(i),
                    &k,
                    scan(&k, status, at).encode_to_vec(),
                ),
            ));
        }
    }
    timed.sort_by_key(|(at, _)| *at);
    records.extend(timed.into_iter().map(|(_, r)| r));
    let events = parcels * statuses.len();
    let detector = detector(conn, ClockMode::Event);
    let mut redis_cpu = 0.0;
    for node in &mut nodes {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(node)
            .await?;
        redis_cpu -= redis_cpu_seconds(node).await?;
    }
    let own_cpu = trackstream_testkit::procfs::own_cpu_seconds();
    let started = Instant::now();
    for batch in records.chunks(500) {
        detector
            .apply_batch(batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = detector.sink().take();
    }
    let elapsed = started.elapsed();
    println!(
        "{label}: {events} events + {parcels} registrations in {:.2} s = {:.0} events/s ({:.0} records/s), batches of 500, {PARTITIONS} partitions",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        records.len() as f64 / elapsed.as_secs_f64()
    );
    for node in &mut nodes {
        redis_cpu += redis_cpu_seconds(node).await?;
    }
    let own_cpu = trackstream_testkit::procfs::own_cpu_seconds() - own_cpu;
    println!(
        "{label}: CPU over {:.2} s wall: redis-server {:.2} s ({:.1} µs/event), bench process (detector + tokio) {:.2} s ({:.1} µs/event)",
        elapsed.as_secs_f64(),
        redis_cpu,
        redis_cpu * 1e6 / events as f64,
        own_cpu,
        own_cpu * 1e6 / events as f64,
    );
    let mut totals: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for node in &mut nodes {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(node)
            .await?;
        for line in stats.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            if let (Some(calls), Some(usec)) = (field("calls"), field("usec")) {
                let entry = totals.entry(name.to_owned()).or_default();
                entry.0 += calls;
                entry.1 += usec;
            }
        }
    }
    let mut rows: Vec<(f64, String)> = totals
        .into_iter()
        .map(|(name, (calls, usec))| {
            (
                usec,
                format!(
                    "{name} {calls:.0} calls ({:.2}/event), {:.2} µs/call",
                    calls / events as f64,
                    usec / calls.max(1.0)
                ),
            )
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, row) in rows.iter().take(12) {
        println!("{label}:   redis {row}");
    }
    Ok(())
}

/// redis-server's own CPU time (user + sys), from `INFO cpu`.
async fn redis_cpu_seconds(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Ok(field("used_cpu_user").unwrap_or(0.0) + field("used_cpu_sys").unwrap_or(0.0))
}

/// Bytes of Redis per active waybill: state hash + armed timers, history,
/// order log and outbox excluded.
async fn memory(server: &RedisServer) -> anyhow::Result<()> {
    for registered in [false, true] {
        flush(server).await?;
        let mut conn = raw(server).await?;
        let before = used_memory(&mut conn).await?;
        let parcels = scale(100_000);
        let t0 = chrono_now() - 2 * H;
        let detector = detector(connect(server).await?, ClockMode::Wall);
        let mut batch = Vec::new();
        for i in 0..parcels {
            let k = key(i);
            if registered {
                batch.push(record(
                    topics::SHIPMENTS,
                    partition(i),
                    &k,
                    registration(&k, i, t0).encode_to_vec(),
                ));
            }
            batch.push(record(
                topics::TRACKING_EVENTS,
                partition(i),
                &k,
                scan(&k, Status::InTransit, t0 + H).encode_to_vec(),
            ));
            if batch.len() >= 1000 {
                detector
                    .apply_batch(&batch)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                batch.clear();
                let _ = detector.sink().take();
            }
        }
        detector
            .apply_batch(&batch)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Drop what is not per-waybill state: history and the order log.
        for pattern in ["*:ev:*", "{o:*"] {
            unlink_matching(&mut conn, pattern).await?;
        }
        let timers: i64 = {
            let mut total = 0;
            for p in 0..PARTITIONS {
                let n: i64 = redis::cmd("ZCARD")
                    .arg(store::timers_key(p))
                    .query_async(&mut conn)
                    .await?;
                total += n;
            }
            total
        };
        let sample: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(store::state_key(partition(7), &key(7)))
            .query_async(&mut conn)
            .await?;
        let state_len: i64 = redis::cmd("HSTRLEN")
            .arg(store::state_key(partition(7), &key(7)))
            .arg("s")
            .query_async(&mut conn)
            .await?;
        let after = used_memory(&mut conn).await?;
        println!(
            "memory ({}): {} waybills, {} armed timers: {:.0} B per waybill (used_memory delta {} B); one state hash {} B (protobuf state {} B)",
            if registered {
                "with registration"
            } else {
                "state only"
            },
            parcels,
            timers,
            (after - before) as f64 / parcels as f64,
            after - before,
            sample,
            state_len,
        );
    }
    Ok(())
}

async fn unlink_matching(
    conn: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> anyhow::Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn chrono_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// 1 000 000 armed stall deadlines (state + timer written directly, as the
/// commit script would), `due` of them falling due over `window`, the rest
/// days away; the real timer loop (wall clock, default 200 ms tick) fires them.
/// Then a backlog: every remaining deadline overdue at once, drained.
async fn timers(server: &RedisServer) -> anyhow::Result<()> {
    flush(server).await?;
    let armed = scale(1_000_000);
    let due = scale(60_000);
    let window = 20_000_i64;
    let engine = Engine::new(RulesConfig::default());
    let mut conn = raw(server).await?;
    let start = chrono_now() + 20_000;
    let populate = Instant::now();
    let mut pipe = redis::pipe();
    for i in 0..armed {
        let deadline = if i < due {
            start + (i as i64 * window) / due as i64
        } else {
            start + 10 * 24 * H + i as i64
        };
        let k = key(i);
        let mut wb = Waybill {
            key: k.clone(),
            partition: partition(i),
            ..Default::default()
        };
        let at = deadline - 24 * H;
        let mut fx = Effects::default();
        engine.apply(
            &mut wb,
            &[Input::Event(scan(&k, Status::InTransit, at))],
            &[],
            at,
            &mut fx,
        );
        let state = trackstream_detector::engine::encode_state(&wb.state);
        pipe.cmd("HSET")
            .arg(store::state_key(wb.partition, &k))
            .arg("v")
            .arg(1)
            .arg("s")
            .arg(state)
            .ignore();
        for (rule, d) in wb.state.deadlines() {
            pipe.cmd("ZADD")
                .arg(store::timers_key(wb.partition))
                .arg(d)
                .arg(store::timer_member(&k, rule))
                .ignore();
        }
        if i % 10_000 == 9_999 {
            pipe.query_async::<()>(&mut conn).await?;
            pipe = redis::pipe();
        }
    }
    if !armed.is_multiple_of(10_000) {
        pipe.query_async::<()>(&mut conn).await?;
    }
    let used = used_memory(&mut conn).await?;
    println!(
        "timers: {armed} waybills with an armed deadline written in {:.1} s; used_memory {:.0} MB = {:.0} B per waybill (state + timer)",
        populate.elapsed().as_secs_f64(),
        used as f64 / 1e6,
        used as f64 / armed as f64
    );
    let now = chrono_now();
    anyhow::ensure!(
        now < start,
        "population took longer than the 20 s head start; lower DETECTOR_BENCH_SCALE"
    );

    let detector = Arc::new(detector(connect(server).await?, ClockMode::Wall));
    let (assign, assignment) = tokio::sync::watch::channel(std::collections::BTreeMap::new());
    let shutdown = trackstream_runtime::CancellationToken::new();
    let base_instant = Instant::now();
    let base_wall = chrono_now();
    let loop_task = {
        let detector = detector.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { detector.run_timers(assignment, shutdown).await })
    };
    assign.send_replace(std::collections::BTreeMap::from([(
        topics::TRACKING_EVENTS.to_owned(),
        (0..PARTITIONS).collect::<std::collections::BTreeSet<i32>>(),
    )]));
    let mut fired: Vec<(i64, Alert)> = Vec::with_capacity(due);
    let deadline =
        Instant::now() + Duration::from_millis(u64::try_from(window).unwrap_or(0) + 60_000);
    while fired.len() < due && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (at, r) in detector.sink().take_timed() {
            if r.topic == topics::TRACKING_ALERTS
                && let Ok(alert) = Alert::decode(r.payload.as_slice())
            {
                let wall = base_wall
                    + i64::try_from(at.duration_since(base_instant).as_millis()).unwrap_or(0);
                fired.push((wall, alert));
            }
        }
    }
    let mut lateness: Vec<i64> = fired
        .iter()
        .map(|(wall, a)| wall - time::millis(a.effective_at.as_ref()))
        .collect();
    lateness.sort_unstable();
    let pct = |p: f64| {
        lateness
            .get(((lateness.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "timers: {} of {due} due deadlines fired over {} s ({:.0}/s offered) among {armed} armed; lateness p50 {} ms, p99 {} ms, max {} ms (tick 200 ms)",
        fired.len(),
        window / 1000,
        due as f64 * 1000.0 / window as f64,
        pct(0.5),
        pct(0.99),
        lateness.last().copied().unwrap_or(-1),
    );

    // Backlog: everything left becomes overdue (as after an outage); drain it.
    shutdown.cancel();
    let _ = loop_task.await;
    let backlog = scale(200_000).min(armed - due);
    let mut pipe = redis::pipe();
    let overdue = chrono_now() - 1;
    for i in due..due + backlog {
        let k = key(i);
        let p = partition(i);
        pipe.cmd("ZADD")
            .arg(store::timers_key(p))
            .arg(overdue)
            .arg(store::timer_member(&k, "st"))
            .ignore();
        if i % 10_000 == 9_999 {
            pipe.query_async::<()>(&mut conn).await?;
            pipe = redis::pipe();
        }
    }
    if !backlog.is_multiple_of(10_000) {
        pipe.query_async::<()>(&mut conn).await?;
    }
    // The states still say "days away": advancing to now fires nothing and the
    // loop drops the stale members, so this measures the pure scan + load +
    // compare path; rewrite the states so they really are due.
    let mut pipe = redis::pipe();
    for i in due..due + backlog {
        let k = key(i);
        let mut wb = Waybill {
            key: k.clone(),
            partition: partition(i),
            ..Default::default()
        };
        let at = overdue - 24 * H;
        let mut fx = Effects::default();
        engine.apply(
            &mut wb,
            &[Input::Event(scan(&k, Status::InTransit, at))],
            &[],
            at,
            &mut fx,
        );
        pipe.cmd("HSET")
            .arg(store::state_key(wb.partition, &k))
            .arg("v")
            .arg(2)
            .arg("s")
            .arg(trackstream_detector::engine::encode_state(&wb.state))
            .ignore();
        if i % 10_000 == 9_999 {
            pipe.query_async::<()>(&mut conn).await?;
            pipe = redis::pipe();
        }
    }
    if !backlog.is_multiple_of(10_000) {
        pipe.query_async::<()>(&mut conn).await?;
    }
    let started = Instant::now();
    let mut drained = 0;
    for p in 0..PARTITIONS {
        drained += detector
            .drain_timers(p)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = detector.sink().take();
    }
    let elapsed = started.elapsed();
    println!(
        "timers: backlog of {backlog} overdue deadlines drained ({drained} processed) in {:.2} s = {:.0} fired/s, one partition at a time",
        elapsed.as_secs_f64(),
        drained as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
