//! The two merchants every multi-tenant test uses: `m-acme` and `m-other`,
//! with fixed bearer tokens (each at least the 16 bytes the directory
//! requires), so a test can act as one shop and check the other sees nothing.

use trackstream_runtime::merchants::MerchantConfig;

/// Bearer token of merchant `m-acme`.
pub const ACME_TOKEN: &str = "acme-merchant-token";
/// Bearer token of merchant `m-other`.
pub const OTHER_TOKEN: &str = "other-merchant-token";

/// `m-acme` ("Acme Live") and `m-other` ("Other Shop") with their tokens.
pub fn two_merchants() -> Vec<MerchantConfig> {
    vec![
        MerchantConfig {
            id: "m-acme".into(),
            name: "Acme Live".into(),
            tokens: vec![ACME_TOKEN.into()],
        },
        MerchantConfig {
            id: "m-other".into(),
            name: "Other Shop".into(),
            tokens: vec![OTHER_TOKEN.into()],
        },
    ]
}
