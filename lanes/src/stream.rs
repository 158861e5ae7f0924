//! The statistics consumer: reads `tracking.updates` (consumer group
//! `<group>-lanes`), counts every delivery into its lane's day buckets —
//! platform-wide and per merchant — and publishes the lane's scorecard to
//! the compacted `tracking.lanes`.
//!
//! Every input it needs rides on the update the detector emits for the
//! winning delivery scan ([`crate::parcel::delivery`]: milestones, the
//! registration's lane fields, promise and order time, the first
//! prediction, the provider's estimate), so it keeps no per-parcel state.
//! Exactly once per record: the bucket of (key, day) this consumer writes is
//! its partition's own field, stored with the offset of the last record
//! counted in it, and a record at or below that offset is skipped — a batch
//! re-read after a crash or a rebalance adds nothing twice. (A delivery the
//! detector itself re-delivers from its outbox is a second record; see
//! ARCHITECTURE.md.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use prost::Message as _;
use serde::Deserialize;
use trackstream_proto::topics;
use trackstream_proto::v1::ShipmentUpdate;
use trackstream_runtime::kafka::{BatchHandler, HandlerError, Inbound, OutRecord, Producer};

use crate::lane::Level;
use crate::stage::Timeline;
use crate::store::{LaneStore, merchant_key};
use crate::{parcel, scorecard};

/// The statistics consumer's settings (defaults documented per field).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatsConfig {
    /// Off switch (default on).
    pub enabled: bool,
    /// Days of buckets kept per key (default 15: the 14-day window and the
    /// day being counted).
    pub keep_days: i64,
    /// Days a published scorecard covers (default 14).
    pub scorecard_days: i64,
    /// Least time between two scorecards of one key on `tracking.lanes`
    /// (default `60s`).
    #[serde(with = "trackstream_runtime::config::duration")]
    pub publish_interval: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            enabled: true,
            keep_days: 15,
            scorecard_days: 14,
            publish_interval: Duration::from_secs(60),
        }
    }
}

/// What the consumer counted (`<service>_lanes_*` in the registry it is given;
/// the detector's: `trackstream_detector_lanes_*`).
#[derive(Clone, Default)]
struct Metrics {
    deliveries: Counter,
    skipped: Counter,
    undecodable: Counter,
    published: Counter,
}

/// The [`BatchHandler`] of the statistics consumer.
pub struct LaneStats {
    store: LaneStore,
    producer: Producer,
    config: StatsConfig,
    metrics: Metrics,
    published: Mutex<HashMap<String, Instant>>,
}

/// The deliveries of one (key, day, partition): their offsets and indexes
/// into the batch's timelines (each delivery counts under 8 keys).
type Counted = BTreeMap<(String, i64, i32), Vec<(i64, usize)>>;

impl LaneStats {
    /// A consumer writing through `store` and publishing with `producer`.
    pub fn new(
        store: LaneStore,
        producer: Producer,
        config: StatsConfig,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::default();
        let lanes = registry.sub_registry_with_prefix("lanes");
        lanes.register(
            "deliveries",
            "Deliveries counted into lane statistics",
            metrics.deliveries.clone(),
        );
        lanes.register(
            "skipped",
            "Deliveries re-read after a crash or rebalance, already counted",
            metrics.skipped.clone(),
        );
        lanes.register(
            "undecodable",
            "tracking.updates records that were not ShipmentUpdates",
            metrics.undecodable.clone(),
        );
        lanes.register(
            "scorecards_published",
            "Scorecards produced to tracking.lanes",
            metrics.published.clone(),
        );
        LaneStats {
            store,
            producer,
            config,
            metrics,
            published: Mutex::new(HashMap::new()),
        }
    }

    /// The deliveries of `batch` by bucket: each counts under every level of
    /// its lane, platform-wide and under its merchant.
    fn collect(
        &self,
        batch: &[Inbound],
        merchants: &mut BTreeMap<String, BTreeSet<String>>,
    ) -> (Vec<Timeline>, Counted) {
        let mut timelines = Vec::new();
        let mut counted = Counted::new();
        for record in batch {
            let update = match ShipmentUpdate::decode(record.payload.as_slice()) {
                Ok(update) => update,
                Err(err) => {
                    self.metrics.undecodable.inc();
                    tracing::warn!(partition = record.partition, offset = record.offset, %err,
                        "lanes: tracking.updates record is not a ShipmentUpdate; not counted");
                    continue;
                }
            };
            let (Some(timeline), Some(shipment)) =
                (parcel::delivery(&update), update.shipment.as_ref())
            else {
                continue;
            };
            let Some(day) = timeline.delivered_at.map(parcel::day) else {
                continue;
            };
            let lane = parcel::lane(shipment);
            let index = timelines.len();
            timelines.push(timeline);
            for (level, key) in lane.keys() {
                let own = merchant_key(&shipment.merchant_id, &key);
                if matches!(level, Level::Lane | Level::Carrier) {
                    merchants
                        .entry(shipment.merchant_id.clone())
                        .or_default()
                        .insert(key.clone());
                }
                for key in [key, own] {
                    counted
                        .entry((key, day, record.partition))
                        .or_default()
                        .push((record.offset, index));
                }
            }
        }
        (timelines, counted)
    }

