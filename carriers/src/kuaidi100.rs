//! Kuaidi100 (快递100) subscription push.
//!
//! `POST /v1/webhooks/kuaidi100`, form fields `param` (JSON) and `sign`:
//!
//! ```json
//! {"status": "polling", "message": "", "autoCheck": "0", "comOld": "", "comNew": "",
//!  "lastResult": {"state": "0", "ischeck": "0", "com": "yuantong", "nu": "YT100",
//!    "data": [{"context": "...", "time": "2026-11-20 14:03:00",
//!              "ftime": "2026-11-20 14:03:00", "status": "在途", "statusCode": "0",
//!              "areaCode": "CN440300000000", "areaName": "广东,深圳市"}]}}
//! ```
//!
//! **Signature.** `sign` = uppercase hex MD5(`param` + salt), present only when a
//! salt was set at subscription. Configured secrets are salts (accounts are free
//! labels); each is tried in constant time. Without `sign` the push is accepted
//! only when `settings.allow_unsigned` — a salt-less subscription cannot be
//! authenticated, so that is an operator's explicit decision.
//!
//! **Split.** One push is one waybill (`lastResult.com` / `lastResult.nu`); the
//! payload is the exact `param` text. The callback URL's query parameters (the
//! way to carry an order id through Kuaidi100) go into the envelope unchanged.
//! A push without `lastResult.com`/`lastResult.nu` cannot be attributed to a
//! waybill and is a bad request.
//!
//! **Normalize.** `lastResult.data` is the full history, newest first; events are
//! emitted oldest first with `carrier_sequence` = 1-based position from the
//! oldest, which a grown snapshot does not change. Each trace's `statusCode`
//! (basic state or the detailed "高级状态" codes, [`STATES`]) gives its status;
//! without a code, its `status` text ([`STATUS_TEXT`]). An unknown code keeps its
//! raw code, reason `UNKNOWN`, and the status its text implies, else
//! `IN_TRANSIT`. A trace with neither code nor text (a subscription without
//! `resultv2`): the newest takes `lastResult.state`; any other is `PICKED_UP`
//! when its `context` says the carrier took the parcel in ("已收取快件",
//! "已揽收"; [`cn_text::is_pickup`]), else `IN_TRANSIT`. Its raw code stays
//! empty either way, so the event id does not depend on that reading. `time` (else `ftime`) is zone-less
//! China time, read in `settings.time_zone`, default Asia/Shanghai.
//!
//! **Location.** `areaName` (else `location`) is the location text, `areaCode`
//! ("CN" + a 12-digit statistical code) the admin code. Province and city, in
//! full form ("四川省", "成都市"), are read from `areaName`
//! ([`area::parse_cn_location`]: "四川,成都市,双流区" or "四川省成都市"); a
//! province still missing comes from `areaCode`'s first two digits; then
//! `location` and `context` ("【四川省成都市高新区公司】 已收入") fill what is
//! still empty when they agree. A comma-separated `areaName` no rule reads is
//! taken as "province,city" verbatim.
//!
//! **Reply.** `{"result": true, "returnCode": "200", "message": ...}`; a rejection
//! answers `result: false` with ingest's HTTP status as `returnCode` ("500" for
//! server errors, as Kuaidi100 documents; other codes are ours to define).

use serde::Deserialize;
use trackstream_proto::v1::{Location, Provider, RawScan, Reason, Status, TrackingEvent};

use crate::event::{CodeRow, ScanFacts, lookup};
use crate::form::Form;
use crate::signature::{find_account, md5};
use crate::{
    NormalizeError, Outcome, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    Reply, VerifiedPush, area, cn_text, lenient,
};

const NAME: &str = "kuaidi100";

/// The Kuaidi100 adapter. Stateless: salts come from [`ProviderSettings`] on every
/// call, so one instance serves every subscription account.
pub struct Kuaidi100;

