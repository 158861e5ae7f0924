//! The other side of the wire: building a push exactly as a provider sends it
//! (path, headers, body, signature), for `trackstream push`, the fuzz targets and
//! tests. One place, so the signing conventions of every provider are written
//! down once next to the adapters that verify them; each provider module keeps
//! its own `sign` function and this module only decides where the signature goes.
//!
//! | route | signed content | where the signature goes |
//! |---|---|---|
//! | `generic` | the body | `X-Trackstream-Signature` (+ `X-Trackstream-Account`) |
//! | `kdniao` | the `RequestData` form field | the `DataSign` form field |
//! | `kuaidi100` | the `param` form field | the `sign` form field |
//! | `17track` | the body | `sign` header |
//! | `aftership` | the body | `aftership-hmac-sha256` header |
//! | `easypost` | the body | `X-Hmac-Signature` header |

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Offset, Utc};

use crate::{aftership, easypost, generic, kdniao, kuaidi100, seventeen_track};

/// `Content-Type` of the form-encoded pushes (Kdniao, Kuaidi100).
pub const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// `Content-Type` of the JSON pushes.
pub const JSON: &str = "application/json";

/// Every route [`signed_push`] knows, in the order the docs list them.
pub const ROUTES: [&str; 6] = [
    "generic",
    "kdniao",
    "kuaidi100",
    "17track",
    "aftership",
    "easypost",
];

/// A push ready to send to ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPush {
    /// Request path, `/v1/webhooks/{route}`.
    pub path: String,
    /// Request headers (lowercase names), `content-type` first.
    pub headers: Vec<(&'static str, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl SignedPush {
    /// The headers as adapters see them ([`crate::PushRequest::headers`]).
    pub fn header_map(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }
}

/// The push `route`'s provider would send for `content` signed with `secret`
/// (see the module table for what `content` is per route). `account` names the
/// account for the generic route (others identify it by the secret that
/// verifies). `None` for an unknown route.
pub fn signed_push(
    route: &str,
    content: &[u8],
    secret: &str,
    account: Option<&str>,
) -> Option<SignedPush> {
    let json = |header: &'static str, signature: String| {
        (
            vec![("content-type", JSON.to_owned()), (header, signature)],
            content.to_vec(),
        )
    };
    let (headers, body) = match route {
        "generic" => {
            let (mut headers, body) =
                json("x-trackstream-signature", generic::sign(content, secret));
            if let Some(account) = account {
                headers.push(("x-trackstream-account", account.to_owned()));
            }
            (headers, body)
        }
        "kdniao" => (
            vec![("content-type", FORM.to_owned())],
            kdniao::form_body(content, secret),
        ),
        "kuaidi100" => (
            vec![("content-type", FORM.to_owned())],
            kuaidi100::form_body(content, Some(secret)),
        ),
        "17track" => json("sign", seventeen_track::sign(content, secret)),
        "aftership" => json("aftership-hmac-sha256", aftership::sign(content, secret)),
        "easypost" => json("x-hmac-signature", easypost::sign(content, secret)),
        _ => return None,
    };
    Some(SignedPush {
        path: format!("/v1/webhooks/{route}"),
        headers,
        body,
    })
}

/// `content` with its signed send time set to `now`, as a provider stamps a push
/// it sends (ingest refuses pushes signed too long ago as replays): AfterShip's
/// `ts` (unix seconds), else Kdniao's `PushTime` (zone-less China time, UTC+8).
/// Only that value's bytes change, so formatting and scans are kept. Content
/// without either field is returned unchanged.
pub fn stamped_now(content: &[u8], now: DateTime<Utc>) -> Vec<u8> {
    let china = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix());
    let stamps = [
        ("\"ts\"", now.timestamp().to_string()),
        (
            "\"PushTime\"",
            format!(
                "\"{}\"",
                now.with_timezone(&china).format("%Y-%m-%d %H:%M:%S")
            ),
        ),
    ];
    for (key, value) in stamps {
        let Some(at) = content.windows(key.len()).position(|w| w == key.as_bytes()) else {
            continue;
        };
        // The old value runs from after the key's ':' to the next ',' or '}'.
        let after_key = at + key.len();
        let start = content[after_key..]
            .iter()
            .position(|b| *b == b':')
            .map(|colon| after_key + colon + 1);
        let end = start.and_then(|start| {
            content[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}'))
                .map(|len| start + len)
        });
        if let (Some(start), Some(end)) = (start, end) {
            let mut stamped = content[..start].to_vec();
            stamped.extend_from_slice(value.as_bytes());
            stamped.extend_from_slice(&content[end..]);
            return stamped;
        }
    }
    content.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountSecret, ProviderSettings, PushRequest, Registry};

    fn settings(secret: &str) -> ProviderSettings {
        ProviderSettings {
            secrets: vec![AccountSecret {
                // Kdniao checks the account against the signed EBusinessID.
                account: "1237100".into(),
                secret: secret.into(),
            }],
            ..Default::default()
        }
    }

    /// Each route's own adapter accepts what this module built: the signature
    /// sits where the adapter looks for it.
    #[test]
    fn every_route_signs_where_its_adapter_verifies() {
        let registry = Registry::builtin();
        let now = Utc::now();
        let contents: [(&str, &[u8]); 6] = [
            (
                "generic",
                br#"[{"carrier":"sf","waybill":"SF1","status":"in_transit","occurred_at":"2026-11-20T10:00:00Z"}]"#,
            ),
            ("kdniao", include_bytes!("../tests/fixtures/kdniao_request_data.json")),
            ("kuaidi100", include_bytes!("../tests/fixtures/kuaidi100_param.json")),
            ("17track", include_bytes!("../tests/fixtures/seventeen_track.json")),
            ("aftership", include_bytes!("../tests/fixtures/aftership.json")),
            ("easypost", include_bytes!("../tests/fixtures/easypost.json")),
        ];
        assert_eq!(contents.map(|(route, _)| route), ROUTES);
        for (route, content) in contents {
            let content = stamped_now(content.trim_ascii_end(), now);
            let push = signed_push(route, &content, "s3cret", Some("1237100"))
                .unwrap_or_else(|| panic!("{route} unknown"));
            assert_eq!(push.path, format!("/v1/webhooks/{route}"));
            let headers = push.header_map();
            let query = BTreeMap::new();
            let request = PushRequest {
                headers: &headers,
                query: &query,
                body: &push.body,
            };
            let adapter = registry
                .by_route(route)
                .unwrap_or_else(|| panic!("no adapter {route}"));
            let accepted = adapter.accept(&request, &settings("s3cret"));
            assert!(accepted.is_ok(), "{route}: {accepted:?}");
            let forged = adapter.accept(&request, &settings("other"));
            assert!(forged.is_err(), "{route} accepted a wrong secret");
        }
        assert!(signed_push("nope", b"{}", "s", None).is_none());
    }

    #[test]
    fn stamping_replaces_only_the_send_time() {
        let now = DateTime::parse_from_rfc3339("2026-11-20T06:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(
            stamped_now(br#"{"ts":1,"x":2}"#, now),
            format!(r#"{{"ts":{},"x":2}}"#, now.timestamp()).into_bytes()
        );
        assert_eq!(
            stamped_now(br#"{"PushTime":"old"}"#, now),
            br#"{"PushTime":"2026-11-20 14:00:00"}"#.to_vec()
        );
        assert_eq!(stamped_now(b"{\"a\":1}", now), b"{\"a\":1}".to_vec());
    }
}
