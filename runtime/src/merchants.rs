//! Merchants and their API tokens. ingest (shipment registration) and the
//! notifier (gRPC) authenticate the same bearer tokens, so one directory serves both.

use serde::Deserialize;

use crate::ApiError;

/// One merchant as configured.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// Stable merchant id; every order and alert is scoped to it.
    pub id: String,
    /// Display name used in buyer messages.
    #[serde(default)]
    pub name: String,
    /// Bearer tokens accepted for this merchant (several during rotation).
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for MerchantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tokens", &format_args!("<{} redacted>", self.tokens.len()))
            .finish()
    }
}

/// Looks merchants up by bearer token in constant time per candidate.
#[derive(Debug, Clone, Default)]
pub struct MerchantDirectory {
    merchants: Vec<MerchantConfig>,
}

impl MerchantDirectory {
    /// A directory over the configured merchants.
    pub fn new(merchants: Vec<MerchantConfig>) -> Self {
        MerchantDirectory { merchants }
    }

    /// The merchant for an `Authorization` header value (`Bearer <token>`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&MerchantConfig, ApiError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let mut found = None;
        for merchant in &self.merchants {
            for candidate in &merchant.tokens {
                // Compare every token fully; timing reveals neither token nor match.
                let equal: bool =
                    subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), token.as_bytes()).into();
                if equal && found.is_none() {
                    found = Some(merchant);
                }
            }
        }
        found.ok_or_else(|| ApiError::Unauthorized("unknown bearer token".into()))
    }

    /// A merchant by id (for display names).
    pub fn get(&self, id: &str) -> Option<&MerchantConfig> {
        self.merchants.iter().find(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_their_merchant_only() {
        let dir = MerchantDirectory::new(vec![
            MerchantConfig {
                id: "a".into(),
                name: "A".into(),
                tokens: vec!["ta".into()],
            },
            MerchantConfig {
                id: "b".into(),
                name: "B".into(),
                tokens: vec!["tb".into(), "tb2".into()],
            },
        ]);
        assert_eq!(
            dir.authenticate(Some("Bearer ta")).map(|m| m.id.as_str()),
            Ok("a")
        );
        assert_eq!(
            dir.authenticate(Some("Bearer tb2")).map(|m| m.id.as_str()),
            Ok("b")
        );
        assert!(dir.authenticate(Some("Bearer t")).is_err());
        assert!(dir.authenticate(None).is_err());
        assert!(dir.authenticate(Some("Basic ta")).is_err());
    }
}
