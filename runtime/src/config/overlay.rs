//! The overlay: a second TOML file, named by [`OVERLAY_ENV`], merged over the
//! `--config` file before the environment overrides apply — how secrets are
//! kept apart from plain configuration.

use std::path::Path;

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

/// Parses the overlay, reporting a syntax error by file, line and reason only:
/// toml's own message quotes the offending line, which in this file is likely
/// a secret, and the error ends up in the logs.
pub(super) fn parse_overlay(path: &Path, toml_text: &str) -> Result<toml::Table, Error> {
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
pub(super) fn merge(base: &mut toml::Table, overlay: toml::Table) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;
    use crate::config::{KafkaConfig, load_files};

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
}
