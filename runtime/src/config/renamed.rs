//! Keys renamed when durations became human strings (`claim_ttl_ms = 10368000000`
//! → `claim_ttl = "120d"`).
//!
//! Checked on the raw TOML before deserializing, so an old config fails at
//! startup with the new key and the old value converted to the new grammar,
//! rather than with serde's bare "unknown field" (or, worse, a number silently
//! read in the wrong unit). One table for every service: the old leaf names are
//! distinct enough that matching the leaf wherever it appears (`kafka.*`,
//! `http.limits.*`, `providers.<route>.*`) is exact.

use std::time::Duration;

/// The unit an old key's number was in.
#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Secs,
    Minutes,
    Days,
}

impl Unit {
    fn duration(self, n: u64) -> Duration {
        match self {
            Unit::Millis => Duration::from_millis(n),
            Unit::Secs => Duration::from_secs(n),
            Unit::Minutes => Duration::from_secs(n.saturating_mul(60)),
            Unit::Days => Duration::from_secs(n.saturating_mul(86_400)),
        }
    }
}

/// `(old leaf, new leaf, unit of the old number, example when the old value
/// is not a number)`. The examples are the documented defaults.
const RENAMED: &[(&str, &str, Unit, &str)] = &[
    ("produce_timeout_ms", "produce_timeout", Unit::Millis, "10s"),
    ("batch_linger_ms", "batch_linger", Unit::Millis, "0s"),
    (
        "statistics_interval_ms",
        "statistics_interval",
        Unit::Millis,
        "500ms",
    ),
    ("fetch_wait_max_ms", "fetch_wait_max", Unit::Millis, "5ms"),
    (
        "assignment_check_ms",
        "assignment_check",
        Unit::Millis,
        "3s",
    ),
    (
        "header_read_timeout_ms",
        "header_read_timeout",
        Unit::Millis,
        "10s",
    ),
    ("idle_timeout_ms", "idle_timeout", Unit::Millis, "60s"),
    ("request_timeout_ms", "request_timeout", Unit::Millis, "30s"),
    (
        "body_read_timeout_ms",
        "body_read_timeout",
        Unit::Millis,
        "30s",
    ),
    ("claim_ttl_ms", "claim_ttl", Unit::Millis, "120d"),
    ("redis_timeout_ms", "redis_timeout", Unit::Millis, "2s"),
    ("flush_interval_ms", "flush_interval", Unit::Millis, "500ms"),
    ("keepalive_secs", "keepalive", Unit::Secs, "30s"),
    (
        "keepalive_timeout_secs",
        "keepalive_timeout",
        Unit::Secs,
        "20s",
    ),
    ("request_timeout_secs", "request_timeout", Unit::Secs, "30s"),
    ("burst_window_secs", "burst_window", Unit::Secs, "10m"),
    (
        "replay_tolerance_secs",
        "replay_tolerance",
        Unit::Secs,
        "5m",
    ),
    ("spread_minutes", "spread", Unit::Minutes, "30m"),
    ("after_terminal_days", "after_terminal", Unit::Days, "30d"),
    ("after_silence_days", "after_silence", Unit::Days, "120d"),
];

/// Every renamed key in `root`, each with its replacement, in one message.
pub(super) fn check_table(root: &toml::Table) -> Result<(), String> {
    let mut found = Vec::new();
    walk(root, &mut Vec::new(), &mut found);
    match found.is_empty() {
        true => Ok(()),
        false => Err(found.join("; ")),
    }
}

/// One key set from the environment (`path` already split and lower-cased).
pub(super) fn check_key(path: &[String], value: &toml::Value) -> Result<(), String> {
    match message(path, value) {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

fn walk(table: &toml::Table, path: &mut Vec<String>, found: &mut Vec<String>) {
    for (key, value) in table {
        path.push(key.clone());
        found.extend(message(path, value));
        match value {
            toml::Value::Table(inner) => walk(inner, path, found),
            toml::Value::Array(items) => {
                for item in items {
                    if let toml::Value::Table(inner) = item {
                        walk(inner, path, found);
                    }
                }
            }
            _ => {}
        }
        path.pop();
    }
}

/// "`ownership.claim_ttl_ms` was renamed: use `ownership.claim_ttl = "120d"`",
/// with the old number converted when there is one.
fn message(path: &[String], value: &toml::Value) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let &(_, new, unit, example) = RENAMED.iter().find(|(old, ..)| old == last)?;
    let prefix: String = parents.iter().map(|p| format!("{p}.")).collect();
    let new_value = value
        .as_integer()
        .and_then(|n| u64::try_from(n).ok())
        .map_or_else(
            || example.to_owned(),
            |n| super::duration::format(unit.duration(n)),
        );
    Some(format!(
        "`{prefix}{last}` was renamed: use `{prefix}{new} = \"{new_value}\"` \
         (durations are written with a unit: \"250ms\", \"10s\", \"15m\", \"30d\")"
    ))
}
