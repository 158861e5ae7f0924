//! trackstream's own canonical JSON push, for carriers and systems without a
//! format of their own (and for manual corrections).
//!
//! `POST /v1/webhooks/generic`, header `X-Trackstream-Signature: sha256=<hex>` =
//! HMAC-SHA256(raw body, secret); `X-Trackstream-Account` names the account (else
//! every configured secret is tried). The body is one scan, an array of scans, or
//! `{"scans": [...]}`:
//!
//! ```json
//! {"carrier": "sf", "waybill": "SF100", "status": "in_transit",
//!  "occurred_at": "2026-11-20T14:03:00+08:00", "description": "Arrived at hub",
//!  "code": "HUB_IN", "reason": "carrier_delay",
//!  "location": {"text": "Shenzhen hub", "city": "Shenzhen", "country": "CN"},
//!  "sequence": 3, "signer": "front desk", "photo_url": "https://...",
//!  "estimated_delivery_at": "2026-11-22T18:00:00+08:00"}
//! ```
//!
//! `carrier`, `waybill`, `status` and a time are required. The time is
//! `occurred_at` (RFC 3339 with offset) or `occurred_at_local` plus `time_zone`
//! (IANA). `status` and `reason` are canonical names, case-insensitive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trackstream_proto::v1::{
    Location, ProofOfDelivery, Provider, RawScan, Reason, Status, TrackingEvent,
};

use crate::event::ScanFacts;
use crate::signature::{constant_time_eq, find_account, hex_lower, hmac_sha256};
use crate::{
    NormalizeError, ProviderAdapter, ProviderSettings, PushError, PushItem, PushRequest,
    VerifiedPush,
};

const NAME: &str = "generic";
const SIGNATURE_HEADER: &str = "x-trackstream-signature";
const ACCOUNT_HEADER: &str = "x-trackstream-account";

/// The generic JSON adapter.
pub struct Generic;

/// One scan in the generic format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenericScan {
    /// Carrier code (aliases are canonicalized).
    pub carrier: String,
    /// Waybill.
    pub waybill: String,
    /// Canonical status name, e.g. `in_transit`.
    pub status: String,
    /// Canonical reason name, e.g. `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The sender's own code; defaults to the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339 time with offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Zone-less local time, read in `time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at_local: Option<String>,
    /// IANA zone of `occurred_at_local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GenericLocation>,
    /// Sender's ordinal of the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    /// Who signed for a delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Delivery photo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_url: Option<String>,
    /// Estimated delivery, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_delivery_at: Option<String>,
}

/// Location of a generic scan.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct GenericLocation {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub country: String,
    #[serde(default)]
    pub postal_code: String,
    #[serde(default)]
    pub admin_area_code: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Wrapped { scans: Vec<GenericScan> },
    Many(Vec<GenericScan>),
    One(Box<GenericScan>),
}

/// Signs a generic body the way senders must: `sha256=<hex hmac>`.
pub fn sign(body: &[u8], secret: &str) -> String {
    format!(
        "sha256={}",
        hex_lower(&hmac_sha256(secret.as_bytes(), body))
    )
}

/// Parses a canonical status name (`in_transit`, `IN_TRANSIT`, `InTransit`).
pub fn parse_status(name: &str) -> Option<Status> {
    let upper = screaming(name);
    Status::from_str_name(&format!("STATUS_{upper}")).filter(|s| *s != Status::Unspecified)
}

/// Parses a canonical reason name.
pub fn parse_reason(name: &str) -> Option<Reason> {
    Reason::from_str_name(&format!("REASON_{}", screaming(name)))
}

fn screaming(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev_lower = false;
    for ch in name.trim().chars() {
        if ch.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        out.push(if ch == '-' || ch == ' ' {
            '_'
        } else {
            ch.to_ascii_uppercase()
        });
    }
    out
}

fn parse_body(body: &[u8]) -> Result<Vec<GenericScan>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let scans = match serde_json::from_str::<Body>(text) {
        Ok(Body::Wrapped { scans }) | Ok(Body::Many(scans)) => scans,
        Ok(Body::One(scan)) => vec![*scan],
        Err(_) => {
            // Re-parse strictly to give the sender a precise reason.
            return Err(match serde_json::from_str::<GenericScan>(text) {
                Err(e) => format!("invalid scan JSON: {e}"),
                Ok(_) => "invalid scan JSON".to_owned(),
            });
        }
    };
    if scans.is_empty() {
        return Err("no scans in body".to_owned());
    }
    Ok(scans)
}

