//! The run, start to end: start the stack, offer each load step, then score,
//! measure the broker again and write the report. Each phase is a function
//! of its own; what phases hand on travels in [`Steps`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use trackstream_loadgen::{self as loadgen, Kind, Mix, Parcel, Secrets};
use trackstream_proto::topics;
use trackstream_testkit::processes::{Broker, RedisServer};

use super::ceiling::{Ceilings, broker_ceiling, measure_start};
use super::follower::{Observed, STOPPING, follow};
use super::latency::{HOPS, MessageLatencies, StepResult, message_latencies, step_latencies};
use super::load::{Acked, Ingest, SENTINELS, advance_clock, drain, register, send_schedule};
use super::report::{Run, settings, write_report};
use super::scoring::{Score, score};
use super::stack::{Stack, machine_busy, machine_jiffies, redis_used_mib, warn_stale};
use super::{LATENESS_HOURS, Options};

/// Runs the benchmark until it ends or `SIGINT`/`SIGTERM` arrives; either way
/// the run is dropped, and with it every child process (the services, the
/// broker, Redis): a killed benchmark must not leave them running into the
/// next one.
pub fn run_until_stopped(opts: &Options) -> anyhow::Result<()> {
    crate::until_stopped(run(opts), || {
        STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
    })
}

/// The broker and Redis of a run, and the follower's view of its topics.
struct Stores {
    redis: RedisServer,
    /// Lives as long as the run.
    broker: Broker,
    brokers: String,
    fetch_wait: u64,
    observed: Arc<Mutex<Observed>>,
}

impl Stores {
    /// "nisshi (sqlite)", for the report's settings line.
    fn broker_name(&self) -> String {
        format!(
            "{} ({})",
            self.broker.kind().name(),
            self.broker.storage().name()
        )
    }
}

/// What the load steps hand on to the end of the run.
struct Steps {
    run: String,
    parcels: Vec<Parcel>,
    results: Vec<StepResult>,
    acks: Vec<Acked>,
    next_tag: u64,
    /// Event time of the last step.
    final_time: DateTime<Utc>,
}

async fn run(opts: &Options) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(30))
        .build()?;
    warn_stale(&opts.bin_dir);
    let fetch_wait = opts.fetch_wait_ms.unwrap_or(5);

    eprintln!("[bench] starting redis-server and the broker");
    let redis = RedisServer::start().await?;
    let broker = Broker::start_direct(opts.broker_storage).await?;
    eprintln!(
        "[bench] broker: {} on {} storage",
        broker.kind().name(),
        broker.storage().name()
    );
    let brokers = broker.bootstrap();
    let all: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, opts.partitions)).collect();
    trackstream_testkit::kafka::create_topics(&brokers, &all)
        .await
        .map_err(anyhow::Error::msg)?;
    let secrets = Secrets::default();
    let mut stack =
        Stack::start(&http, &brokers, &redis.url(), &secrets, opts, broker.pid()).await?;
    let observed = Arc::new(Mutex::new(Observed::default()));
    follow(&brokers, opts.partitions, fetch_wait, observed.clone())?;
    // Measured beside the idle pipeline, as the ceiling at the end is: a
    // broker that spends CPU on idle waiting fetches (nisshi polls) would
    // otherwise look slower at the end for a reason other than what it holds.
    let start = measure_start(&brokers, redis.port, opts, fetch_wait).await?;
    let stores = Stores {
        redis,
        broker,
        brokers,
        fetch_wait,
        observed,
    };
    // Sentinel pushes that move every partition's event clock go through this too.
    let ingest = Ingest {
        http,
        url: format!("http://127.0.0.1:{}", stack.ports.http),
        secrets,
    };
    let steps = run_steps(opts, &mut stack, &stores, &ingest).await?;
    finish(opts, &stack, &stores, &ingest, &start, steps).await?;
    STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
    // The services stop before the broker and Redis they use.
    drop(stack);
    drop(stores);
    Ok(())
}

