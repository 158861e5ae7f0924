//! Carrier codes differ per aggregator (Kdniao `SF`, Kuaidi100 `shunfeng`,
//! AfterShip `sf-express`, 17TRACK `100003`). Registrations and scans must agree
//! on one code, or a scan never meets its shipment; this table makes them agree.

/// Known aliases → canonical code. Lookup is case-insensitive.
const ALIASES: &[(&str, &str)] = &[
    ("sf", "sf"),
    ("shunfeng", "sf"),
    ("sf-express", "sf"),
    ("sfexpress", "sf"),
    ("100003", "sf"),
    ("yto", "yto"),
    ("yuantong", "yto"),
    ("yto-express", "yto"),
    ("zto", "zto"),
    ("zhongtong", "zto"),
    ("zto-express", "zto"),
    ("sto", "sto"),
    ("shentong", "sto"),
    ("sto-express", "sto"),
    ("yd", "yunda"),
    ("yunda", "yunda"),
    ("yunda-express", "yunda"),
    ("jd", "jd"),
    ("jingdong", "jd"),
    ("jd-logistics", "jd"),
    ("jtsd", "jtexpress"),
    ("jtexpress", "jtexpress"),
    ("jet", "jtexpress"),
    ("ems", "ems"),
    ("china-ems", "ems"),
    ("yzpy", "chinapost"),
    ("youzhengguonei", "chinapost"),
    ("china-post", "chinapost"),
    ("3011", "chinapost"),
    ("usps", "usps"),
    ("21051", "usps"),
    ("ups", "ups"),
    ("fedex", "fedex"),
    ("dhl", "dhl"),
    ("dhl-express", "dhl"),
];

/// The canonical code for a provider's carrier code: a known alias maps to its
/// canonical code; anything else is lowercased and kept (so new carriers work
/// without a code change, they just don't merge with aliases).
pub fn canonical(code: &str) -> String {
    let code = code.trim();
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(code))
        .map_or_else(|| code.to_ascii_lowercase(), |(_, c)| (*c).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_from_different_aggregators_agree() {
        assert_eq!(canonical("SF"), "sf");
        assert_eq!(canonical("shunfeng"), "sf");
        assert_eq!(canonical("sf-express"), "sf");
        assert_eq!(canonical(" New-Carrier "), "new-carrier");
        // 17TRACK numbers its carriers.
        assert_eq!(canonical("21051"), "usps");
        assert_eq!(canonical("3011"), "chinapost");
    }
}
