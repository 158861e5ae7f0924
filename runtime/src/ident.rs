//! The one grammar for identifiers and contact fields that enter trackstream.
//!
//! Everything a client or provider sends ends up in Redis keys, Kafka keys,
//! records that grow along the pipeline, logs and buyer messages. Unbounded or
//! free-form values there are how one request breaks a later stage: a `:` in a
//! waybill forges another parcel's `carrier:waybill` key, a `}` in an order id
//! breaks the Redis hash tag `{o:<merchant>/<order>}`, a 900 kB service level
//! makes every update of the parcel unproducible. So ingest checks every field
//! against the limits here before anything is written, and says which field
//! failed.
//!
//! - **Identifiers** ([`Ident`]: carrier codes, waybills, order ids, merchant
//!   ids, service levels, provider accounts): printable ASCII without spaces and
//!   without the characters keys are built from (`:` `/` `{` `}`) or that need
//!   escaping (`"` `\`), each kind with its own maximum length.
//! - **Locales**: BCP 47-like tags, letters, digits, `-` and `_`, at most 35
//!   bytes.
//! - **Contact fields** ([`Contact`]): buyer name (any text without control
//!   characters), phone (digits and `+ - ( ) . ` and space), e-mail (one `@`, no
//!   spaces or control characters), time zone (an IANA name: checked for form
//!   here and for existence by the caller).
//! - **Free text** ([`free_text`]): no control characters except tab and
//!   newline, capped by the caller.
//!
//! Errors never echo the value: a contact field must not be repeated into logs
//! or error bodies, and a position is enough to find the offending character.

/// Why a value does not fit its grammar. Every variant is a client error
/// (reject the request, 400): retrying the same value cannot succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    /// The value is empty (or only whitespace) where one is required.
    #[error("must not be empty")]
    Empty,
    /// The value is longer than its kind allows.
    #[error("is {len} bytes, over the {max}-byte limit")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A character outside the grammar.
    #[error("has a character not allowed here at byte {at} (allowed: {allowed})")]
    Invalid {
        /// Byte offset of the first offending character.
        at: usize,
        /// The grammar, in words.
        allowed: &'static str,
    },
}

/// Identifier kinds, each with its maximum length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident {
    /// Carrier code (`sf`, `jtexpress`, `21051`). At most 32 bytes.
    Carrier,
    /// Waybill / tracking number. At most 64 bytes (the longest real ones,
    /// UPU S10 and USPS IMpb, have 13 and 34).
    Waybill,
    /// A merchant's order id. At most 128 bytes.
    OrderId,
    /// Merchant id. At most 64 bytes.
    MerchantId,
    /// Service level (`express`, `economy`). At most 32 bytes.
    ServiceLevel,
    /// A provider's account name (Kdniao EBusinessID, ...). At most 128 bytes.
    Account,
}

const ID_ALLOWED: &str = "printable ASCII except space : / { } \" \\";

impl Ident {
    /// The longest value of this kind, in bytes.
    pub const fn max_len(self) -> usize {
        match self {
            Ident::Carrier | Ident::ServiceLevel => 32,
            Ident::Waybill | Ident::MerchantId => 64,
            Ident::OrderId | Ident::Account => 128,
        }
    }

    /// Checks `value` (not trimmed: callers trim first if they accept padding).
    pub fn check(self, value: &str) -> Result<(), IdentError> {
        check_with(value, self.max_len(), ID_ALLOWED, is_id_byte)
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b':' | b'/' | b'{' | b'}' | b'"' | b'\\')
}

/// Longest locale tag, in bytes (BCP 47 recommends supporting 35).
pub const MAX_LOCALE: usize = 35;

/// Checks a locale tag (`zh-CN`, `en`, `pt_BR`).
pub fn check_locale(value: &str) -> Result<(), IdentError> {
    check_with(value, MAX_LOCALE, "letters, digits, - and _", |b| {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
    })
}

/// Buyer contact fields, each with its maximum length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// Display name. At most 200 bytes of UTF-8.
    Name,
    /// Phone number. At most 32 bytes.
    Phone,
    /// E-mail address. At most 254 bytes (RFC 5321's path limit).
    Email,
    /// IANA time zone name. At most 64 bytes.
    TimeZone,
}

impl Contact {
    /// The longest value of this kind, in bytes.
    pub const fn max_len(self) -> usize {
        match self {
            Contact::Name => 200,
            Contact::Phone => 32,
            Contact::Email => 254,
            Contact::TimeZone => 64,
        }
    }

    /// Checks `value`. Empty values are the caller's business (contact fields
    /// are optional); a non-empty one must fit.
    pub fn check(self, value: &str) -> Result<(), IdentError> {
        if value.is_empty() {
            return Ok(());
        }
        let max = self.max_len();
        match self {
            Contact::Name => free_text(value, max),
            Contact::Phone => check_with(value, max, "digits, space and + - ( ) .", |b| {
                b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-' | b'(' | b')' | b'.')
            }),
            Contact::Email => {
                check_with(value, max, "printable characters without spaces", |b| {
                    b.is_ascii_graphic() || b >= 0x80
                })?;
                let ats = value.bytes().filter(|b| *b == b'@').count();
                let at = value.find('@').unwrap_or(0);
                if ats != 1 || at == 0 || at + 1 == value.len() {
                    return Err(IdentError::Invalid {
                        at,
                        allowed: "exactly one @ between a local part and a domain",
                    });
                }
                Ok(())
            }
            Contact::TimeZone => check_with(value, max, "letters, digits, / _ - +", |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+')
            }),
        }
    }
}

