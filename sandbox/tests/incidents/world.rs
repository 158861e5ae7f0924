//! Generated traffic for the incident scenarios: parcels of carrier `zto`
//! moving between six cities, pushed through ingest as generic webhooks with
//! scans dated in the past (the detector's wall clock then fires every stall
//! whose threshold has passed as soon as the grace is over).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use trackstream_proto::topics;
use trackstream_proto::v1::{Incident, IncidentState};
use trackstream_sandbox::{ACME_TOKEN, OTHER_TOKEN, Sandbox};
use trackstream_testkit::kafka::TopicReader;

pub const WAIT: Duration = Duration::from_secs(180);

/// (province, city, hub name).
pub const CITIES: [(&str, &str, &str); 6] = [
    ("浙江省", "杭州市", "杭州转运中心"),
    ("广东省", "广州市", "广州转运中心"),
    ("四川省", "成都市", "成都转运中心"),
    ("江苏省", "南京市", "南京转运中心"),
    ("湖北省", "武汉市", "武汉转运中心"),
    ("上海市", "上海市", "上海转运中心"),
];
pub const HANGZHOU: usize = 0;
pub const GUANGZHOU: usize = 1;
pub const CHENGDU: usize = 2;

pub fn hours(h: i64) -> chrono::Duration {
    chrono::Duration::hours(h)
}

pub fn minutes(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

/// One parcel: its registration and its scans.
#[derive(Debug, Clone)]
pub struct Parcel {
    pub token: &'static str,
    pub merchant: &'static str,
    pub order: String,
    pub waybill: String,
    pub scans: Vec<Value>,
}

impl Parcel {
    /// A parcel of `m-acme` (or `m-other` when `other`), numbered `n` in
    /// group `group`, from `origin` to `dest`.
    pub fn new(group: &str, n: usize, other: bool) -> Self {
        let (token, merchant) = if other {
            (OTHER_TOKEN, "m-other")
        } else {
            (ACME_TOKEN, "m-acme")
        };
        Parcel {
            token,
            merchant,
            order: format!("O-{group}-{n:05}"),
            waybill: format!("{group}{n:05}"),
            scans: Vec::new(),
        }
    }

    /// The waybill key, as records name it.
    pub fn key(&self) -> String {
        format!("zto:{}", self.waybill)
    }

    /// A scan at `city` at `at`.
    pub fn scan(&mut self, status: &str, at: DateTime<Utc>, city: usize, text: &str) -> &mut Self {
        let (province, name, _) = CITIES[city];
        self.scans.push(json!({
            "carrier": "zto", "waybill": self.waybill, "status": status,
            "occurred_at": at.to_rfc3339(), "description": format!("{status} {text}"),
            "location": {"text": text, "city": name, "region": province, "country": "CN"},
        }));
        self
    }

    /// Picked up at `origin` at `t0`, through the hub at `hub`, delivered at
    /// `dest`: only the scans up to `now` (and no gap over 10 h).
    pub fn journey(
        mut self,
        t0: DateTime<Utc>,
        origin: usize,
        hub: usize,
        dest: usize,
        now: DateTime<Utc>,
    ) -> Self {
        let steps = [
            ("picked_up", 0, origin, "揽收网点"),
            ("in_transit", 6, hub, CITIES[hub].2),
            ("in_transit", 14, hub, CITIES[hub].2),
            ("in_transit", 22, dest, CITIES[dest].2),
            ("out_for_delivery", 28, dest, "派送网点"),
            ("delivered", 31, dest, "派送网点"),
        ];
        for (status, h, city, text) in steps {
            let at = t0 + hours(h);
            if at > now {
                break;
            }
            self.scan(status, at, city, text);
        }
        self
    }

    /// Picked up at `origin`, arrived at the hub in `hub` at `arrived`, and
    /// nothing since.
    pub fn stranded(mut self, origin: usize, hub: usize, arrived: DateTime<Utc>) -> Self {
        self.scan("picked_up", arrived - hours(6), origin, "揽收网点");
        self.scan("in_transit", arrived, hub, CITIES[hub].2);
        self
    }
}

/// Registers every parcel (zto, standard) with its merchant.
pub async fn register(sandbox: &Sandbox, parcels: &[Parcel]) {
    for token in [ACME_TOKEN, OTHER_TOKEN] {
        let mine: Vec<Value> = parcels
            .iter()
            .filter(|p| p.token == token)
            .map(|p| {
                json!({
                    "order_id": p.order, "carrier": "zto", "waybill": p.waybill,
                    "service_level": "standard",
                    "origin": {"province": "浙江省", "city": "杭州市"},
                    "destination": {"province": "四川省", "city": "成都市"},
                    "buyer": {"phone": "13812345678", "locale": "zh-CN"},
                })
            })
            .collect();
        for chunk in mine.chunks(400) {
            let (status, body) = sandbox
                .register_as(token, &Value::Array(chunk.to_vec()))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
}

/// Pushes scans through ingest, 200 per webhook; returns how many.
pub async fn push<'a>(sandbox: &Sandbox, parcels: impl IntoIterator<Item = &'a Parcel>) -> usize {
    let scans: Vec<Value> = parcels
        .into_iter()
        .flat_map(|p| p.scans.iter().cloned())
        .collect();
    for chunk in scans.chunks(200) {
        let (status, body) = sandbox.post_generic(&Value::Array(chunk.to_vec())).await;
        assert_eq!(status, 200, "{body}");
    }
    scans.len()
}

/// Every incident record read so far.
pub fn incidents(reader: &TopicReader) -> Vec<Incident> {
    reader.decoded::<Incident>()
}

/// The newest record (highest version) of each (incident, merchant).
pub fn latest(records: &[Incident], merchant: &str) -> Vec<Incident> {
    let mut newest: std::collections::BTreeMap<String, Incident> =
        std::collections::BTreeMap::new();
    for record in records.iter().filter(|r| r.merchant_id == merchant) {
        let entry = newest
            .entry(record.incident_id.clone())
            .or_insert_with(|| record.clone());
        if record.version > entry.version {
            *entry = record.clone();
        }
    }
    newest.into_values().collect()
}

/// The waybills a merchant's newest record of `incident` lists.
pub fn listed(records: &[Incident], merchant: &str, incident: &str) -> BTreeSet<String> {
    latest(records, merchant)
        .into_iter()
        .filter(|r| r.incident_id == incident)
        .flat_map(|r| r.parcels.into_iter().map(|p| p.waybill))
        .collect()
}

/// Whether the platform records include `state` of an incident at `place`.
pub fn has_state(records: &[Incident], place: &str, state: IncidentState) -> bool {
    records
        .iter()
        .any(|r| r.merchant_id.is_empty() && r.place == place && r.state == state as i32)
}

/// A reader of `tracking.incidents`.
pub fn reader(sandbox: &Sandbox) -> TopicReader {
    sandbox.reader(topics::TRACKING_INCIDENTS)
}