/// Offers every step of the plan: the configured steps, then (unless
/// `--no-repeat`) the first step again.
async fn run_steps(
    opts: &Options,
    stack: &mut Stack,
    stores: &Stores,
    ingest: &Ingest,
) -> anyhow::Result<Steps> {
    let mix = Mix::default();
    let plan = step_plan(opts);
    // Event time: each step lives four days after the previous one, and the
    // whole run lies in the past — the last step ends four days before now —
    // because normalize dead-letters scans dated more than `max_future_skew`
    // after they were received (a future "delivered" must not be announced).
    let started_at = chrono::Utc::now() - chrono::Duration::days(4 * plan.len() as i64);
    let mut steps = Steps {
        run: format!("{:05x}", rand::random::<u32>() & 0xfffff),
        parcels: Vec::new(),
        results: Vec::new(),
        acks: Vec::new(),
        next_tag: 0,
        final_time: started_at,
    };
    for (step_index, (offered, again)) in plan.iter().copied().enumerate() {
        stack.check_running()?;
        if again {
            // Release the last step's deadlines first: each step's event time
            // moves the watermark past the previous step's stall deadlines, and
            // after the largest step that is tens of thousands of alerts (and
            // their buyer messages), which would land in this step's CPU.
            let at = steps.final_time + chrono::Duration::hours(LATENESS_HOURS + 6);
            let label = format!("{}a", steps.run);
            advance_clock(ingest, &stores.observed, &label, steps.next_tag, at).await?;
            steps.next_tag += SENTINELS;
        }
        let pushes_wanted = (offered * opts.step_secs as f64) as usize;
        // ~3.8 pushes per parcel on average, duplicates included.
        let count = (pushes_wanted * 10 / 38).max(10);
        // Event time runs forward across steps (see `started_at`), so the
        // detector's event-time watermark never runs ahead of a step's parcels.
        let virtual_now = started_at + chrono::Duration::days(4 * step_index as i64);
        steps.final_time = virtual_now;
        let run = format!("{}{step_index}", steps.run);
        let parcels = loadgen::generate(
            count,
            &mix,
            step_index as u64,
            virtual_now,
            &run,
            steps.next_tag,
        );
        steps.next_tag = parcels
            .iter()
            .flat_map(|p| p.scans.iter().map(|s| s.tag))
            .max()
            .unwrap_or(steps.next_tag)
            + 1;
        register(ingest, &parcels).await?;
        // The whole schedule is sent (cutting it would drop the end of every
        // parcel's life, which the ground truth counts on); the parcel count above
        // sizes it to about `step_secs` at the offered rate.
        let order = loadgen::schedule(&parcels, &mix, step_index as u64);
        let (result, acked) = run_step(
            opts,
            stack,
            stores,
            ingest,
            &parcels,
            &order,
            (offered, again),
        )
        .await?;
        log_step(&result, &stores.observed);
        steps.results.push(result);
        steps.acks.push(acked);
        steps.parcels.extend(parcels);
    }
    Ok(steps)
}

/// The offered rates, each flagged when it is the first step offered again.
fn step_plan(opts: &Options) -> Vec<(f64, bool)> {
    // The first step again at the end: same offered load, but the broker now
    // holds every record of the run. tansu's memory storage lists all of a
    // partition's stored batches on each fetch that has data, so its CPU per
    // record grows with what it holds; this row shows by how much, at a load
    // where nothing else queues.
    let mut plan: Vec<(f64, bool)> = opts.steps.iter().map(|s| (*s, false)).collect();
    if opts.repeat_first
        && let Some(first) = opts.steps.first()
    {
        plan.push((*first, true));
    }
    plan
}

/// Offers one step's schedule and measures it: acceptance, latencies, and the
/// CPU of every process over the sending window plus the drain.
async fn run_step(
    opts: &Options,
    stack: &Stack,
    stores: &Stores,
    ingest: &Ingest,
    parcels: &[Parcel],
    order: &[(usize, usize)],
    (offered, again): (f64, bool),
) -> anyhow::Result<(StepResult, Acked)> {
    let cpu_before = stack.cpu_seconds();
    let machine_before = machine_jiffies();
    let started = Instant::now();
    let sending = send_schedule(ingest, parcels, order, offered, opts.concurrency).await?;
    let unmatched = drain(&stores.observed, &sending.acked).await;
    // CPU over the sending window plus the drain: the work of this step.
    let elapsed = started.elapsed().as_secs_f64();
    let machine_busy = machine_busy(machine_before, machine_jiffies());
    let cpu = stack.cpu_since(&cpu_before, elapsed);
    let latencies = stores
        .observed
        .lock()
        .map(|seen| step_latencies(&sending.acked, &seen))
        .map_err(|_| anyhow::anyhow!("follower state poisoned"))?;
    let redis_mib = redis_used_mib(&stores.redis.url()).await?;
    let (webhooks, scans) = sending.accepted;
    let sent_secs = sending.sent_in.as_secs_f64();
    let result = StepResult {
        offered,
        achieved: order.len() as f64 / sending.issued_in.as_secs_f64().max(1e-3),
        webhooks_per_s: webhooks as f64 / sent_secs,
        scans_per_s: scans as f64 / sent_secs,
        failed: sending.failed,
        unmatched,
        to_update: latencies.to_update,
        to_update_read: latencies.to_update_read,
        messages: MessageLatencies::default(),
        again,
        request: latencies.request,
        hops: latencies.hops,
        cpu,
        machine_busy,
        redis_mib,
        sent_in: sending.sent_in,
    };
    Ok((result, sending.acked))
}

