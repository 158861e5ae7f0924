//! Incident records (`tracking.incidents`) in the messenger: each per-merchant
//! record is stored as the merchant's newest version of the incident
//! ([`crate::incidents`]), then split by order: every parcel is linked to the
//! incident in its order's `{o:O}:incidents`, and each parcel that has not
//! moved again reaches the INCIDENT milestone, at the later of the incident's
//! opening and the time the parcel got stuck (event times, so a catch-up
//! decides as a live run does). The INCIDENT message then goes through the
//! same hold / decide / send path as any milestone: one per order, the order's
//! affected parcels merged, and it supersedes a held DELAYED whose every
//! parcel it covers within `incident_grace` (`decide`).
//!
//! The platform-wide record (no merchant) carries no parcels and is ignored;
//! a record older than the stored version (a replay) changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use trackstream_proto::v1::{AffectedParcel, Incident, IncidentState, Milestone, Reason};
use trackstream_proto::{keys, time};
use trackstream_runtime::order_log;

use super::batch::Input;
use super::{Messenger, Trigger};
use crate::outbox::IncidentNote;
use crate::templates;

/// Whether a record of this state asks for a buyer message (not a resolution).
fn announces(state: i32) -> bool {
    [
        IncidentState::Opened,
        IncidentState::Escalated,
        IncidentState::Updated,
    ]
    .iter()
    .any(|s| *s as i32 == state)
}

/// The event time at which `parcel` reached the INCIDENT milestone: the later
/// of the incident's opening and when the parcel got stuck (`None`: neither is
/// known, the hold uses its clock).
fn reached_at(incident: &Incident, parcel: &AffectedParcel) -> Option<prost_types::Timestamp> {
    [incident.opened_at.as_ref(), parcel.since.as_ref()]
        .into_iter()
        .flatten()
        .max_by_key(|t| time::millis(Some(t)))
        .copied()
}

impl Messenger {
    /// Stores the batch's incident records and replaces each current
    /// per-merchant one by its orders' shares (one [`Input::Incident`] per
    /// order, at the record's place in the batch); other inputs pass through.
    pub(super) async fn expand_incidents(
        &self,
        inputs: Vec<Input>,
        now: DateTime<Utc>,
    ) -> redis::RedisResult<Vec<Input>> {
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Input::IncidentRecord(incident) = input else {
                out.push(input);
                continue;
            };
            if incident.merchant_id.is_empty() {
                self.count_incident("platform");
                continue;
            }
            let recorded = self
                .incidents
                .record(&incident, now.timestamp_millis())
                .await?;
            self.count_incident(recorded.as_str());
            if !recorded.is_current() {
                continue;
            }
            let mut incident = *incident;
            let mut by_order: BTreeMap<String, Vec<AffectedParcel>> = BTreeMap::new();
            for parcel in std::mem::take(&mut incident.parcels) {
                if !parcel.order_id.is_empty() {
                    by_order
                        .entry(parcel.order_id.clone())
                        .or_default()
                        .push(parcel);
                }
            }
            let incident = Arc::new(incident);
            out.extend(by_order.into_values().map(|parcels| Input::Incident {
                incident: incident.clone(),
                parcels,
            }));
        }
        Ok(out)
    }

    fn count_incident(&self, outcome: &str) {
        self.metrics
            .incident_records
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Links one order's affected `parcels` to `incident` and returns the
    /// INCIDENT milestone of each that is still stuck (none for a
    /// resolution).
    pub(super) async fn on_incident(
        &self,
        incident: &Incident,
        parcels: &[AffectedParcel],
    ) -> redis::RedisResult<Vec<Trigger>> {
        let Some(order_id) = parcels.first().map(|p| p.order_id.as_str()) else {
            return Ok(Vec::new());
        };
        let order = order_log::order_ref(&incident.merchant_id, order_id);
        let links: Vec<(String, String)> = parcels
            .iter()
            .map(|p| {
                (
                    keys::waybill_key(&p.carrier, &p.waybill),
                    incident.incident_id.clone(),
                )
            })
            .collect();
        self.incidents.link(&order, &links).await?;
        if !announces(incident.state) {
            return Ok(Vec::new());
        }
        let note = IncidentNote {
            incident_id: incident.incident_id.clone(),
            reason: incident.reason,
            place: templates::incident::place_of(incident),
            expected_delay_hours: incident.expected_delay_hours,
            until: incident.until,
        };
        let mut triggers = Vec::new();
        for parcel in parcels.iter().filter(|p| !p.moved) {
            let Some((shipment, registered)) = self
                .parcel_of(
                    &incident.merchant_id,
                    &parcel.order_id,
                    &parcel.carrier,
                    &parcel.waybill,
                )
                .await?
            else {
                continue;
            };
            triggers.push(Trigger {
                shipment,
                milestone: Milestone::Incident,
                registered,
                location: note.place.clone(),
                reason: Reason::Unspecified,
                at: reached_at(incident, parcel),
                prediction: None,
                incident: Some(note.clone()),
            });
        }
        if !triggers.is_empty() {
            tracing::info!(incident_id = %incident.incident_id, order_id = %order,
                state = incident.state().as_str_name(), version = incident.version,
                parcels = triggers.len(), "incident holds up parcels of an order");
        }
        Ok(triggers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parcel_reaches_the_incident_when_both_it_is_stuck_and_the_incident_is_open() {
        let incident = Incident {
            opened_at: Some(time::from_millis(5_000)),
            ..Incident::default()
        };
        let stuck_before = AffectedParcel {
            since: Some(time::from_millis(1_000)),
            ..AffectedParcel::default()
        };
        let stuck_after = AffectedParcel {
            since: Some(time::from_millis(9_000)),
            ..AffectedParcel::default()
        };
        assert_eq!(
            reached_at(&incident, &stuck_before),
            Some(time::from_millis(5_000))
        );
        assert_eq!(
            reached_at(&incident, &stuck_after),
            Some(time::from_millis(9_000))
        );
        assert_eq!(
            reached_at(&Incident::default(), &AffectedParcel::default()),
            None
        );
        assert!(announces(IncidentState::Updated as i32));
        assert!(!announces(IncidentState::Resolved as i32));
    }
}
