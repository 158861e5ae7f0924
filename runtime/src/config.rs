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

mod renamed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The environment variable naming an optional second TOML file, merged over
/// the `--config` file before the `TRACKSTREAM__...` overrides apply. Unset or
/// empty: no overlay.
///
/// Why: the secrets (merchants' bearer tokens, provider webhook secrets) sit in
/// arrays of tables (`[[merchants]]`, `providers.<route>.secrets`) inside the
/// same config as everything else. An orchestrator keeps secrets apart from
/// plain config (Kubernetes: a Secret next to a ConfigMap, each mounted as a
/// file); a TOML array of tables in an environment variable is possible but
/// hard to write and review, and an environment is inherited by every child
/// process and easy to dump (`/proc/<pid>/environ`, crash reports). So the
/// secrets go in a file of their own, written in the same TOML grammar, and
/// this variable names it (`deploy/k8s/`). What it may hold is not
/// restricted: any key can be set there.
pub const OVERLAY_ENV: &str = "TRACKSTREAM_CONFIG_OVERLAY";

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

/// Parses the overlay, reporting a syntax error by file, line and reason only:
/// toml's own message quotes the offending line, which in this file is likely
/// a secret, and the error ends up in the logs.
fn parse_overlay(path: &Path, toml_text: &str) -> Result<toml::Table, Error> {
    toml::from_str(toml_text).map_err(|e| {
        let line = e
            .span()
            .map(|span| {
                let before = &toml_text.as_bytes()[..span.start.min(toml_text.len())];
                before.iter().filter(|&&byte| byte == b'\n').count() + 1
            })
            .map_or_else(String::new, |line| format!(", line {line}"));
        Error::Config(format!(
            "{} ({OVERLAY_ENV}){line}: invalid TOML: {}",
            path.display(),
            e.message().trim_end()
        ))
    })
}

/// Merges `overlay` into `base`: a table present in both is merged key by key
/// (recursively); any other value of the overlay — a string, a number, an
/// array, an array of tables such as `[[merchants]]` too — replaces the base's
/// value whole. Replacing arrays keeps the result predictable: an entry never
/// comes from two files, and `[[merchants]]` in the overlay is the whole list.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
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

/// The serde adapter for every duration in config:
/// `#[serde(with = "trackstream_runtime::config::duration")]` on a
/// [`Duration`], [`duration::option`] on an `Option<Duration>`,
/// [`duration::list`] on a `Vec<Duration>`. The grammar is `humantime`'s; the
/// adapter is ours so a bad value reports humantime's reason (`unknown time
/// unit "x"`) and the services need no dependency of their own.
pub mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserialize, Deserializer};

    /// What a duration value must look like, for error messages.
    const EXPECTED: &str = r#"a duration with a unit, like "250ms", "10s", "15m", "30d""#;

    /// Reads `"250ms"`, `"90s"`, `"1h 30m"`, `"30d"`. A bare number is refused:
    /// its unit would be a guess.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Human::deserialize(deserializer).map(|h| h.0)
    }

    /// Parses one duration string outside serde (command-line flags).
    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| format!("duration {text:?}: {e}"))
    }

    /// Writes `d` in the config grammar with the largest unit that keeps it
    /// exact (`"120d"`, `"10m"`, `"1500ms"`). Not `humantime::format_duration`,
    /// which writes 120 days as `3months 28days 16h 19m 12s`.
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        let unit = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .into_iter()
        .find(|(size, _)| ms > 0 && ms.is_multiple_of(*size));
        match unit {
            Some((size, name)) => format!("{}{name}", ms / size),
            None if ms == 0 => "0s".to_owned(),
            None => format!("{ms}ms"),
        }
    }

    /// `d` in whole milliseconds, saturating: the unit of the Redis scripts
    /// and timestamps the services compute with.
    pub fn millis(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// One duration value; the element type of [`option`] and [`list`].
    struct Human(Duration);

    impl<'de> Deserialize<'de> for Human {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl de::Visitor<'_> for Visitor {
                type Value = Human;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(EXPECTED)
                }

                fn visit_str<E: de::Error>(self, text: &str) -> Result<Human, E> {
                    parse(text).map(Human).map_err(E::custom)
                }
            }
            deserializer.deserialize_str(Visitor)
        }
    }

    /// The adapter for an optional duration.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        /// Reads an optional [`super::deserialize`] duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<super::Human>::deserialize(deserializer).map(|h| h.map(|h| h.0))
        }
    }

    /// The adapter for a list of durations (`tiers = ["24h", "48h"]`).
    pub mod list {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        /// Reads an array of [`super::deserialize`] durations.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Vec<Duration>, D::Error> {
            let items = Vec::<super::Human>::deserialize(deserializer)?;
            Ok(items.into_iter().map(|h| h.0).collect())
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

    /// A config with what the overlay is for: merchants and provider secrets
    /// next to plain settings.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Layered {
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default)]
        merchants: Vec<crate::merchants::MerchantConfig>,
        #[serde(default)]
        providers: BTreeMap<String, BTreeMap<String, toml::Value>>,
    }

    /// A file under the temp dir, removed on drop (the runtime has no
    /// `tempfile` dependency for one test).
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "trackstream-config-{}-{name}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).expect("writes the temp file");
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const BASE: &str = r#"
[kafka]
brokers = "kafka:9092"
batch_max = 7

