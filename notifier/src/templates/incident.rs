//! The words of an INCIDENT message: why parcels are held up, where, and for
//! how long, in plain words a buyer reads (never the incident's internal
//! summary, which is for operators, and nothing of the buyer).

use chrono::Datelike as _;
use trackstream_proto::v1::IncidentReason;

/// The reason of an incident, for `{reason}`. Detected incidents are mostly
/// UNKNOWN, so that one still says something true ("a problem in the carrier's
/// network") rather than nothing.
pub fn reason_text(locale: &str, reason: i32) -> &'static str {
    let zh = locale.starts_with("zh");
    let reason = IncidentReason::try_from(reason).unwrap_or(IncidentReason::Unknown);
    match (reason, zh) {
        (IncidentReason::Weather, true) => "暴雨等恶劣天气",
        (IncidentReason::Weather, false) => "severe weather",
        (IncidentReason::EpidemicControl, true) => "疫情管控",
        (IncidentReason::EpidemicControl, false) => "epidemic controls",
        (IncidentReason::HubCongestion, true) => "转运中心拥堵",
        (IncidentReason::HubCongestion, false) => "congestion at the sorting hub",
        (IncidentReason::CarrierOutage, true) => "快递公司系统故障",
        (IncidentReason::CarrierOutage, false) => "a carrier outage",
        (_, true) => "快递网络异常",
        (_, false) => "a problem in the carrier's network",
    }
}

/// Where, for `{location}`: the incident's place, or — when it has none — a
/// word that keeps the sentence whole.
pub fn place_text(locale: &str, place: &str) -> String {
    match (place.trim(), locale.starts_with("zh")) {
        ("", true) => "运输途中".to_owned(),
        ("", false) => "transit".to_owned(),
        (place, _) => place.to_owned(),
    }
}

/// The buyer-facing place of an incident: its city, else the last part of its
/// place key ("浙江省/杭州市" → "杭州市"), else its region.
pub fn place_of(incident: &trackstream_proto::v1::Incident) -> String {
    let location = incident.location.as_ref();
    let city = location.map_or("", |l| l.city.trim());
    if !city.is_empty() {
        return city.to_owned();
    }
    let last = incident
        .place
        .rsplit('/')
        .map(str::trim)
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    if !last.is_empty() {
        return last.to_owned();
    }
    location.map_or("", |l| l.region.trim()).to_owned()
}

/// The expected delay, for `{delay}`: the tail of the message's sentence, or
/// empty when unknown (no guess). A declared incident's `until` is named as a
/// day in the buyer's `zone`; otherwise `expected_delay_hours` becomes a range
/// of days, `ceil(h / 24)` to one more, since an hour-exact promise to a buyer
/// would be false precision.
pub fn delay_text(
    locale: &str,
    expected_delay_hours: u32,
    until: Option<&prost_types::Timestamp>,
    zone: chrono_tz::Tz,
) -> String {
    let zh = locale.starts_with("zh");
    if let Some(until) = until.and_then(trackstream_proto::time::from_proto) {
        let local = until.with_timezone(&zone);
        return if zh {
            format!("，预计 {}月{}日 恢复", local.month(), local.day())
        } else {
            format!("; service should resume around {}", local.format("%b %-d"))
        };
    }
    if expected_delay_hours == 0 {
        return String::new();
    }
    let low = expected_delay_hours.div_ceil(24);
    let high = low + 1;
    if zh {
        format!("，预计延误{low}-{high}天")
    } else {
        format!("; expect a delay of {low}–{high} days")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MessagesConfig;
    use crate::templates::{Vars, next_step, render};
    use trackstream_proto::v1::{Incident, Location, Milestone};

    #[test]
    fn the_delay_is_a_range_of_days_or_the_declared_end_or_nothing() {
        let shanghai = chrono_tz::Asia::Shanghai;
        assert_eq!(delay_text("zh-CN", 0, None, shanghai), "");
        assert_eq!(delay_text("zh-CN", 20, None, shanghai), "，预计延误1-2天");
        assert_eq!(delay_text("zh-CN", 24, None, shanghai), "，预计延误1-2天");
        assert_eq!(
            delay_text("en", 30, None, shanghai),
            "; expect a delay of 2–3 days"
        );
        // 2025-03-11 20:00 UTC is Mar 12 in Shanghai.
        let until = trackstream_proto::time::from_millis(1_741_723_200_000);
        assert_eq!(
            delay_text("zh-CN", 30, Some(&until), shanghai),
            "，预计 3月12日 恢复"
        );
        assert_eq!(
            delay_text("en", 0, Some(&until), chrono_tz::UTC),
            "; service should resume around Mar 11"
        );
    }

    #[test]
    fn the_place_is_the_city_else_the_place_keys_last_part() {
        let mut incident = Incident {
            place: "浙江省/杭州市".into(),
            ..Incident::default()
        };
        assert_eq!(place_of(&incident), "杭州市");
        incident.location = Some(Location {
            city: "Hangzhou".into(),
            ..Location::default()
        });
        assert_eq!(place_of(&incident), "Hangzhou");
        assert_eq!(place_of(&Incident::default()), "");
        assert_eq!(place_text("zh-CN", ""), "运输途中");
    }

    #[test]
    fn the_message_names_the_reason_place_and_delay_without_contact() {
        let config = MessagesConfig::default();
        let delay = delay_text("zh-CN", 20, None, chrono_tz::Asia::Shanghai);
        let vars = Vars {
            merchant: "Acme",
            order_id: "O1",
            waybill: "SF1",
            location: "杭州市",
            reason: reason_text("zh-CN", IncidentReason::Weather as i32),
            next: next_step(
                "zh-CN",
                Milestone::Incident,
                trackstream_proto::v1::Reason::Unspecified,
            ),
            contact: "138****5678",
            delay: &delay,
            ..Vars::default()
        };
        let zh = render(&config, "m", "zh-CN", Milestone::Incident, &vars);
        assert!(
            zh.body
                .ends_with("因暴雨等恶劣天气在杭州市滞留，预计延误1-2天，我们会持续跟进。"),
            "{}",
            zh.body
        );
        assert!(!zh.body.contains("5678"), "{}", zh.body);
        let delay = delay_text("en", 20, None, chrono_tz::Asia::Shanghai);
        let en = render(
            &config,
            "m",
            "en",
            Milestone::Incident,
            &Vars {
                location: "Hangzhou",
                reason: reason_text("en", IncidentReason::Weather as i32),
                next: next_step(
                    "en",
                    Milestone::Incident,
                    trackstream_proto::v1::Reason::Unspecified,
                ),
                delay: &delay,
                ..vars
            },
        );
        assert!(
            en.body
                .contains("is held up in Hangzhou by severe weather; expect a delay of 1–2 days."),
            "{}",
            en.body
        );
        assert_eq!(
            reason_text("en", IncidentReason::Unspecified as i32),
            "a problem in the carrier's network"
        );
    }
}
