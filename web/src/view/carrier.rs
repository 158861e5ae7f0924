//! Carrier display names for the pages: the carriers' own Chinese names, and
//! the English ones they use abroad. Unknown codes show as given, upper-cased.

/// (code, zh-CN name, English name) of the carriers buyers meet most.
const NAMES: &[(&str, &str, &str)] = &[
    ("sf", "顺丰速运", "SF Express"),
    ("yto", "圆通速递", "YTO Express"),
    ("zto", "中通快递", "ZTO Express"),
    ("sto", "申通快递", "STO Express"),
    ("yunda", "韵达快递", "Yunda Express"),
    ("jd", "京东物流", "JD Logistics"),
    ("jtexpress", "极兔速递", "J&T Express"),
    ("jt", "极兔速递", "J&T Express"),
    ("ems", "中国邮政EMS", "China Post EMS"),
    ("chinapost", "中国邮政", "China Post"),
    ("deppon", "德邦快递", "Deppon Express"),
    ("best", "百世快递", "BEST Express"),
    ("ups", "UPS", "UPS"),
    ("usps", "USPS", "USPS"),
    ("fedex", "FedEx", "FedEx"),
    ("dhl", "DHL", "DHL"),
];

/// The carrier's name as `{ "zh-CN": …, "en": … }` (both the code, upper-cased,
/// when unknown).
pub fn carrier_name(code: &str) -> CarrierName {
    NAMES
        .iter()
        .find(|(c, _, _)| c.eq_ignore_ascii_case(code))
        .map_or_else(
            || CarrierName {
                zh: code.to_ascii_uppercase(),
                en: code.to_ascii_uppercase(),
            },
            |(_, zh, en)| CarrierName {
                zh: (*zh).to_owned(),
                en: (*en).to_owned(),
            },
        )
}

/// A carrier's name in the page's two languages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CarrierName {
    /// Simplified Chinese.
    #[serde(rename = "zh-CN")]
    pub zh: String,
    /// English.
    pub en: String,
}