[[merchants]]
id = "m-old"
tokens = ["old-token-0123456789"]

[providers.kdniao]
time_zone = "Asia/Shanghai"
"#;

    const SECRETS: &str = r#"
[[merchants]]
id = "m-demo"
name = "Demo"
tokens = ["demo-token-0123456789"]

[providers.kdniao]
secrets = [{ account = "1234567", secret = "kdniao-key" }]

[providers.generic]
secrets = [{ account = "demo", secret = "generic-secret" }]
"#;

    #[test]
    fn the_overlay_merges_tables_and_replaces_everything_else() {
        let base = TempFile::new("merge-base", BASE);
        let overlay = TempFile::new("merge-overlay", SECRETS);
        let env = [("TRACKSTREAM__KAFKA__BATCH_MAX".to_owned(), "9".to_owned())];
        let cfg: Layered = load_files(Some(&base.0), Some(&overlay.0), env).expect("loads");
        // Tables merge: the base's keys stay unless the overlay sets them.
        assert_eq!(cfg.kafka.brokers, "kafka:9092");
        let kdniao = &cfg.providers["kdniao"];
        assert_eq!(
            kdniao.get("time_zone").and_then(toml::Value::as_str),
            Some("Asia/Shanghai")
        );
        assert!(kdniao.contains_key("secrets"), "{kdniao:?}");
        assert!(cfg.providers.contains_key("generic"), "overlay-only table");
        // An array of tables is replaced whole, never concatenated.
        let ids: Vec<&str> = cfg.merchants.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m-demo"]);
        assert_eq!(cfg.merchants[0].tokens, ["demo-token-0123456789"]);
        // The environment still wins over both files.
        assert_eq!(cfg.kafka.batch_max, 9);

        // Without an overlay the file loads as before.
        let cfg: Layered = load_files(Some(&base.0), None, Vec::new()).expect("loads");
        assert_eq!(cfg.kafka.batch_max, 7);
        assert_eq!(cfg.merchants[0].id, "m-old");
        // An overlay alone (no --config) is a config of its own.
        let cfg: Layered = load_files(None, Some(&overlay.0), Vec::new()).expect("loads");
        assert_eq!(cfg.kafka.brokers, KafkaConfig::default().brokers);
        assert_eq!(cfg.merchants.len(), 1);
    }

    #[test]
    fn merge_replaces_scalars_arrays_and_mismatched_types() {
        let mut base: toml::Table =
            toml::from_str("a = 1\nlist = [1, 2]\n[t]\nx = 1\ny = \"keep\"\n[t.deep]\nz = 1\n")
                .expect("base");
        let overlay: toml::Table =
            toml::from_str("a = \"two\"\nlist = [3]\n[t]\nx = 2\n[t.deep]\nw = 2\n")
                .expect("overlay");
        merge(&mut base, overlay);
        let expected: toml::Table = toml::from_str(
            "a = \"two\"\nlist = [3]\n[t]\nx = 2\ny = \"keep\"\n[t.deep]\nz = 1\nw = 2\n",
        )
        .expect("expected");
        assert_eq!(base, expected);
        // A table over a scalar (or the reverse) replaces it; deserializing
        // then names the key if the type is wrong.
        let mut base: toml::Table = toml::from_str("kafka = 1").expect("base");
        merge(
            &mut base,
            toml::from_str("[kafka]\nbrokers = \"b:1\"").expect("overlay"),
        );
        assert_eq!(base["kafka"]["brokers"].as_str(), Some("b:1"));
    }

    #[test]
    fn overlay_errors_name_the_file_and_line_but_never_quote_it() {
        let base = TempFile::new("errors-base", BASE);
        let broken = TempFile::new(
            "errors-broken",
            "[[merchants]]\nid = \"m\"\ntokens = [\"s3cr3t-token-value\n",
        );
        let err = load_files::<Layered>(Some(&base.0), Some(&broken.0), Vec::new())
            .expect_err("broken overlay")
            .to_string();
        assert!(err.contains(&broken.0.display().to_string()), "{err}");
        assert!(err.contains(OVERLAY_ENV), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(!err.contains("s3cr3t"), "the secret leaked: {err}");

        let missing = std::env::temp_dir().join("trackstream-config-no-such-overlay.toml");
        let err = load_files::<Layered>(Some(&base.0), Some(&missing), Vec::new())
            .expect_err("missing overlay")
            .to_string();
        assert!(
            err.contains("reading ") && err.contains("no-such-overlay"),
            "{err}"
        );

        // The merged config is checked as one: unknown and renamed keys in
        // the overlay fail as they would in the file.
        let typo = TempFile::new("errors-typo", "[kafka]\nbrokrs = \"a\"\n");
        let err = load_files::<Layered>(Some(&base.0), Some(&typo.0), Vec::new())
            .expect_err("typo")
            .to_string();
        assert!(err.contains("brokrs"), "{err}");
        let old = TempFile::new("errors-old", "[kafka]\nproduce_timeout_ms = 5000\n");
        let err = load_files::<Layered>(Some(&base.0), Some(&old.0), Vec::new())
            .expect_err("renamed key")
            .to_string();
        assert!(err.contains("use `kafka.produce_timeout"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = load_from::<Sample>("[kafka]\nbrokrs = \"a\"\n", Vec::new())
            .expect_err("typo must fail");
        assert!(err.to_string().contains("brokrs"), "{err}");
    }
}
