//! Where a parcel is stuck, as a grouping key: carrier × place.
//!
//! A place is the province and city of the parcel's newest scan (or of its
//! registration's origin before pickup), written the same however the
//! provider spelled the province ("浙江", "Zhejiang", an admin code → 浙江省),
//! so one hub's parcels from Kdniao and Kuaidi100 meet. Without a city the
//! place is the province; without either, the carrier's facility text; a
//! location naming nothing has no place and is not grouped.

use trackstream_carriers::area;
use trackstream_proto::v1::{Location, Reason};

/// The grouping key of a location, `None` when it names no place.
pub fn of(location: &Location) -> Option<String> {
    let province = province(&location.region, &location.admin_area_code);
    let city = city(&location.city);
    match (province, city) {
        (Some(p), Some(c)) => Some(format!("{p}/{c}")),
        (Some(p), None) => Some(p),
        (None, Some(c)) => Some(format!("?/{c}")),
        (None, None) => clean(&location.text).map(|t| format!("@{t}")),
    }
}

/// The canonical province name of a region name or admin code.
pub fn province(region: &str, admin_code: &str) -> Option<String> {
    area::province_named(region)
        .or_else(|| area::province_for_code(admin_code))
        .map(|p| p.name.to_owned())
        .or_else(|| clean(region))
}

/// A city name written one way: a bare two- or three-character Chinese name
/// ("杭州", "北京") gets its 市, as carriers and admin divisions write it
/// ("杭州市"); anything else (an autonomous prefecture, a district, an English
/// name) stays as written.
pub fn city(name: &str) -> Option<String> {
    let name = clean(name)?;
    let chars: Vec<char> = name.chars().collect();
    let chinese = chars.iter().all(|c| ('\u{4e00}'..='\u{9fff}').contains(c));
    let suffixed = ["市", "区", "县", "旗", "盟"]
        .iter()
        .any(|s| name.ends_with(s));
    Some(if chinese && !suffixed && (2..=3).contains(&chars.len()) {
        format!("{name}市")
    } else {
        name
    })
}

/// Whether place `place` lies in the declared area (province, optional city).
pub fn within(place: &str, province: &str, city: &str) -> bool {
    let (p, c) = place.split_once('/').unwrap_or((place, ""));
    p == province && (city.is_empty() || c == city)
}

/// The place's location, for the record.
pub fn location(place: &str) -> Location {
    if let Some(text) = place.strip_prefix('@') {
        return Location {
            text: text.to_owned(),
            ..Location::default()
        };
    }
    let (p, c) = place.split_once('/').unwrap_or((place, ""));
    Location {
        region: if p == "?" {
            String::new()
        } else {
            p.to_owned()
        },
        city: c.to_owned(),
        country: "CN".to_owned(),
        ..Location::default()
    }
}

/// Text fit for a key part: trimmed, no control characters, no separators,
/// at most 64 characters.
fn clean(text: &str) -> Option<String> {
    let text: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '{' | '}' | '|' | '\t' | '/'))
        .take(64)
        .collect();
    (!text.is_empty()).then_some(text)
}

/// Whether an alert of `rule` with `reason` says the parcel is held up where
/// it is — what incidents group. Stalls and a missing pickup always do; a
/// carrier exception only when its reason is about the network (weather, a
/// carrier delay, missorting, no trace, out of the service area, lost, or
/// none given), not about the buyer or the parcel (refused, wrong address,
/// customs paperwork, a failed attempt, a return).
pub fn holds_up(rule: &str, reason: Reason) -> bool {
    match rule {
        "stalled_in_transit"
        | "stalled_in_customs"
        | "no_pickup"
        | "out_for_delivery_not_delivered" => true,
        "carrier_exception" => matches!(
            reason,
            Reason::Unspecified
                | Reason::Unknown
                | Reason::Weather
                | Reason::CarrierDelay
                | Reason::Missorted
                | Reason::NoTrace
                | Reason::OutOfServiceArea
                | Reason::Lost
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hub_is_one_place_however_its_province_is_written() {
        let a = Location {
            region: "浙江".into(),
            city: "杭州市".into(),
            ..Location::default()
        };
        let b = Location {
            region: "Zhejiang".into(),
            city: "杭州市".into(),
            ..Location::default()
        };
        let c = Location {
            admin_area_code: "330100".into(),
            city: "杭州市".into(),
            ..Location::default()
        };
        assert_eq!(of(&a).as_deref(), Some("浙江省/杭州市"));
        assert_eq!(of(&a), of(&b));
        assert_eq!(of(&a), of(&c));
        let bare = Location {
            region: "浙江省".into(),
            city: "杭州".into(),
            ..Location::default()
        };
        assert_eq!(of(&bare), of(&a), "杭州 and 杭州市 are one city");
        assert_eq!(
            city("恩施土家族苗族自治州").as_deref(),
            Some("恩施土家族苗族自治州")
        );
        assert_eq!(city("Hangzhou").as_deref(), Some("Hangzhou"));
        assert_eq!(of(&Location::default()), None);
        let text = Location {
            text: "Memphis {hub}".into(),
            ..Location::default()
        };
        assert_eq!(of(&text).as_deref(), Some("@Memphis hub"));
        assert!(within("浙江省/杭州市", "浙江省", ""));
        assert!(within("浙江省/杭州市", "浙江省", "杭州市"));
        assert!(!within("浙江省/宁波市", "浙江省", "杭州市"));
    }

    #[test]
    fn only_network_problems_hold_a_parcel_up() {
        assert!(holds_up("stalled_in_transit", Reason::Unspecified));
        assert!(holds_up("no_pickup", Reason::Unspecified));
        assert!(holds_up("carrier_exception", Reason::Weather));
        assert!(!holds_up("carrier_exception", Reason::Refused));
        assert!(!holds_up("carrier_exception", Reason::Address));
        assert!(!holds_up("promise_at_risk", Reason::Unspecified));
        assert!(!holds_up("promised_date_missed", Reason::Unspecified));
    }
}
