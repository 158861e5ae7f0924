//! notifier configuration (TOML + `TRACKSTREAM__...` env overrides).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use trackstream_runtime::config::{AdminConfig, KafkaConfig, RedisConfig, duration};
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
    /// How long the notifier keeps an order's state (and the buyer contact in it).
    pub retention: RetentionConfig,
    /// The tracking page, console and HTTP JSON API (`trackstream-web`), and
    /// the link buyer messages carry. Absent: no HTTP listener, no links.
    pub web: Option<trackstream_web::WebConfig>,
}

/// Lifetime of every notifier key of an order (parcels and their contacts,
/// returns, held messages, message state, open-alert index), computed from the
/// notifier's clock and set with `PEXPIREAT` each time a batch touches the order.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long the keys live after the order's last known parcel reached a
    /// terminal status (delivered, returned, cancelled, expired; a return
    /// received), so late duplicates and GetOrder still work for a while but the
    /// buyer's contact does not outlive the order by more than this. Also how
    /// long a merchant's resolved incident stays listed after it resolved
    /// (`crate::incidents`). Default `30d`; read as at least one day and at
    /// most 36 500.
    #[serde(with = "duration")]
    pub after_terminal: Duration,
    /// How long the keys live after the order was last touched when it never
    /// ends (a parcel lost without a terminal scan), so nothing lives forever;
    /// likewise an incident that never resolves, after its last record.
    /// Default `120d`; clamped like `after_terminal`.
    #[serde(with = "duration")]
    pub after_silence: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            after_terminal: Duration::from_secs(30 * DAY_SECS),
            after_silence: Duration::from_secs(120 * DAY_SECS),
        }
    }
}

impl RetentionConfig {
    /// `after_terminal` in milliseconds (one day to 36 500 days).
    pub fn after_terminal_ms(&self) -> i64 {
        clamped_ms(self.after_terminal)
    }

    /// `after_silence` in milliseconds (one day to 36 500 days).
    pub fn after_silence_ms(&self) -> i64 {
        clamped_ms(self.after_silence)
    }
}

const DAY_SECS: u64 = 86_400;

/// A retention in ms, clamped to one day .. 100 years: shorter would drop an
/// order's state while its messages are still being decided, longer only
/// overflows the expiry arithmetic.
fn clamped_ms(retention: Duration) -> i64 {
    duration::millis(retention.clamp(
        Duration::from_secs(DAY_SECS),
        Duration::from_secs(36_500 * DAY_SECS),
    ))
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
    /// Open watch streams (WatchOrder + WatchAlerts + WatchIncidents) this instance accepts before
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
    /// Open watch streams one merchant may hold on this instance (WatchOrder,
    /// WatchAlerts and WatchIncidents together), so one token cannot take every slot; more are
    /// answered RESOURCE_EXHAUSTED naming the quota. Default: a quarter of
    /// `max_watchers` (5 000 with the defaults), at least 1.
    pub max_watchers_per_merchant: Option<usize>,
    /// HTTP/2 keepalive ping interval (`0s` = off), so watches of clients
    /// that vanished without closing are ended. Default `30s`.
    #[serde(with = "duration")]
    pub keepalive: Duration,
    /// How long to wait for a keepalive ping's answer before the connection is
    /// closed (at least 1 s). Default `20s`.
    #[serde(with = "duration")]
    pub keepalive_timeout: Duration,
    /// Requests one connection may have in flight at once (unary calls, and
    /// watch calls until their stream starts); more wait. Default 256.
    pub max_requests_per_connection: usize,
    /// How long a call may take to produce its response (a unary answer, or the
    /// start of a watch stream; the stream itself is not limited; at least 1 s).
    /// A client's shorter `grpc-timeout` wins. Default `30s`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Largest request message accepted, in bytes (decoding limit); a larger one
    /// is refused with OUT_OF_RANGE before it is decoded. Requests are an order
    /// id and a few numbers. Default 16 384.
    pub max_request_bytes: usize,
    /// TLS (rustls). Plaintext when absent.
    pub tls: Option<TlsConfig>,
}

