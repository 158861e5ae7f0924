//! Provider times → UTC, remembering how the zone was known.
//!
//! Chinese carriers send zone-less local times (`2026-11-20 14:03:00`, China time);
//! AfterShip sends carrier-local ISO-8601 that may carry an offset; 17TRACK gives a
//! UTC field. Every parse returns the instant plus the zone text and a
//! [`ZoneSource`], so an analyst can tell an explicit time from an assumed one.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use trackstream_proto::v1::ZoneSource;

/// A parsed instant and where its zone came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTime {
    /// The instant in UTC.
    pub utc: DateTime<Utc>,
    /// IANA zone name or fixed offset (`+08:00`) the source time was in.
    pub zone: String,
    /// How that zone was known.
    pub source: ZoneSource,
}

/// Resolves a configured IANA zone name, falling back to `default` when unset or
/// unknown (an unknown name in config must not make every scan unparseable).
pub fn zone_or(configured: Option<&str>, default: Tz) -> Tz {
    configured
        .and_then(|name| name.parse::<Tz>().ok())
        .unwrap_or(default)
}

/// Parses a time that must carry a zone: RFC 3339 (`Z` or an offset).
pub fn parse_with_offset(text: &str) -> Option<ParsedTime> {
    let parsed = DateTime::parse_from_rfc3339(text.trim()).ok()?;
    Some(offset_time(parsed))
}

/// Parses a UTC field (RFC 3339; a zone-less value is taken as UTC because the
/// field itself says UTC).
pub fn parse_utc_field(text: &str) -> Option<ParsedTime> {
    let text = text.trim();
    let utc = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => parse_naive(text)?.and_utc(),
    };
    Some(ParsedTime {
        utc,
        zone: "UTC".to_owned(),
        source: ZoneSource::UtcField,
    })
}

/// Parses a provider time that may or may not carry an offset: an offset is
/// honoured, a zone-less value is read in `zone`.
pub fn parse_local_or_offset(text: &str, zone: Tz) -> Option<ParsedTime> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(offset_time(t));
    }
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z") {
        return Some(offset_time(t));
    }
    let naive = parse_naive(text)?;
    // A local time in a DST gap does not exist; an ambiguous one takes the earlier
    // instant. Chinese zones have no DST, so this only matters for configured zones.
    let local = zone.from_local_datetime(&naive).earliest()?;
    Some(ParsedTime {
        utc: local.with_timezone(&Utc),
        zone: zone.name().to_owned(),
        source: ZoneSource::ProviderDefault,
    })
}

/// Parses a time or a bare date (`2026-11-22`), as providers send estimated
/// delivery: a date is read as its first instant in `zone`, because an estimate
/// "on the 22nd" is already late once the 22nd has begun somewhere else.
pub fn parse_date_or_time(text: &str, zone: Tz) -> Option<ParsedTime> {
    let text = text.trim();
    if let Some(parsed) = parse_local_or_offset(text, zone) {
        return Some(parsed);
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let local = zone
        .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
        .earliest()?;
    Some(ParsedTime {
        utc: local.with_timezone(&Utc),
        zone: zone.name().to_owned(),
        source: ZoneSource::ProviderDefault,
    })
}

fn offset_time(t: DateTime<FixedOffset>) -> ParsedTime {
    let offset = t.offset().local_minus_utc();
    let (sign, abs) = if offset < 0 {
        ('-', -offset)
    } else {
        ('+', offset)
    };
    ParsedTime {
        utc: t.with_timezone(&Utc),
        zone: format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60),
        source: ZoneSource::ExplicitOffset,
    }
}

fn parse_naive(text: &str) -> Option<NaiveDateTime> {
    const FORMATS: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ];
    FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| NaiveDateTime::parse_from_str(&format!("{text}:00"), "%Y-%m-%d %H:%M:%S").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_less_china_time_is_read_in_shanghai() {
        let t = parse_local_or_offset("2026-11-20 14:03:00", chrono_tz::Asia::Shanghai)
            .expect("valid time");
        assert_eq!(t.utc.to_rfc3339(), "2026-11-20T06:03:00+00:00");
        assert_eq!(t.zone, "Asia/Shanghai");
        assert_eq!(t.source, ZoneSource::ProviderDefault);
    }

    #[test]
    fn explicit_offsets_are_honoured() {
        let t =
            parse_local_or_offset("2026-11-20T09:00:00-05:00", chrono_tz::UTC).expect("valid time");
        assert_eq!(t.utc.to_rfc3339(), "2026-11-20T14:00:00+00:00");
        assert_eq!(t.zone, "-05:00");
        assert_eq!(t.source, ZoneSource::ExplicitOffset);
    }

    #[test]
    fn bare_dates_are_midnight_in_the_zone() {
        let t = parse_date_or_time("2026-11-22", chrono_tz::Asia::Shanghai).expect("valid");
        assert_eq!(t.utc.to_rfc3339(), "2026-11-21T16:00:00+00:00");
        assert_eq!(parse_date_or_time("soon", chrono_tz::UTC), None);
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(parse_local_or_offset("yesterday", chrono_tz::UTC), None);
        assert_eq!(parse_with_offset("2026-13-40T99:00:00Z"), None);
        assert_eq!(parse_utc_field(""), None);
    }
}
