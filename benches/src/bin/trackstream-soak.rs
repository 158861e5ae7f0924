//! `trackstream-soak`: Redis memory over a week of event time at constant load.
//!
//! Drives the detector's real batch path (`Detector::apply_batch` over a
//! `MemorySink`, as `detector/benches/detector.rs` does; the timer loop's
//! `drain_timers` after every simulated hour) against its own `redis-server`.
//! Every simulated hour `--parcels-per-hour` new parcels are registered; each
//! goes picked up (+2 h) → in transit (+12 h, +30 h) → out for delivery
//! (+50 h) → delivered (+54 h), except `--lost-percent` of them, which fall
//! silent after +30 h (their stall alerts fire and escalate). After every
//! simulated day it samples Redis `used_memory` and the key count, and prints
//! a markdown table at the end.
//!
//! Deadlines run on the event clock (per-partition watermark of event time), so
//! the alerts are those living through the week would raise. Expiry, however,
//! is Redis's own, in real time: a detector that sets expiries computes them
//! from its wall clock (the real clock here). The simulation is therefore
//! paced — one simulated hour every `--real-ms-per-hour` real milliseconds —
//! and retention periods given in simulated time are divided by the same
//! speed before they reach the detector, so a key meant to live a simulated
//! day lives the real time a simulated day takes.
//!
//! "Before": `trackstream-soak` (today's detector, nothing expires).
//! "After": `trackstream-soak --retention --after-terminal 1d --after-silence 4d
//! --order-log 4d`, once the detector has retention settings (see
//! [`detector_with_retention`]). Results: `benches/results/soak.md`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use prost::Message;
use trackstream_detector::config::{ClockMode, TimerConfig};
use trackstream_detector::engine::Engine;
use trackstream_detector::rules::RulesConfig;
use trackstream_detector::service::Detector;
use trackstream_detector::sink::MemorySink;
use trackstream_detector::store::Store;
use trackstream_loadgen::canonical;
use trackstream_proto::topics;
use trackstream_proto::v1::Status;
use trackstream_runtime::config::RedisConfig;
use trackstream_runtime::kafka::Inbound;
use trackstream_runtime::redis::RedisConn;
use trackstream_testkit::processes::RedisServer;

/// One hour in ms.
const H: i64 = 3_600_000;
/// Partitions the parcels are spread over (as in the detector bench).
const PARTITIONS: i32 = 16;
/// Records per `apply_batch` call.
const BATCH: usize = 500;
/// First simulated instant: 2026-01-05T00:00:00Z (a Monday).
const T0: i64 = 1_767_571_200_000;
/// A parcel's scans: hours after registration, status. Lost parcels stop
/// after the third.
const LIFECYCLE: [(i64, Status); 5] = [
    (2, Status::PickedUp),
    (12, Status::InTransit),
    (30, Status::InTransit),
    (50, Status::OutForDelivery),
    (54, Status::Delivered),
];
/// Scans a lost parcel gets.
const LOST_SCANS: usize = 3;

fn cli() -> Command {
    Command::new("trackstream-soak")
        .about("Redis memory of the detector over a week of event time at constant load")
        .arg(
            Arg::new("parcels-per-hour")
                .long("parcels-per-hour")
                .value_parser(value_parser!(u32))
                .default_value("200")
                .help("New parcels registered per simulated hour"),
        )
        .arg(
            Arg::new("days")
                .long("days")
                .value_parser(value_parser!(u32).range(1..=60))
                .default_value("7")
                .help("Simulated days"),
        )
        .arg(
            Arg::new("lost-percent")
                .long("lost-percent")
                .value_parser(value_parser!(u32).range(0..=100))
                .default_value("5")
                .help("Parcels that fall silent in transit and are never delivered"),
        )
        .arg(
            Arg::new("real-ms-per-hour")
                .long("real-ms-per-hour")
                .value_parser(value_parser!(u64))
                .default_value("1000")
                .help(
                    "Real milliseconds one simulated hour takes (pacing; Redis expires \
                     keys in real time). 0 = as fast as possible, only without --retention",
                ),
        )
        .arg(
            Arg::new("retention")
                .long("retention")
                .action(ArgAction::SetTrue)
                .help("Run the detector with the retention settings below (the \"after\" run)"),
        )
        .arg(
            Arg::new("after-terminal")
                .long("after-terminal")
                .default_value("1d")
                .help("Simulated time a delivered parcel's keys live after its last change"),
        )
        .arg(
            Arg::new("after-silence")
                .long("after-silence")
                .default_value("4d")
                .help("Simulated time a parcel that never ends lives after its last change"),
        )
        .arg(
            Arg::new("order-log")
                .long("order-log")
                .default_value("4d")
                .help("Simulated time an order log lives after its last update"),
        )
}

/// Retention in simulated ms, as given on the command line.
#[derive(Debug, Clone, Copy)]
struct Retention {
    after_terminal: i64,
    after_silence: i64,
    order_log: i64,
}

