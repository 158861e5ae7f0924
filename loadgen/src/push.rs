//! Webhooks: push `n` of a parcel, in its provider's format and signed the
//! way that provider signs. Full-snapshot providers (Kdniao, Kuaidi100,
//! AfterShip, 17TRACK, EasyPost) resend the whole history; the generic format
//! carries only the newest scan.

use chrono::{DateTime, FixedOffset, Offset as _, Utc};
use serde_json::json;

use crate::{Format, Parcel, Scan, Secrets, Stage};

/// A ready-to-send webhook.
#[derive(Debug, Clone)]
pub struct Push {
    /// `/v1/webhooks/<route>`.
    pub path: String,
    /// Headers (signature, content type).
    pub headers: Vec<(&'static str, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Tag of the newest scan it carries.
    pub newest_tag: u64,
}

fn china(at: DateTime<Utc>) -> String {
    let offset = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix());
    at.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

impl Parcel {
    /// The webhook carrying this parcel's first `upto` scans.
    pub fn push(&self, upto: usize, secrets: &Secrets) -> Push {
        let scans = &self.scans[..upto.clamp(1, self.scans.len())];
        let newest = scans.last().map_or(0, |s| s.tag);
        let (headers, body) = match self.format {
            Format::Generic => self.generic(scans, secrets),
            Format::Kdniao => self.kdniao(scans, secrets),
            Format::Kuaidi100 => self.kuaidi100(scans, secrets),
            Format::Aftership => self.aftership(scans, secrets),
            Format::SeventeenTrack => self.seventeen_track(scans, secrets),
            Format::Easypost => self.easypost(scans, secrets),
        };
        Push {
            path: format!("/v1/webhooks/{}", self.format.route()),
            headers,
            body,
            newest_tag: newest,
        }
    }

    fn generic(&self, scans: &[Scan], secrets: &Secrets) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let scan = scans.last().map(|s| {
            let status = match s.stage {
                Stage::Info => "info_received",
                Stage::PickedUp => "picked_up",
                Stage::InTransit => "in_transit",
                Stage::OutForDelivery => "out_for_delivery",
                Stage::Locker => "available_for_pickup",
                Stage::Delivered => "delivered",
                Stage::AttemptFailed => "delivery_attempt_failed",
            };
            let mut scan = json!({"carrier": self.carrier, "waybill": self.waybill, "status": status,
                "occurred_at": s.at.to_rfc3339(), "description": s.text(),
                "location": {"text": "Hangzhou hub", "city": "Hangzhou", "country": "CN"}});
            if s.stage == Stage::AttemptFailed {
                scan["reason"] = json!("recipient_unreachable");
            }
            scan
        });
        let body = json!({ "scans": [scan] }).to_string().into_bytes();
        let signature = trackstream_carriers::generic::sign(&body, &secrets.generic);
        (vec![("x-trackstream-signature", signature)], body)
    }

