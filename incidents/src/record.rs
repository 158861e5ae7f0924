//! The records on `tracking.incidents`: one per merchant with affected
//! parcels (its own parcels only, the place-wide size as numbers) and one
//! platform-wide record without parcels, for every change.

use std::collections::BTreeMap;

use prost::Message as _;
use trackstream_proto::keys;
use trackstream_proto::time::from_millis;
use trackstream_proto::topics;
use trackstream_proto::v1::{
    AffectedParcel, Incident, IncidentReason, IncidentSource, IncidentState, Severity,
};
use trackstream_runtime::kafka::OutRecord;

use crate::detect::{Member, Stored};
use crate::place;
use crate::store::PlaceId;

fn at(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| from_millis(ms))
}

/// The platform-wide form of the incident (no parcels).
pub fn platform(place_id: &PlaceId, incident: &Stored) -> Incident {
    let state = IncidentState::try_from(incident.state).unwrap_or(IncidentState::Unspecified);
    let reason = IncidentReason::try_from(incident.reason).unwrap_or(IncidentReason::Unknown);
    let source = IncidentSource::try_from(incident.source).unwrap_or(IncidentSource::Detected);
    Incident {
        incident_id: incident.id.clone(),
        state: state as i32,
        severity: if incident.tier > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        } as i32,
        tier: incident.tier,
        source: source as i32,
        reason: reason as i32,
        carrier: place_id.carrier.clone(),
        place: place_id.place.clone(),
        location: Some(place::location(&place_id.place)),
        merchant_id: String::new(),
        parcels: Vec::new(),
        affected: 0,
        affected_total: incident.affected,
        active_total: incident.active,
        share: incident.share,
        baseline_share: incident.baseline_share,
        opened_at: at(incident.opened_at),
        effective_at: at(incident.effective_at),
        resolved_at: at(incident.resolved_at),
        until: at(incident.until),
        expected_delay_hours: incident.expected_delay_hours,
        moved_total: incident.moved,
        version: incident.version,
        summary: format!(
            "{} {} ({}): {} parcels held up ({:.1} % of {} active; normally {:.1} %), {} moved again",
            place_id.carrier,
            place_id.place,
            reason
                .as_str_name()
                .trim_start_matches("INCIDENT_REASON_")
                .to_ascii_lowercase(),
            incident.affected,
            incident.share * 100.0,
            incident.active,
            incident.baseline_share * 100.0,
            incident.moved,
        ),
    }
}

/// Every record of one change: the platform-wide one and one per merchant
/// with parcels linked to the incident (at most `max_parcels` listed).
pub fn records(
    place_id: &PlaceId,
    incident: &Stored,
    members: &[Member],
    max_parcels: usize,
) -> Vec<OutRecord> {
    let base = platform(place_id, incident);
    let mut by_merchant: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for member in members.iter().filter(|m| m.incident == incident.id) {
        // A parcel nobody registered yet belongs to no merchant's view.
        if !member.merchant.is_empty() {
            by_merchant
                .entry(&member.merchant)
                .or_default()
                .push(member);
        }
    }
    let mut out = Vec::with_capacity(by_merchant.len() + 1);
    for (merchant, mut parcels) in by_merchant {
        parcels.sort_by(|a, b| (&a.order, &a.waybill).cmp(&(&b.order, &b.waybill)));
        let mut record = base.clone();
        record.merchant_id = merchant.to_owned();
        record.affected = u32::try_from(parcels.len()).unwrap_or(u32::MAX);
        record.parcels = parcels
            .iter()
            .take(max_parcels)
            .map(|m| affected(m))
            .collect();
        out.push(OutRecord::new(
            topics::TRACKING_INCIDENTS,
            format!("{merchant}/{}", incident.id),
            record.encode_to_vec(),
        ));
    }
    out.push(OutRecord::new(
        topics::TRACKING_INCIDENTS,
        incident.id.clone(),
        base.encode_to_vec(),
    ));
    out
}

fn affected(member: &Member) -> AffectedParcel {
    let (carrier, waybill) =
        keys::split_waybill_key(&member.waybill).unwrap_or(("", member.waybill.as_str()));
    AffectedParcel {
        order_id: member.order.clone(),
        carrier: carrier.to_owned(),
        waybill: waybill.to_owned(),
        alert_id: member.alert_id.clone(),
        rule: member.rule.clone(),
        since: at(member.since),
        moved: member.moved > 0,
    }
}