struct Options {
    parcels_per_hour: u32,
    days: u32,
    lost_percent: u32,
    real_ms_per_hour: u64,
    retention: Option<Retention>,
}

fn options(matches: &ArgMatches) -> anyhow::Result<Options> {
    let number = |name: &str| matches.get_one::<u32>(name).copied().unwrap_or_default();
    let span = |name: &str| -> anyhow::Result<i64> {
        let text = matches
            .get_one::<String>(name)
            .map(String::as_str)
            .unwrap_or_default();
        trackstream_runtime::config::duration::parse(text)
            .map(trackstream_runtime::config::duration::millis)
            .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
    };
    let retention = if matches.get_flag("retention") {
        Some(Retention {
            after_terminal: span("after-terminal")?,
            after_silence: span("after-silence")?,
            order_log: span("order-log")?,
        })
    } else {
        None
    };
    let real_ms_per_hour = matches
        .get_one::<u64>("real-ms-per-hour")
        .copied()
        .unwrap_or(1000);
    if retention.is_some() && real_ms_per_hour == 0 {
        bail!("--retention needs pacing (--real-ms-per-hour > 0): Redis expires in real time");
    }
    Ok(Options {
        parcels_per_hour: number("parcels-per-hour"),
        days: number("days"),
        lost_percent: number("lost-percent"),
        real_ms_per_hour,
        retention,
    })
}

fn main() -> anyhow::Result<()> {
    let options = options(&cli().get_matches())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&options))
}

/// The detector as the detector bench builds it: event clock, memory sink.
fn detector(conn: RedisConn) -> Detector<MemorySink> {
    Detector::new(
        Engine::new(RulesConfig::default()),
        Store::new(conn),
        MemorySink::new(),
        TimerConfig {
            clock: ClockMode::Event,
            ..TimerConfig::default()
        },
        &mut prometheus_client::registry::Registry::default(),
    )
}

/// Applies `retention` (already converted to *real* milliseconds: simulated
/// time divided by the pacing speed) to the detector, for the "after" run:
/// Redis expires keys on its own clock, so the retention must be scaled the
/// same way the run's event time is.
fn detector_with_retention(
    detector: Detector<MemorySink>,
    real: Retention,
) -> anyhow::Result<Detector<MemorySink>> {
    use trackstream_detector::config::RetentionConfig;
    let millis = |ms: i64| std::time::Duration::from_millis(ms.unsigned_abs());
    Ok(detector.with_retention(RetentionConfig {
        after_terminal: millis(real.after_terminal),
        after_silence: millis(real.after_silence),
        order_log: millis(real.order_log),
        backdate: std::time::Duration::ZERO,
    }))
}

/// Walks the whole keyspace once: Redis deletes each expired key SCAN visits.
async fn sweep_expired(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, _keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(10_000)
            .query_async(conn)
            .await?;
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn key(parcel: u64) -> String {
    canonical::waybill_key(parcel)
}

fn partition(parcel: u64) -> i32 {
    i32::try_from(parcel % PARTITIONS as u64).unwrap_or(0)
}

fn record(topic: &str, parcel: u64, payload: Vec<u8>) -> Inbound {
    Inbound {
        topic: topic.into(),
        partition: partition(parcel),
        offset: 0,
        key: Some(key(parcel).into_bytes()),
        payload,
        headers: Vec::new(),
    }
}

fn registration(parcel: u64, at: i64) -> Inbound {
    let shipment = canonical::registration(&key(parcel), parcel, at);
    record(topics::SHIPMENTS, parcel, shipment.encode_to_vec())
}

fn scan(parcel: u64, status: Status, at: i64) -> Inbound {
    let event = canonical::scan(&key(parcel), status, at);
    record(topics::TRACKING_EVENTS, parcel, event.encode_to_vec())
}

/// Everything that happens in simulated hour `hour`, in time order: the
/// registrations of the hour's new parcels and the scans of earlier parcels
/// that fall into it.
fn hour_records(hour: i64, options: &Options) -> Vec<Inbound> {
    let per_hour = i64::from(options.parcels_per_hour.max(1));
    let mut timed: Vec<(i64, Inbound)> = Vec::new();
    let parcel_of = |start_hour: i64, j: i64| u64::try_from(start_hour * per_hour + j).ok();
    for j in 0..per_hour {
        let offset = j * H / per_hour;
        if let Some(parcel) = parcel_of(hour, j) {
            timed.push((
                T0 + hour * H + offset,
                registration(parcel, T0 + hour * H + offset),
            ));
        }
        for (index, (after, status)) in LIFECYCLE.iter().enumerate() {
            let start_hour = hour - after;
            let Some(parcel) = parcel_of(start_hour, j).filter(|_| start_hour >= 0) else {
                continue;
            };
            let lost = parcel % 100 < u64::from(options.lost_percent);
            if lost && index >= LOST_SCANS {
                continue;
            }
            let at = T0 + start_hour * H + offset + after * H;
            timed.push((at, scan(parcel, *status, at)));
        }
    }
    timed.sort_by_key(|(at, _)| *at);
    timed.into_iter().map(|(_, r)| r).collect()
}

/// Retries a failed batch or timer round a few times, as the consumer loop
/// and the timer loop do (both are idempotent): on a loaded machine a Redis
/// call can time out without anything being wrong with the data.
async fn retried<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, trackstream_runtime::kafka::HandlerError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < 5 => {
                attempt += 1;
                eprintln!("{what} failed ({err}); retry {attempt}");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => bail!("{what}: {err}"),
        }
    }
}

