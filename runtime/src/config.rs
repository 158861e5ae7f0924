//! Configuration: a TOML file, then environment overrides, then defaults.
//!
//! Every service reads `--config <file>` (or `TRACKSTREAM_CONFIG`); when
//! `TRACKSTREAM_CONFIG_OVERLAY` names a second TOML file, that file is merged over
//! the first ([`OVERLAY_ENV`]: tables merge key by key, any other value
//! replaces the first file's). Any key can then be
//! overridden by `TRACKSTREAM__<SECTION>__<KEY>=value` (double underscores separate
//! levels, the value is read as TOML if it parses — numbers, booleans, arrays — and
//! as a string otherwise). Two conventional variables are honoured too:
//! `KAFKA_BROKERS` → `kafka.brokers`, `REDIS_URL` → `redis.url`.
//! Missing keys take the documented defaults of each struct below.
//!
//! Durations are human strings — `"250ms"`, `"10s"`, `"15m"`, `"1h 30m"`,
//! `"30d"` — parsed by `humantime` through [`duration`], the one adapter every
//! config struct uses, so an operator writes them the same way in every
//! service and a unit can never be misread. Keys that once carried their unit
//! in their name (`claim_ttl_ms`) are refused with a message naming the new key
//! ([`renamed`]), and every struct denies unknown fields, so a typo fails
//! loudly at startup instead of silently taking a default.
//!
//! Files: this one loads and holds the shared sections (`kafka`, `redis`,
//! `admin`, listener limits); `overlay` the second file, `duration` the serde
//! adapter, `renamed` the refused old keys.

pub mod duration;
mod overlay;
mod renamed;

pub use overlay::OVERLAY_ENV;
use overlay::{merge, parse_overlay};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Loads `T` from an optional TOML file, the overlay file named by
/// [`OVERLAY_ENV`] (if set) merged over it, and the process environment.
pub fn load<T: DeserializeOwned>(path: Option<&Path>) -> Result<T, Error> {
    let overlay = std::env::var_os(OVERLAY_ENV)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from);
    load_files(path, overlay.as_deref(), std::env::vars())
}

/// [`load`] with the overlay path and the environment passed in (for tests).
fn load_files<T: DeserializeOwned>(
    path: Option<&Path>,
    overlay: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, Error> {
    let mut root = match path {
        Some(path) => parse_table(&read(path)?)?,
        None => toml::Table::new(),
    };
    if let Some(overlay) = overlay {
        merge(&mut root, parse_overlay(overlay, &read(overlay)?)?);
    }
    load_table(root, env)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))
}

fn parse_table(toml_text: &str) -> Result<toml::Table, Error> {
    toml::from_str(toml_text).map_err(|e| Error::Config(format!("invalid TOML: {e}")))
}

