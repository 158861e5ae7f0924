//! The five real provider formats through the running pipeline: realistic pushes
//! (the carriers' fixtures, signed with the carriers' own `sign` helpers) posted
//! to ingest over HTTP, and the canonical events, updates, alerts and dead
//! letters that come out on Kafka.
//!
//! "Writes nothing" is proven the way `pipeline.rs` does, with one partition per
//! topic (the default of `configure`): after the bad requests a good push is
//! posted, and once it shows up on `scans.raw` anything a bad request had written
//! would be there before it. "No new updates/alerts" likewise waits for a marker
//! scan that follows the resent or replayed records on the same partition (the
//! replay test, with three partitions, posts one marker per waybill key).
//!
//! AfterShip and Kdniao sign their send time, and ingest refuses a push whose
//! signed time is more than 5 minutes off its clock (a replay). Their bodies are
//! stamped with the current time before signing ([`sent_now`]), as the provider
//! would; the scans, and so the event times, stay the fixtures'.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use trackstream_carriers::outbound;
use trackstream_carriers::{AccountSecret, ProviderSettings};
use trackstream_proto::topics;
use trackstream_proto::v1::{
    Alert, AlertState, Provider, RawScan, Reason, ShipmentUpdate, Status, TrackingEvent, ZoneSource,
};
use trackstream_sandbox::{Configs, Sandbox};
use trackstream_testkit::kafka::{Record, TopicReader, all};

const WAIT: Duration = Duration::from_secs(60);

// Several accounts per provider, as in production (two Kdniao EBusinessIDs, a
// rotated AfterShip secret, ...). Pushes below are signed with either.
const KDNIAO: &[(&str, &str)] = &[
    ("1237100", "56da2cf8-c8a2-44b2-b6fa-476cd7d1ba17"),
    ("1999999", "other-app-key"),
];
const KUAIDI100: &[(&str, &str)] = &[("shop-a", "salt-a-5be2"), ("legacy", "salt-legacy-01")];
const SEVENTEEN_TRACK: &[(&str, &str)] = &[("main", "17t-key-main"), ("backup", "17t-key-2")];
const AFTERSHIP: &[(&str, &str)] = &[
    ("current", "whsec-new-93af"),
    ("previous", "whsec-old-7d1e"),
];
const EASYPOST: &[(&str, &str)] = &[("prod", "ep-prod-secret"), ("test", "ep-test-secret")];

/// The request data's `EBusinessID` is 1237100, so its AppKey must sign it.
const KDNIAO_KEY: &str = "56da2cf8-c8a2-44b2-b6fa-476cd7d1ba17";

fn settings(accounts: &[(&str, &str)]) -> ProviderSettings {
    ProviderSettings {
        secrets: accounts
            .iter()
            .map(|(account, secret)| AccountSecret {
                account: (*account).to_owned(),
                secret: (*secret).to_owned(),
            })
            .collect(),
        ..ProviderSettings::default()
    }
}

