//! Checks of the config that deserialization cannot make, run before ingest
//! binds anything: a bad entry stops startup with its key named, instead of
//! becoming a provider whose pushes all fail (or all pass) at run time.

use std::collections::BTreeSet;

use trackstream_carriers::Registry;
use trackstream_carriers::settings::validate_all;
use trackstream_runtime::Error;
use trackstream_runtime::config::duration;
use trackstream_runtime::ident::Ident;

use crate::Config;

/// Validates `config`:
///
/// - every `providers.<route>` names a webhook route ingest serves (a typo
///   would otherwise leave the real provider unconfigured, answering 401);
/// - each provider's secrets (`ProviderSettings::validate`: no empty or
///   repeated secret, one binding per account, a real time zone);
/// - each provider account name and each merchant a secret is bound to fits
///   the identifier grammar, and the bound merchants are configured merchants
///   (a binding to an unknown id would refuse every push of the account);
/// - `ownership.claim_ttl` is not zero.
pub fn validate(config: &Config) -> Result<(), Error> {
    let registry = Registry::builtin();
    for route in config.providers.keys() {
        if registry.by_route(route).is_none() {
            let known: Vec<&str> = registry.iter().map(|a| a.route()).collect();
            return Err(Error::Config(format!(
                "providers.{route}: no such provider (known: {})",
                known.join(", ")
            )));
        }
    }
    validate_all(&config.providers).map_err(|e| Error::Config(e.to_string()))?;
    let merchants: BTreeSet<&str> = config.merchants.iter().map(|m| m.id.as_str()).collect();
    for (route, settings) in &config.providers {
        for (i, secret) in settings.secrets.iter().enumerate() {
            if !secret.account.is_empty() {
                Ident::Account.check(&secret.account).map_err(|e| {
                    Error::Config(format!("providers.{route}.secrets[{i}].account: {e}"))
                })?;
            }
        }
        for binding in &settings.bindings {
            for merchant in &binding.merchants {
                if !merchants.contains(merchant.as_str()) {
                    return Err(Error::Config(format!(
                        "providers.{route}.secrets[{}].merchants: {merchant:?} is not a configured merchant",
                        binding.index
                    )));
                }
            }
        }
    }
    trackstream_runtime::merchants::validate(&config.merchants)?;
    config.http.limits.validate()?;
    config.admin.limits.validate()?;
    if config.http.limits.request_timeout <= config.kafka.produce_timeout {
        return Err(Error::Config(format!(
            "http.limits.request_timeout ({}) must exceed kafka.produce_timeout ({}): \
             a slow broker must be answered 503, not 408",
            duration::format(config.http.limits.request_timeout),
            duration::format(config.kafka.produce_timeout)
        )));
    }
    if config.ownership.claim_ttl.is_zero() {
        return Err(Error::Config(
            "ownership.claim_ttl: must be greater than 0".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> Config {
        trackstream_runtime::config::load_from(toml_text, Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const MERCHANT: &str = "[[merchants]]\nid = \"m1\"\ntokens = [\"m1-token-0123456789\"]\n";

    #[test]
    fn a_valid_config_passes() {
        let text = format!(
            "{MERCHANT}[providers.generic]\nsecrets = [{{ account = \"a\", secret = \"s\", merchants = [\"m1\"] }}]\n"
        );
        assert!(validate(&config(&text)).is_ok());
    }

    #[test]
    fn the_shipped_configs_load_and_validate() {
        for text in [
            include_str!("../../deploy/local/config/ingest.toml"),
            include_str!("../../deploy/docker/config/ingest.toml"),
        ] {
            let config = config(text);
            assert!(validate(&config).is_ok());
            assert_eq!(
                config.ownership.claim_ttl,
                std::time::Duration::from_secs(120 * 86_400)
            );
        }
    }

    #[test]
    fn each_problem_names_its_key() {
        let cases = [
            ("[providers.kdnaio]\nsecrets = []\n", "providers.kdnaio"),
            (
                "[providers.generic]\nsecrets = [{ account = \"a\", secret = \"\" }]\n",
                "providers.generic.secrets[0].secret",
            ),
            (
                "[providers.generic]\nsecrets = [{ account = \"a\", secret = \"s\", merchants = [\"m-x\"] }]\n",
                "providers.generic.secrets[0].merchants",
            ),
            (
                "[providers.generic]\nsecrets = [{ account = \"a:b\", secret = \"s\" }]\n",
                "providers.generic.secrets[0].account",
            ),
            ("[ownership]\nclaim_ttl = \"0s\"\n", "ownership.claim_ttl"),
        ];
        for (text, key) in cases {
            let err = validate(&config(&format!("{MERCHANT}{text}")))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
