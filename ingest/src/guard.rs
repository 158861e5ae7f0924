//! Structural limits on the JSON inside a push ("JSON bombs").
//!
//! The byte limit alone does not bound the work a push causes: 1 MiB of `[[[[…`
//! nests half a million levels, and 1 MiB of `{},{},…` is a third of a million
//! scans, each of which normalize would turn into an event and the detector into
//! a Redis write. Every real provider format is a few levels deep and carries
//! tens to hundreds of entries per list, so ingest refuses, before anything is
//! written:
//!
//! - nesting deeper than `http.json_max_depth` → 400 (no provider sends it: the
//!   body is malformed for every route);
//! - an array or object with more than `http.json_max_elements` entries → 413
//!   (a legitimate but oversized batch, e.g. a Kdniao push of thousands of
//!   waybills, should be split by the sender).
//!
//! The check is provider-agnostic and linear: a JSON body is scanned as is; a
//! form body (Kdniao, Kuaidi100) has each field value that looks like JSON
//! scanned after percent-decoding. It does not validate JSON — the adapters do
//! that — it only counts brackets and commas outside strings, with no recursion,
//! so a hostile body cannot make the check itself expensive.

use trackstream_runtime::ApiError;

/// The limits, from `[http]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest allowed nesting of arrays and objects.
    pub max_depth: usize,
    /// Most entries allowed in one array or object.
    pub max_elements: usize,
}

/// Why a JSON text exceeds the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Nested deeper than the limit.
    TooDeep(usize),
    /// A container with more entries than the limit.
    TooManyElements(usize),
}

impl From<Violation> for ApiError {
    fn from(violation: Violation) -> Self {
        match violation {
            Violation::TooDeep(limit) => {
                ApiError::BadRequest(format!("JSON nested deeper than {limit} levels"))
            }
            Violation::TooManyElements(limit) => ApiError::PayloadTooLarge(format!(
                "a JSON array or object has more than {limit} entries; split the push"
            )),
        }
    }
}

/// Checks every JSON text in `body`: the body itself when it is JSON, else each
/// form field value that is.
pub fn check_body(body: &[u8], limits: JsonLimits) -> Result<(), Violation> {
    if looks_like_json(body) {
        return check_json(body, limits);
    }
    for pair in body.split(|b| *b == b'&') {
        let value = pair
            .iter()
            .position(|b| *b == b'=')
            .and_then(|at| pair.get(at + 1..))
            .unwrap_or_default();
        let value = trackstream_carriers::form::percent_decode(value, true);
        if looks_like_json(&value) {
            check_json(&value, limits)?;
        }
    }
    Ok(())
}

fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Scans one JSON text: depth of open containers and entries per container,
/// counted by commas outside strings.
pub fn check_json(text: &[u8], limits: JsonLimits) -> Result<(), Violation> {
    // Commas seen so far in each open container, innermost last.
    let mut commas: Vec<usize> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                if commas.len() >= limits.max_depth {
                    return Err(Violation::TooDeep(limits.max_depth));
                }
                commas.push(0);
            }
            b'}' | b']' => {
                commas.pop();
            }
            b',' => {
                if let Some(count) = commas.last_mut() {
                    *count += 1;
                    // n commas separate n + 1 entries.
                    if *count >= limits.max_elements {
                        return Err(Violation::TooManyElements(limits.max_elements));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits {
        max_depth: 4,
        max_elements: 3,
    };

    #[test]
    fn depth_counts_containers_not_brackets_inside_strings() {
        assert_eq!(check_json(br#"{"a":[{"b":[1]}]}"#, LIMITS), Ok(()));
        assert_eq!(
            check_json(br#"{"a":[{"b":[[1]]}]}"#, LIMITS),
            Err(Violation::TooDeep(4))
        );
        assert_eq!(check_json(br#"{"a":"[[[[[[[[{{{{"}"#, LIMITS), Ok(()));
        // An escaped quote does not end the string.
        assert_eq!(check_json(br#"{"a":"\"[[[[[[["}"#, LIMITS), Ok(()));
    }

    #[test]
    fn entries_are_limited_per_container_not_in_total() {
        assert_eq!(check_json(b"[[1,2,3],[4,5,6],[7,8,9]]", LIMITS), Ok(()));
        assert_eq!(
            check_json(b"[1,2,3,4]", LIMITS),
            Err(Violation::TooManyElements(3))
        );
        assert_eq!(
            check_json(br#"{"a":1,"b":2,"c":3,"d":4}"#, LIMITS),
            Err(Violation::TooManyElements(3))
        );
        assert_eq!(check_json(br#"["a,b,c,d,e"]"#, LIMITS), Ok(()));
    }

    #[test]
    fn form_fields_are_decoded_and_checked() {
        let deep = trackstream_carriers::form::encode(&[
            ("RequestData", b"{\"a\":[[[[[1]]]]]}"),
            ("DataSign", b"abc"),
        ]);
        assert_eq!(check_body(&deep, LIMITS), Err(Violation::TooDeep(4)));
        let wide = b"param=%5B1%2C2%2C3%2C4%5D&sign=X";
        assert_eq!(check_body(wide, LIMITS), Err(Violation::TooManyElements(3)));
        assert_eq!(check_body(b"param=plain%20text&sign=ABC", LIMITS), Ok(()));
    }

    #[test]
    fn violations_map_to_400_and_413() {
        assert_eq!(
            ApiError::from(Violation::TooDeep(4)).http_status().as_u16(),
            400
        );
        assert_eq!(
            ApiError::from(Violation::TooManyElements(3))
                .http_status()
                .as_u16(),
            413
        );
    }
}
