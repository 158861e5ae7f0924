//! Generated bodies on every route of the public API, against the real stack
//! (redis-server, the broker, all services in-process): no panic, no 5xx except
//! 503 while the broker is cut off, and every error answer is a JSON object
//! with `error` and `reason`.
//!
//! Signed pushes carry a valid signature over the generated body, so they reach
//! the adapters, the identifier checks, the ownership lookups and the producer;
//! unsigned ones stop at the signature check.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};
use trackstream_carriers::{
    AccountSecret, ProviderSettings, aftership, easypost, generic, kdniao, kuaidi100,
    seventeen_track,
};
use trackstream_sandbox::{ACME_TOKEN, Configs, GENERIC_SECRET, OTHER_TOKEN, Sandbox};

const SECRET: &str = "property-secret";
/// Every provider route, and one that does not exist.
fn routes() -> Vec<&'static str> {
    let mut routes = trackstream_carriers::outbound::ROUTES.to_vec();
    routes.push("no-such-provider");
    routes
}

type Headers = Vec<(&'static str, String)>;

/// Strings that probe the grammar: key separators, unicode, control
/// characters, and lengths around and far over the limits.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9]{1,12}",
        "[A-Za-z0-9:/{}\\\\\" .#-]{0,80}",
        ".{0,60}",
        (0usize..3000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn shipment() -> impl Strategy<Value = Value> {
    (
        text(),
        prop_oneof![Just("sf".to_owned()), text()],
        text(),
        proptest::option::of((text(), text(), text(), text(), text())),
        proptest::option::of(text()),
        proptest::option::of(text()),
    )
        .prop_map(|(order_id, carrier, waybill, buyer, service_level, at)| {
            let mut value = json!({"order_id": order_id, "carrier": carrier, "waybill": waybill});
            if let Some((name, phone, email, locale, zone)) = buyer {
                value["buyer"] = json!({"name": name, "phone": phone, "email": email,
                                        "locale": locale, "time_zone": zone});
            }
            if let Some(level) = service_level {
                value["service_level"] = Value::from(level);
            }
            if let Some(at) = at {
                value["promised_delivery_at"] = Value::from(at);
            }
            value
        })
}

fn generic_scan() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("sf".to_owned()), text()],
        text(),
        prop_oneof![
            Just("in_transit".to_owned()),
            Just("delivered".to_owned()),
            text()
        ],
        prop_oneof![Just("2026-11-20T14:03:00+08:00".to_owned()), text()],
        text(),
    )
        .prop_map(|(carrier, waybill, status, at, description)| {
            json!({"carrier": carrier, "waybill": waybill, "status": status,
                   "occurred_at": at, "description": description})
        })
}

fn structured_or_any() -> BoxedStrategy<Value> {
    prop_oneof![generic_scan(), shipment(), json_value()].boxed()
}

/// A request body: structured, a batch, arbitrary JSON, or arbitrary bytes.
fn body(structured: BoxedStrategy<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => structured.prop_map(|v| v.to_string().into_bytes()),
        3 => prop::collection::vec(structured_or_any(), 1..5)
            .prop_map(|v| Value::Array(v).to_string().into_bytes()),
        2 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Percent-encodes one form field, for an unsigned Kdniao push.
fn form_field(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = format!("{name}=").into_bytes();
    for byte in value {
        if byte.is_ascii_alphanumeric() {
            out.push(*byte);
        } else {
            out.extend_from_slice(format!("%{byte:02X}").as_bytes());
        }
    }
    out
}

/// Path, headers and body of a push to `route`, signed (over exactly these
/// bytes) or not.
fn push(route: &str, content: Vec<u8>, signed: bool) -> (String, Headers, Vec<u8>) {
    let path = format!("/v1/webhooks/{route}");
    let form = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    let json_type = ("content-type", "application/json".to_owned());
    let with = |name: &'static str, value: String| {
        if signed {
            vec![json_type.clone(), (name, value)]
        } else {
            vec![json_type.clone()]
        }
    };
    match route {
        "generic" => {
            let signature = generic::sign(&content, GENERIC_SECRET);
            (path, with("x-trackstream-signature", signature), content)
        }
        "kdniao" => {
            let body = if signed {
                kdniao::form_body(&content, SECRET)
            } else {
                form_field("RequestData", &content)
            };
            (path, vec![form], body)
        }
        "kuaidi100" => {
            let body = kuaidi100::form_body(&content, signed.then_some(SECRET));
            (path, vec![form], body)
        }
        "17track" => {
            let signature = seventeen_track::sign(&content, SECRET);
            (path, with("sign", signature), content)
        }
        "aftership" => {
            let signature = aftership::sign(&content, SECRET);
            (path, with("aftership-hmac-sha256", signature), content)
        }
        "easypost" => {
            let signature = easypost::sign(&content, SECRET);
            (path, with("x-hmac-signature", signature), content)
        }
        _ => (path, vec![json_type], content),
    }
}

