//! The report: the markdown tables spliced into `benches/RESULTS.md` and the
//! latency plot beside it.

use std::path::Path;

use crate::report::{Series, svg_plot};

use super::latency::{HOPS, StepResult};
use super::options::Options;
use super::scoring::Score;

/// Everything measured, for the report.
pub(crate) struct Run {
    pub(crate) produce_rate: f64,
    pub(crate) broker_rate: f64,
    /// The same ceiling measured after the last step (fresh topic, pipeline idle).
    pub(crate) produce_rate_end: f64,
    pub(crate) broker_rate_end: f64,
    /// Records the broker held when the end ceiling was measured (pipeline
    /// topics as read by the follower, plus the start ceiling's topic).
    pub(crate) held_records: usize,
    pub(crate) broker_rss_end: f64,
    pub(crate) redis_rate: f64,
    pub(crate) settings: String,
    pub(crate) results: Vec<StepResult>,
    pub(crate) score: Score,
}

/// The offered-load cell of a step: the repeated first step is marked.
pub(crate) fn step_label(r: &StepResult) -> String {
    if r.again {
        format!("{:.0} again (end)", r.offered)
    } else {
        format!("{:.0}", r.offered)
    }
}

pub(crate) fn render(run: &Run, measured: &[(String, u32)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Ceilings measured in the same run: broker produce {:.0} rec/s, produce→consume {:.0} rec/s at the start (600 B records, idempotent acks=all, rdkafka, same partitions and fetch wait as the services, fresh topic, beside the started but idle pipeline); again after the last step, fresh topic, pipeline idle, broker holding ~{} records in {:.0} MiB RSS: produce {:.0} rec/s, produce→consume {:.0} rec/s. Redis pipelined SET (-P 32) {:.0} ops/s. Settings: {}. \"× broker ceiling\" is against the start produce→consume rate.\n\n",
        run.produce_rate,
        run.broker_rate,
        run.held_records,
        run.broker_rss_end,
        run.produce_rate_end,
        run.broker_rate_end,
        run.redis_rate,
        run.settings
    ));
    let names: Vec<&str> = measured.iter().map(|(n, _)| n.as_str()).collect();
    out.push_str(&format!(
        "| offered webhooks/s (issued) | accepted webhooks/s | scans/s | × broker ceiling | failed | ack→update p50 / p95 / p99 / max (ms) | ack→update read p99 (ms) | update→buyer msg p50 / p99 (ms) | held for other parcels: sent, p50 / p99 (ms); still held | CPU % {} | machine busy % | RSS MiB (same order) | Redis MiB |\n",
        names.join(" / ")
    ));
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &run.results {
        let cpu: Vec<String> = r.cpu.iter().map(|(_, c, _)| format!("{c:.0}")).collect();
        let rss: Vec<String> = r.cpu.iter().map(|(_, _, m)| format!("{m:.0}")).collect();
        let m = &r.messages;
        out.push_str(&format!(
            "| {} ({:.0}) | {:.0} | {:.0} | {:.3} | {} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} | {} | {} | {} | {:.0} | {} | {:.1} |\n",
            step_label(r),
            r.achieved,
            r.webhooks_per_s,
            r.scans_per_s,
            r.webhooks_per_s / run.broker_rate.max(1.0),
            r.failed,
            r.to_update.p50,
            r.to_update.p95,
            r.to_update.p99,
            r.to_update.max,
            r.to_update_read.p99,
            if m.processing.count == 0 {
                "—".to_owned()
            } else {
                format!("{:.1} / {:.1}", m.processing.p50, m.processing.p99)
            },
            if m.held.count == 0 {
                format!("0; {}", m.pending)
            } else {
                format!(
                    "{}, {:.0} / {:.0}; {}",
                    m.held.count, m.held.p50, m.held.p99, m.pending
                )
            },
            cpu.join(" / "),
            r.machine_busy,
            rss.join(" / "),
            r.redis_mib
        ));
    }
    out.push_str("\nWhere the time goes (per accepted webhook, by its newest scan; record times are the producing service's CreateTime; the notifier column is per buyer message, from the record that completed it), p50 / p99 ms:\n\n");
    out.push_str("| offered webhooks/s | webhook request |");
    for hop in HOPS {
        out.push_str(&format!(" {hop} |"));
    }
    out.push_str(" notifier: tracking.updates / alerts → buyer.notifications |\n");
    out.push_str(&"|---".repeat(HOPS.len() + 3));
    out.push_str("|\n");
    for r in &run.results {
        out.push_str(&format!(
            "| {} | {:.1} / {:.1} |",
            step_label(r),
            r.request.p50,
            r.request.p99
        ));
        for p in &r.hops {
            out.push_str(&format!(" {:.1} / {:.1} |", p.p50, p.p99));
        }
        out.push_str(&format!(
            " {:.1} / {:.1} |\n",
            r.messages.processing.p50, r.messages.processing.p99
        ));
    }
    out.push_str(&cpu_per_webhook(run, &names));
    out.push_str("\nStall deadline → alert is not measured here: in an event-time replay a deadline passes when the watermark does, not at a wall-clock time; wall-clock timer lateness is measured by the detector bench.\n");
    let s = &run.score;
    out.push_str(&format!(
        "\nDetector vs generator ground truth (waybill + rule; tier and open state compared on matches; redelivered alert records collapsed by id/state/tier): precision {:.3}, recall {:.3} ({} expected, {} raised, {} matched, {} with the expected tier and still open; false alarms by (rule, still open): {:?}; missed by rule: {:?}).\n",
        s.precision(),
        s.recall(),
        s.expected,
        s.raised,
        s.matched,
        s.tier_agrees,
        s.false_by_rule,
        s.missed_by_rule
    ));
    out
}

