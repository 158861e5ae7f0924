//! Per-provider settings, read from the services' TOML config.
//!
//! ```toml
//! [providers.kdniao]      # account = EBusinessID, secret = AppKey
//! secrets = [
//!   { account = "1237100", secret = "...", merchants = ["m-acme"] },  # bound
//!   { account = "1999999", secret = "..." },                          # unbound
//! ]
//! ```
//!
//! An account with `merchants` is **bound**: its pushes apply only to waybills
//! those merchants registered (ingest checks each item against the waybill's
//! owner). An account without is trusted with every merchant's parcels, which
//! is the operator's choice for an aggregator account that serves the whole
//! platform. Startup calls [`ProviderSettings::validate`], which names the
//! offending key of a bad entry.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// One account's shared secret (Kdniao EBusinessID → AppKey, an AfterShip webhook
/// secret, ...). Several may be active at once, e.g. during secret rotation.
#[derive(Clone, Deserialize, PartialEq, Eq)]
pub struct AccountSecret {
    /// Account identifier as the provider names it ("" when the provider has none).
    #[serde(default)]
    pub account: String,
    /// The secret. Never logged (see the `Debug` impl).
    pub secret: String,
}

impl std::fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSecret")
            .field("account", &self.account)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The merchants one `secrets` entry is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Index of the entry in `secrets` (for naming it in errors).
    pub index: usize,
    /// The entry's account.
    pub account: String,
    /// Merchant ids whose waybills the account's pushes may touch.
    pub merchants: Vec<String>,
}

/// Settings of one provider.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawSettings")]
pub struct ProviderSettings {
    /// Accounts and secrets accepted for signatures.
    pub secrets: Vec<AccountSecret>,
    /// Accept pushes without a signature. Off by default; only for providers that
    /// cannot sign (Kuaidi100 without a salt) on a network you trust.
    pub allow_unsigned: bool,
    /// IANA zone for zone-less local times (default: the provider's own, e.g.
    /// Asia/Shanghai for Chinese carriers, UTC otherwise).
    pub time_zone: Option<String>,
    /// The `merchants` of the `secrets` entries that have them. Empty: every
    /// account is unbound (trusted with every merchant).
    pub bindings: Vec<Binding>,
    /// How far a push's *signed* send time may be from our clock, for
    /// providers that sign one (AfterShip `ts`, Kdniao `PushTime`; see
    /// `signature::replay`); further is refused as a replay. Raise it to let a
    /// provider's late retries through after a long outage. Written with a
    /// unit (`"15m"`). Must be > 0. Default `5m` (`replay::DEFAULT_TOLERANCE`).
    pub replay_tolerance: Option<Duration>,
}

/// A `secrets` entry as written in the config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretEntry {
    #[serde(default)]
    account: String,
    secret: String,
    /// Binds the account to these merchants. Default: unbound.
    #[serde(default)]
    merchants: Option<Vec<String>>,
}

/// `[providers.<route>]` as written in the config.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawSettings {
    secrets: Vec<SecretEntry>,
    allow_unsigned: bool,
    time_zone: Option<String>,
    /// A duration string; parsed in `try_from` (carriers does not depend on
    /// `runtime::config::duration`, which parses with the same `humantime`).
    replay_tolerance: Option<String>,
}

impl TryFrom<RawSettings> for ProviderSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let replay_tolerance = raw
            .replay_tolerance
            .map(|text| {
                humantime::parse_duration(text.trim())
                    .map_err(|e| format!("replay_tolerance: duration {text:?}: {e}"))
            })
            .transpose()?;
        let mut secrets = Vec::with_capacity(raw.secrets.len());
        let mut bindings = Vec::new();
        for (index, entry) in raw.secrets.into_iter().enumerate() {
            if let Some(merchants) = entry.merchants {
                bindings.push(Binding {
                    index,
                    account: entry.account.clone(),
                    merchants,
                });
            }
            secrets.push(AccountSecret {
                account: entry.account,
                secret: entry.secret,
            });
        }
        Ok(ProviderSettings {
            secrets,
            allow_unsigned: raw.allow_unsigned,
            time_zone: raw.time_zone,
            bindings,
            replay_tolerance,
        })
    }
}

