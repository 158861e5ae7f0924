//! ingest configuration (TOML + `TRACKSTREAM__...` env overrides; see
//! `trackstream_runtime::config`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use trackstream_carriers::ProviderSettings;
use trackstream_runtime::config::{
    AdminConfig, KafkaConfig, ListenerLimits, RedisConfig, duration,
};
use trackstream_runtime::merchants::MerchantConfig;

/// Everything ingest reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public HTTP API.
    pub http: HttpConfig,
    /// Kafka connection; `produce_timeout` bounds how long a webhook waits
    /// for Kafka before answering 503.
    pub kafka: KafkaConfig,
    /// `/healthz` + `/metrics` listener and logging.
    pub admin: AdminConfig,
    /// Redis, where waybill ownership is claimed (`runtime::ownership`). Must
    /// be the detector's Redis: the detector refreshes the claims' expiry.
    pub redis: RedisConfig,
    /// Waybill ownership claims.
    pub ownership: OwnershipConfig,
    /// Per-provider secrets and zones, keyed by route (`kdniao`, `kuaidi100`,
    /// `17track`, `aftership`, `easypost`, `generic`). A provider without an entry
    /// rejects every push (no secret, no trust). Several accounts per provider are
    /// tried in constant time, which is also how a secret is rotated:
    ///
    /// ```toml
    /// [providers.kdniao]      # account = EBusinessID, secret = AppKey
    /// secrets = [{ account = "1237100", secret = "..." }, { account = "1999999", secret = "..." }]
    /// [providers.kuaidi100]   # secret = the subscription's salt
    /// secrets = [{ account = "shop-a", secret = "..." }]
    /// [providers.aftership]   # old and new webhook secret during a rotation
    /// secrets = [{ account = "current", secret = "..." }, { account = "previous", secret = "..." }]
    /// ```
    ///
    /// An entry with `merchants = ["m-acme", ...]` binds its account: its pushes
    /// apply only to waybills those merchants registered (see
    /// `trackstream_carriers::settings`).
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Merchants allowed to register shipments, with their bearer tokens.
    pub merchants: Vec<MerchantConfig>,
}

/// The public HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Largest accepted request body; larger ones get 413. Default 1 MiB (Kdniao
    /// batches of hundreds of waybills stay well under it).
    pub body_limit_bytes: usize,
    /// Deepest nesting of JSON arrays/objects in a push; deeper gets 400. Default
    /// 32 (the deepest provider format, 17TRACK, uses 9). See `guard`.
    pub json_max_depth: usize,
    /// Most entries in one JSON array or object of a push (waybills of a Kdniao
    /// batch, traces of a snapshot, ...); more gets 413. Default 10 000. See
    /// `guard`.
    pub json_max_elements: usize,
    /// Longest a client may take to send its body; slower gets 408 (a stalled
    /// sender must not hold a connection and a buffer forever). Default `30s`.
    #[serde(with = "duration")]
    pub body_read_timeout: Duration,
    /// Connection hygiene of the public listener (`[http.limits]`): header-read,
    /// idle and request timeouts and a connection cap; see
    /// `trackstream_runtime::config::ListenerLimits` for each default. Its
    /// `request_timeout` must exceed `kafka.produce_timeout`, so a slow
    /// broker is answered 503 (retry) rather than 408.
    pub limits: ListenerLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            json_max_depth: 32,
            json_max_elements: 10_000,
            limits: ListenerLimits::default(),
        }
    }
}

/// Waybill ownership: a `(carrier, waybill)` belongs to the merchant that
/// registered it first (`runtime::ownership`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnershipConfig {
    /// How long a claim lives when nothing refreshes it: the longest a parcel
    /// can live before the detector's retention takes over (the detector sets
    /// the claim's expiry to the parcel's own retention once it has state for
    /// it; a re-registration by the owner extends it back to at least this).
    /// Must be > 0. Default `120d`.
    #[serde(with = "duration")]
    pub claim_ttl: Duration,
    /// Longest one Redis round trip of a registration or a bound push may take
    /// before the request is answered 503 (retriable). Default `2s`.
    #[serde(with = "duration")]
    pub redis_timeout: Duration,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        OwnershipConfig {
            claim_ttl: Duration::from_secs(120 * 86_400),
            redis_timeout: Duration::from_secs(2),
        }
    }
}