/// Longest province or city name, bytes (the longest Chinese ones are under 30).
pub const REGION_NAME_MAX: usize = 64;

/// Checks a province or city name: free text of at most
/// [`REGION_NAME_MAX`] bytes, without the characters that delimit lane keys
/// and Redis hash tags (`{ } |`) — a lane key is built from them.
pub fn check_region_name(value: &str) -> Result<(), IdentError> {
    free_text(value, REGION_NAME_MAX)?;
    match value.find(['{', '}', '|', '\n', '\t']) {
        Some(at) => Err(IdentError::Invalid {
            at,
            allowed: "text without control characters or { } |",
        }),
        None => Ok(()),
    }
}

/// Checks an administrative division code: 2 to 12 ASCII digits (China's
/// GB/T 2260 codes have 6, statistical codes 9 or 12).
pub fn check_admin_code(value: &str) -> Result<(), IdentError> {
    check_with(value, 12, "2 to 12 digits", |b| b.is_ascii_digit())?;
    if value.len() < 2 {
        return Err(IdentError::Invalid {
            at: 0,
            allowed: "2 to 12 digits",
        });
    }
    Ok(())
}

/// Checks free text against `max` bytes: any UTF-8 without control characters
/// other than tab and newline (they would forge log lines and break message
/// templates).
pub fn free_text(value: &str, max: usize) -> Result<(), IdentError> {
    if value.len() > max {
        return Err(IdentError::TooLong {
            len: value.len(),
            max,
        });
    }
    match value
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n'))
    {
        Some((at, _)) => Err(IdentError::Invalid {
            at,
            allowed: "text without control characters",
        }),
        None => Ok(()),
    }
}

fn check_with(
    value: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<(), IdentError> {
    if value.is_empty() {
        return Err(IdentError::Empty);
    }
    if value.len() > max {
        return Err(IdentError::TooLong {
            len: value.len(),
            max,
        });
    }
    match value.bytes().position(|b| !ok(b)) {
        Some(at) => Err(IdentError::Invalid { at, allowed }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_take_any_script_but_no_key_delimiters_and_codes_take_digits() {
        for ok in ["浙江省", "Zhejiang", "Xi'an", "乌鲁木齐市"] {
            assert_eq!(check_region_name(ok), Ok(()), "{ok}");
        }
        for bad in ["a{b", "a|b", "a}b", "a\u{7}b"] {
            assert!(
                matches!(check_region_name(bad), Err(IdentError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_region_name(&"省".repeat(30)),
            Err(IdentError::TooLong { .. })
        ));
        assert_eq!(check_admin_code("330100"), Ok(()));
        assert_eq!(check_admin_code("330106001001"), Ok(()));
        for bad in ["3", "33010A", "3301000000000", "33 01"] {
            assert!(check_admin_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identifiers_refuse_key_separators_and_overlong_values() {
        assert_eq!(Ident::Waybill.check("SF1234567890"), Ok(()));
        assert_eq!(Ident::OrderId.check("DEMO-aa646a-0003#2"), Ok(()));
        for bad in ["sf:1", "a/b", "{p1}", "a b", "é", "a\"b", "a\\b", "x\n"] {
            assert!(
                matches!(Ident::Waybill.check(bad), Err(IdentError::Invalid { .. })),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(Ident::Carrier.check(""), Err(IdentError::Empty));
        assert_eq!(
            Ident::Carrier.check(&"x".repeat(33)),
            Err(IdentError::TooLong { len: 33, max: 32 })
        );
    }

    #[test]
    fn contacts_have_their_own_grammar_and_never_echo_the_value() {
        assert_eq!(Contact::Phone.check("+86 138-1234-5678"), Ok(()));
        assert_eq!(Contact::Phone.check(""), Ok(()), "optional");
        assert!(Contact::Phone.check("138x").is_err());
        assert_eq!(Contact::Email.check("li@example.com"), Ok(()));
        for bad in ["li", "@x", "li@", "a@b@c", "li @x.com"] {
            assert!(Contact::Email.check(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Contact::Name.check("李雷 Li Lei"), Ok(()));
        assert!(Contact::Name.check("a\u{1b}[31m").is_err());
        let err = Contact::Email.check("secret@@example.com").err();
        assert!(
            !format!("{err:?}").contains("secret"),
            "errors never contain the value"
        );
        assert_eq!(
            Contact::TimeZone.check("America/Argentina/Buenos_Aires"),
            Ok(())
        );
    }

    #[test]
    fn locales_and_free_text() {
        assert_eq!(check_locale("zh-CN"), Ok(()));
        assert!(check_locale("zh CN").is_err());
        assert!(check_locale(&"a".repeat(36)).is_err());
        assert_eq!(free_text("line one\nline two", 100), Ok(()));
        assert!(free_text("a\rb", 100).is_err());
        assert!(free_text("abc", 2).is_err());
    }
}
