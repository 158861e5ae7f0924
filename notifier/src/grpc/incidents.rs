//! `ListIncidents`: the caller's merchant's incidents, newest opened first —
//! every open one, and on request those resolved within the last `days` —
//! each as the merchant's newest record, which lists only that merchant's
//! affected parcels (the detector writes one record per merchant; the
//! platform-wide record is never stored). Another merchant's incidents are
//! simply not in the caller's keys. `WatchIncidents` (in the service) streams
//! the same per-merchant records live; a client keeps the highest `version`
//! of each incident, as re-deliveries may repeat or reorder them.
//!
//! Also the link of `GetOrder`'s open alerts to their parcels' incidents.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use trackstream_proto::keys;
use trackstream_proto::v1::{Alert, Incidents, ListIncidentsRequest};
use trackstream_runtime::ApiError;

use crate::incidents::IncidentStore;

/// The look back for resolved incidents when the request gives none.
pub const DEFAULT_DAYS: u32 = 7;
/// The longest look back (the store keeps a resolved incident 30 days by
/// default, `retention.after_terminal`).
pub const MAX_DAYS: u32 = 30;
/// Incidents returned at most.
pub const MAX_LISTED: usize = 500;

/// The look back of `request` in days: `days`, or [`DEFAULT_DAYS`] for 0;
/// over [`MAX_DAYS`] is INVALID_ARGUMENT (also when resolved ones are not
/// asked for: a bad request is bad either way).
pub fn look_back_days(request: &ListIncidentsRequest) -> Result<u32, ApiError> {
    match request.days {
        0 => Ok(DEFAULT_DAYS),
        days if days > MAX_DAYS => Err(ApiError::BadRequest(format!(
            "days must be at most {MAX_DAYS}, got {days}"
        ))),
        days => Ok(days),
    }
}

/// The incidents of `merchant` as `request` asks, at `now` (the notifier's
/// clock).
pub async fn list(
    store: &IncidentStore,
    merchant: &str,
    request: &ListIncidentsRequest,
    now: DateTime<Utc>,
) -> Result<Incidents, ApiError> {
    let days = look_back_days(request)?;
    let now_ms = now.timestamp_millis();
    let since = request
        .include_resolved
        .then(|| now_ms.saturating_sub(i64::from(days) * 86_400_000));
    let mut incidents = store
        .list(merchant, now_ms, since)
        .await
        .map_err(ApiError::from)?;
    incidents.truncate(MAX_LISTED);
    Ok(Incidents { incidents })
}

/// Fills the `incident_id` of alerts whose parcel is linked to an incident
/// (`links`: waybill key → incident id). An id the alert already carries
/// stands.
pub fn link_alerts(alerts: &mut [Alert], links: &HashMap<String, String>) {
    for alert in alerts.iter_mut().filter(|a| a.incident_id.is_empty()) {
        if let Some(id) = links.get(&keys::waybill_key(&alert.carrier, &alert.waybill)) {
            alert.incident_id.clone_from(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_default_to_a_week_and_stop_at_thirty() {
        let days = |days| ListIncidentsRequest {
            include_resolved: true,
            days,
        };
        assert_eq!(look_back_days(&days(0)).ok(), Some(DEFAULT_DAYS));
        assert_eq!(look_back_days(&days(30)).ok(), Some(30));
        assert!(matches!(
            look_back_days(&days(31)),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn alerts_of_linked_parcels_name_their_incident() {
        let alert = |waybill: &str| Alert {
            carrier: "sf".into(),
            waybill: waybill.into(),
            ..Alert::default()
        };
        let mut alerts = vec![alert("SF1"), alert("SF2")];
        let links = HashMap::from([(keys::waybill_key("sf", "SF1"), "inc-1".to_owned())]);
        link_alerts(&mut alerts, &links);
        assert_eq!(alerts[0].incident_id, "inc-1");
        assert_eq!(alerts[1].incident_id, "");
    }
}