/// Configures the five providers' accounts in ingest (verification) and
/// normalize (their zone defaults), one partition per topic (see the module
/// doc), and switches the detector's clock-driven rules (and the carrier
/// exception's escalation) off so every alert here comes from a scan, never
/// from when the test happens to run.
fn configure(c: &mut Configs) {
    for (route, accounts) in [
        ("kdniao", KDNIAO),
        ("kuaidi100", KUAIDI100),
        ("17track", SEVENTEEN_TRACK),
        ("aftership", AFTERSHIP),
        ("easypost", EASYPOST),
    ] {
        c.ingest.providers.insert(route.into(), settings(accounts));
        c.normalize
            .providers
            .insert(route.into(), settings(accounts));
    }
    c.partitions = 1;
    let rules = &mut c.detector.rules;
    for rule in [
        &mut rules.no_pickup,
        &mut rules.stalled_in_transit,
        &mut rules.out_for_delivery_not_delivered,
        &mut rules.uncollected_at_pickup_point,
        &mut rules.promised_date_missed,
        &mut rules.return_not_picked_up,
    ] {
        rule.enabled = false;
    }
    // The fixtures' scans are days old: an open exception would escalate at once.
    rules.carrier_exception.escalate_after = Vec::new();
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../carriers/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes.trim_ascii_end().to_vec()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `body` (an AfterShip body or a Kdniao `RequestData`) with its signed send
/// time set to now, as the provider stamps a push it sends: AfterShip's `ts`
/// (unix seconds), else Kdniao's `PushTime` (zone-less China time, UTC+8). Only
/// that value's bytes change, so the fixture's formatting and scans are kept.
fn sent_now(body: impl AsRef<[u8]>) -> Vec<u8> {
    let body = body.as_ref();
    let stamped = outbound::stamped_now(body, Utc::now());
    assert_ne!(
        stamped,
        body,
        "neither ts nor PushTime in {}",
        String::from_utf8_lossy(body)
    );
    stamped
}

/// A signed push, as the provider would send it.
struct Push {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Push {
    /// `content` signed for `route` by the one signer the CLI and the load
    /// generator use (`trackstream_carriers::outbound`).
    fn signed(route: &str, content: &[u8], secret: &str) -> Push {
        let push = outbound::signed_push(route, content, secret, None)
            .unwrap_or_else(|| panic!("{route} is not a provider route"));
        Push {
            path: push.path,
            headers: push.headers,
            body: push.body,
        }
    }

    fn kdniao(request_data: &[u8], app_key: &str) -> Push {
        Push::signed("kdniao", request_data, app_key)
    }

    fn kuaidi100(param: &[u8], salt: &str) -> Push {
        let mut push = Push::signed("kuaidi100", param, salt);
        // Query parameters of the subscription's callback URL come back.
        push.path.push_str("?order_id=O-K100");
        push
    }

    fn seventeen_track(body: &[u8], key: &str) -> Push {
        Push::signed("17track", body, key)
    }

    fn aftership(body: &[u8], secret: &str) -> Push {
        Push::signed("aftership", body, secret)
    }

    fn easypost(body: &[u8], secret: &str) -> Push {
        Push::signed("easypost", body, secret)
    }

    /// The same push with its signature header removed (JSON routes).
    fn unsigned(mut self) -> Push {
        self.headers.retain(|(name, _)| *name == "content-type");
        self
    }

    async fn send(&self, sandbox: &Sandbox) -> (u16, Value) {
        sandbox
            .post(&self.path, &self.headers, self.body.clone())
            .await
    }
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn occurred(event: &TrackingEvent) -> Option<DateTime<Utc>> {
    event
        .occurred_at
        .as_ref()
        .and_then(trackstream_proto::time::from_proto)
}

fn location(event: &TrackingEvent) -> &str {
    event.location.as_ref().map_or("", |l| l.text.as_str())
}

/// Every decoded event of `waybill` read so far, in partition order.
fn events_of(reader: &TopicReader, waybill: &str) -> Vec<TrackingEvent> {
    reader
        .decoded::<TrackingEvent>()
        .into_iter()
        .filter(|e| e.waybill == waybill)
        .collect()
}

fn count<T: prost::Message + Default>(records: &[Record], keep: impl Fn(&T) -> bool) -> usize {
    records
        .iter()
        .filter_map(|r| T::decode(r.payload.as_slice()).ok())
        .filter(|t| keep(t))
        .count()
}

/// One expected canonical event: status, reason, raw code, instant (UTC), how
/// the zone was known, the source zone, and the location text.
type Want = (
    Status,
    Reason,
    &'static str,
    &'static str,
    ZoneSource,
    &'static str,
    &'static str,
);

#[track_caller]
fn assert_events(events: &[TrackingEvent], provider: Provider, carrier: &str, want: &[Want]) {
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.status,
                e.reason,
                e.raw_code.as_str(),
                occurred(e),
                e.zone_source,
                e.source_time_zone.as_str(),
                location(e),
            )
        })
        .collect();
    let want: Vec<_> = want
        .iter()
        .map(|(status, reason, code, at, zone_source, zone, place)| {
            (
                *status as i32,
                *reason as i32,
                *code,
                Some(utc(at)),
                *zone_source as i32,
                *zone,
                *place,
            )
        })
        .collect();
    assert_eq!(got, want);
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.provider, provider as i32, "{event:?}");
        assert_eq!(event.carrier, carrier, "{event:?}");
        assert!(event.received_at.is_some(), "{event:?}");
        // The id is the stable hash of what identifies the scan, nothing else.
        let at = occurred(event).unwrap_or_else(|| panic!("no time: {event:?}"));
        assert_eq!(
            event.event_id,
            trackstream_carriers::event::event_id(
                &event.carrier,
                &event.waybill,
                at,
                &event.raw_code,
                location(event)
            ),
            "event {index} of {}",
            event.waybill
        );
    }
}

