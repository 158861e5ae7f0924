//! `application/x-www-form-urlencoded` bodies, decoded to exact bytes.
//!
//! Kdniao and Kuaidi100 post forms and sign one *field* (the decoded `RequestData`
//! or `param` text), so the signature has to be checked over exactly the bytes the
//! sender encoded — a lossy UTF-8 conversion would turn a forged body and a
//! garbled one into the same string. This parser therefore keeps bytes and lets
//! the caller decide when a field must be UTF-8, with a precise reason when not.
//! It never fails: a malformed escape is kept literally, as browsers do.

/// A decoded form: fields in body order, names and values as bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Form {
    /// Splits and percent-decodes `body` (`+` is a space, as the encoding says).
    pub fn parse(body: &[u8]) -> Form {
        let fields = body
            .split(|b| *b == b'&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let mut parts = pair.splitn(2, |b| *b == b'=');
                let name = parts.next().unwrap_or_default();
                let value = parts.next().unwrap_or_default();
                (percent_decode(name, true), percent_decode(value, true))
            })
            .collect();
        Form { fields }
    }

    /// The first value of field `name`. The first wins so that a field appended
    /// after the signed one cannot replace it.
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_slice() == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of field `name` as text; `Err` names the field when its
    /// bytes are not UTF-8, so the sender learns exactly what was wrong.
    pub fn text(&self, name: &str) -> Result<Option<&str>, String> {
        self.bytes(name)
            .map(|bytes| {
                std::str::from_utf8(bytes)
                    .map_err(|e| format!("form field {name} is not UTF-8: {e}"))
            })
            .transpose()
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`). The second
/// mode exists for values that were percent-encoded twice by a sender, where a
/// literal `+` can only be a `+`.
pub fn percent_decode(input: &[u8], plus_as_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).and_then(|c| hex_value(*c)),
                input.get(i + 2).and_then(|c| hex_value(*c)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(if b == b'+' && plus_as_space { b' ' } else { b });
        i += 1;
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Encodes fields the way the providers' own clients do (every byte outside the
/// unreserved set escaped). Values are bytes so tests and the load generator can
/// send arbitrary, even non-UTF-8, field contents.
pub fn encode(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (name, value)) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b'&');
        }
        escape_into(name.as_bytes(), &mut out);
        out.push(b'=');
        escape_into(value, &mut out);
    }
    out
}

fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'*') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_arbitrary_bytes_and_keeps_bad_escapes() {
        let value = b"{\"a\": \"\xe4\xb8\xad+ &=%\"}\xff";
        let body = encode(&[("RequestData", value), ("DataSign", b"ab+c/=")]);
        let form = Form::parse(&body);
        assert_eq!(form.bytes("RequestData"), Some(&value[..]));
        assert_eq!(form.bytes("DataSign"), Some(&b"ab+c/="[..]));
        assert!(form.text("RequestData").is_err());
        assert_eq!(percent_decode(b"%zz%4", true), b"%zz%4");
        assert_eq!(percent_decode(b"a+b%2B", true), b"a b+");
        assert_eq!(percent_decode(b"a+b%2B", false), b"a+b+");
    }

    #[test]
    fn first_field_wins() {
        let form = Form::parse(b"a=1&a=2&&b");
        assert_eq!(form.bytes("a"), Some(&b"1"[..]));
        assert_eq!(form.bytes("b"), Some(&b""[..]));
        assert_eq!(form.bytes("c"), None);
    }
}
