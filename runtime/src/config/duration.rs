//! The serde adapter for every duration in config:
//! `#[serde(with = "trackstream_runtime::config::duration")]` on a
//! [`Duration`], [`option`] on an `Option<Duration>`,
//! [`list`] on a `Vec<Duration>`. The grammar is `humantime`'s; the
//! adapter is ours so a bad value reports humantime's reason (`unknown time
//! unit "x"`) and the services need no dependency of their own.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// What a duration value must look like, for error messages.
const EXPECTED: &str = r#"a duration with a unit, like "250ms", "10s", "15m", "30d""#;

/// Reads `"250ms"`, `"90s"`, `"1h 30m"`, `"30d"`. A bare number is refused:
/// its unit would be a guess.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    Human::deserialize(deserializer).map(|h| h.0)
}

/// Parses one duration string outside serde (command-line flags).
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("duration {text:?}: {e}"))
}

/// Writes `d` in the config grammar with the largest unit that keeps it
/// exact (`"120d"`, `"10m"`, `"1500ms"`). Not `humantime::format_duration`,
/// which writes 120 days as `3months 28days 16h 19m 12s`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    let unit = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ]
    .into_iter()
    .find(|(size, _)| ms > 0 && ms.is_multiple_of(*size));
    match unit {
        Some((size, name)) => format!("{}{name}", ms / size),
        None if ms == 0 => "0s".to_owned(),
        None => format!("{ms}ms"),
    }
}

/// `d` in whole milliseconds, saturating: the unit of the Redis scripts
/// and timestamps the services compute with.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One duration value; the element type of [`option`] and [`list`].
struct Human(Duration);

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Human;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Human, E> {
                parse(text).map(Human).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The adapter for an optional duration.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Reads an optional [`super::deserialize`] duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<super::Human>::deserialize(deserializer).map(|h| h.map(|h| h.0))
    }
}

/// The adapter for a list of durations (`tiers = ["24h", "48h"]`).
pub mod list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Reads an array of [`super::deserialize`] durations.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        let items = Vec::<super::Human>::deserialize(deserializer)?;
        Ok(items.into_iter().map(|h| h.0).collect())
    }
}
