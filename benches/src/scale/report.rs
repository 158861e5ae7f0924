//! The scaling tables (markdown), as `benches/RESULTS.md` "Scaling per stage"
//! and `docs/SCALING.md` quote them.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::memory::Class;
use super::options::{Options, RedisMode};
use super::stage::Drain;

/// The backlog one configuration wrote and what it left behind.
#[derive(Debug, Clone)]
pub(crate) struct Backlog {
    pub(crate) parcels: usize,
    pub(crate) webhooks: usize,
    pub(crate) scans: usize,
    /// ingest's CPU per accepted webhook while it wrote the backlog, µs, and
    /// the rate it accepted them at.
    pub(crate) ingest_us: f64,
    pub(crate) ingest_rate: f64,
    /// Key + value bytes of every record in every topic after the last stage.
    pub(crate) topic_bytes: u64,
    /// Records in every topic after the last stage (inputs, outputs, dead
    /// letters).
    pub(crate) broker_records: u64,
    /// Redis `used_memory` after the last stage, over the empty server's.
    pub(crate) redis_bytes: u64,
    /// `MEMORY USAGE` summed by key class after the last stage.
    pub(crate) memory: BTreeMap<String, Class>,
}

/// One configuration: Redis setup, instances per stage, its backlog and each
/// stage's drain.
pub(crate) struct Run {
    pub(crate) redis: RedisMode,
    pub(crate) instances: usize,
    pub(crate) backlog: Backlog,
    pub(crate) drains: Vec<Drain>,
}

/// Both tables.
pub(crate) fn markdown(opts: &Options, runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Settings: {} partitions per topic, broker storage {}, backlog of {} webhooks per configuration, services' default Kafka settings.\n",
        opts.partitions,
        opts.broker_storage.name(),
        opts.webhooks
    );
    out.push_str("| Redis | stage | instances | backlog records | records/s (10–90 %) | per instance | × vs 1 instance | service CPU µs/record | Redis CPU µs/record | broker CPU µs/record | Redis commands/record | first record after (s) | drained after (s) | records per instance |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in runs {
        for d in &run.drains {
            let single = runs
                .iter()
                .filter(|r| r.redis == run.redis && r.instances == 1)
                .flat_map(|r| &r.drains)
                .find(|s| s.stage == d.stage)
                .map(|s| s.rate);
            let factor = single.map_or("—".to_owned(), |s| format!("{:.2}", d.rate / s));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {:.0} | {factor} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:?} |",
                run.redis.name(),
                d.stage,
                d.instances,
                d.records,
                d.rate,
                d.rate / d.instances as f64,
                d.service_us,
                d.redis_us,
                d.broker_us,
                d.redis_ops,
                d.first_record_s,
                d.drained_s,
                d.per_instance
            );
        }
    }
    out.push_str("\n| Redis | instances | parcels | webhooks | scans in them | ingest webhooks/s (one instance) | ingest CPU µs/webhook | broker records (all topics) | records per webhook | bytes per record (key + value) | Redis bytes per parcel |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in runs {
        let b = &run.backlog;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {:.2} | {:.0} | {:.0} |",
            run.redis.name(),
            run.instances,
            b.parcels,
            b.webhooks,
            b.scans,
            b.ingest_rate,
            b.ingest_us,
            b.broker_records,
            b.broker_records as f64 / b.webhooks.max(1) as f64,
            b.topic_bytes as f64 / b.broker_records.max(1) as f64,
            b.redis_bytes as f64 / b.parcels.max(1) as f64
        );
    }
    if let Some(first) = runs.first() {
        let b = &first.backlog;
        let _ = writeln!(
            out,
            "\nRedis memory by key class after the last stage ({}, {} instance(s); `MEMORY USAGE` per key, {} parcels):\n",
            first.redis.name(),
            first.instances,
            b.parcels
        );
        out.push_str("| key class | keys | bytes | bytes per parcel |\n|---|---|---|---|\n");
        let total: u64 = b.memory.values().map(|c| c.bytes).sum();
        for (name, class) in &b.memory {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {:.0} |",
                class.keys,
                class.bytes,
                class.bytes as f64 / b.parcels.max(1) as f64
            );
        }
        let _ = writeln!(
            out,
            "| **all** | {} | {total} | {:.0} |",
            b.memory.values().map(|c| c.keys).sum::<u64>(),
            total as f64 / b.parcels.max(1) as f64
        );
    }
    out
}