/// `state` / `statusCode` → canonical: the basic states (0–14) and the detailed
/// codes Kuaidi100 sends with `resultv2=4`.
pub const STATES: &[CodeRow] = &[
    ("0", Status::InTransit, Reason::Unspecified),
    ("1001", Status::InTransit, Reason::Unspecified),
    ("1002", Status::InTransit, Reason::Unspecified),
    ("1003", Status::InTransit, Reason::Unspecified),
    ("1", Status::PickedUp, Reason::Unspecified),
    ("101", Status::InfoReceived, Reason::Unspecified),
    ("102", Status::InfoReceived, Reason::Unspecified),
    ("103", Status::PickedUp, Reason::Unspecified),
    ("2", Status::Exception, Reason::Unspecified),
    ("201", Status::Exception, Reason::DeliveryAttemptFailed),
    ("202", Status::Exception, Reason::CarrierDelay),
    ("203", Status::Returning, Reason::Refused),
    (
        "204",
        Status::DeliveryAttemptFailed,
        Reason::DeliveryAttemptFailed,
    ),
    ("205", Status::AvailableForPickup, Reason::HeldAtLocker),
    (
        "206",
        Status::DeliveryAttemptFailed,
        Reason::RecipientUnreachable,
    ),
    ("207", Status::Exception, Reason::OutOfServiceArea),
    ("208", Status::Exception, Reason::CarrierDelay),
    ("209", Status::Exception, Reason::Damaged),
    ("210", Status::Cancelled, Reason::Cancelled),
    ("3", Status::Delivered, Reason::Unspecified),
    ("301", Status::Delivered, Reason::Unspecified),
    ("302", Status::Delivered, Reason::Unspecified),
    ("303", Status::Delivered, Reason::SignedByProxy),
    ("304", Status::Delivered, Reason::Unspecified),
    ("4", Status::Returned, Reason::ReturnToSender),
    ("401", Status::Cancelled, Reason::Cancelled),
    ("5", Status::OutForDelivery, Reason::Unspecified),
    ("501", Status::AvailableForPickup, Reason::Unspecified),
    ("6", Status::Returning, Reason::ReturnToSender),
    ("7", Status::InTransit, Reason::Unspecified),
    ("8", Status::Customs, Reason::Unspecified),
    ("10", Status::Customs, Reason::Unspecified),
    ("11", Status::Customs, Reason::Unspecified),
    ("12", Status::InTransit, Reason::Unspecified),
    ("13", Status::Customs, Reason::CustomsHold),
    ("14", Status::Exception, Reason::Refused),
];