async fn redis_info(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{field} in INFO {section}"))
}

/// One row of the table.
struct Sample {
    day: u32,
    registered: u64,
    keys: i64,
    used_memory: i64,
    outputs: u64,
    behind_ms: u64,
}

async fn run(options: &Options) -> anyhow::Result<()> {
    let server = RedisServer::start().await.context("redis-server")?;
    let mut raw = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    let conn = RedisConn::connect(&RedisConfig {
        url: server.url(),
        cluster_nodes: Vec::new(),
    })
    .await?;
    let speed = if options.real_ms_per_hour == 0 {
        None
    } else {
        // Simulated ms per real ms.
        Some(H as f64 / options.real_ms_per_hour as f64)
    };
    let detector = match (options.retention, speed) {
        (Some(sim), Some(speed)) => {
            let real = |ms: i64| (ms as f64 / speed).round() as i64;
            detector_with_retention(
                detector(conn),
                Retention {
                    after_terminal: real(sim.after_terminal),
                    after_silence: real(sim.after_silence),
                    order_log: real(sim.order_log),
                },
            )?
        }
        _ => detector(conn),
    };
    let baseline = redis_info(&mut raw, "memory", "used_memory").await?;
    println!(
        "soak: {} parcels/h for {} simulated days, {} % lost, {} ms per simulated hour, {}",
        options.parcels_per_hour,
        options.days,
        options.lost_percent,
        options.real_ms_per_hour,
        match options.retention {
            Some(r) => format!(
                "retention after_terminal {} h, after_silence {} h, order_log {} h (simulated)",
                r.after_terminal / H,
                r.after_silence / H,
                r.order_log / H
            ),
            None => "no retention (today's detector)".into(),
        }
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut outputs = 0u64;
    let mut behind = Duration::ZERO;
    let hours = i64::from(options.days) * 24;
    for hour in 0..hours {
        for batch in hour_records(hour, options).chunks(BATCH) {
            retried("apply_batch", || detector.apply_batch(batch)).await?;
            outputs += detector.sink().take().len() as u64;
        }
        for p in 0..PARTITIONS {
            retried("drain_timers", || detector.drain_timers(p)).await?;
        }
        outputs += detector.sink().take().len() as u64;
        if options.real_ms_per_hour > 0 {
            let due = Duration::from_millis(
                options
                    .real_ms_per_hour
                    .saturating_mul(u64::try_from(hour + 1).unwrap_or(0)),
            );
            let elapsed = started.elapsed();
            match due.checked_sub(elapsed) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => behind = behind.max(elapsed - due),
            }
        }
        if (hour + 1) % 24 == 0 {
            // Redis reclaims expired keys lazily and by sampling, tolerating
            // ~10 % stale keys; over a real week that cycle keeps up, but a week
            // compressed into minutes outruns it. A full SCAN expires every key
            // whose time has passed, so the sample counts live data only.
            sweep_expired(&mut raw).await?;
            let sample = Sample {
                day: u32::try_from((hour + 1) / 24).unwrap_or(0),
                registered: u64::try_from((hour + 1) * i64::from(options.parcels_per_hour))
                    .unwrap_or(0),
                keys: redis::cmd("DBSIZE").query_async(&mut raw).await?,
                used_memory: redis_info(&mut raw, "memory", "used_memory").await? - baseline,
                outputs,
                behind_ms: u64::try_from(behind.as_millis()).unwrap_or(u64::MAX),
            };
            println!(
                "day {}: {} parcels registered, {} keys, {:.1} MiB",
                sample.day,
                sample.registered,
                sample.keys,
                sample.used_memory as f64 / 1_048_576.0
            );
            samples.push(sample);
        }
    }
    println!();
    println!(
        "| day | parcels registered | keys | used_memory (MiB, over empty) | B per registered parcel | outputs so far | pacing behind (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for s in &samples {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {} | {} |",
            s.day,
            s.registered,
            s.keys,
            s.used_memory as f64 / 1_048_576.0,
            s.used_memory as f64 / s.registered.max(1) as f64,
            s.outputs,
            s.behind_ms
        );
    }
    println!(
        "\nwall time {:.1} s (a nonzero \"pacing behind\" means the simulation ran slower \
         than the pacing, so real-time expiry happened later in simulated time than asked)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
