//! The detector over one engine: the Kafka batch handler (events and
//! registrations) and the timer loop (deadlines of owned partitions) feed the
//! same pipeline — load → fold → commit → deliver — a partition at a time.
//!
//! Files: [`pipeline`] the shared load → fold → commit rounds and what a
//! source of inputs changes about them; `fold` one waybill's fold with its
//! size checks; `deliver` sequencing, dead letters, produce, outbox clear and
//! re-delivery; `batch` the consumer's side (decode, group by waybill);
//! `timers` the timer loop's side (due deadlines become inputs).
//!
//! The clock each fold runs to is [`Detector::clock`]: wall time, or with the
//! event clock the partition's watermark (newest `occurred_at` seen, including
//! the batch at hand) minus `allowed_lateness` and 1 ms
//! ([`crate::config::event_clock`]). The stored watermark — what the
//! timer loop fires against — only advances after a batch is committed, so the
//! timer loop never fires a deadline that a scan of the batch in flight would
//! have prevented.

mod batch;
mod deliver;
mod fold;
mod forecast;
pub mod pipeline;
mod timers;

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use trackstream_proto::topics;
use trackstream_runtime::dlq::DeadLetters;
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, Producer, Progress};

use crate::config::{ClockMode, RetentionConfig, TimerConfig};
use crate::engine::Engine;
use crate::letters::{self, Failure};
use crate::lifecycle::Retention;
use crate::sink::Sink;
use crate::store::Store;

type Labels = Vec<(&'static str, String)>;

/// Metrics of detection; each is logged where it happens too.
#[derive(Clone)]
struct Metrics {
    inputs: Family<Labels, Counter>,
    alerts: Family<Labels, Counter>,
    predictions: Family<Labels, Counter>,
    conflicts: Counter,
    timers_fired: Counter,
    expired_timers: Counter,
    unsendable_letters: Counter,
}

/// The detector: engine + store + sink (the Kafka producer in production).
pub struct Detector<S: Sink = Producer> {
    engine: Engine,
    store: Store,
    sink: S,
    timers: TimerConfig,
    metrics: Metrics,
    /// Partitions whose outbox may hold undelivered outputs.
    dirty: Mutex<BTreeSet<i32>>,
    /// With the wall clock: how far the consumer has got, so deadlines fire only
    /// on partitions it has caught up on (see [`Detector::with_progress`]).
    progress: Option<Progress>,
    /// The wall clock in ms (injectable so tests move time without sleeping).
    wall: WallClock,
    /// Where poison goes (`tracking.dlq`).
    letters: DeadLetters,
    /// When a parcel's keys expire.
    retention: Retention,
}

/// A source of wall-clock time in ms since the epoch.
pub type WallClock = std::sync::Arc<dyn Fn() -> i64 + Send + Sync>;

/// A permanent failure that reaches the consumer loop was not attributable to
/// one record; the batch is retried (and logged as such).
impl From<Failure> for HandlerError {
    fn from(err: Failure) -> Self {
        HandlerError(err.to_string())
    }
}

impl<S: Sink> Detector<S> {
    /// A detector over `store`, writing through `sink`.
    pub fn new(
        engine: Engine,
        store: Store,
        sink: S,
        timers: TimerConfig,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics {
            inputs: Family::default(),
            alerts: Family::default(),
            predictions: Family::default(),
            conflicts: Counter::default(),
            timers_fired: Counter::default(),
            expired_timers: Counter::default(),
            unsendable_letters: Counter::default(),
        };
        registry.register(
            "inputs",
            "Inputs applied, by kind (event, duplicate, registration, undecodable)",
            metrics.inputs.clone(),
        );
        registry.register(
            "alerts",
            "Alert transitions emitted, by rule and state",
            metrics.alerts.clone(),
        );
        registry.register(
            "predictions",
            "Updates produced with a delivery prediction, by confidence and statistics level",
            metrics.predictions.clone(),
        );
        registry.register(
            "commit_conflicts",
            "Optimistic commits retried because the waybill changed concurrently",
            metrics.conflicts.clone(),
        );
        registry.register(
            "timers_fired",
            "Deadlines processed by the timer loop",
            metrics.timers_fired.clone(),
        );
        registry.register(
            "expired_timers",
            "Due timer entries dropped because their waybill's keys had expired",
            metrics.expired_timers.clone(),
        );
        registry.register(
            "unsendable_letters",
            "Dead letters dropped because even without their value they exceed the size limit",
            metrics.unsendable_letters.clone(),
        );
        let letters = DeadLetters::register(
            registry,
            topics::TRACKING_DLQ,
            letters::STAGE,
            sink.max_record_bytes(),
        );
        Detector {
            engine,
            store,
            sink,
            timers,
            metrics,
            dirty: Mutex::new(BTreeSet::new()),
            progress: None,
            wall: std::sync::Arc::new(|| chrono::Utc::now().timestamp_millis()),
            letters,
            retention: Retention::default(),
        }
    }

    /// Sets when parcels' keys expire (default: [`RetentionConfig::default`]).
    pub fn with_retention(mut self, retention: RetentionConfig) -> Self {
        self.retention = Retention::new(retention);
        self
    }

    /// Replaces the wall clock (`clock = "wall"`): tests drive time with it
    /// instead of sleeping through deadlines and graces.
    pub fn with_wall_clock(mut self, wall: WallClock) -> Self {
        self.wall = wall;
        self
    }

    /// The grace a batch gives the deadlines of the waybills it touches, as the
    /// time they may fire from (0 = none; see [`crate::engine::Waybill::hold_until`]).
    fn hold_until(&self, clock: i64) -> i64 {
        match self.timers.clock {
            ClockMode::Wall if !self.timers.grace.is_zero() => clock.saturating_add(
                trackstream_runtime::config::duration::millis(self.timers.grace),
            ),
            _ => 0,
        }
    }

    /// Fires wall-clock deadlines of a partition only once the consumer has caught
    /// up on it (no batch in flight, no lag in statistics taken after the last
    /// batch). A backlog may hold the scan that cancels a deadline — the rest of a
    /// late snapshot split across batches, a push that arrived late — and firing
    /// before reading it raises a false alarm. (The event clock needs no gate: its
    /// watermark only moves with committed batches.)
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    fn may_fire(&self, partition: i32) -> bool {
        match (&self.progress, self.timers.clock) {
            (Some(progress), ClockMode::Wall) => {
                progress.caught_up(topics::TRACKING_EVENTS, partition)
                    && progress.caught_up(topics::SHIPMENTS, partition)
            }
            _ => true,
        }
    }

    /// The store (tests and benches inspect Redis through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    fn count(&self, kind: &str) {
        self.metrics
            .inputs
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// The clock deadlines of `partition` fire against, in ms: wall time, or
    /// the stored event-time watermark minus `allowed_lateness`
    /// ([`crate::config::event_clock`]).
    pub async fn clock(&self, partition: i32) -> Result<i64, HandlerError> {
        Ok(match self.timers.clock {
            ClockMode::Wall => (self.wall)(),
            ClockMode::Event => {
                let stored = self
                    .store
                    .watermark(partition)
                    .await
                    .map_err(Failure::from)?;
                crate::config::event_clock(stored, self.timers.allowed_lateness)
            }
        })
    }
}

impl<S: Sink> BatchHandler for Detector<S> {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        self.apply_batch(batch).await
    }
}