/// The progress lines of one step.
fn log_step(result: &StepResult, observed: &Mutex<Observed>) {
    let records = observed
        .lock()
        .map(|o| {
            format!(
                "{:?}, updates with a prediction {} ({} high confidence)",
                o.records, o.predicted.0, o.predicted.1
            )
        })
        .unwrap_or_default();
    eprintln!(
        "[bench] offered {}/s (issued {:.0}/s): accepted {:.0} webhooks/s in {:.1} s, ack→update p50/p99 {:.1}/{:.1} ms, failed {}, without update {}; machine {:.0} % busy; CPU {}; follower records {records}",
        result.offered,
        result.achieved,
        result.webhooks_per_s,
        result.sent_in.as_secs_f64(),
        result.to_update.p50,
        result.to_update.p99,
        result.failed,
        result.unmatched,
        result.machine_busy,
        result
            .cpu
            .iter()
            .map(|(n, c, _)| format!("{n} {c:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (hop, p) in HOPS.iter().zip(&result.hops) {
        eprintln!(
            "[bench]     {hop:<46} p50 {:>7.1}  p99 {:>7.1}  max {:>7.1} ms (n {})",
            p.p50, p.p99, p.max, p.count
        );
    }
}

/// After the steps: release every deadline, score the detector, measure the
/// broker again, and write the report.
async fn finish(
    opts: &Options,
    stack: &Stack,
    stores: &Stores,
    ingest: &Ingest,
    start: &Ceilings,
    mut steps: Steps,
) -> anyhow::Result<()> {
    // Move every partition's event clock past the last step; the clock then
    // stands at now + 6 h everywhere, and that is when the ground truth is taken.
    let at = steps.final_time + chrono::Duration::hours(LATENESS_HOURS + 6);
    let label = format!("{}z", steps.run);
    advance_clock(ingest, &stores.observed, &label, steps.next_tag, at).await?;
    let score_at = steps.final_time + chrono::Duration::hours(6);
    let score = stores
        .observed
        .lock()
        .map(|seen| {
            for (result, acked) in steps.results.iter_mut().zip(&steps.acks) {
                let orders = acked.values().map(|(_, order)| order.as_str()).collect();
                result.messages = message_latencies(&orders, &seen);
            }
            score(&steps.parcels, score_at, &seen)
        })
        .map_err(|_| anyhow::anyhow!("follower state poisoned"))?;
    log_messages(&steps.results);

    // The ceiling again, on a fresh topic, with the pipeline idle: if the broker
    // as a whole had slowed down (memory held, allocator), this would be lower
    // than at the start; the per-partition listing cost of the pipeline's own
    // topics does not show here (the repeated first step shows that).
    eprintln!("[bench] measuring the broker ceiling again");
    let held_records: usize = stores
        .observed
        .lock()
        .map(|o| o.records.values().sum())
        .unwrap_or(0);
    let broker_rss_end = stack.broker_rss_mib();
    let (produce_rate_end, broker_rate_end) = broker_ceiling(
        &stores.brokers,
        "bench.ceiling.end",
        opts.ceiling_records,
        600,
        opts.partitions,
        stores.fetch_wait,
    )
    .await?;
    eprintln!(
        "[bench] broker at the end: produce {produce_rate_end:.0}/s, produce→consume {broker_rate_end:.0}/s (start: {:.0}/s, {:.0}/s)",
        start.produce_rate, start.broker_rate
    );
    log_score(&score, &steps.parcels);
    let report = Run {
        produce_rate: start.produce_rate,
        broker_rate: start.broker_rate,
        produce_rate_end,
        broker_rate_end,
        held_records: held_records + opts.ceiling_records,
        broker_rss_end,
        redis_rate: start.redis_rate,
        settings: settings(opts, stores.broker_name()),
        results: steps.results,
        score,
    };
    write_report(opts, &report, &stack.measured)
}

/// The buyer-message latency line of each step.
fn log_messages(results: &[StepResult]) {
    for r in results {
        let m = &r.messages;
        eprintln!(
            "[bench] offered {}/s{}: update→buyer message p50/p99 {:.1}/{:.1} ms ({} messages); held for other parcels {} (first update→message p50/p99 {:.0}/{:.0} ms), still held or superseded at the end {}, unattributed {}",
            r.offered,
            if r.again { " (again)" } else { "" },
            m.processing.p50,
            m.processing.p99,
            m.processing.count,
            m.held.count,
            m.held.p50,
            m.held.p99,
            m.pending,
            m.unattributed
        );
    }
}

/// The detector's score against the ground truth.
fn log_score(score: &Score, parcels: &[Parcel]) {
    eprintln!(
        "[bench] detector vs ground truth: precision {:.3}, recall {:.3} ({} of {} expected, {} raised, tier agrees on {}; false {:?}; missed {:?}; {} redelivered alert records collapsed)",
        score.precision(),
        score.recall(),
        score.matched,
        score.expected,
        score.raised,
        score.tier_agrees,
        score.false_by_rule,
        score.missed_by_rule,
        score.redelivered
    );
    let stall_soon = parcels.iter().filter(|p| p.kind == Kind::StallSoon).count();
    if stall_soon > 0 {
        eprintln!(
            "[bench] {stall_soon} stall-soon parcels (event-time replay: no wall-clock deadline latency)"
        );
    }
}
