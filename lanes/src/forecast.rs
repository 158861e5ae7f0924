//! Predictions in the stream: the detector asks for one on every update it
//! emits. Its fold is synchronous and pure, so the statistics a batch needs
//! are fetched first ([`Forecaster::prefetch`], one `HGETALL` per key not yet
//! cached) and the fold reads them from memory ([`Forecaster::forecast`]).
//!
//! A window is the whole days before the day of the parcel's newest scan, so
//! within a day every update of a lane draws on the same statistics and the
//! cache holds each (key, day) once: replaying the same scans gives the same
//! predictions while the process lives. (A window fetched again after a
//! restart or an eviction can include a delivery counted into a past day
//! since — a late scan or the statistics consumer's lag at midnight.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use trackstream_proto::v1::{DeliveryPrediction, Shipment, ShipmentUpdate};

use crate::book::{DayStats, Windows};
use crate::parcel;
use crate::predict::{self, Settings};
use crate::store::{LaneStore, window_of};

/// How the stream predicts (defaults documented per field).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// Off switch: no predictions, no `promise_at_risk` (default on).
    pub enabled: bool,
    /// Days of deliveries a prediction draws on (default 14).
    pub window_days: i64,
    /// The recent window that notices a changed lane (default 2).
    pub recent_days: i64,
    /// Fewest deliveries a level needs to be used (default 30).
    pub min_samples: usize,
    /// Deliveries for a high-confidence prediction (default 200).
    pub high_samples: usize,
    /// `promise_at_risk` opens when the predicted arrival at this quantile
    /// passes the promise: at 0.3, when even the earliest 30 % of such parcels
    /// would arrive late — a 70 % chance of missing it (default 0.3).
    pub risk_quantile: f64,
    /// (key, day) windows kept in memory (default 20 000; about 10 KB each).
    pub cache_entries: usize,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        let settings = Settings::default();
        ForecastConfig {
            enabled: true,
            window_days: settings.window_days,
            recent_days: settings.recent_days,
            min_samples: settings.min_samples,
            high_samples: settings.high_samples,
            risk_quantile: 0.3,
            cache_entries: 20_000,
        }
    }
}

impl ForecastConfig {
    fn settings(&self) -> Settings {
        Settings {
            window_days: self.window_days,
            recent_days: self.recent_days,
            min_samples: self.min_samples,
            high_samples: self.high_samples,
            ..Settings::default()
        }
    }
}

/// A prediction and what it means for the promise.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// What the update carries.
    pub prediction: DeliveryPrediction,
    /// When the promise becomes likely missed with no new scan (ms; the
    /// prediction's instant when it already is); `None` without a promise or
    /// when it is not at risk before it passes.
    pub risk_at: Option<i64>,
}

/// The two windows a prediction reads for one key and day.
#[derive(Debug, Default)]
struct Entry {
    whole: Arc<DayStats>,
    recent: Arc<DayStats>,
}

/// Predictions from the Redis buckets, cached per key and day.
pub struct Forecaster {
    store: LaneStore,
    config: ForecastConfig,
    settings: Settings,
    cache: Mutex<HashMap<(String, i64), Arc<Entry>>>,
}

impl std::fmt::Debug for Forecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forecaster")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A view of the cache for one prediction.
struct Cached<'a>(&'a HashMap<(String, i64), Arc<Entry>>, &'a Settings);

impl Windows for Cached<'_> {
    fn window(&self, key: &str, day: i64, days: i64) -> Arc<DayStats> {
        let Some(entry) = self.0.get(&(key.to_owned(), day)) else {
            return Arc::default();
        };
        if days == self.1.recent_days {
            entry.recent.clone()
        } else {
            entry.whole.clone()
        }
    }
}

impl Forecaster {
    /// A forecaster over `store` (read only).
    pub fn new(store: LaneStore, config: ForecastConfig) -> Self {
        Forecaster {
            store,
            settings: config.settings(),
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &ForecastConfig {
        &self.config
    }

    /// The (key, day) windows a parcel of `shipment` needs for updates whose
    /// newest scan falls on `days` (hours → [`parcel::day`]).
    pub fn needs(&self, shipment: &Shipment, days: &[i64], out: &mut Vec<(String, i64)>) {
        if !self.config.enabled || shipment.is_return {
            return;
        }
        let lane = parcel::lane(shipment);
        for (_, key) in lane.keys() {
            for day in days {
                out.push((key.clone(), *day));
            }
        }
    }

    /// Fetches the windows of `needs` not cached yet (one `HGETALL` per key).
    pub async fn prefetch(&self, mut needs: Vec<(String, i64)>) -> redis::RedisResult<()> {
        {
            let cache = self.lock();
            needs.retain(|n| !cache.contains_key(n));
        }
        needs.sort();
        needs.dedup();
        let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
        for (key, day) in needs {
            by_key.entry(key).or_default().push(day);
        }
        let fetched =
            futures::future::try_join_all(by_key.into_iter().map(|(key, days)| async move {
                let all = self.store.days(&key).await?;
                Ok::<_, redis::RedisError>((key, days, all))
            }))
            .await?;
        let mut cache = self.lock();
        if cache.len() > self.config.cache_entries {
            // Simple and bounded: the windows of the days in use are fetched
            // again by the next batch that needs them.
            cache.clear();
        }
        for (key, days, all) in fetched {
            for day in days {
                let entry = Entry {
                    whole: Arc::new(window_of(&all, day, self.settings.window_days)),
                    recent: Arc::new(window_of(&all, day, self.settings.recent_days)),
                };
                cache.entry((key.clone(), day)).or_insert(Arc::new(entry));
            }
        }
        Ok(())
    }

    /// The prediction for `update` from the cached windows (`None` when no
    /// level has enough deliveries, or nothing is left to predict).
    pub fn forecast(&self, update: &ShipmentUpdate) -> Option<Forecast> {
        if !self.config.enabled {
            return None;
        }
        let shipment = update.shipment.as_ref()?;
        let position = parcel::position(update)?;
        let now = parcel::now(update)?;
        let lane = parcel::lane(shipment);
        let cache = self.lock();
        let windows = Cached(&cache, &self.settings);
        let basis = predict::basis(&windows, &lane, position, now, &self.settings)?;
        let prediction = basis.predict(now, &self.settings)?;
        let key = lane.key(basis.level);
        // A low-confidence prediction (a coarse fallback, few samples) is
        // shown, but does not raise an alert a merchant would act on.
        let risk_at = parcel::hours(shipment.promised_delivery_at.as_ref())
            .filter(|_| prediction.confidence >= crate::predict::Confidence::Medium)
            .and_then(|promise| basis.risk_from(now, promise, self.config.risk_quantile))
            .map(parcel::millis);
        Some(Forecast {
            prediction: parcel::to_proto(&prediction, &basis, &key, position, now),
            risk_at,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), Arc<Entry>>> {
        // A poisoned lock only means a panic elsewhere mid-insert of whole
        // entries: the map is still consistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