/// A provider entry that cannot be used, naming its config key
/// (`providers.kdniao.secrets[1].secret`). Fix the config; nothing to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SettingsError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it (never the secret itself).
    pub problem: String,
}

impl ProviderSettings {
    /// The secret for `account`, if configured.
    pub fn secret_for(&self, account: &str) -> Option<&AccountSecret> {
        self.secrets.iter().find(|s| s.account == account)
    }

    /// The merchants `account` is bound to, or `None` when it is unbound
    /// (trusted with every merchant's parcels).
    pub fn merchants_for(&self, account: &str) -> Option<&[String]> {
        self.bindings
            .iter()
            .find(|b| b.account == account)
            .map(|b| b.merchants.as_slice())
    }

    /// Checks what deserialization cannot, naming the key under
    /// `providers.<route>`:
    ///
    /// - an empty secret (anyone could compute its signatures);
    /// - the same secret in two entries (which account verified a push, and so
    ///   which binding applies, would depend on the entries' order);
    /// - one account bound differently in two entries (a rotation must repeat
    ///   the binding, or the old secret would escape it), or bound to no
    ///   merchant or an empty merchant id;
    /// - a `time_zone` that is not an IANA zone.
    pub fn validate(&self, route: &str) -> Result<(), SettingsError> {
        let key = |rest: String| format!("providers.{route}.{rest}");
        if self.replay_tolerance == Some(Duration::ZERO) {
            return Err(SettingsError {
                key: key("replay_tolerance".into()),
                problem: "must be greater than 0".into(),
            });
        }
        for (i, entry) in self.secrets.iter().enumerate() {
            if entry.secret.trim().is_empty() {
                return Err(SettingsError {
                    key: key(format!("secrets[{i}].secret")),
                    problem: "is empty".into(),
                });
            }
            if let Some(first) = self.secrets[..i]
                .iter()
                .position(|other| other.secret == entry.secret)
            {
                return Err(SettingsError {
                    key: key(format!("secrets[{i}].secret")),
                    problem: format!(
                        "repeats the secret of secrets[{first}]; each secret must identify one account"
                    ),
                });
            }
        }
        for binding in &self.bindings {
            let at = key(format!("secrets[{}].merchants", binding.index));
            if binding.merchants.is_empty() {
                return Err(SettingsError {
                    key: at,
                    problem: "binds the account to no merchant; leave it out to trust the account with every merchant".into(),
                });
            }
            if binding.merchants.iter().any(|m| m.trim().is_empty()) {
                return Err(SettingsError {
                    key: at,
                    problem: "contains an empty merchant id".into(),
                });
            }
        }
        for (i, entry) in self.secrets.iter().enumerate() {
            let mine = self.bindings.iter().find(|b| b.index == i);
            let first = self
                .bindings
                .iter()
                .find(|b| b.account == entry.account)
                .or(mine);
            let differs = match (mine, first) {
                (Some(a), Some(b)) => a.merchants != b.merchants,
                (None, Some(_)) => true,
                _ => false,
            };
            if differs {
                return Err(SettingsError {
                    key: key(format!("secrets[{i}].merchants")),
                    problem: format!(
                        "account {:?} is bound differently in another entry; every entry of one account needs the same merchants",
                        entry.account
                    ),
                });
            }
        }
        if let Some(zone) = &self.time_zone
            && zone.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(SettingsError {
                key: key("time_zone".into()),
                problem: "is not an IANA time zone".into(),
            });
        }
        Ok(())
    }
}