    fn kdniao(&self, scans: &[Scan], secrets: &Secrets) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let action = |stage: Stage| match stage {
            Stage::Info | Stage::PickedUp => "1",
            Stage::InTransit => "2",
            Stage::OutForDelivery => "202",
            Stage::Locker => "211",
            Stage::Delivered => "301",
            Stage::AttemptFailed => "416",
        };
        let traces: Vec<_> = scans
            .iter()
            .map(|s| json!({"AcceptTime": china(s.at), "AcceptStation": s.text(), "Location": "深圳市", "Action": action(s.stage)}))
            .collect();
        let last = scans.last().map_or("2", |s| action(s.stage));
        let request_data = json!({
            "EBusinessID": secrets.kdniao_account, "PushTime": china(Utc::now()), "Count": 1,
            "Data": [{"EBusinessID": secrets.kdniao_account, "ShipperCode": "SF", "LogisticCode": self.waybill,
                      "Success": true, "State": &last[..1], "StateEx": last, "Location": "深圳市", "Traces": traces}]
        })
        .to_string();
        let body = trackstream_carriers::kdniao::form_body(
            request_data.as_bytes(),
            &secrets.kdniao_appkey,
        );
        (
            vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body,
        )
    }

    fn kuaidi100(
        &self,
        scans: &[Scan],
        secrets: &Secrets,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let code = |stage: Stage| match stage {
            Stage::Info => "101",
            Stage::PickedUp => "1",
            Stage::InTransit => "0",
            Stage::OutForDelivery => "5",
            Stage::Locker => "501",
            Stage::Delivered => "3",
            Stage::AttemptFailed => "201",
        };
        let data: Vec<_> = scans
            .iter()
            .rev()
            .map(|s| json!({"time": china(s.at), "ftime": china(s.at), "context": s.text(),
                            "status": "", "statusCode": code(s.stage), "areaCode": "", "areaName": ""}))
            .collect();
        let last = scans.last().map_or("0", |s| code(s.stage));
        let signed = scans.last().is_some_and(|s| s.stage == Stage::Delivered);
        let param = json!({
            "status": if signed { "shutdown" } else { "polling" }, "message": "", "autoCheck": "0",
            "comOld": "", "comNew": "",
            "lastResult": {"message": "ok", "nu": self.waybill, "ischeck": if signed { "1" } else { "0" },
                           "condition": "F00", "com": "yuantong", "status": "200", "state": &last[..1], "data": data}
        })
        .to_string();
        let body = trackstream_carriers::kuaidi100::form_body(
            param.as_bytes(),
            Some(&secrets.kuaidi100_salt),
        );
        (
            vec![("content-type", "application/x-www-form-urlencoded".into())],
            body,
        )
    }

    fn aftership(
        &self,
        scans: &[Scan],
        secrets: &Secrets,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let tags = |stage: Stage| match stage {
            Stage::Info => ("InfoReceived", "InfoReceived_001"),
            Stage::PickedUp => ("InTransit", "InTransit_002"),
            Stage::InTransit => ("InTransit", "InTransit_001"),
            Stage::OutForDelivery => ("OutForDelivery", "OutForDelivery_001"),
            Stage::Locker => ("AvailableForPickup", "AvailableForPickup_001"),
            Stage::Delivered => ("Delivered", "Delivered_001"),
            Stage::AttemptFailed => ("AttemptFail", "AttemptFail_002"),
        };
        let eastern = FixedOffset::west_opt(5 * 3600).unwrap_or_else(|| Utc.fix());
        let checkpoints: Vec<_> = scans
            .iter()
            .map(|s| {
                let (tag, subtag) = tags(s.stage);
                json!({"checkpoint_time": s.at.with_timezone(&eastern).to_rfc3339(), "tag": tag, "subtag": subtag,
                       "message": s.text(), "location": "New York, NY", "city": "New York", "state": "NY",
                       "country_iso3": "USA"})
            })
            .collect();
        let (tag, subtag) = scans.last().map_or(("InTransit", ""), |s| tags(s.stage));
        let body = json!({
            "event": "tracking_update", "event_id": format!("bench-{}-{}", self.waybill, scans.len()),
            "is_tracking_first_tag": false, "ts": Utc::now().timestamp(),
            "msg": {"slug": "ups", "tracking_number": self.waybill, "tag": tag, "subtag": subtag, "checkpoints": checkpoints}
        })
        .to_string()
        .into_bytes();
        let signature = trackstream_carriers::aftership::sign(&body, &secrets.aftership);
        (
            vec![
                ("aftership-hmac-sha256", signature),
                ("content-type", "application/json".into()),
            ],
            body,
        )
    }

    fn seventeen_track(
        &self,
        scans: &[Scan],
        secrets: &Secrets,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let sub = |stage: Stage| match stage {
            Stage::Info => "InfoReceived",
            Stage::PickedUp => "InTransit_PickedUp",
            Stage::InTransit => "InTransit_Other",
            Stage::OutForDelivery => "OutForDelivery_Other",
            Stage::Locker => "AvailableForPickup_Other",
            Stage::Delivered => "Delivered_Other",
            Stage::AttemptFailed => "DeliveryFailure_Other",
        };
        let china_offset = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix());
        let events: Vec<_> = scans
            .iter()
            .rev()
            .map(|s| json!({"time_iso": s.at.with_timezone(&china_offset).to_rfc3339(),
                            "time_utc": s.at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            "description": s.text(), "location": "SHENZHEN", "stage": "", "sub_status": sub(s.stage)}))
            .collect();
        let status = scans.last().map_or("InTransit", |s| {
            sub(s.stage).split('_').next().unwrap_or("InTransit")
        });
        let body = json!({
            "event": "TRACKING_UPDATED",
            "data": {"number": self.waybill, "carrier": 3011, "tag": self.order_id,
                     "track_info": {"latest_status": {"status": status, "sub_status": scans.last().map_or("", |s| sub(s.stage))},
                                    "tracking": {"providers": [{"provider": {"key": 3011}, "events": events}]}}}
        })
        .to_string()
        .into_bytes();
        let signature =
            trackstream_carriers::seventeen_track::sign(&body, &secrets.seventeen_track);
        (
            vec![
                ("sign", signature),
                ("content-type", "application/json".into()),
            ],
            body,
        )
    }

    fn easypost(
        &self,
        scans: &[Scan],
        secrets: &Secrets,
    ) -> (Vec<(&'static str, String)>, Vec<u8>) {
        let status = |stage: Stage| match stage {
            Stage::Info => "pre_transit",
            Stage::PickedUp | Stage::InTransit => "in_transit",
            Stage::OutForDelivery => "out_for_delivery",
            Stage::Locker => "available_for_pickup",
            Stage::Delivered => "delivered",
            Stage::AttemptFailed => "failure",
        };
        let details: Vec<_> = scans
            .iter()
            .map(|s| json!({"object": "TrackingDetail", "datetime": s.at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                            "message": s.text(), "status": status(s.stage), "status_detail": "",
                            "tracking_location": {"city": "CHICAGO", "state": "IL", "country": "US", "zip": "60601"}}))
            .collect();
        let body = json!({
            "id": format!("evt_{}_{}", self.waybill, scans.len()), "object": "Event", "description": "tracker.updated",
            "result": {"object": "Tracker", "tracking_code": self.waybill, "carrier": "USPS",
                       "status": scans.last().map_or("in_transit", |s| status(s.stage)), "tracking_details": details}
        })
        .to_string()
        .into_bytes();
        let signature = trackstream_carriers::easypost::sign(&body, &secrets.easypost);
        (
            vec![
                ("x-hmac-signature", signature),
                ("content-type", "application/json".into()),
            ],
            body,
        )
    }
}
