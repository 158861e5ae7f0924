//! Per-provider settings, read from the services' TOML config.

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

/// Settings of one provider.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Accounts and secrets accepted for signatures.
    #[serde(default)]
    pub secrets: Vec<AccountSecret>,
    /// Accept pushes without a signature. Off by default; only for providers that
    /// cannot sign (Kuaidi100 without a salt) on a network you trust.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// IANA zone for zone-less local times (default: the provider's own, e.g.
    /// Asia/Shanghai for Chinese carriers, UTC otherwise).
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl ProviderSettings {
    /// The secret for `account`, if configured.
    pub fn secret_for(&self, account: &str) -> Option<&AccountSecret> {
        self.secrets.iter().find(|s| s.account == account)
    }
}