/// Validates every provider of a config, in route order.
pub fn validate_all(providers: &BTreeMap<String, ProviderSettings>) -> Result<(), SettingsError> {
    providers
        .iter()
        .try_for_each(|(route, settings)| settings.validate(route))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> ProviderSettings {
        #[derive(Deserialize)]
        struct Wrapper {
            p: ProviderSettings,
        }
        let wrapper: Result<Wrapper, _> = toml_from_str(toml_text);
        match wrapper {
            Ok(w) => w.p,
            Err(e) => panic!("{e}"),
        }
    }

    fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
        // carriers has no TOML dependency; JSON is the same data model here.
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_replay_tolerance_is_configurable_and_zero_is_refused() {
        let settings = parse(r#"{"p": {"secrets": [{"secret": "s"}], "replay_tolerance": "15m"}}"#);
        assert_eq!(settings.replay_tolerance, Some(Duration::from_secs(900)));
        let window = crate::signature::replay::ReplayWindow::for_settings(&settings);
        let now = chrono::Utc::now();
        let ten_minutes_ago = Some(now - chrono::Duration::minutes(10));
        assert!(
            crate::signature::replay::ReplayWindow::new(now, std::time::Duration::from_secs(900))
                .check("ts", ten_minutes_ago)
                .is_ok()
        );
        assert!(
            window
                .check("ts", Some(now - chrono::Duration::hours(1)))
                .is_err()
        );
        let zero = parse(r#"{"p": {"secrets": [{"secret": "s"}], "replay_tolerance": "0s"}}"#);
        let err = zero.validate("aftership").expect_err("zero tolerance");
        assert_eq!(err.key, "providers.aftership.replay_tolerance");
        let unitless = toml_from_str::<ProviderSettings>(r#"{"replay_tolerance": "900"}"#)
            .expect_err("a unit is required");
        assert!(unitless.contains("replay_tolerance"), "{unitless}");
    }

    #[test]
    fn bindings_are_read_per_entry_and_unbound_accounts_stay_unbound() {
        let settings = parse(
            r#"{"p": {"secrets": [
                {"account": "a", "secret": "s1", "merchants": ["m1", "m2"]},
                {"account": "b", "secret": "s2"}]}}"#,
        );
        assert_eq!(settings.secrets.len(), 2);
        assert_eq!(
            settings.merchants_for("a"),
            Some(&["m1".to_owned(), "m2".to_owned()][..])
        );
        assert_eq!(settings.merchants_for("b"), None);
        assert_eq!(settings.validate("kdniao"), Ok(()));
    }

    #[test]
    fn unknown_keys_in_an_entry_are_refused() {
        let err = toml_from_str::<ProviderSettings>(
            r#"{"secrets": [{"account": "a", "secret": "s", "merchant": ["m1"]}]}"#,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("merchant"), "{err}");
    }

    #[test]
    fn validation_names_the_offending_key() {
        let cases = [
            (
                r#"{"p": {"secrets": [{"account": "a", "secret": " "}]}}"#,
                "providers.x.secrets[0].secret",
            ),
            (
                r#"{"p": {"secrets": [{"account": "a", "secret": "s"}, {"account": "b", "secret": "s"}]}}"#,
                "providers.x.secrets[1].secret",
            ),
            (
                r#"{"p": {"secrets": [{"account": "a", "secret": "s", "merchants": []}]}}"#,
                "providers.x.secrets[0].merchants",
            ),
            (
                r#"{"p": {"secrets": [{"account": "a", "secret": "s1", "merchants": ["m1"]},
                                       {"account": "a", "secret": "s2"}]}}"#,
                "providers.x.secrets[1].merchants",
            ),
            (
                r#"{"p": {"time_zone": "Mars/Olympus"}}"#,
                "providers.x.time_zone",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).validate("x").err();
            assert_eq!(err.map(|e| e.key), Some(key.to_owned()), "{text}");
        }
        let rotation = parse(
            r#"{"p": {"secrets": [{"account": "a", "secret": "old", "merchants": ["m1"]},
                                   {"account": "a", "secret": "new", "merchants": ["m1"]}]}}"#,
        );
        assert_eq!(rotation.validate("x"), Ok(()), "rotation with one binding");
    }
}