fn ids(events: &[TrackingEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

async fn register(sandbox: &Sandbox, order_id: &str, carrier: &str, waybill: &str) {
    let (status, body) = sandbox
        .register(&json!({"order_id": order_id, "carrier": carrier, "waybill": waybill}))
        .await;
    assert_eq!((status, body), (200, json!({"accepted": 1})));
}

/// A scan in trackstream's generic format, used as a marker behind records
/// whose downstream effects (or their absence) a test checks.
async fn marker(
    sandbox: &Sandbox,
    carrier: &str,
    waybill: &str,
    status: &str,
    reason: Option<&str>,
) {
    let mut scan = json!({
        "carrier": carrier, "waybill": waybill, "status": status,
        "code": "MARKER", "occurred_at": Utc::now().to_rfc3339(),
        "description": "marker scan"
    });
    if let Some(reason) = reason {
        scan["reason"] = reason.into();
    }
    let (code, body) = sandbox.post_generic(&scan).await;
    assert_eq!(code, 200, "{body}");
}

/// The Kdniao fixture (SF delivered, YTO in transit) plus a third waybill that
/// reports a problem (StateEx 420, incomplete address), so the push opens an
/// alert. One push, three full snapshots.
fn kdniao_three_waybills() -> Vec<u8> {
    let mut request = fixture_json("kdniao_request_data.json");
    let zto = json!({"EBusinessID": "1237100", "OrderCode": "ORD-20261119-031",
        "ShipperCode": "ZTO", "LogisticCode": "ZT7310000000003", "Success": true, "Reason": "",
        "State": "4", "StateEx": "420", "Location": "上海市", "Traces": [
          {"AcceptTime": "2026-11-19 10:12:00", "AcceptStation": "【上海市浦东新区】中通快递 已揽收",
           "Location": "上海市", "Action": "1", "Remark": ""},
          {"AcceptTime": "2026-11-20 09:40:00", "AcceptStation": "派送不成功：收件地址不详，待联系收件人",
           "Location": "上海市", "Action": "420", "Remark": ""}]});
    if let Some(data) = request["Data"].as_array_mut() {
        data.push(zto);
    }
    request["Count"] = "3".into();
    request.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_push_becomes_canonical_events_on_tracking_events() {
    let sandbox = Sandbox::start_with(configure).await;
    let request_data = sent_now(fixture("kdniao_request_data.json"));
    let param = fixture("kuaidi100_param.json");
    let (st, af, ep) = (
        fixture("seventeen_track.json"),
        sent_now(fixture("aftership.json")),
        fixture("easypost.json"),
    );

    // Each provider gets the answer it reads; the second account of a provider
    // verifies as well as the first.
    let (status, body) = Push::kdniao(&request_data, KDNIAO_KEY).send(&sandbox).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["EBusinessID"], &body["Success"], &body["Reason"]),
        (&json!("1237100"), &json!(true), &json!(""))
    );
    let update_time = body["UpdateTime"].as_str().unwrap_or_default();
    assert!(
        chrono::NaiveDateTime::parse_from_str(update_time, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{body}"
    );
    let (status, body) = Push::kuaidi100(&param, "salt-legacy-01")
        .send(&sandbox)
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"result": true, "returnCode": "200", "message": "成功"})
        )
    );
    for push in [
        Push::seventeen_track(&st, "17t-key-2"),
        Push::aftership(&af, "whsec-old-7d1e"),
        Push::easypost(&ep, "ep-prod-secret"),
    ] {
        let (status, body) = push.send(&sandbox).await;
        assert_eq!(
            (status, body),
            (200, json!({"accepted": 1})),
            "{}",
            push.path
        );
    }

    // One scans.raw record per waybill (the Kdniao batch split in two), each
    // holding the provider's exact bytes for it and the verified account.
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "six raw records", |r| r.len() >= 6).await;
    let scans: Vec<RawScan> = raw.decoded();
    let keys: Vec<&str> = raw.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sf:SF1400000000001",
            "yto:YT7500000000002",
            "yto:YT6247854916511",
            "chinapost:RR123456785CN",
            "ups:1Z999AA10123456784",
            "usps:9400100000000000000001",
        ]
    );
    let accounts: Vec<&str> = scans.iter().map(|s| s.account.as_str()).collect();
    assert_eq!(
        accounts,
        ["1237100", "1237100", "legacy", "backup", "previous", "prod"]
    );
    let whole: Value = serde_json::from_slice(&request_data).unwrap_or_default();
    let push_time = whole["PushTime"]
        .as_str()
        .unwrap_or_else(|| panic!("no PushTime in {whole}"));
    for (index, scan) in scans.iter().take(2).enumerate() {
        let text = std::str::from_utf8(&scan.payload).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&request_data).contains(text),
            "Data[{index}] bytes are a slice of RequestData, not a re-encoding"
        );
        let item: Value = serde_json::from_slice(&scan.payload).unwrap_or_default();
        assert_eq!(item, whole["Data"][index]);
        assert_eq!(
            scan.envelope.get("PushTime").map(String::as_str),
            Some(push_time)
        );
    }
    assert_eq!(scans[2].payload, param);
    assert_eq!(
        scans[2].envelope.get("order_id").map(String::as_str),
        Some("O-K100")
    );
    assert_eq!(
        (&scans[3].payload, &scans[4].payload, &scans[5].payload),
        (&st, &af, &ep)
    );

    // The canonical events: 5 + 2 (Kdniao) + 4 + 4 + 3 + 4.
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "22 canonical events", |r| r.len() >= 22)
        .await;
    let (pd, utc_field, offset) = (
        ZoneSource::ProviderDefault,
        ZoneSource::UtcField,
        ZoneSource::ExplicitOffset,
    );
    let sh = "Asia/Shanghai";
    use Reason::Unspecified as NoReason;
    use Status::*;

    // Kdniao, two waybills from one push; zone-less China times.
    let sf = events_of(&events, "SF1400000000001");
    assert_events(
        &sf,
        Provider::Kdniao,
        "sf",
        &[
            (
                PickedUp,
                NoReason,
                "1",
                "2026-11-18T08:20:11Z",
                pd,
                sh,
                "广州市",
            ),
            (
                InTransit,
                NoReason,
                "204",
                "2026-11-18T14:41:05Z",
                pd,
                sh,
                "广州市",
            ),
            (
                InTransit,
                NoReason,
                "201",
                "2026-11-18T22:02:37Z",
                pd,
                sh,
                "深圳市",
            ),
            (
                OutForDelivery,
                NoReason,
                "202",
                "2026-11-20T00:15:00Z",
                pd,
                sh,
                "深圳市",
            ),
            (
                Delivered,
                Reason::SignedByProxy,
                "304",
                "2026-11-20T03:02:45Z",
                pd,
                sh,
                "深圳市",
            ),
        ],
    );
    assert_eq!(sf[4].raw_text, "快件已签收，签收人：前台代收");
    assert!(sf.iter().all(|e| e.ingest_id == scans[0].ingest_id));
    assert_events(
        &events_of(&events, "YT7500000000002"),
        Provider::Kdniao,
        "yto",
        &[
            (
                PickedUp,
                NoReason,
                "",
                "2026-11-19T11:30:00Z",
                pd,
                sh,
                "杭州市",
            ),
            (
                InTransit,
                NoReason,
                "",
                "2026-11-19T18:11:09Z",
                pd,
                sh,
                "杭州市",
            ),
        ],
    );

    // Kuaidi100: newest-first history, emitted oldest first.
    let k100 = events_of(&events, "YT6247854916511");
    assert_events(
        &k100,
        Provider::Kuaidi100,
        "yto",
        &[
            (
                PickedUp,
                NoReason,
                "1",
                "2026-11-18T10:52:32Z",
                pd,
                sh,
                "广东,深圳市,宝安区",
            ),
            (
                InTransit,
                NoReason,
                "1002",
                "2026-11-19T14:10:42Z",
                pd,
                sh,
                "四川,成都市",
            ),
            (
                InTransit,
                NoReason,
                "0",
                "2026-11-20T05:31:23Z",
                pd,
                sh,
                "四川,成都市,双流区,中和",
            ),
            (
                OutForDelivery,
                NoReason,
                "5",
                "2026-11-20T05:47:04Z",
                pd,
                sh,
                "四川,成都市,双流区,中和",
            ),
        ],
    );
    assert_eq!(
        k100.iter().map(|e| e.carrier_sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );

    // 17TRACK: time_utc is the instant (UTC_FIELD); the local offset is kept.
    assert_events(
        &events_of(&events, "RR123456785CN"),
        Provider::SeventeenTrack,
        "chinapost",
        &[
            (
                PickedUp,
                NoReason,
                "InTransit_PickedUp",
                "2026-11-16T10:40:00Z",
                utc_field,
                "+08:00",
                "SHENZHEN",
            ),
            (
                InTransit,
                NoReason,
                "InTransit_Departure",
                "2026-11-16T19:20:00Z",
                utc_field,
                "+08:00",
                "SHENZHEN",
            ),
            (
                InTransit,
                NoReason,
                "InTransit_CustomsReleased",
                "2026-11-20T02:30:00Z",
                utc_field,
                "-05:00",
                "JFK AIRPORT",
            ),
            (
                InTransit,
                NoReason,
                "InTransit_Arrival",
                "2026-11-20T14:00:00Z",
                utc_field,
                "-05:00",
                "NEW YORK NY DISTRIBUTION CENTER",
            ),
        ],
    );

    // AfterShip: checkpoint_time "2026-11-20T09:00:00-05:00" is 14:00 UTC.
    assert_events(
        &events_of(&events, "1Z999AA10123456784"),
        Provider::Aftership,
        "ups",
        &[
            (
                InfoReceived,
                NoReason,
                "InfoReceived_001",
                "2026-11-17T10:01:00Z",
                offset,
                "-05:00",
                "LOUISVILLE, KY, US",
            ),
            (
                PickedUp,
                NoReason,
                "InTransit_002",
                "2026-11-17T22:45:00Z",
                offset,
                "-05:00",
                "LOUISVILLE, KY, US",
            ),
            (
                OutForDelivery,
                NoReason,
                "OutForDelivery_001",
                "2026-11-20T14:00:00Z",
                offset,
                "-05:00",
                "SECAUCUS, NJ, US",
            ),
        ],
    );

    // EasyPost: a failed attempt, then return_to_sender.
    let charleston = "CHARLESTON, SC, 29407, US";
    assert_events(
        &events_of(&events, "9400100000000000000001"),
        Provider::Easypost,
        "usps",
        &[
            (
                InfoReceived,
                NoReason,
                "pre_transit",
                "2026-11-14T18:00:00Z",
                offset,
                "+00:00",
                "",
            ),
            (
                InTransit,
                NoReason,
                "in_transit",
                "2026-11-16T13:22:00Z",
                offset,
                "+00:00",
                charleston,
            ),
            (
                Exception,
                Reason::DeliveryAttemptFailed,
                "failure",
                "2026-11-18T16:10:00Z",
                offset,
                "+00:00",
                charleston,
            ),
            (
                Returning,
                Reason::ReturnToSender,
                "return_to_sender",
                "2026-11-20T14:45:00Z",
                offset,
                "+00:00",
                charleston,
            ),
        ],
    );

    let all_ids: BTreeSet<String> = ids(&events.decoded::<TrackingEvent>())
        .into_iter()
        .collect();
    assert_eq!(all_ids.len(), 22, "every scan has its own id");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_kdniao_snapshot_is_a_no_op_downstream() {
    let sandbox = Sandbox::start_with(configure).await;
    for (order, carrier, waybill) in [
        ("O-SF", "SF", "SF1400000000001"),
        ("O-YTO", "YTO", "YT7500000000002"),
        ("O-ZTO", "ZTO", "ZT7310000000003"),
        ("O-MARK", "sf", "MARK-1"),
    ] {
        register(&sandbox, order, carrier, waybill).await;
    }
    let push = Push::kdniao(&sent_now(kdniao_three_waybills()), KDNIAO_KEY);
    let (status, body) = push.send(&sandbox).await;
    assert_eq!((status, &body["Success"]), (200, &json!(true)), "{body}");

    // 5 + 2 + 2 updates; ZTO's incomplete address opens one alert.
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    updates.until(WAIT, "nine updates", |r| r.len() >= 9).await;
    let mut alerts = sandbox.reader(topics::TRACKING_ALERTS);
    alerts.until(WAIT, "the ZTO alert", |r| !r.is_empty()).await;
    let first: Vec<Alert> = alerts.decoded();
    assert_eq!(
        first
            .iter()
            .map(|a| (a.waybill.as_str(), a.rule.as_str(), a.state, a.reason))
            .collect::<Vec<_>>(),
        [(
            "ZT7310000000003",
            "carrier_exception",
            AlertState::Opened as i32,
            Reason::Address as i32
        )]
    );

    // The same snapshot again: written to scans.raw (raw bytes are kept) and
    // normalized to the very same ids, which normalize remembers writing...
    let (status, body) = push.send(&sandbox).await;
    assert_eq!((status, &body["Success"]), (200, &json!(true)), "{body}");
    // ...and then a marker behind it on the same (only) partition.
    marker(&sandbox, "sf", "MARK-1", "exception", Some("damaged")).await;

    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "the resent snapshot and the marker", |r| {
            all::<TrackingEvent>(r, |e| e.iter().any(|e| e.waybill == "MARK-1"))
        })
        .await;
    let emitted: Vec<TrackingEvent> = events
        .decoded::<TrackingEvent>()
        .into_iter()
        .filter(|e| e.waybill != "MARK-1")
        .collect();
    assert_eq!(
        emitted.len(),
        9,
        "the resend wrote nothing new to tracking.events: {:?}",
        ids(&emitted)
    );
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "both pushes and the marker on scans.raw", |r| {
        r.len() >= 7
    })
    .await;
    assert_eq!(raw.records.len(), 7);

    // Downstream the resend did nothing: the marker's update and alert are the
    // only new records.
    updates
        .until(WAIT, "the marker's update", |r| {
            all::<ShipmentUpdate>(r, |u| u.iter().any(|u| u.order_id == "O-MARK"))
        })
        .await;
    alerts
        .until(WAIT, "the marker's alert", |r| {
            all::<Alert>(r, |a| a.iter().any(|a| a.waybill == "MARK-1"))
        })
        .await;
    let seen: Vec<ShipmentUpdate> = updates.decoded();
    let per_order = |order: &str| seen.iter().filter(|u| u.order_id == order).count();
    assert_eq!(
        [
            per_order("O-SF"),
            per_order("O-YTO"),
            per_order("O-ZTO"),
            per_order("O-MARK")
        ],
        [5, 2, 2, 1]
    );
    let update_ids: BTreeSet<&str> = seen
        .iter()
        .filter_map(|u| u.event.as_ref().map(|e| e.event_id.as_str()))
        .collect();
    assert_eq!(update_ids.len(), 10, "no event was applied twice");
    let alert_waybills: Vec<String> = alerts
        .decoded::<Alert>()
        .into_iter()
        .map(|a| a.waybill)
        .collect();
    assert_eq!(alert_waybills, ["ZT7310000000003", "MARK-1"]);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kuaidi100_snapshot_grown_by_one_trace_adds_exactly_one_update() {
    let sandbox = Sandbox::start_with(configure).await;
    register(&sandbox, "O-K100", "yuantong", "YT6247854916511").await;
    let param = fixture("kuaidi100_param.json");
    let (status, _) = Push::kuaidi100(&param, "salt-a-5be2").send(&sandbox).await;
    assert_eq!(status, 200);
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    updates.until(WAIT, "four updates", |r| r.len() >= 4).await;

    // The next push: the whole history again, newest first, with one new trace.
    let mut grown = fixture_json("kuaidi100_param.json");
    grown["status"] = "shutdown".into();
    grown["lastResult"]["state"] = "3".into();
    grown["lastResult"]["ischeck"] = "1".into();
    if let Some(data) = grown["lastResult"]["data"].as_array_mut() {
        data.insert(
            0,
            json!({"time": "2026-11-20 17:02:11", "ftime": "2026-11-20 17:02:11",
                "context": "【四川省成都市高新区中和一部公司】 已签收，签收人：本人",
                "areaCode": "CN510116004000", "areaName": "四川,成都市,双流区,中和",
                "status": "签收", "statusCode": "301", "location": ""}),
        );
    }
    let (status, _) = Push::kuaidi100(grown.to_string().as_bytes(), "salt-a-5be2")
        .send(&sandbox)
        .await;
    assert_eq!(status, 200);

    // Old traces keep their ids, so normalize writes only the new one.
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events.until(WAIT, "4 + 1 events", |r| r.len() >= 5).await;
    let all_events = events_of(&events, "YT6247854916511");
    assert_eq!(all_events.len(), 5, "{:?}", ids(&all_events));
    let (before, after) = all_events.split_at(4);
    assert!(!ids(before).contains(&after[0].event_id));
    assert_eq!(
        (
            after[0].status,
            after[0].raw_code.as_str(),
            after[0].carrier_sequence
        ),
        (Status::Delivered as i32, "301", 5)
    );

    updates
        .until(WAIT, "the delivery update", |r| {
            all::<ShipmentUpdate>(r, |u| {
                u.iter()
                    .any(|u| u.current_status == Status::Delivered as i32)
            })
        })
        .await;
    let seen: Vec<ShipmentUpdate> = updates.decoded();
    assert_eq!(seen.len(), 5, "exactly one new update: {seen:?}");
    assert_eq!(
        seen.iter().map(|u| u.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        seen[4].event.as_ref().map(|e| e.event_id.as_str()),
        Some(after[0].event_id.as_str())
    );
    sandbox.shutdown().await;
}

/// `object` (a JSON object's text) with an extra field `"x": <value>`, which the
/// adapters ignore: only the structural limits can refuse it.
fn with_field(object: &[u8], value: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(object);
    let body = text.trim_end().strip_suffix('}').unwrap_or(&text);
    format!("{body},\"x\":{value}}}").into_bytes()
}

/// The fixture with the bytes of one string replaced by invalid UTF-8.
fn invalid_utf8(object: &[u8], needle: &str) -> Vec<u8> {
    let at = object
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .unwrap_or_else(|| panic!("{needle} not in fixture"));
    let mut bytes = object.to_vec();
    bytes.splice(at..at + needle.len(), [0xff, 0xfe, 0xc3]);
    bytes
}

/// POSTs a body that ends before its declared `Content-Length` (the sender's
/// connection broke mid-body) and returns the status ingest answered.
async fn post_cut_short(sandbox: &Sandbox, push: &Push) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(sandbox.ingest_addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: ingest\r\ncontent-length: {}\r\nconnection: close\r\n",
        push.path,
        push.body.len()
    );
    for (name, value) in &push.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let half = push.body.len() / 2;
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    stream
        .write_all(&push.body[..half])
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    stream
        .shutdown()
        .await
        .unwrap_or_else(|e| panic!("shutdown: {e}"));
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("no answer to a cut-short body"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_get_their_status_and_a_reason_and_write_nothing() {
    const LIMIT: usize = 64 * 1024;
    let sandbox = Sandbox::start_with(|c| {
        configure(c);
        c.ingest.http.body_limit_bytes = LIMIT;
        c.ingest.http.json_max_elements = 1_000;
    })
    .await;
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    let wide = format!("[{}0]", "0,".repeat(5_000));
    let huge = vec![b' '; 5 * 1024 * 1024];

    // Per provider: how to sign a JSON text, a wrong secret, and a string in its
    // fixture. Form providers sign the JSON inside their form.
    type Sign = fn(&[u8], &str) -> Push;
    let providers: [(&str, Vec<u8>, Sign, &str, &str); 5] = [
        (
            "kdniao",
            sent_now(fixture("kdniao_request_data.json")),
            Push::kdniao,
            KDNIAO_KEY,
            "广州市",
        ),
        (
            "kuaidi100",
            fixture("kuaidi100_param.json"),
            Push::kuaidi100,
            "salt-a-5be2",
            "在途",
        ),
        (
            "17track",
            fixture("seventeen_track.json"),
            Push::seventeen_track,
            "17t-key-main",
            "SHENZHEN",
        ),
        (
            "aftership",
            sent_now(fixture("aftership.json")),
            Push::aftership,
            "whsec-new-93af",
            "LOUISVILLE",
        ),
        (
            "easypost",
            fixture("easypost.json"),
            Push::easypost,
            "ep-prod-secret",
            "CHARLESTON",
        ),
    ];
    let mut expected = 0;
    for (route, json_text, sign, secret, needle) in &providers {
        let forged = sign(json_text, "not-the-secret");
        let mut unsigned = sign(json_text, secret);
        unsigned = match *route {
            "kdniao" | "kuaidi100" => Push {
                body: trackstream_carriers::form::encode(&[(
                    if *route == "kdniao" {
                        "RequestData"
                    } else {
                        "param"
                    },
                    json_text.as_slice(),
                )]),
                ..unsigned
            },
            _ => unsigned.unsigned(),
        };
        let half = &json_text[..json_text.len() / 2];
        let mut oversized = sign(json_text, secret);
        oversized.body = huge.clone();
        let cases: Vec<(&str, Push, u16, &str)> = vec![
            ("forged signature", forged, 401, "unauthorized"),
            ("missing signature", unsigned, 401, "unauthorized"),
            ("truncated body", sign(half, secret), 400, "bad_request"),
            (
                "invalid UTF-8",
                sign(&invalid_utf8(json_text, needle), secret),
                400,
                "bad_request",
            ),
            (
                "deep nesting",
                sign(&with_field(json_text, &deep), secret),
                400,
                "bad_request",
            ),
            (
                "huge array",
                sign(&with_field(json_text, &wide), secret),
                413,
                "payload_too_large",
            ),
            ("5 MB body", oversized, 413, "payload_too_large"),
        ];
        for (what, push, status, kind) in cases {
            let (got, body) = push.send(&sandbox).await;
            assert_eq!(got, status, "{route}, {what}: {body}");
            assert_eq!(body["error"], kind, "{route}, {what}: {body}");
            assert!(
                body["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{route}, {what}: {body}"
            );
            // Rejections are phrased in the provider's own dialect too.
            match *route {
                "kdniao" => assert_eq!(body["Success"], false, "{body}"),
                "kuaidi100" => assert_eq!(
                    (&body["result"], &body["returnCode"]),
                    (&json!(false), &json!(status.to_string())),
                    "{body}"
                ),
                _ => {}
            }
            expected += 1;
        }
        // Cut short in transit: the bytes that arrived are not what was signed.
        let status = post_cut_short(&sandbox, &sign(json_text, secret)).await;
        assert_eq!(status, 400, "{route}: body cut short");
    }
    assert_eq!(expected, 35);

    // Missing required fields name the field.
    let mut no_waybill = fixture_json("aftership.json");
    no_waybill["msg"]["tracking_number"] = Value::Null;
    let (status, body) = Push::aftership(&sent_now(no_waybill.to_string()), "whsec-new-93af")
        .send(&sandbox)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("tracking_number")),
        "{body}"
    );
    let mut no_logistic_code = fixture_json("kdniao_request_data.json");
    no_logistic_code["Data"][1]["LogisticCode"] = "".into();
    let (status, body) = Push::kdniao(&sent_now(no_logistic_code.to_string()), KDNIAO_KEY)
        .send(&sandbox)
        .await;
    assert_eq!((status, &body["Success"]), (400, &json!(false)), "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("LogisticCode")),
        "{body}"
    );
    // One byte over the configured limit is already too large.
    let (status, body) = Push::easypost(&vec![b' '; LIMIT + 1], "ep-prod-secret")
        .send(&sandbox)
        .await;
    assert_eq!((status, &body["error"]), (413, &json!("payload_too_large")));

    // A good push behind them all, on the only partition: nothing else is there.
    let (status, _) = Push::easypost(&fixture("easypost.json"), "ep-test-secret")
        .send(&sandbox)
        .await;
    assert_eq!(status, 200);
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "the good push", |r| !r.is_empty()).await;
    let scans: Vec<RawScan> = raw.decoded();
    assert_eq!(scans.len(), 1, "only the good push was written");
    assert_eq!(
        (scans[0].waybill.as_str(), scans[0].account.as_str()),
        ("9400100000000000000001", "test")
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kdniao_gets_503_in_its_dialect_while_the_broker_is_down_and_a_retry_lands() {
    let sandbox = Sandbox::start_with(|c| {
        configure(c);
        c.ingest.kafka.produce_timeout = std::time::Duration::from_secs(3);
    })
    .await;
    let push = Push::kdniao(&sent_now(fixture("kdniao_request_data.json")), KDNIAO_KEY);
    sandbox.broker.cut();
    let (status, body) = push.send(&sandbox).await;
    assert_eq!(status, 503, "{body}");
    // Success false is what makes Kdniao push again.
    assert_eq!(
        (&body["Success"], &body["error"]),
        (&json!(false), &json!("unavailable")),
        "{body}"
    );
    sandbox.broker.restore().await.expect("broker back");
    // Kdniao retries until it is acknowledged.
    let body =
        trackstream_testkit::eventually(WAIT, "a retried push to be acknowledged", || async {
            let (status, body) = push.send(&sandbox).await;
            (status == 200).then_some(body)
        })
        .await;
    assert_eq!(body["Success"], true);
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "both waybills' events", |r| {
            count::<TrackingEvent>(r, |e| e.waybill == "YT7500000000002") >= 2
                && count::<TrackingEvent>(r, |e| e.waybill == "SF1400000000001") >= 5
        })
        .await;
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_scans_raw_is_dead_lettered_and_unknown_codes_are_kept() {
    let sandbox = Sandbox::start_with(configure).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", sandbox.bootstrap())
        .create()
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let undecodable = b"\xff\xfe this is not a RawScan".to_vec();
    let unparseable = RawScan {
        ingest_id: "junk-2".into(),
        provider: Provider::Kdniao as i32,
        carrier: "sf".into(),
        waybill: "JUNK-2".into(),
        payload: b"{\"Traces\": [oops".to_vec(),
        ..RawScan::default()
    };
    let unparseable = prost::Message::encode_to_vec(&unparseable);
    for (key, payload) in [("sf:JUNK-1", &undecodable), ("sf:JUNK-2", &unparseable)] {
        producer
            .send(
                FutureRecord::to(topics::SCANS_RAW)
                    .key(key)
                    .payload(payload.as_slice()),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }

    // An AfterShip subtag that is in no table: kept, with its raw code.
    let mut push = fixture_json("aftership.json");
    push["msg"]["checkpoints"][2]["subtag"] = "OutForDelivery_099".into();
    push["msg"]["checkpoints"][2]["message"] = "Courier reassigned".into();
    let (status, _) = Push::aftership(&sent_now(push.to_string()), "whsec-new-93af")
        .send(&sandbox)
        .await;
    assert_eq!(status, 200);

    let mut dlq = sandbox.reader(topics::SCANS_DLQ);
    dlq.until(WAIT, "two dead letters", |r| r.len() >= 2).await;
    let letters: BTreeMap<&str, &Record> =
        dlq.records.iter().map(|r| (r.key.as_str(), r)).collect();
    for (key, payload, cause) in [
        ("sf:JUNK-1", &undecodable, "undecodable"),
        ("sf:JUNK-2", &unparseable, "unparseable"),
    ] {
        let letter = letters
            .get(key)
            .unwrap_or_else(|| panic!("{key} not dead-lettered"));
        assert_eq!(&letter.payload, payload, "{key}: the original bytes");
        let header = |name: &str| letter.header(name).unwrap_or_default();
        assert_eq!(header("dlq.cause"), cause, "{key}");
        assert!(!header("dlq.detail").is_empty(), "{key}");
        assert_eq!(header("dlq.source.topic"), topics::SCANS_RAW);
    }
    assert_eq!(dlq.records.len(), 2);

    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "three AfterShip events", |r| r.len() >= 3)
        .await;
    let unknown = events_of(&events, "1Z999AA10123456784")
        .into_iter()
        .find(|e| e.raw_code == "OutForDelivery_099")
        .unwrap_or_else(|| panic!("the unknown subtag was dropped"));
    assert_eq!(
        (unknown.status, unknown.reason, unknown.raw_text.as_str()),
        (
            Status::OutForDelivery as i32,
            Reason::Unknown as i32,
            "Courier reassigned"
        )
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reemits_identical_event_ids_and_the_detector_adds_nothing() {
    use trackstream_normalize::replay::{self, Command, PartitionRange};

    let sandbox = Sandbox::start_with(|c| {
        configure(c);
        // Several partitions, so the replay plans per partition (some empty).
        c.partitions = 3;
    })
    .await;
    let normalize_config = {
        let mut config = trackstream_normalize::Config::default();
        config.kafka.brokers = sandbox.bootstrap();
        config
    };
    let replay = |args: &str| {
        let args: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        match replay::parse_command(&args) {
            Ok(Command::Replay(options)) => options,
            other => panic!("{args:?}: {other:?}"),
        }
    };
    register(&sandbox, "O-SF", "SF", "SF1400000000001").await;
    register(&sandbox, "O-YTO", "YTO", "YT7500000000002").await;

    let before = Utc::now() - chrono::Duration::seconds(1);
    let (status, _) = Push::kdniao(&sent_now(fixture("kdniao_request_data.json")), KDNIAO_KEY)
        .send(&sandbox)
        .await;
    assert_eq!(status, 200);
    let mut updates = sandbox.reader(topics::TRACKING_UPDATES);
    updates.until(WAIT, "seven updates", |r| r.len() >= 7).await;
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events.until(WAIT, "seven events", |r| r.len() >= 7).await;
    let original = events.decoded::<TrackingEvent>();

    // A dry run counts and writes nothing.
    let options = replay(&format!("replay --from {} --dry-run", before.to_rfc3339()));
    let dry = replay::run(&normalize_config, &options)
        .await
        .unwrap_or_else(|e| panic!("dry run: {e}"));
    assert_eq!((dry.records, dry.events, dry.dead_letters), (2, 7, 0));

    // From a point in time, over every partition.
    let options = replay(&format!(
        "--config unused.toml replay --from {}",
        before.to_rfc3339()
    ));
    let summary = replay::run(&normalize_config, &options)
        .await
        .unwrap_or_else(|e| panic!("replay: {e}"));
    assert_eq!(
        (summary.records, summary.events, summary.dead_letters),
        (2, 7, 0)
    );
    let mut raw = sandbox.reader(topics::SCANS_RAW);
    raw.until(WAIT, "two raw records", |r| r.len() >= 2).await;
    let mut planned: Vec<PartitionRange> = raw
        .records
        .iter()
        .map(|r| PartitionRange {
            partition: r.partition,
            start: 0,
            end: 1,
        })
        .collect();
    if let [a, b] = planned.as_mut_slice()
        && a.partition == b.partition
    {
        *a = PartitionRange {
            partition: a.partition,
            start: 0,
            end: 2,
        };
        planned.truncate(1);
    }
    planned.sort_by_key(|r| r.partition);
    assert_eq!(
        summary.partitions, planned,
        "only partitions with records since --from"
    );

    events
        .until(WAIT, "the replayed events", |r| r.len() >= 14)
        .await;
    let all_events = events.decoded::<TrackingEvent>();
    let mut replayed = all_events[7..].to_vec();
    let mut first = original.clone();
    let by_id = |e: &TrackingEvent| e.event_id.clone();
    replayed.sort_by_key(by_id);
    first.sort_by_key(by_id);
    assert_eq!(replayed, first, "a replay re-derives identical events");

    // From explicit offsets: only the YTO waybill's partition, from its start.
    let yto_partition = raw
        .records
        .iter()
        .find(|r| r.key == "yto:YT7500000000002")
        .map_or(-1, |r| r.partition);
    let in_partition = raw
        .records
        .iter()
        .filter(|r| r.partition == yto_partition)
        .count() as u64;
    let options = replay(&format!("replay --offsets {yto_partition}:0"));
    let summary = replay::run(&normalize_config, &options)
        .await
        .unwrap_or_else(|e| panic!("replay by offsets: {e}"));
    assert_eq!(summary.records, in_partition);
    assert_eq!(
        summary.events,
        if in_partition == 2 { 7 } else { 2 },
        "{summary:?}"
    );

    // --to stops before the first record at or after it: the markers below
    // come later and are left out.
    let until = Utc::now();

    // Markers behind the replayed events of each waybill (same key, same
    // partition): once their updates show, the replays were processed too.
    marker(&sandbox, "sf", "SF1400000000001", "delivered", None).await;
    marker(&sandbox, "yto", "YT7500000000002", "in_transit", None).await;
    updates
        .until(WAIT, "both markers' updates", |r| {
            count::<ShipmentUpdate>(r, |u| {
                u.event.as_ref().is_some_and(|e| e.raw_code == "MARKER")
            }) == 2
        })
        .await;
    let seen: Vec<ShipmentUpdate> = updates.decoded();
    assert_eq!(
        seen.len(),
        9,
        "7 scans and 2 markers; the replays added nothing"
    );
    let applied: BTreeSet<&str> = seen
        .iter()
        .filter_map(|u| u.event.as_ref().map(|e| e.event_id.as_str()))
        .collect();
    assert_eq!(applied.len(), 9);

    let options = replay(&format!(
        "replay --from earliest --to {} --dry-run",
        until.to_rfc3339()
    ));
    let bounded = replay::run(&normalize_config, &options)
        .await
        .unwrap_or_else(|e| panic!("bounded replay: {e}"));
    assert_eq!((bounded.records, bounded.events), (2, 7), "{bounded:?}");
    sandbox.shutdown().await;
}
