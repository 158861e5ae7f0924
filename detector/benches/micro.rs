//! Criterion micro-benchmarks of the detector against a local redis-server the
//! harness starts: one consumer batch through `apply_batch` (dedup, fold, Lua
//! commit, outbox, sequence numbers; the sink is memory, so Kafka is not in the
//! number), and firing due wall-clock timers of one partition. The macro bench
//! (`detector.rs`) measures sustained rates, memory and lateness at scale.
//!
//! `cargo bench -p trackstream-detector --bench micro -- --warm-up-time 1 --measurement-time 5`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod fixtures;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fixtures::*;
use trackstream_detector::config::ClockMode;
use trackstream_detector::engine::{Effects, Engine, Input, Waybill};
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::store;
use trackstream_proto::topics;
use trackstream_proto::v1::Status;
use trackstream_testkit::processes::RedisServer;

/// Waybills per measured batch; each gets a registration and four scans, so a
/// batch is 5 × this many records (the consumer's default `batch_max` is 500).
const WAYBILLS_PER_BATCH: usize = 100;
/// Due timers fired per measured drain.
const TIMERS_PER_DRAIN: usize = 500;

/// Never-used waybill numbers, so every measured batch is fresh work (a
/// repeated batch would only exercise dedup).
static NEXT_WAYBILL: AtomicUsize = AtomicUsize::new(0);

fn fresh_waybills(n: usize) -> std::ops::Range<usize> {
    let first = NEXT_WAYBILL.fetch_add(n, Ordering::Relaxed);
    first..first + n
}

/// A consumer batch: per waybill its registration, then pickup, two transit
/// scans and out-for-delivery, all on the waybill's partition.
fn batch(at: i64) -> Vec<trackstream_runtime::kafka::Inbound> {
    let mut records = Vec::with_capacity(WAYBILLS_PER_BATCH * 5);
    for i in fresh_waybills(WAYBILLS_PER_BATCH) {
        let k = key(i);
        let p = partition(i);
        records.push(record(
            topics::SHIPMENTS,
            p,
            &k,
            prost::Message::encode_to_vec(&registration(&k, i, at)),
        ));
        for (n, status) in [
            Status::PickedUp,
            Status::InTransit,
            Status::InTransit,
            Status::OutForDelivery,
        ]
        .into_iter()
        .enumerate()
        {
            let scan = scan(&k, status, at + (n as i64 + 1) * H);
            records.push(record(
                topics::TRACKING_EVENTS,
                p,
                &k,
                prost::Message::encode_to_vec(&scan),
            ));
        }
    }
    records
}

/// Writes `TIMERS_PER_DRAIN` in-transit waybills on partition 0 whose stall
/// deadline is an hour past, as the commit script would have left them.
async fn arm_past_deadlines(conn: &mut redis::aio::MultiplexedConnection) {
    let engine = Engine::new(RulesConfig::default());
    let now = chrono::Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    for i in fresh_waybills(TIMERS_PER_DRAIN) {
        let k = key(i);
        let mut wb = Waybill {
            key: k.clone(),
            partition: 0,
            ..Default::default()
        };
        let at = now - 25 * H;
        engine.apply(
            &mut wb,
            &[Input::Event(scan(&k, Status::InTransit, at))],
            &[],
            at,
            &mut Effects::default(),
        );
        pipe.cmd("HSET")
            .arg(store::state_key(0, &k))
            .arg("v")
            .arg(1)
            .arg("s")
            .arg(trackstream_detector::engine::encode_state(&wb.state))
            .ignore();
        for (rule, deadline) in wb.state.deadlines() {
            pipe.cmd("ZADD")
                .arg(store::timers_key(0))
                .arg(deadline)
                .arg(store::timer_member(&k, rule))
                .ignore();
        }
    }
    pipe.query_async::<()>(conn)
        .await
        .unwrap_or_else(|e| panic!("arming timers: {e}"));
}

fn micro(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let server = runtime
        .block_on(RedisServer::start())
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let conn = runtime
        .block_on(connect(&server))
        .unwrap_or_else(|e| panic!("redis: {e}"));
    let mut raw = runtime
        .block_on(async {
            redis::Client::open(server.url())?
                .get_multiplexed_async_connection()
                .await
        })
        .unwrap_or_else(|e| panic!("redis: {e}"));

    let applying = detector(conn.clone(), ClockMode::Wall);
    let mut group = c.benchmark_group("detector_apply");
    group.throughput(Throughput::Elements((WAYBILLS_PER_BATCH * 5) as u64));
    group.bench_function("batch_of_500_records", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let records = batch(1_704_067_200_000);
                    let started = Instant::now();
                    applying
                        .apply_batch(&records)
                        .await
                        .unwrap_or_else(|e| panic!("apply: {e}"));
                    spent += started.elapsed();
                    applying.sink().take();
                }
                spent
            })
        });
    });
    group.finish();

    let firing = detector(conn, ClockMode::Wall);
    let mut group = c.benchmark_group("detector_timers");
    group.throughput(Throughput::Elements(TIMERS_PER_DRAIN as u64));
    group.bench_function("fire_500_due_deadlines", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    arm_past_deadlines(&mut raw).await;
                    let started = Instant::now();
                    let fired = firing
                        .drain_timers(0)
                        .await
                        .unwrap_or_else(|e| panic!("fire: {e}"));
                    spent += started.elapsed();
                    assert!(fired >= TIMERS_PER_DRAIN, "fired {fired}");
                    firing.sink().take();
                }
                spent
            })
        });
    });
    group.finish();
}

criterion_group!(benches, micro);
criterion_main!(benches);
