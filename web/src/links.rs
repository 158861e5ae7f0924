//! Buyer links and the buyer key.
//!
//! A link token is `base64url(payload) "." base64url(mac)`, payload
//! `v1|<expires unix s>|<merchant id>|<scope>`, mac the first 16 bytes of
//! HMAC-SHA256(link_secret, payload). The scope is `b:<buyer key>` (every
//! order of that buyer in that shop) or `o:<order id>` (one order). Nothing
//! in it is guessable (128-bit MAC) and it is not a contact turned inside out
//! (the mistake of links built from a reversed e-mail address): the buyer key
//! is itself a keyed hash.
//!
//! The MAC is checked before anything else, in constant time, against the
//! current secret and each previous one (rotation); only a genuine link can be
//! told it has expired — anything else is just invalid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use trackstream_runtime::ApiError;

use crate::config::WebConfig;

type HmacSha256 = Hmac<Sha256>;

/// MAC bytes kept in a token: 128 bits, unforgeable, and short enough for an SMS.
const MAC_BYTES: usize = 16;
/// Longest token accepted, so a huge path is refused before any work.
const MAX_TOKEN_BYTES: usize = 1024;

/// Which orders a link opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every order of the buyer with this key in the shop.
    Buyer(String),
    /// This one order.
    Order(String),
}

/// A verified (or to-be-signed) link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The shop.
    pub merchant_id: String,
    /// Which of its orders.
    pub scope: Scope,
    /// Unix seconds after which the link no longer opens.
    pub expires_at: i64,
}

/// Signs and checks links; keys buyers.
#[derive(Clone)]
pub struct Links {
    current: Vec<u8>,
    previous: Vec<Vec<u8>>,
    pepper: Vec<u8>,
}

impl Links {
    /// From a validated `[web]` config.
    pub fn new(config: &WebConfig) -> Self {
        Links {
            current: config.link_secret.as_bytes().to_vec(),
            previous: config
                .previous_link_secrets
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            pepper: config.phone_pepper.as_bytes().to_vec(),
        }
    }

    /// The token for `link`; `None` when the merchant id could not be read back
    /// unambiguously (it holds `|`).
    pub fn sign(&self, link: &Link) -> Option<String> {
        if link.merchant_id.contains('|') || link.merchant_id.is_empty() {
            return None;
        }
        let scope = match &link.scope {
            Scope::Buyer(key) => format!("b:{key}"),
            Scope::Order(order) => format!("o:{order}"),
        };
        let payload = format!("v1|{}|{}|{scope}", link.expires_at, link.merchant_id);
        let mac = mac(&self.current, payload.as_bytes());
        Some(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&mac[..MAC_BYTES])
        ))
    }

    /// The link `token` stands for, if we signed it and it has not expired at
    /// `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Link, ApiError> {
        let invalid = || ApiError::LinkInvalid("this tracking link is not valid".into());
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid());
        }
        let (payload, tag) = token.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        if tag.len() != MAC_BYTES {
            return Err(invalid());
        }
        // Every secret is tried, with no early exit.
        let mut genuine = false;
        for secret in std::iter::once(&self.current).chain(&self.previous) {
            let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| invalid())?;
            mac.update(&payload);
            genuine |= mac.verify_truncated_left(&tag).is_ok();
        }
        if !genuine {
            return Err(invalid());
        }
        let payload = String::from_utf8(payload).map_err(|_| invalid())?;
        let mut parts = payload.splitn(4, '|');
        let (Some("v1"), Some(expires), Some(merchant), Some(scope)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let expires_at: i64 = expires.parse().map_err(|_| invalid())?;
        let scope = if let Some(key) = scope.strip_prefix("b:") {
            Scope::Buyer(key.to_owned())
        } else if let Some(order) = scope.strip_prefix("o:") {
            Scope::Order(order.to_owned())
        } else {
            return Err(invalid());
        };
        if now >= expires_at {
            return Err(ApiError::LinkExpired(
                "this tracking link has expired".into(),
            ));
        }
        Ok(Link {
            merchant_id: merchant.to_owned(),
            scope,
            expires_at,
        })
    }

    /// The buyer key of a contact: its phone's, else its e-mail's; `None` for
    /// a contact with neither.
    pub fn buyer_key(&self, phone: &str, email: &str) -> Option<String> {
        self.phone_key(phone).or_else(|| {
            let email = email.trim().to_lowercase();
            email
                .contains('@')
                .then(|| self.keyed(&format!("email:{email}")))
        })
    }

    /// The buyer key of a phone number however it was typed (`+86 138-1234-5678`,
    /// `008613812345678`, `13812345678` are one key); `None` when it has too
    /// few or too many digits to be a phone number.
    pub fn phone_key(&self, phone: &str) -> Option<String> {
        normalize_phone(phone).map(|digits| self.keyed(&format!("phone:{digits}")))
    }

    fn keyed(&self, text: &str) -> String {
        hex::encode(&mac(&self.pepper, text.as_bytes())[..16])
    }
}