    /// Adds one bucket's deliveries past its stored offset; returns how many
    /// were new.
    async fn count(
        &self,
        (key, day, partition): &(String, i64, i32),
        deliveries: &[(i64, usize)],
        timelines: &[Timeline],
    ) -> redis::RedisResult<(u64, u64)> {
        let store = self.store.as_instance(format!("p{partition}"));
        let mut bucket = store.own(key, *day).await?;
        let (mut new, mut old) = (0, 0);
        for (offset, index) in deliveries {
            let Some(timeline) = timelines.get(*index) else {
                continue;
            };
            if *offset <= bucket.upto {
                old += 1;
                continue;
            }
            bucket.stats.record(timeline);
            bucket.upto = *offset;
            new += 1;
        }
        if new > 0 {
            store.write(key, *day, &bucket.stats, bucket.upto).await?;
        }
        Ok((new, old))
    }

    /// Produces the platform-wide scorecards of `keys` not published within
    /// the interval.
    async fn publish(&self, keys: BTreeSet<(String, i64)>) -> Result<(), HandlerError> {
        // One scorecard per key, ending after the newest day counted.
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        for (key, day) in keys {
            let entry = newest.entry(key).or_insert(day);
            *entry = (*entry).max(day);
        }
        let mut due = Vec::new();
        {
            let now = Instant::now();
            let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
            published.retain(|_, at| now.duration_since(*at) < self.config.publish_interval);
            for (key, day) in newest {
                if !published.contains_key(&key) {
                    published.insert(key.clone(), now);
                    due.push((key, day));
                }
            }
        }
        let mut records = Vec::with_capacity(due.len());
        for (key, day) in due {
            // The window ends after the day just counted, so it includes it.
            let stats = self
                .store
                .window(&key, day + 1, self.config.scorecard_days)
                .await
                .map_err(|e| HandlerError(format!("lanes: reading {key}: {e}")))?;
            let card = scorecard::to_proto(&key, &stats, self.config.scorecard_days, day + 1);
            records.push(OutRecord::new(
                topics::TRACKING_LANES,
                key,
                card.encode_to_vec(),
            ));
        }
        let n = records.len() as u64;
        self.producer
            .send_all(records)
            .await
            .map_err(|e| HandlerError(format!("lanes: producing scorecards: {e}")))?;
        self.metrics.published.inc_by(n);
        Ok(())
    }
}

impl BatchHandler for LaneStats {
    async fn handle(&self, batch: &[Inbound]) -> Result<(), HandlerError> {
        let mut merchants = BTreeMap::new();
        let (timelines, counted) = self.collect(batch, &mut merchants);
        if counted.is_empty() {
            return Ok(());
        }
        let results = futures::future::try_join_all(
            counted
                .iter()
                .map(|(bucket, deliveries)| self.count(bucket, deliveries, &timelines)),
        )
        .await
        .map_err(|e| HandlerError(format!("lanes: writing buckets: {e}")))?;
        let (new, old) = results.iter().fold((0, 0), |(n, o), (a, b)| (n + a, o + b));
        // Every delivery counts under 8 keys (4 levels, platform and merchant).
        self.metrics.deliveries.inc_by(new / 8);
        self.metrics.skipped.inc_by(old / 8);
        tracing::debug!(buckets = counted.len(), new, old, "lanes: batch counted");
        for (merchant, keys) in merchants {
            let keys: Vec<String> = keys.into_iter().collect();
            self.store
                .index(&merchant, &keys)
                .await
                .map_err(|e| HandlerError(format!("lanes: indexing {merchant}: {e}")))?;
        }
        let platform: BTreeSet<(String, i64)> = counted
            .keys()
            .filter(|(key, _, _)| !key.starts_with("m:"))
            .map(|(key, day, _)| (key.clone(), *day))
            .collect();
        self.publish(platform).await
    }
}