/// A trace's `status` text → its code in [`STATES`], for traces without a
/// `statusCode` (pushes subscribed without `resultv2`).
pub const STATUS_TEXT: &[(&str, &str)] = &[
    ("在途", "0"),
    ("到达派件城市", "1001"),
    ("干线", "1002"),
    ("转递", "1003"),
    ("揽收", "1"),
    ("已下单", "101"),
    ("待揽收", "102"),
    ("已揽收", "103"),
    ("疑难", "2"),
    ("超时未签收", "201"),
    ("超时未更新", "202"),
    ("拒收", "203"),
    ("派件异常", "204"),
    ("柜或驿站超时未取", "205"),
    ("无法联系", "206"),
    ("超区", "207"),
    ("滞留", "208"),
    ("破损", "209"),
    ("销单", "210"),
    ("签收", "3"),
    ("本人签收", "301"),
    ("派件异常后签收", "302"),
    ("代签", "303"),
    ("投柜或站签收", "304"),
    ("退签", "4"),
    ("已销单", "401"),
    ("派件", "5"),
    ("投柜或驿站", "501"),
    ("退回", "6"),
    ("转投", "7"),
    ("清关", "8"),
    ("待清关", "10"),
    ("清关中", "11"),
    ("已清关", "12"),
    ("清关异常", "13"),
    ("拒签", "14"),
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Param {
    #[serde(default)]
    last_result: Option<LastResult>,
}

#[derive(Deserialize)]
struct LastResult {
    #[serde(default, deserialize_with = "lenient::string")]
    state: String,
    #[serde(default, deserialize_with = "lenient::string")]
    com: String,
    #[serde(default, deserialize_with = "lenient::string")]
    nu: String,
    #[serde(default, deserialize_with = "lenient::seq")]
    data: Vec<Trace>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trace {
    #[serde(default, deserialize_with = "lenient::string")]
    context: String,
    #[serde(default, deserialize_with = "lenient::string")]
    time: String,
    #[serde(default, deserialize_with = "lenient::string")]
    ftime: String,
    #[serde(default, deserialize_with = "lenient::string")]
    status: String,
    #[serde(default, deserialize_with = "lenient::string")]
    status_code: String,
    #[serde(default, deserialize_with = "lenient::string")]
    area_code: String,
    #[serde(default, deserialize_with = "lenient::string")]
    area_name: String,
    #[serde(default, deserialize_with = "lenient::string")]
    location: String,
}

/// `sign` for `param` under `salt`: uppercase hex MD5(param + salt).
pub fn sign(param: &[u8], salt: &str) -> String {
    hex::encode_upper(md5(&[param, salt.as_bytes()]))
}

/// A complete push body, signed when `salt` is given (tests, load generator).
pub fn form_body(param: &[u8], salt: Option<&str>) -> Vec<u8> {
    match salt {
        Some(salt) => {
            let sign = sign(param, salt);
            crate::form::encode(&[("param", param), ("sign", sign.as_bytes())])
        }
        None => crate::form::encode(&[("param", param)]),
    }
}

fn verify(form: &Form, param: &[u8], settings: &ProviderSettings) -> Result<String, PushError> {
    let Some(received) = form.bytes("sign") else {
        if settings.allow_unsigned {
            return Ok(String::new());
        }
        return Err(PushError::unauthorized(
            "missing form field sign (set a salt on the subscription, or allow_unsigned)",
        ));
    };
    // Hex case is not secret; compare in the case we compute.
    let received = received.to_ascii_uppercase();
    find_account(&settings.secrets, &received, |s| {
        sign(param, &s.secret).into_bytes()
    })
    .map(|s| s.account.clone())
    .ok_or_else(|| PushError::unauthorized("sign does not match any configured salt"))
}

fn parse(param: &[u8]) -> Result<LastResult, String> {
    let param: Param =
        lenient::from_object(param).map_err(|e| format!("param is not a Kuaidi100 push: {e}"))?;
    param
        .last_result
        .ok_or_else(|| "param.lastResult is missing".to_owned())
}

/// A trace's status and the raw code it is known by.
fn trace_status(trace: &Trace, newest_state: Option<&str>) -> (Status, Reason, String) {
    let code = trace.status_code.trim();
    let text = trace.status.trim();
    let text_code = STATUS_TEXT
        .iter()
        .find(|(t, _)| *t == text)
        .map(|(_, c)| *c);
    let text_status = text_code.map_or(Status::InTransit, |c| {
        lookup(STATES, c, Status::InTransit).0
    });
    if !code.is_empty() {
        let (status, reason) = lookup(STATES, code, text_status);
        return (status, reason, code.to_owned());
    }
    if let Some(c) = text_code {
        let (status, reason) = lookup(STATES, c, Status::InTransit);
        return (status, reason, text.to_owned());
    }
    if !text.is_empty() {
        return (Status::InTransit, Reason::Unknown, text.to_owned());
    }
    match newest_state.map(str::trim).filter(|s| !s.is_empty()) {
        Some(state) => {
            let (status, reason) = lookup(STATES, state, Status::InTransit);
            (status, reason, String::new())
        }
        None if cn_text::is_pickup(&trace.context) => {
            (Status::PickedUp, Reason::Unspecified, String::new())
        }
        None => (Status::InTransit, Reason::Unspecified, String::new()),
    }
}

/// Where a trace happened: `areaName` ("广东,深圳市,宝安区", else `location`) is
/// the text, `areaCode` the admin code; province and city in full form (see
/// the module doc).
fn place(trace: &Trace) -> Location {
    let code = trace.area_code.trim();
    let text = if trace.area_name.trim().is_empty() {
        &trace.location
    } else {
        &trace.area_name
    };
    let mut place = Location {
        text: text.clone(),
        country: if code.starts_with("CN") {
            "CN".to_owned()
        } else {
            String::new()
        },
        admin_area_code: trace.area_code.clone(),
        ..Location::default()
    };
    area::fill_from_text(&mut place, &trace.area_name);
    if place.region.is_empty() {
        let digits = code.strip_prefix("CN").unwrap_or(code);
        if let Some(province) = area::province_for_code(digits) {
            place.region = province.name.to_owned();
        }
    }
    area::fill_from_text(&mut place, &trace.location);
    area::fill_from_text(&mut place, &trace.context);
    if trace.area_name.contains(',') {
        // A name the parser cannot tell ("四川,阿坝", or outside China): as given.
        let mut parts = trace.area_name.split(',').map(str::trim);
        let (region, city) = (parts.next(), parts.next());
        if place.region.is_empty() {
            place.region = region.unwrap_or_default().to_owned();
        }
        if place.city.is_empty() {
            place.city = city.unwrap_or_default().to_owned();
        }
    }
    place
}

impl ProviderAdapter for Kuaidi100 {
    fn provider(&self) -> Provider {
        Provider::Kuaidi100
    }

    fn route(&self) -> &'static str {
        NAME
    }

    fn accept(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
    ) -> Result<VerifiedPush, PushError> {
        let form = Form::parse(request.body);
        let param = form
            .bytes("param")
            .ok_or_else(|| PushError::bad("missing form field param"))?;
        let account = verify(&form, param, settings)?;
        form.text("param").map_err(PushError::BadRequest)?;
        let last = parse(param).map_err(PushError::BadRequest)?;
        let waybill = last.nu.trim();
        if last.com.trim().is_empty() || waybill.is_empty() {
            return Err(PushError::bad(
                "param.lastResult.com and param.lastResult.nu are required",
            ));
        }
        let item = PushItem {
            carrier: crate::carrier_code::canonical(&last.com),
            waybill: waybill.to_owned(),
            payload: param.to_vec(),
            envelope: request.query.clone(),
        };
        Ok(VerifiedPush {
            account,
            items: vec![item],
        })
    }

    fn reply(&self, outcome: Outcome<'_>) -> Reply {
        let body = match outcome {
            Outcome::Accepted { .. } => serde_json::json!({
                "result": true, "returnCode": "200", "message": "成功",
            }),
            Outcome::Rejected { status, reason } => serde_json::json!({
                "result": false, "returnCode": status.to_string(), "message": reason,
            }),
        };
        Reply {
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    fn normalize(
        &self,
        raw: &RawScan,
        settings: &ProviderSettings,
    ) -> Result<Vec<TrackingEvent>, NormalizeError> {
        let last = parse(&raw.payload).map_err(|e| NormalizeError::unparseable(NAME, e))?;
        let zone = crate::time::zone_or(settings.time_zone.as_deref(), chrono_tz::Asia::Shanghai);
        let events = last
            .data
            .iter()
            .rev()
            .enumerate()
            .map(|(index, trace)| {
                let newest = index + 1 == last.data.len();
                let (status, reason, code) =
                    trace_status(trace, newest.then_some(last.state.as_str()));
                let mut facts = ScanFacts::new(status, reason, code);
                facts.raw_text = trace.context.clone();
                let time = if trace.time.trim().is_empty() {
                    &trace.ftime
                } else {
                    &trace.time
                };
                facts.occurred_at = crate::time::parse_local_or_offset(time, zone);
                facts.location = place(trace);
                facts.carrier_sequence = i64::try_from(index + 1).unwrap_or(i64::MAX);
                facts.into_event(raw, Provider::Kuaidi100)
            })
            .collect();
        Ok(events)
    }
}
