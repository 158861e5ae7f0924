//! What every fuzz target does with its input, for one provider route.
//!
//! The input is used three ways, so that every parser layer is reached:
//! 1. as the signed content of a push, signed the way the provider signs (over
//!    the body, or over the form field Kdniao/Kuaidi100 sign), so parsing runs
//!    behind a valid signature;
//! 2. as a raw request body with unsigned pushes allowed, which reaches the form
//!    parsers of Kdniao and Kuaidi100 with arbitrary bytes;
//! 3. as a stored `RawScan` payload for `normalize`.
//!
//! Every accepted item is normalized as well. Only panics are findings; errors
//! are the expected answer to garbage.

use std::collections::BTreeMap;

use trackstream_carriers::{AccountSecret, ProviderSettings, PushRequest, Registry, outbound};
use trackstream_proto::v1::RawScan;

const SECRET: &str = "fuzz-secret";

fn settings(allow_unsigned: bool) -> ProviderSettings {
    ProviderSettings {
        secrets: vec![AccountSecret {
            account: String::new(),
            secret: SECRET.to_owned(),
        }],
        allow_unsigned,
        time_zone: None,
        bindings: Vec::new(),
        replay_tolerance: None,
    }
}

/// The push as the provider would sign it ([`outbound::signed_push`]); an
/// unknown route gets the bytes unsigned.
fn signed(route: &str, content: &[u8]) -> (BTreeMap<String, String>, Vec<u8>) {
    match outbound::signed_push(route, content, SECRET, None) {
        Some(push) => (push.header_map(), push.body),
        None => (BTreeMap::new(), content.to_vec()),
    }
}

/// Feeds `data` to the adapter serving `route` (see the module doc).
pub fn exercise(route: &str, data: &[u8]) {
    let registry = Registry::builtin();
    let Some(adapter) = registry.by_route(route) else {
        return;
    };
    let query = BTreeMap::from([("order_id".to_owned(), "o-1".to_owned())]);
    let (headers, body) = signed(route, data);
    let no_headers = BTreeMap::new();
    let attempts = [
        (&headers, body.as_slice(), settings(false)),
        (&no_headers, data, settings(true)),
    ];
    for (headers, body, settings) in &attempts {
        let request = PushRequest {
            headers,
            query: &query,
            body,
        };
        if let Ok(push) = adapter.accept(&request, settings) {
            for item in &push.items {
                let raw = RawScan {
                    carrier: item.carrier.clone(),
                    waybill: item.waybill.clone(),
                    payload: item.payload.clone(),
                    envelope: item.envelope.clone().into_iter().collect(),
                    ..RawScan::default()
                };
                let _ = adapter.normalize(&raw, settings);
            }
        }
    }
    let raw = RawScan {
        carrier: "c".to_owned(),
        waybill: "w".to_owned(),
        payload: data.to_vec(),
        ..RawScan::default()
    };
    let _ = adapter.normalize(&raw, &settings(false));
}
