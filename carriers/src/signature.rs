//! Signature primitives. Every comparison of a computed signature with a received
//! one goes through [`constant_time_eq`], so timing reveals nothing about secrets.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub mod replay;

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(expected: &[u8], received: &[u8]) -> bool {
    expected.ct_eq(received).into()
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        sha2::Digest::update(&mut hasher, part);
    }
    sha2::Digest::finalize(hasher).into()
}

/// MD5 of the concatenation of `parts` (Kdniao and Kuaidi100 sign with it).
pub fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Lowercase hex.
pub fn hex_lower(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Standard Base64 with padding.
pub fn base64_std(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Tries each configured secret until one produces `received`; returns the account
/// that matched. Every candidate is compared in constant time.
pub fn find_account<'s>(
    secrets: &'s [crate::AccountSecret],
    received: &[u8],
    compute: impl Fn(&crate::AccountSecret) -> Vec<u8>,
) -> Option<&'s crate::AccountSecret> {
    let mut matched = None;
    for secret in secrets {
        // No early exit: the time taken does not depend on which secret matched.
        if constant_time_eq(&compute(secret), received) && matched.is_none() {
            matched = Some(secret);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex_lower(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn constant_time_eq_rejects_prefixes_and_differences() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
