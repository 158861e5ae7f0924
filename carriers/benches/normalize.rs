//! Normalize throughput per provider, in scans (events) per second on one core.
//!
//! Normalize is the per-record hot path of the normalize service: every stored
//! push item is parsed and mapped again on every (re)play, so its cost bounds
//! how fast a backlog drains. The payloads are the realistic fixtures the
//! integration tests use, accepted through the adapter first so each benchmark
//! normalizes exactly what ingest would have stored. AfterShip and Kdniao pushes
//! carry a signed send time, so they are accepted with the clock at that time,
//! as when the fixture was pushed (acceptance is setup, not measured).
//!
//! Run: `cargo bench -p trackstream-carriers --bench normalize`
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::DateTime;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use trackstream_carriers::signature::replay::{DEFAULT_TOLERANCE, ReplayWindow};
use trackstream_carriers::{
    AccountSecret, ProviderAdapter, ProviderSettings, PushError, PushRequest, Registry,
    VerifiedPush, aftership, easypost, generic, kdniao, kuaidi100, seventeen_track,
};
use trackstream_proto::v1::{Provider, RawScan};

const SECRET: &str = "bench-secret";

/// The fixtures' signed send times, in unix seconds: AfterShip's `ts`, and
/// Kdniao's `PushTime` (2026-11-20 14:05:12 China time).
const AFTERSHIP_SENT_AT: i64 = 1_795_705_200;
const KDNIAO_PUSHED_AT: i64 = 1_795_154_712;

/// `adapter.accept`, with the replay window's clock at the fixture's signed
/// send time for the providers that sign one.
fn accept(
    adapter: &dyn ProviderAdapter,
    request: &PushRequest<'_>,
    settings: &ProviderSettings,
) -> Result<VerifiedPush, PushError> {
    let at = |seconds| {
        ReplayWindow::new(
            DateTime::from_timestamp(seconds, 0).unwrap(),
            DEFAULT_TOLERANCE,
        )
    };
    match adapter.provider() {
        Provider::Aftership => {
            aftership::Aftership.accept_within(request, settings, at(AFTERSHIP_SENT_AT))
        }
        Provider::Kdniao => kdniao::Kdniao.accept_within(request, settings, at(KDNIAO_PUSHED_AT)),
        _ => adapter.accept(request, settings),
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap().trim_ascii_end().to_vec()
}

const GENERIC_BODY: &str = r#"{"scans":[
 {"carrier":"sf","waybill":"SF100","status":"picked_up","occurred_at":"2026-11-18T16:20:11+08:00","description":"Picked up","code":"PU","location":{"text":"Guangzhou","city":"Guangzhou","country":"CN"},"sequence":1},
 {"carrier":"sf","waybill":"SF100","status":"in_transit","occurred_at":"2026-11-19T06:02:37+08:00","description":"Arrived at hub","code":"HUB_IN","location":{"text":"Shenzhen hub","city":"Shenzhen","country":"CN"},"sequence":2},
 {"carrier":"sf","waybill":"SF100","status":"out_for_delivery","occurred_at_local":"2026-11-20 08:15:00","time_zone":"Asia/Shanghai","description":"Out for delivery","code":"OFD","sequence":3},
 {"carrier":"sf","waybill":"SF100","status":"delivered","occurred_at":"2026-11-20T11:02:45+08:00","description":"Delivered","code":"DLV","signer":"front desk","sequence":4}]}"#;

/// (route, headers, body) of one realistic, correctly signed push per provider.
fn pushes() -> Vec<(&'static str, BTreeMap<String, String>, Vec<u8>)> {
    let header = |name: &str, value: String| BTreeMap::from([(name.to_owned(), value)]);
    let generic_body = GENERIC_BODY.as_bytes().to_vec();
    let seventeen = fixture("seventeen_track.json");
    let after = fixture("aftership.json");
    let easy = fixture("easypost.json");
    vec![
        (
            "generic",
            header(
                "x-trackstream-signature",
                generic::sign(&generic_body, SECRET),
            ),
            generic_body,
        ),
        (
            "kdniao",
            BTreeMap::new(),
            kdniao::form_body(&fixture("kdniao_request_data.json"), SECRET),
        ),
        (
            "kuaidi100",
            BTreeMap::new(),
            kuaidi100::form_body(&fixture("kuaidi100_param.json"), Some(SECRET)),
        ),
        (
            "17track",
            header("sign", seventeen_track::sign(&seventeen, SECRET)),
            seventeen,
        ),
        (
            "aftership",
            header("aftership-hmac-sha256", aftership::sign(&after, SECRET)),
            after,
        ),
        (
            "easypost",
            header("x-hmac-signature", easypost::sign(&easy, SECRET)),
            easy,
        ),
    ]
}

fn normalize(c: &mut Criterion) {
    let registry = Registry::builtin();
    let settings = ProviderSettings {
        secrets: vec![AccountSecret {
            account: "1237100".into(),
            secret: SECRET.into(),
        }],
        ..Default::default()
    };
    let query = BTreeMap::new();
    for (route, headers, body) in pushes() {
        let adapter = registry.by_route(route).unwrap();
        let request = PushRequest {
            headers: &headers,
            query: &query,
            body: &body,
        };
        let push = accept(adapter, &request, &settings).unwrap();
        let raws: Vec<RawScan> = push
            .items
            .iter()
            .map(|item| RawScan {
                ingest_id: "bench".into(),
                provider: adapter.provider() as i32,
                carrier: item.carrier.clone(),
                waybill: item.waybill.clone(),
                received_at: Some(trackstream_proto::time::from_millis(1_795_705_200_000)),
                payload: item.payload.clone(),
                envelope: item.envelope.clone().into_iter().collect(),
                account: push.account.clone(),
                source: 0,
            })
            .collect();
        let scans: usize = raws
            .iter()
            .map(|raw| adapter.normalize(raw, &settings).unwrap().len())
            .sum();
        let mut group = c.benchmark_group(format!("normalize/{route}"));
        group.throughput(Throughput::Elements(scans as u64));
        group.bench_function(format!("{} items, {scans} scans", raws.len()), |b| {
            b.iter(|| {
                for raw in &raws {
                    black_box(adapter.normalize(black_box(raw), &settings).unwrap());
                }
            });
        });
        group.finish();
    }
}

criterion_group!(benches, normalize);
criterion_main!(benches);