/// CPU time per accepted webhook, per component (µs): the step's CPU share
/// over its accepted rate. "services" sums everything but the broker and the
/// benchmark itself (ingest, normalize, detector, notifier, Redis).
fn cpu_per_webhook(run: &Run, names: &[&str]) -> String {
    let mut out = String::from(
        "\nCPU per accepted webhook (µs; CPU % ÷ accepted webhooks/s; a webhook carries ~3 scans):\n\n| offered webhooks/s |",
    );
    for name in names {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str(" services (all but broker and bench) |\n");
    out.push_str(&"|---".repeat(names.len() + 2));
    out.push_str("|\n");
    for r in &run.results {
        let rate = r.webhooks_per_s.max(1e-9);
        let us = |cpu: f64| cpu / 100.0 * 1e6 / rate;
        out.push_str(&format!("| {} |", step_label(r)));
        let mut services = 0.0;
        for (name, cpu, _) in &r.cpu {
            out.push_str(&format!(" {:.0} |", us(*cpu)));
            if !matches!(name.as_str(), "broker" | "bench") {
                services += us(*cpu);
            }
        }
        out.push_str(&format!(" {services:.0} |\n"));
    }
    out
}

pub(crate) const BEGIN: &str = "<!-- e2e:begin (generated by trackstream-bench; do not edit) -->";
pub(crate) const END: &str = "<!-- e2e:end -->";

pub(crate) fn splice_results(path: &Path, table: &str) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{table}\n![latency vs offered load](e2e-latency.svg)\n{END}");
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(start), Some(end)) if end > start => format!(
            "{}{block}{}",
            &current[..start],
            &current[end + END.len()..]
        ),
        _ => format!("{current}\n{block}\n"),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

/// The run's settings line in the report.
pub(crate) fn settings(opts: &Options, broker: String) -> String {
    let defaults = trackstream_runtime::config::KafkaConfig::default();
    format!(
        "broker {broker}; {} partitions per topic; services' `kafka.fetch_wait_max` {}, `kafka.batch_linger` {}; {} webhooks in flight at most; delivery predictions and lane statistics {}; incident detector {}",
        opts.partitions,
        opts.fetch_wait_ms.map_or_else(
            || format!(
                "default ({})",
                trackstream_runtime::config::duration::format(defaults.fetch_wait_max)
            ),
            |v| format!("{v}ms")
        ),
        opts.batch_linger_ms.map_or_else(
            || format!(
                "default ({})",
                trackstream_runtime::config::duration::format(defaults.batch_linger)
            ),
            |v| format!("{v}ms")
        ),
        opts.concurrency,
        if opts.without_lanes { "off" } else { "on" },
        if opts.without_incidents { "off" } else { "on" }
    )
}

/// Prints the report's tables, writes the latency plot beside
/// `opts.results` and splices the tables into it.
pub(crate) fn write_report(
    opts: &Options,
    report: &Run,
    measured: &[(String, u32)],
) -> anyhow::Result<()> {
    let table = render(report, measured);
    println!("{table}");
    // The repeated first step is left out of the plot: it would draw the line
    // back to the start.
    let plotted: Vec<&StepResult> = report.results.iter().filter(|r| !r.again).collect();
    let line = |value: fn(&StepResult) -> f64| -> Vec<(f64, f64)> {
        plotted.iter().map(|r| (r.offered, value(r))).collect()
    };
    let svg = svg_plot(
        "webhook acknowledged → update on tracking.updates; notifier latency",
        "offered load (webhooks/s)",
        &[
            Series {
                name: "p50 ack → update",
                color: "#1f77b4",
                points: line(|r| r.to_update.p50),
            },
            Series {
                name: "p99 ack → update",
                color: "#d62728",
                points: line(|r| r.to_update.p99),
            },
            Series {
                name: "p99 update → msg",
                color: "#2ca02c",
                points: line(|r| r.messages.processing.p99),
            },
        ],
    );
    let svg_path = opts.results.with_file_name("e2e-latency.svg");
    std::fs::write(&svg_path, svg)?;
    splice_results(&opts.results, &table)?;
    eprintln!(
        "[bench] wrote {} and {}",
        opts.results.display(),
        svg_path.display()
    );
    Ok(())
}