/// Loads `T` from TOML text plus explicit `(name, value)` environment pairs, so
/// tests do not have to mutate the process environment.
pub fn load_from<T: DeserializeOwned>(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, Error> {
    load_table(parse_table(toml_text)?, env)
}

/// Applies the environment overrides to a parsed config and deserializes it.
fn load_table<T: DeserializeOwned>(
    mut root: toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, Error> {
    renamed::check_table(&root).map_err(Error::Config)?;
    for (name, value) in env {
        let path: Vec<String> = match name.as_str() {
            "KAFKA_BROKERS" => vec!["kafka".into(), "brokers".into()],
            "REDIS_URL" => vec!["redis".into(), "url".into()],
            _ => match name.strip_prefix("TRACKSTREAM__") {
                Some(rest) => rest.split("__").map(str::to_ascii_lowercase).collect(),
                None => continue,
            },
        };
        let value = parse_env_value(&value);
        renamed::check_key(&path, &value).map_err(|e| Error::Config(format!("{name}: {e}")))?;
        set_path(&mut root, &path, value).map_err(|e| Error::Config(format!("{name}: {e}")))?;
    }
    // The path names the offending key (`ownership.claim_ttl: ...`): a
    // `toml::Value` carries no spans to point at.
    serde_path_to_error::deserialize(toml::Value::Table(root))
        .map_err(|e| Error::Config(format!("invalid configuration: {e}")))
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML assignment; fall back to a string.
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".into());
    };
    let mut table = root;
    for part in parents {
        let entry = table
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{part} is not a table"))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// Kafka connection and client settings shared by every service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group of the service. Default: the service name.
    pub group_id: Option<String>,
    /// How long ingest waits for Kafka to acknowledge a record before answering
    /// 503 (librdkafka `message.timeout.ms`). Default `10s`.
    #[serde(with = "duration")]
    pub produce_timeout: Duration,
    /// Max records per consumer batch. Default 500.
    pub batch_max: usize,
    /// How long a consumer waits for more records after taking every record
    /// already fetched into a batch. A fetch response under load brings many
    /// records at once, so batches fill without waiting; a linger only adds
    /// latency on each consuming hop (about 5 ms per hop measured on tansu).
    /// Default `0s`.
    #[serde(with = "duration")]
    pub batch_linger: Duration,
    /// How often librdkafka reports per-partition lag (used to tell when a
    /// consumer has caught up; `0s` disables). Default `500ms`.
    #[serde(with = "duration")]
    pub statistics_interval: Duration,
    /// Longest a fetch waits on the broker for new records (librdkafka
    /// `fetch.wait.max.ms`). Apache Kafka answers a waiting fetch as soon as
    /// records arrive, so there any value works and a higher one only saves
    /// idle requests. nisshi 0.8 polls instead: an empty fetch re-reads every
    /// requested partition after half the remaining wait, then a quarter, …,
    /// so a short wait makes an idle consumer cost the broker thousands of
    /// storage reads a second (5 ms kept nisshi/SQLite at a full core with the
    /// services idle), and a long one adds up to half of it to each consuming
    /// hop. The default is the measured balance on nisshi (benches/RESULTS.md
    /// "Choosing the fetch wait"). Default `100ms`.
    #[serde(with = "duration")]
    pub fetch_wait_max: Duration,
    /// How often a consumer checks that the group coordinator gave it the share
    /// of partitions the range assignor computes for the live members, and
    /// rejoins if not (`0s` disables). A guard against coordinators that evict a
    /// dead member without rebalancing, which leaves its partitions unowned —
    /// tansu 0.6 does (docs/ARCHITECTURE.md). On Apache Kafka it only costs a
    /// DescribeGroups and a metadata request per interval. Default `3s`.
    #[serde(with = "duration")]
    pub assignment_check: Duration,
    /// Largest record a service produces (key + value + headers). A larger
    /// output is a permanent error: ingest answers 413, a consuming stage
    /// dead-letters its input. Keep it at or under the broker's
    /// `message.max.bytes` (Apache Kafka's default is 1 048 588). Default
    /// 1 000 000.
    pub max_record_bytes: usize,
    /// Extra librdkafka properties (e.g. `security.protocol`), applied last.
    pub extra: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// The consumer group of `service`: `group_id` if set, else
    /// `trackstream-<service>`.
    pub fn group_for(&self, service: &str) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("trackstream-{service}"))
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: None,
            produce_timeout: Duration::from_secs(10),
            batch_max: 500,
            batch_linger: Duration::ZERO,
            statistics_interval: Duration::from_millis(500),
            fetch_wait_max: Duration::from_millis(100),
            assignment_check: Duration::from_secs(3),
            max_record_bytes: 1_000_000,
            extra: BTreeMap::new(),
        }
    }
}

/// Redis connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. Default `redis://127.0.0.1:6379/`.
    pub url: String,
    /// Cluster seed nodes; when non-empty, Redis Cluster mode is used and `url`
    /// is ignored.
    pub cluster_nodes: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/".into(),
            cluster_nodes: Vec::new(),
        }
    }
}