impl GrpcConfig {
    /// The per-merchant watcher quota (`max_watchers_per_merchant`, or a quarter
    /// of `max_watchers`), at least 1.
    pub fn watcher_quota(&self) -> usize {
        self.max_watchers_per_merchant
            .unwrap_or(self.max_watchers / 4)
            .max(1)
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            listen: "127.0.0.1:50051".into(),
            watch_buffer: 256,
            max_watchers: 20_000,
            max_streams_per_connection: 4_096,
            max_concurrent_reads: 128,
            max_watchers_per_merchant: None,
            keepalive: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_requests_per_connection: 256,
            request_timeout: Duration::from_secs(30),
            max_request_bytes: 16_384,
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
    /// Measured in event time: a parcel is in the message when it reached the
    /// milestone at most this long after the order's first parcel did (so a
    /// catch-up merges what a live run merges). The wait ends early as soon as
    /// every known parcel has reached it, so single-parcel orders never wait.
    /// Default `10m`, at most `1d`.
    #[serde(with = "duration")]
    pub burst_window: Duration,
    /// Staleness cutoff, in event time: a held milestone message is dropped when
    /// a later milestone (by rank: shipped/delayed < out for delivery/exception <
    /// available for pickup < delivered) was reached by all its parcels less than
    /// this after it — no "out for delivery" for a parcel delivered minutes
    /// later. A live run must hold every such message this long to decide it
    /// the way a catch-up does, so it delays shipped, out-for-delivery, pickup,
    /// delayed and exception messages by this much. Default `0s`: off, messages
    /// go out at once; only quiet hours supersede (a milestone reached during the
    /// buyer's night is dropped if a later one was reached before the morning).
    /// At most `1d`.
    #[serde(with = "duration")]
    pub supersede_window: Duration,
    /// How long (wall clock) a message is held when its event-time decision
    /// point has already passed — the notifier is catching up on a backlog, or
    /// the events came in late — before it is decided, so the records behind it
    /// (the order's other parcels, its registrations, later milestones, on every
    /// partition) are applied first. Only messages that could still change
    /// wait (more parcels may join, or a later milestone may supersede them).
    /// Longer is safer for long backlogs at the cost of later messages in a
    /// catch-up. Default `10s`, at most `1h`.
    #[serde(with = "duration")]
    pub catch_up_settle: Duration,
    /// How long (event time) a DELAYED message is open to being taken over by
    /// an incident: its horizon is at least its anchor plus this, so a
    /// live run holds a stall's DELAYED this long, and if every parcel of it is
    /// linked to an incident (`tracking.incidents`) before then, the buyer gets
    /// the one INCIDENT message naming the reason instead. The incident
    /// detector opens an incident only once enough parcels at a place are
    /// stuck, so the first parcels' stall alerts always come before it.
    /// Default `2h`; `0s` disables (DELAYED goes out as before); at most `1d`.
    #[serde(with = "duration")]
    pub incident_grace: Duration,
    /// Quiet hours in the buyer's zone. Off when absent.
    pub quiet_hours: Option<QuietHoursConfig>,
    /// How often held messages that have become due are looked for (at least
    /// every 10 ms). Default `500ms`.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            default_locale: "zh-CN".into(),
            default_time_zone: "Asia/Shanghai".into(),
            overrides: BTreeMap::new(),
            burst_window: Duration::from_secs(600),
            supersede_window: Duration::ZERO,
            catch_up_settle: Duration::from_secs(10),
            incident_grace: Duration::from_secs(2 * 3_600),
            quiet_hours: None,
            flush_interval: Duration::from_millis(500),
        }
    }
}

/// Quiet hours: non-urgent messages the notifier would send inside the window
/// (wall clock, in the buyer's own time zone) are held and sent when it ends.
/// Whether a later milestone makes a held one moot is decided on the event
/// times instead (`supersede_window`, `crate::messages::decide`), so a catch-up
/// during the night sends in the morning what a live run sent.
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
    /// Held messages are released over this long after `end`, at a stable
    /// per-order offset, so the morning is not one spike at the gateway.
    /// Default `30m`.
    #[serde(with = "duration")]
    pub spread: Duration,
}

impl Default for QuietHoursConfig {
    fn default() -> Self {
        QuietHoursConfig {
            start: "22:00".into(),
            end: "08:00".into(),
            urgent: vec!["out_for_delivery".into(), "exception".into()],
            spread: Duration::from_secs(30 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_configs_load_and_the_quota_defaults_to_a_quarter() {
        for text in [
            include_str!("../../deploy/local/config/notifier.toml"),
            include_str!("../../deploy/docker/config/notifier.toml"),
            include_str!("../../deploy/k8s/config/notifier.toml"),
        ] {
            let config: Config =
                trackstream_runtime::config::load_from(text, Vec::<(String, String)>::new())
                    .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.grpc.watcher_quota(), 5_000);
            assert_eq!(
                config.messages.incident_grace,
                Duration::from_secs(7_200),
                "documented default"
            );
            assert_eq!(
                config.retention.after_terminal,
                Duration::from_secs(30 * DAY_SECS)
            );
            assert_eq!(config.retention.after_silence_ms(), 120 * 86_400_000);
            let (messages, message_defaults) = (&config.messages, MessagesConfig::default());
            assert_eq!(
                (
                    messages.burst_window,
                    messages.supersede_window,
                    messages.catch_up_settle,
                    messages.incident_grace
                ),
                (
                    message_defaults.burst_window,
                    message_defaults.supersede_window,
                    message_defaults.catch_up_settle,
                    message_defaults.incident_grace
                ),
                "the deploy configs spell out the defaults"
            );
            let (grpc, defaults) = (&config.grpc, GrpcConfig::default());
            assert_eq!(grpc.keepalive, Duration::from_secs(30));
            assert_eq!(
                (grpc.keepalive_timeout, grpc.request_timeout),
                (defaults.keepalive_timeout, defaults.request_timeout)
            );
        }
        let defaults = GrpcConfig::default();
        assert_eq!(defaults.watcher_quota(), defaults.max_watchers / 4);
        let tiny = GrpcConfig {
            max_watchers: 2,
            ..GrpcConfig::default()
        };
        assert_eq!(tiny.watcher_quota(), 1, "never zero");
        assert_eq!(
            RetentionConfig::default().after_terminal_ms(),
            30 * 86_400_000
        );
        let hour = RetentionConfig {
            after_terminal: Duration::from_secs(3_600),
            ..RetentionConfig::default()
        };
        assert_eq!(hour.after_terminal_ms(), 86_400_000, "at least a day");
    }
}
