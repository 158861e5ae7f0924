//! What the web tests share: orders registered and scanned through ingest,
//! buyer messages and their links, signed webhook requests for a browser
//! script to fire, and a JSON client of the web face.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use trackstream_proto::topics;
use trackstream_proto::v1::BuyerNotification;
use trackstream_sandbox::{GENERIC_SECRET, Sandbox};

pub const WAIT: Duration = Duration::from_secs(60);

/// A generic-format scan.
pub fn scan(waybill: &str, status: &str, at: DateTime<Utc>, city: &str) -> Value {
    json!({
        "carrier": "sf", "waybill": waybill, "status": status,
        "occurred_at": at.to_rfc3339(), "description": format!("{city} {status}"),
        "location": {"text": format!("{city} hub"), "city": city, "country": "CN"}
    })
}

/// Pushes one scan through ingest.
pub async fn push(sandbox: &Sandbox, scan: &Value) {
    let (code, body) = sandbox.post_generic(scan).await;
    assert_eq!(code, 200, "scan {scan}: {body}");
}

/// Registers one parcel of `order` for the merchant of `token`.
pub async fn register(sandbox: &Sandbox, token: &str, order: &str, waybill: &str, phone: &str) {
    let (code, body) = sandbox
        .register_as(
            token,
            &json!({
                "order_id": order, "carrier": "sf", "waybill": waybill,
                "buyer": {"name": "Li Lei", "phone": phone, "locale": "zh-CN",
                          "time_zone": "Asia/Shanghai"}
            }),
        )
        .await;
    assert!(
        code == 200 || code == 202,
        "register {order}: {code} {body}"
    );
}

/// A signed generic webhook as a request file a browser script fires
/// (`{url, method, headers, body}`), written into `dir`.
pub fn webhook_file(sandbox: &Sandbox, dir: &std::path::Path, name: &str, scan: &Value) -> String {
    let body = scan.to_string();
    let signature = trackstream_carriers::generic::sign(body.as_bytes(), GENERIC_SECRET);
    let request = json!({
        "url": format!("http://{}/v1/webhooks/generic", sandbox.ingest_addr),
        "method": "POST",
        "headers": {"content-type": "application/json", "x-trackstream-signature": signature},
        "body": body,
    });
    let path = dir.join(name);
    std::fs::write(&path, request.to_string()).expect("request file");
    path.display().to_string()
}

/// The base URL of the sandbox's web face.
pub fn base_url(sandbox: &Sandbox) -> String {
    format!(
        "http://{}",
        sandbox.web_addr.expect("the sandbox serves the web face")
    )
}

/// The newest buyer message of `order_id` that carries a link, once one is on
/// `buyer.notifications`; its link rebased on the sandbox's web address.
pub async fn message_link(sandbox: &Sandbox, order_id: &str) -> (BuyerNotification, String) {
    let mut messages = sandbox.reader(topics::BUYER_NOTIFICATIONS);
    let with_link = |m: &BuyerNotification| m.order_id == order_id && !m.tracking_url.is_empty();
    messages
        .until(WAIT, &format!("a buyer message of {order_id}"), |r| {
            trackstream_testkit::kafka::all(r, |m: &[BuyerNotification]| m.iter().any(with_link))
        })
        .await;
    let message = messages
        .decoded::<BuyerNotification>()
        .into_iter()
        .rfind(with_link)
        .expect("a message with a link");
    let path = message
        .tracking_url
        .strip_prefix("http://sandbox.invalid")
        .expect("the configured public_url")
        .to_owned();
    assert!(path.starts_with("/t/"), "{}", message.tracking_url);
    (message.clone(), format!("{}{path}", base_url(sandbox)))
}

/// A JSON client of the web face.
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(sandbox: &Sandbox) -> Self {
        Client {
            base: base_url(sandbox),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// GET `path` (with a bearer token when given): status and JSON body.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST JSON to `path`: status, `Retry-After`, JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Option<String>, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        (
            status,
            retry,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The raw request builder (event streams).
    pub fn raw(&self) -> &reqwest::Client {
        &self.http
    }

    /// Polls `path` (with a bearer token when given) until `done` holds for
    /// its JSON answer, within [`WAIT`]; returns that answer.
    pub async fn until(
        &self,
        path: &str,
        token: Option<&str>,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        trackstream_testkit::eventually(WAIT, what, || async {
            let (status, body) = self.get(path, token).await;
            (status == 200 && done(&body)).then_some(body)
        })
        .await
    }
}

/// A parcel's waybill and its timeline's statuses, newest first.
pub type Timeline = (String, Vec<String>);

/// Each parcel's [`Timeline`] of each order of a buyer view.
pub fn timelines(view: &Value) -> Vec<(String, Vec<Timeline>)> {
    let strings = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    view["orders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|order| {
            let parcels = order["parcels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let statuses = p["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| strings(e, "status"))
                        .collect();
                    (strings(p, "waybill"), statuses)
                })
                .collect();
            (strings(order, "order_id"), parcels)
        })
        .collect()
}

/// The `order_id`s of a JSON list of orders or search results, in order.
pub fn order_ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["order_id"].as_str())
        .collect()
}