/// The admin HTTP endpoint (`/healthz`, `/metrics`) and logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address for `/healthz` and `/metrics`. Default `127.0.0.1:0` (any free
    /// port; the bound port is logged).
    pub listen: String,
    /// `json` (default; for log shippers) or `pretty` (for humans).
    pub log_format: String,
    /// `tracing` filter directive; `RUST_LOG` wins when set. Default `info`.
    pub log_level: String,
    /// Connection limits of the admin listener (`[admin.limits]`). Default: the
    /// [`ListenerLimits`] defaults.
    pub limits: ListenerLimits,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:0".into(),
            log_format: "json".into(),
            log_level: "info".into(),
            limits: ListenerLimits::default(),
        }
    }
}

/// Connection hygiene of one HTTP listener (`runtime::admin::serve_router_with`):
/// what a client that opens connections and then dawdles can hold. Without
/// these, a client that sends half a request header keeps a connection (a task
/// and a file descriptor) for as long as it likes, and a few thousand of them
/// exhaust the process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerLimits {
    /// Longest a client may take to send a request's header, counted from the
    /// request's first byte; then the connection is closed without an answer
    /// (a client this slow is not reading one). Must be > 0. Default `10s`.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Longest a connection may wait with no request in progress (after it
    /// opened, or after its last response) before it is closed. A keep-alive
    /// client reconnects transparently. Must be > 0. Default `60s`.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Longest one request may take once its header is in — reading its body and
    /// handling it, ingest's wait for Kafka's acknowledgement included; then it is
    /// answered 408 and the connection closed. Keep it above
    /// `kafka.produce_timeout` so a slow broker still gets its 503. Must be
    /// > 0. Default `30s`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Most connections served at once. Further connections are not accepted
    /// until one closes: they wait in the kernel's accept queue (and are refused
    /// by the kernel once that is full), so served clients keep their share and
    /// the excess costs the process nothing. Must be > 0. Default 1 024.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 1_024,
        }
    }
}