/// The answer's contract: no 5xx but 503 (and 503 only when `down_allowed`),
/// and a JSON object with `error` and `reason` on every error.
fn check(status: u16, body: &Value, down_allowed: bool, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        status < 500 || (status == 503 && down_allowed),
        "{what}: status {status}, body {body}"
    );
    if status >= 400 {
        prop_assert!(
            body["error"].is_string() && body["reason"].is_string(),
            "{what}: error answer without the JSON error shape: {status} {body}"
        );
    }
    Ok(())
}

fn configure(c: &mut Configs) {
    for route in ["kdniao", "kuaidi100", "17track", "aftership", "easypost"] {
        c.ingest.providers.insert(
            route.into(),
            ProviderSettings {
                secrets: vec![AccountSecret {
                    account: String::new(),
                    secret: SECRET.into(),
                }],
                ..ProviderSettings::default()
            },
        );
    }
    // A broker that is cut off answers 503 after this long, not after 5 s.
    c.ingest.kafka.produce_timeout = std::time::Duration::from_millis(1_500);
}

fn run_all<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    if let Err(err) = runner.run(&strategy, test) {
        panic!("{err}");
    }
}

#[test]
fn generated_bodies_on_every_route_never_get_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let sandbox = runtime.block_on(Sandbox::start_with(configure));

    // Registrations, any token.
    let tokens = prop_oneof![
        Just(Some(ACME_TOKEN)),
        Just(Some(OTHER_TOKEN)),
        Just(Some("not-a-token")),
        Just(None)
    ];
    run_all(
        160,
        (tokens, body(shipment().boxed())),
        |(token, content)| {
            let mut headers = vec![("content-type", "application/json".to_owned())];
            if let Some(token) = token {
                headers.push(("authorization", format!("Bearer {token}")));
            }
            let (status, answer) =
                runtime.block_on(sandbox.post("/v1/shipments", &headers, content));
            check(status, &answer, false, "POST /v1/shipments")
        },
    );

    // Pushes, signed and unsigned, on every provider route (and an unknown one).
    let pushes = (
        prop::sample::select(routes()),
        body(generic_scan().boxed()),
        any::<bool>(),
    );
    run_all(240, pushes, |(route, content, signed)| {
        let (path, headers, content) = push(route, content, signed);
        let (status, answer) = runtime.block_on(sandbox.post(&path, &headers, content));
        check(status, &answer, false, &path)
    });

    // With the broker cut off, 503 is the one 5xx allowed.
    sandbox.broker.cut();
    run_all(
        12,
        (body(generic_scan().boxed()), any::<bool>()),
        |(content, register)| {
            let (status, answer) = if register {
                let headers = [
                    ("content-type", "application/json".to_owned()),
                    ("authorization", format!("Bearer {ACME_TOKEN}")),
                ];
                runtime.block_on(sandbox.post("/v1/shipments", &headers, content))
            } else {
                let (path, headers, content) = push("generic", content, true);
                runtime.block_on(sandbox.post(&path, &headers, content))
            };
            check(status, &answer, true, "during the outage")
        },
    );
    // A valid push during the outage is a 503 (retry), nothing else.
    let valid = json!({"carrier": "sf", "waybill": "PROP-OUT", "status": "in_transit",
                       "occurred_at": "2026-11-20T14:03:00+08:00"});
    let (status, answer) = runtime.block_on(sandbox.post_generic(&valid));
    assert_eq!(status, 503, "{answer}");
    runtime
        .block_on(sandbox.broker.restore())
        .unwrap_or_else(|e| panic!("restore: {e}"));
    runtime.block_on(sandbox.shutdown());
}
