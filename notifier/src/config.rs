//! notifier configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use trackstream_runtime::config::{AdminConfig, KafkaConfig, RedisConfig};
use trackstream_runtime::merchants::MerchantConfig;

/// Everything the notifier reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka; `group_id` (default `trackstream-notifier`) is the group that sends
    /// buyer messages once per group. Live fan-out uses a per-instance group.
    pub kafka: KafkaConfig,
    /// Redis (order history written by the detector, message state).
    pub redis: RedisConfig,
    /// `/healthz` + `/metrics` listener and logging.
    pub admin: AdminConfig,
    /// The gRPC API.
    pub grpc: GrpcConfig,
    /// Merchants and their bearer tokens (every gRPC call is scoped to one).
    pub merchants: Vec<MerchantConfig>,
    /// Buyer messages.
    pub messages: MessagesConfig,
}

/// gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Listen address. Default `127.0.0.1:50051`.
    pub listen: String,
    /// Updates buffered per watcher before it is cut off with a resume point.
    /// Default 256: far above what one order produces in a burst, small enough
    /// that 10 000 watchers stay cheap.
    pub watch_buffer: usize,
    /// Open watch streams (WatchOrder + WatchAlerts) this instance accepts before
    /// answering UNAVAILABLE, so memory stays bounded and clients go to another
    /// instance. Default 20 000.
    pub max_watchers: usize,
    /// HTTP/2 streams one connection may have open at once. Default 4 096 (a
    /// merchant backend multiplexes many watches on one connection).
    pub max_streams_per_connection: u32,
    /// Redis reads the API runs at once (authorisation, history, GetOrder);
    /// more wait for a turn, so a storm of reconnecting watchers queues instead
    /// of timing out on the shared connection. Default 128.
    pub max_concurrent_reads: usize,
    /// HTTP/2 keepalive ping interval in seconds (0 = off), so watches of clients
    /// that vanished without closing are ended. Default 30.
    pub keepalive_secs: u64,
    /// TLS (rustls). Plaintext when absent.
    pub tls: Option<TlsConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: "127.0.0.1:50051".into(),
            watch_buffer: 256,
            max_watchers: 20_000,
            max_streams_per_connection: 4_096,
            max_concurrent_reads: 128,
            keepalive_secs: 30,
            tls: None,
        }
    }
}

/// Server TLS: a PEM certificate chain and key, optionally a client CA for mTLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_path: PathBuf,
    /// PEM private key of the server.
    pub key_path: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

/// One template: title and body with `{placeholders}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Message title.
    pub title: String,
    /// Message body.
    pub body: String,
}

/// Buyer message settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesConfig {
    /// Locale when the shipment has none. Default `zh-CN`.
    pub default_locale: String,
    /// Buyer time zone (IANA) when the shipment has none or an invalid one, for
    /// quiet hours. Default `Asia/Shanghai`.
    pub default_time_zone: String,
    /// Per-merchant overrides: merchant id → locale → milestone name → template.
    pub overrides: BTreeMap<String, BTreeMap<String, BTreeMap<String, Template>>>,
    /// How long a milestone of a multi-parcel order waits for the order's other
    /// parcels to reach it, so the buyer gets one message listing every waybill.
    /// The wait ends early as soon as every known parcel has reached it, so
    /// single-parcel orders never wait. Default 600 s, at most 86 400.
    pub burst_window_secs: u64,
    /// Quiet hours in the buyer's zone. Off when absent.
    pub quiet_hours: Option<QuietHoursConfig>,
    /// How often held messages that have become due are looked for, in ms.
    /// Default 500.
    pub flush_interval_ms: u64,
    /// Notifier-owned per-order keys expire this many days after their last
    /// write. Default 90.
    pub state_ttl_days: u64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            default_locale: "zh-CN".into(),
            default_time_zone: "Asia/Shanghai".into(),
            overrides: BTreeMap::new(),
            burst_window_secs: 600,
            quiet_hours: None,
            flush_interval_ms: 500,
            state_ttl_days: 90,
        }
    }
}

/// Quiet hours: non-urgent messages reaching the notifier inside the window (in
/// the buyer's own time zone) are held and sent when it ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Local start, `HH:MM`. Default `22:00`.
    pub start: String,
    /// Local end, `HH:MM` (may be earlier than `start`: the window wraps
    /// midnight). Default `08:00`.
    pub end: String,
    /// Milestones sent even inside quiet hours (names as in templates, e.g.
    /// `out_for_delivery`). Default: `out_for_delivery` (the courier comes today
    /// and the buyer must be reachable) and `exception` (the buyer may have to act
    /// to save the delivery).
    pub urgent: Vec<String>,
    /// Held messages are released over this many minutes after `end`, at a
    /// stable per-order offset, so the morning is not one spike at the gateway.
    /// Default 30.
    pub spread_minutes: u32,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        QuietHoursConfig {
            start: "22:00".into(),
            end: "08:00".into(),
            urgent: vec!["out_for_delivery".into(), "exception".into()],
            spread_minutes: 30,
        }
    }
}