fn mac(secret: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The digits of a phone number without a Chinese country prefix (`+86`,
/// `0086`, or `86` in front of an 11-digit mobile number); `None` outside 6–15
/// digits or with letters in it.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw
        .chars()
        .any(|c| !(c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.')))
    {
        return None;
    }
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let digits = if let Some(rest) = digits.strip_prefix("0086") {
        rest.to_owned()
    } else if digits.len() == 13 && digits.starts_with("86") {
        digits[2..].to_owned()
    } else {
        digits
    };
    (6..=15).contains(&digits.len()).then_some(digits)
}

/// The last four digits of a phone number, for the lookup check.
pub fn last4(phone: &str) -> Option<String> {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    (digits.len() >= 4).then(|| digits[digits.len() - 4..].iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(secret: &str) -> Links {
        Links::new(&WebConfig {
            link_secret: secret.into(),
            phone_pepper: "p".repeat(32),
            ..WebConfig::default()
        })
    }

    fn link(expires_at: i64) -> Link {
        Link {
            merchant_id: "acme".into(),
            scope: Scope::Order("A|1".into()),
            expires_at,
        }
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let links = links(&"s".repeat(32));
        let token = links.sign(&link(1_000)).expect("signable");
        assert_eq!(links.verify(&token, 999), Ok(link(1_000)));
        assert_eq!(
            links.verify(&token, 1_000).map_err(|e| e.kind()),
            Err("link_expired")
        );
    }

    #[test]
    fn an_altered_or_foreign_link_is_invalid_never_expired() {
        let ours = links(&"s".repeat(32));
        let theirs = links(&"t".repeat(32));
        let token = theirs.sign(&link(1_000)).expect("signable");
        assert_eq!(
            ours.verify(&token, 2_000).map_err(|e| e.kind()),
            Err("link_invalid")
        );
        // Same MAC, another merchant in the payload.
        let token = ours.sign(&link(1_000)).expect("signable");
        let (_, tag) = token.split_once('.').expect("two parts");
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("v1|1000|other|o:A|1"));
        assert_eq!(
            ours.verify(&forged, 0).map_err(|e| e.kind()),
            Err("link_invalid")
        );
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(5_000)] {
            assert_eq!(
                ours.verify(junk, 0).map_err(|e| e.kind()),
                Err("link_invalid")
            );
        }
    }

    #[test]
    fn a_rotated_secret_still_opens_old_links_but_signs_with_the_new_one() {
        let old = links(&"o".repeat(32));
        let rotated = Links::new(&WebConfig {
            link_secret: "n".repeat(32),
            previous_link_secrets: vec!["o".repeat(32)],
            phone_pepper: "p".repeat(32),
            ..WebConfig::default()
        });
        let token = old.sign(&link(1_000)).expect("signable");
        assert!(rotated.verify(&token, 0).is_ok());
        let fresh = rotated.sign(&link(1_000)).expect("signable");
        assert!(old.verify(&fresh, 0).is_err());
    }

    #[test]
    fn one_phone_however_typed_is_one_key_and_a_digit_off_is_another() {
        let links = links(&"s".repeat(32));
        let key = links.phone_key("13812345678");
        assert!(key.is_some());
        for typed in [
            "+86 138-1234-5678",
            "008613812345678",
            "8613812345678",
            " 138 1234 5678 ",
        ] {
            assert_eq!(links.phone_key(typed), key, "{typed}");
        }
        assert_ne!(links.phone_key("13812345679"), key);
        assert_eq!(links.phone_key("1381234567x"), None);
        assert_eq!(links.phone_key("12345"), None);
        assert_eq!(
            links.buyer_key("", "John@Example.com"),
            links.buyer_key("", "john@example.com")
        );
        assert_eq!(links.buyer_key("", ""), None);
        assert!(!key.unwrap_or_default().contains("1381234"));
    }

    #[test]
    fn last4_reads_digits_only() {
        assert_eq!(last4("+86 138-1234-5678").as_deref(), Some("5678"));
        assert_eq!(last4("12"), None);
    }
}
