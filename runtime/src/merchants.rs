//! Merchants and their API tokens. ingest (shipment registration) and the
//! notifier (gRPC) authenticate the same bearer tokens, so one directory serves both.
//!
//! The list is checked once at startup ([`MerchantDirectory::try_new`]): an empty
//! id or token, a token shorter than [`MIN_TOKEN_BYTES`], a token with surrounding
//! whitespace (a presented token is trimmed, so it could never match), a token
//! configured twice (it would authenticate as whichever merchant comes first) or a
//! merchant id configured twice (two shops would share orders) stops the service,
//! naming the offending key and never printing a token.

use serde::Deserialize;

use crate::ApiError;

/// Shortest bearer token accepted: 16 bytes (128 bits if random), so tokens
/// cannot be guessed online.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why the configured merchants cannot be served; the service must not start.
/// Keys are config paths (`merchants[2].tokens[0]`); token values never appear.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerchantConfigError {
    /// A required value is empty (or whitespace only).
    #[error("{key} is empty")]
    Empty {
        /// The offending key.
        key: String,
    },
    /// A token shorter than [`MIN_TOKEN_BYTES`].
    #[error("{key} is {len} bytes; tokens need at least {min}")]
    TooShort {
        /// The offending key.
        key: String,
        /// Its length.
        len: usize,
        /// [`MIN_TOKEN_BYTES`].
        min: usize,
    },
    /// A token with leading or trailing whitespace, which no request can present.
    #[error("{key} has leading or trailing whitespace")]
    Whitespace {
        /// The offending key.
        key: String,
    },
    /// The same value configured twice where it must be unique.
    #[error("{key} duplicates {first}")]
    Duplicate {
        /// The later key.
        key: String,
        /// The first key with the same value.
        first: String,
    },
}

impl From<MerchantConfigError> for crate::Error {
    fn from(err: MerchantConfigError) -> Self {
        crate::Error::Config(err.to_string())
    }
}

/// Checks merchant ids and tokens (see the module doc).
pub fn validate(merchants: &[MerchantConfig]) -> Result<(), MerchantConfigError> {
    let mut ids: Vec<(&str, String)> = Vec::new();
    let mut tokens: Vec<(&str, String)> = Vec::new();
    for (m, merchant) in merchants.iter().enumerate() {
        let id_key = format!("merchants[{m}].id");
        let id = merchant.id.trim();
        if id.is_empty() {
            return Err(MerchantConfigError::Empty { key: id_key });
        }
        if let Some((_, first)) = ids.iter().find(|(seen, _)| *seen == id) {
            return Err(MerchantConfigError::Duplicate {
                key: id_key,
                first: first.clone(),
            });
        }
        ids.push((id, id_key));
        for (t, token) in merchant.tokens.iter().enumerate() {
            let key = format!("merchants[{m}].tokens[{t}]");
            if token.trim().is_empty() {
                return Err(MerchantConfigError::Empty { key });
            }
            if token.trim() != token {
                return Err(MerchantConfigError::Whitespace { key });
            }
            if token.len() < MIN_TOKEN_BYTES {
                return Err(MerchantConfigError::TooShort {
                    key,
                    len: token.len(),
                    min: MIN_TOKEN_BYTES,
                });
            }
            if let Some((_, first)) = tokens.iter().find(|(seen, _)| *seen == token.as_str()) {
                return Err(MerchantConfigError::Duplicate {
                    key,
                    first: first.clone(),
                });
            }
            tokens.push((token.as_str(), key));
        }
    }
    Ok(())
}

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
    /// A directory over the configured merchants, unchecked (tests and callers
    /// that validated already). Services start with [`MerchantDirectory::try_new`].
    pub fn new(merchants: Vec<MerchantConfig>) -> Self {
        MerchantDirectory { merchants }
    }

    /// A directory over the configured merchants after [`validate`]: what a
    /// service builds at startup, failing with the offending key.
    pub fn try_new(merchants: Vec<MerchantConfig>) -> Result<Self, MerchantConfigError> {
        validate(&merchants)?;
        Ok(MerchantDirectory { merchants })
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
        // Every configured token is compared, with no early exit, each in constant
        // time for its length: timing reveals neither a token's bytes nor which
        // merchant matched (only whether lengths differ, as with any comparison).
        for merchant in &self.merchants {
            for candidate in &merchant.tokens {
                let equal: bool =
                    subtle::ConstantTimeEq::ct_eq(candidate.as_bytes(), token.as_bytes()).into();
                if equal && found.is_none() {
                    found = Some(merchant);
                }
            }
        }
        found.ok_or_else(|| ApiError::Unauthorized("unknown bearer token".into()))
    }

    /// Every configured merchant id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.merchants.iter().map(|m| m.id.as_str())
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

    fn merchant(id: &str, tokens: &[&str]) -> MerchantConfig {
        MerchantConfig {
            id: id.into(),
            name: String::new(),
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    const A: &str = "token-a-0123456789";
    const B: &str = "token-b-0123456789";

    fn startup_error(merchants: Vec<MerchantConfig>) -> String {
        let err = MerchantDirectory::try_new(merchants)
            .err()
            .map(|e| crate::Error::from(e).to_string())
            .unwrap_or_default();
        for token in [A, B] {
            assert!(!err.contains(token), "token printed: {err}");
        }
        err
    }

    #[test]
    fn valid_merchants_start() {
        let dir = MerchantDirectory::try_new(vec![merchant("a", &[A]), merchant("b", &[B])]);
        assert!(dir.is_ok());
    }

    #[test]
    fn duplicate_token_is_a_startup_error_naming_both_keys() {
        let err = startup_error(vec![
            merchant("a", &[A]),
            merchant("b", &[B]),
            merchant("c", &[B]),
        ]);
        assert_eq!(
            err,
            "config: merchants[2].tokens[0] duplicates merchants[1].tokens[0]"
        );
        let err = startup_error(vec![merchant("a", &[A, A])]);
        assert_eq!(
            err,
            "config: merchants[0].tokens[1] duplicates merchants[0].tokens[0]"
        );
    }

    #[test]
    fn duplicate_merchant_id_is_a_startup_error() {
        let err = startup_error(vec![merchant("a", &[A]), merchant("a", &[B])]);
        assert_eq!(err, "config: merchants[1].id duplicates merchants[0].id");
    }

    #[test]
    fn empty_short_and_padded_secrets_are_startup_errors() {
        assert_eq!(
            startup_error(vec![merchant("a", &[A]), merchant(" ", &[B])]),
            "config: merchants[1].id is empty"
        );
        assert_eq!(
            startup_error(vec![merchant("a", &[A, ""])]),
            "config: merchants[0].tokens[1] is empty"
        );
        assert_eq!(
            startup_error(vec![merchant("a", &["short-token"])]),
            "config: merchants[0].tokens[0] is 11 bytes; tokens need at least 16"
        );
        assert_eq!(
            startup_error(vec![merchant("a", &[" token-a-0123456789"])]),
            "config: merchants[0].tokens[0] has leading or trailing whitespace"
        );
    }
}
