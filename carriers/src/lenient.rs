//! Serde helpers for providers that are loose with JSON scalar types.
//!
//! Kdniao sends `"State": "3"` in one push and `"State": 3` in the next, 17TRACK
//! numbers its carriers (`"carrier": 100003`), and every provider sends `null` for
//! fields it has nothing for. Rejecting those would turn a provider's harmless
//! inconsistency into a dead-lettered scan, so fields that are only ever read as
//! text go through [`string`], and lists that may be `null` through [`seq`].

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A string, number, boolean or `null` (empty) read as text. Objects and arrays
/// are still an error: a structure where a scalar belongs is not the format.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(ScalarText)
}

/// A list that may be `null` or absent; both read as empty.
pub fn seq<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Parses `bytes` as a JSON *object* into `T`. Serde's derived structs also
/// accept an array (fields by position), which no provider sends; requiring `{`
/// keeps a stray `[]` from passing as an empty record.
pub fn from_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => serde_json::from_slice(bytes),
        _ => Err(de::Error::custom("expected a JSON object")),
    }
}

struct ScalarText;

impl<'de> Visitor<'de> for ScalarText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        string(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "string")]
        s: String,
        #[serde(default, deserialize_with = "seq")]
        v: Vec<u8>,
    }

    #[test]
    fn scalars_become_text_and_null_lists_empty() {
        for (json, want) in [
            (r#"{"s":"3"}"#, "3"),
            (r#"{"s":3}"#, "3"),
            (r#"{"s":true}"#, "true"),
            (r#"{"s":null,"v":null}"#, ""),
            (r#"{}"#, ""),
        ] {
            let probe: Probe = serde_json::from_str(json).expect(json);
            assert_eq!(probe.s, want);
            assert!(probe.v.is_empty());
        }
        assert!(serde_json::from_str::<Probe>(r#"{"s":{}}"#).is_err());
        assert!(from_object::<Probe>(b" []").is_err());
        assert!(from_object::<Probe>(b" {}").is_ok());
    }
}