impl ListenerLimits {
    /// Rejects zero values, naming the key.
    pub fn validate(&self) -> Result<(), Error> {
        let zero = [
            ("header_read_timeout", self.header_read_timeout.is_zero()),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("request_timeout", self.request_timeout.is_zero()),
            ("max_connections", self.max_connections == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((key, _)) => Err(Error::Config(format!("listener limit {key} must be > 0"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default)]
        redis: RedisConfig,
    }

    #[test]
    fn env_overrides_file_and_defaults_fill_the_rest() {
        let env = [
            ("TRACKSTREAM__KAFKA__BATCH_MAX".to_owned(), "42".to_owned()),
            ("REDIS_URL".to_owned(), "redis://10.0.0.1:7000/".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let cfg: Sample =
            load_from("[kafka]\nbrokers = \"a:1\"\nbatch_max = 7\n", env).expect("loads");
        assert_eq!(cfg.kafka.brokers, "a:1");
        assert_eq!(cfg.kafka.batch_max, 42);
        assert_eq!(cfg.kafka.produce_timeout, Duration::from_secs(10));
        assert_eq!(cfg.redis.url, "redis://10.0.0.1:7000/");
    }

    #[derive(Debug, Deserialize)]
    struct Durations {
        #[serde(with = "duration")]
        one: Duration,
        #[serde(default, with = "duration::option")]
        maybe: Option<Duration>,
        #[serde(default, with = "duration::list")]
        tiers: Vec<Duration>,
    }

    fn durations(text: &str) -> Result<Durations, Error> {
        load_from(text, Vec::new())
    }

    #[test]
    fn durations_are_human_strings() {
        let hour = Duration::from_secs(3_600);
        let d = durations("one = \"90s\"\nmaybe = \"1h 30m\"\ntiers = [\"30d\", \"250ms\"]")
            .expect("loads");
        assert_eq!(d.one, Duration::from_secs(90));
        assert_eq!(d.maybe, Some(hour + hour / 2));
        assert_eq!(
            d.tiers,
            [Duration::from_secs(30 * 86_400), Duration::from_millis(250)]
        );
        assert_eq!(durations("one = \"0s\"").expect("loads").maybe, None);
        for bad in [
            "one = 90",
            "one = \"90\"",
            "one = \"3 fortnights\"",
            "one = \"-1s\"",
        ] {
            assert!(durations(bad).is_err(), "{bad} must be refused");
        }
        // The error names the key and why (humantime's reason, or the grammar).
        let err = durations("one = \"3 fortnights\"")
            .expect_err("bad unit")
            .to_string();
        assert!(
            err.contains("one: ") && err.contains("unknown time unit"),
            "{err}"
        );
        let err = durations("one = \"1s\"\ntiers = [\"1s\", 5]")
            .expect_err("bare number")
            .to_string();
        assert!(
            err.contains("tiers[1]: ") && err.contains(r#"like "250ms""#),
            "{err}"
        );
        assert_eq!(duration::parse(" 15m "), Ok(Duration::from_secs(900)));
        assert_eq!(duration::millis(Duration::from_secs(2)), 2_000);
        assert_eq!(duration::millis(Duration::MAX), i64::MAX);
        for (d, text) in [
            (90_000, "90s"),
            (5_400_000, "90m"),
            (1_500, "1500ms"),
            (0, "0s"),
        ] {
            assert_eq!(duration::format(Duration::from_millis(d)), text);
            assert_eq!(duration::parse(text), Ok(Duration::from_millis(d)));
        }
    }

    #[test]
    fn env_overrides_take_duration_strings() {
        let env = [(
            "TRACKSTREAM__KAFKA__BATCH_LINGER".to_owned(),
            "5ms".to_owned(),
        )];
        let cfg: Sample = load_from("[kafka]\nproduce_timeout = \"3s\"\n", env).expect("loads");
        assert_eq!(cfg.kafka.batch_linger, Duration::from_millis(5));
        assert_eq!(cfg.kafka.produce_timeout, Duration::from_secs(3));
        assert_eq!(
            cfg.kafka.assignment_check,
            Duration::from_secs(3),
            "default"
        );
    }

    #[test]
    fn old_unit_suffixed_keys_name_their_replacement() {
        let err = load_from::<Sample>("[ownership]\nclaim_ttl_ms = 10368000000\n", Vec::new())
            .expect_err("old key must fail")
            .to_string();
        assert!(
            err.contains(
                "`ownership.claim_ttl_ms` was renamed: use `ownership.claim_ttl = \"120d\"`"
            ),
            "{err}"
        );
        // Every old key in the file is named at once, wherever it is nested,
        // and a value that is not a number gets the documented example.
        let err = load_from::<Sample>(
            "[kafka]\nproduce_timeout_ms = \"x\"\n[providers.aftership]\nreplay_tolerance_secs = 900\n",
            Vec::new(),
        )
        .expect_err("old keys must fail")
        .to_string();
        assert!(
            err.contains("use `kafka.produce_timeout = \"10s\"`"),
            "{err}"
        );
        assert!(
            err.contains("use `providers.aftership.replay_tolerance = \"15m\"`"),
            "{err}"
        );
        let env = [(
            "TRACKSTREAM__KAFKA__BATCH_LINGER_MS".to_owned(),
            "2".to_owned(),
        )];
        let err = load_from::<Sample>("", env)
            .expect_err("old env key must fail")
            .to_string();
        assert!(
            err.contains("TRACKSTREAM__KAFKA__BATCH_LINGER_MS: "),
            "{err}"
        );
        assert!(err.contains("use `kafka.batch_linger = \"2ms\"`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = load_from::<Sample>("[kafka]\nbrokrs = \"a\"\n", Vec::new())
            .expect_err("typo must fail");
        assert!(err.to_string().contains("brokrs"), "{err}");
    }
}