fn validate(scan: &GenericScan, index: usize) -> Result<(), String> {
    if scan.carrier.trim().is_empty() || scan.waybill.trim().is_empty() {
        return Err(format!("scans[{index}]: carrier and waybill are required"));
    }
    if parse_status(&scan.status).is_none() {
        return Err(format!("scans[{index}]: unknown status {:?}", scan.status));
    }
    if let Some(reason) = &scan.reason
        && parse_reason(reason).is_none()
    {
        return Err(format!("scans[{index}]: unknown reason {reason:?}"));
    }
    if scan_time(scan).is_none() {
        return Err(format!(
            "scans[{index}]: occurred_at (RFC 3339 with offset) or occurred_at_local + time_zone is required"
        ));
    }
    Ok(())
}

fn scan_time(scan: &GenericScan) -> Option<crate::time::ParsedTime> {
    if let Some(at) = &scan.occurred_at {
        return crate::time::parse_with_offset(at);
    }
    let local = scan.occurred_at_local.as_deref()?;
    let zone = scan.time_zone.as_deref()?.parse::<chrono_tz::Tz>().ok()?;
    crate::time::parse_local_or_offset(local, zone)
}

impl ProviderAdapter for Generic {
    fn provider(&self) -> Provider {
        Provider::Generic
    }

    fn route(&self) -> &'static str {
        NAME
    }

    fn accept(
        &self,
        request: &PushRequest<'_>,
        settings: &ProviderSettings,
    ) -> Result<VerifiedPush, PushError> {
        let account = verify(request, settings)?;
        let scans = parse_body(request.body).map_err(PushError::BadRequest)?;
        for (index, scan) in scans.iter().enumerate() {
            validate(scan, index).map_err(PushError::BadRequest)?;
        }
        // Group by waybill, keeping push order, so each record holds one waybill.
        let mut groups: Vec<((String, String), Vec<GenericScan>)> = Vec::new();
        for mut scan in scans {
            scan.carrier = crate::carrier_code::canonical(&scan.carrier);
            scan.waybill = scan.waybill.trim().to_owned();
            let key = (scan.carrier.clone(), scan.waybill.clone());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(scan),
                None => groups.push((key, vec![scan])),
            }
        }
        let items = groups
            .into_iter()
            .map(|((carrier, waybill), scans)| {
                let payload =
                    serde_json::to_vec(&scans).map_err(|e| PushError::bad(e.to_string()))?;
                Ok(PushItem {
                    carrier,
                    waybill,
                    payload,
                    envelope: BTreeMap::new(),
                })
            })
            .collect::<Result<Vec<_>, PushError>>()?;
        Ok(VerifiedPush { account, items })
    }

    fn normalize(
        &self,
        raw: &RawScan,
        _settings: &ProviderSettings,
    ) -> Result<Vec<TrackingEvent>, NormalizeError> {
        let scans: Vec<GenericScan> = serde_json::from_slice(&raw.payload)
            .map_err(|e| NormalizeError::unparseable(NAME, e))?;
        scans
            .iter()
            .enumerate()
            .map(|(index, scan)| {
                validate(scan, index).map_err(|e| NormalizeError::unparseable(NAME, e))?;
                let status = parse_status(&scan.status).unwrap_or(Status::InTransit);
                let reason = scan
                    .reason
                    .as_deref()
                    .and_then(parse_reason)
                    .unwrap_or(Reason::Unspecified);
                let mut facts = ScanFacts::new(
                    status,
                    reason,
                    scan.code
                        .clone()
                        .unwrap_or_else(|| scan.status.to_ascii_lowercase()),
                );
                facts.raw_text = scan.description.clone().unwrap_or_default();
                facts.occurred_at = scan_time(scan);
                if let Some(loc) = &scan.location {
                    facts.location = Location {
                        text: loc.text.clone(),
                        city: loc.city.clone(),
                        region: loc.region.clone(),
                        country: loc.country.clone(),
                        postal_code: loc.postal_code.clone(),
                        admin_area_code: loc.admin_area_code.clone(),
                    };
                }
                facts.carrier_sequence = scan.sequence.unwrap_or(0);
                if scan.signer.is_some() || scan.photo_url.is_some() {
                    facts.proof_of_delivery = Some(ProofOfDelivery {
                        signer: scan.signer.clone().unwrap_or_default(),
                        photo_url: scan.photo_url.clone().unwrap_or_default(),
                    });
                }
                facts.estimated_delivery_at = scan
                    .estimated_delivery_at
                    .as_deref()
                    .and_then(crate::time::parse_with_offset)
                    .map(|t| t.utc);
                Ok(facts.into_event(raw, Provider::Generic))
            })
            .collect()
    }
}

fn verify(request: &PushRequest<'_>, settings: &ProviderSettings) -> Result<String, PushError> {
    let Some(header) = request.header(SIGNATURE_HEADER) else {
        if settings.allow_unsigned {
            return Ok(String::new());
        }
        return Err(PushError::unauthorized(
            "missing X-Trackstream-Signature header",
        ));
    };
    let received = header.trim().as_bytes();
    let compute = |s: &crate::AccountSecret| sign(request.body, &s.secret).into_bytes();
    match request.header(ACCOUNT_HEADER) {
        Some(account) => settings
            .secret_for(account)
            .filter(|s| constant_time_eq(&compute(s), received))
            .map(|s| s.account.clone())
            .ok_or_else(|| PushError::unauthorized("signature does not match")),
        None => find_account(&settings.secrets, received, compute)
            .map(|s| s.account.clone())
            .ok_or_else(|| PushError::unauthorized("signature does not match")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountSecret;

    fn settings() -> ProviderSettings {
        ProviderSettings {
            secrets: vec![AccountSecret {
                account: "acme".into(),
                secret: "s3cret".into(),
            }],
            ..Default::default()
        }
    }

    fn request<'a>(
        headers: &'a BTreeMap<String, String>,
        query: &'a BTreeMap<String, String>,
        body: &'a [u8],
    ) -> PushRequest<'a> {
        PushRequest {
            headers,
            query,
            body,
        }
    }

    #[test]
    fn splits_by_waybill_and_normalizes_with_offsets() {
        let body = br#"{"scans":[
            {"carrier":"SF","waybill":"A1","status":"picked_up","occurred_at":"2026-11-20T10:00:00+08:00"},
            {"carrier":"sf","waybill":"B2","status":"IN_TRANSIT","occurred_at":"2026-11-20T11:00:00Z"},
            {"carrier":"shunfeng","waybill":"A1","status":"InTransit","occurred_at_local":"2026-11-20 12:00:00","time_zone":"Asia/Shanghai"}
        ]}"#;
        let headers = BTreeMap::from([(SIGNATURE_HEADER.to_owned(), sign(body, "s3cret"))]);
        let query = BTreeMap::new();
        let push = Generic
            .accept(&request(&headers, &query, body), &settings())
            .expect("valid push");
        assert_eq!(push.account, "acme");
        let waybills: Vec<_> = push
            .items
            .iter()
            .map(|i| (i.carrier.as_str(), i.waybill.as_str()))
            .collect();
        assert_eq!(waybills, [("sf", "A1"), ("sf", "B2")]);

        let raw = RawScan {
            carrier: "sf".into(),
            waybill: "A1".into(),
            payload: push.items[0].payload.clone(),
            ..Default::default()
        };
        let events = Generic.normalize(&raw, &settings()).expect("normalizes");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].status, Status::PickedUp as i32);
        assert_eq!(events[0].source_time_zone, "+08:00");
        assert_eq!(
            events[1].zone_source,
            trackstream_proto::v1::ZoneSource::ProviderDefault as i32
        );
        assert_eq!(
            trackstream_proto::time::millis(events[0].occurred_at.as_ref()),
            1_795_140_000_000
        );
    }

    #[test]
    fn rejects_forged_signature_and_bad_bodies() {
        let query = BTreeMap::new();
        let body = br#"{"carrier":"sf","waybill":"A1","status":"picked_up","occurred_at":"2026-11-20T10:00:00Z"}"#;
        let forged = BTreeMap::from([(SIGNATURE_HEADER.to_owned(), sign(body, "wrong"))]);
        assert!(matches!(
            Generic.accept(&request(&forged, &query, body), &settings()),
            Err(PushError::Unauthorized(_))
        ));
        let missing = BTreeMap::new();
        assert!(matches!(
            Generic.accept(&request(&missing, &query, body), &settings()),
            Err(PushError::Unauthorized(_))
        ));
        for bad in [&b"{"[..], b"[]", br#"{"carrier":"sf","waybill":"A1","status":"teleported","occurred_at":"2026-11-20T10:00:00Z"}"#, br#"{"carrier":"sf","waybill":"A1","status":"picked_up","occurred_at":"2026-11-20 10:00:00"}"#, b"\xff\xfe"] {
            let headers = BTreeMap::from([(SIGNATURE_HEADER.to_owned(), sign(bad, "s3cret"))]);
            assert!(
                matches!(Generic.accept(&request(&headers, &query, bad), &settings()), Err(PushError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn status_names_parse_in_every_spelling() {
        assert_eq!(
            parse_status("out_for_delivery"),
            Some(Status::OutForDelivery)
        );
        assert_eq!(parse_status("OutForDelivery"), Some(Status::OutForDelivery));
        assert_eq!(parse_status("unspecified"), None);
        assert_eq!(
            parse_reason("recipient-unreachable"),
            Some(Reason::RecipientUnreachable)
        );
    }
}
