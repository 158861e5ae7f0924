//! Operators' declarations: a closure of an area links every parcel active
//! there at once; a lift resolves the incident.

use trackstream_carriers::carrier_code;
use trackstream_proto::v1::{IncidentDeclaration, IncidentReason};
use trackstream_proto::{time, topics};
use trackstream_runtime::kafka::HandlerError;

use super::{IncidentDetector, failed};
use crate::config::IncidentsConfig;
use crate::detect;
use crate::place;
use crate::store::PlaceId;

impl IncidentDetector {
    /// An operator's declaration (or lift).
    pub(super) async fn on_declaration(
        &self,
        declaration: &IncidentDeclaration,
    ) -> Result<Vec<PlaceId>, HandlerError> {
        let mut changed = Vec::new();
        if !declaration.lift_incident_id.is_empty() {
            let Some(at) = self
                .store
                .place_of(&declaration.lift_incident_id)
                .await
                .map_err(failed("lift"))?
            else {
                self.count(topics::INCIDENTS_DECLARED, "unknown_incident");
                tracing::warn!(incident_id = %declaration.lift_incident_id, "incidents: lift of an unknown incident ignored");
                return Ok(changed);
            };
            let when = time::millis(declaration.starts_at.as_ref());
            let snapshot = self.read(&at, when).await.map_err(failed("lift"))?;
            if let Some(current) = snapshot
                .current
                .as_ref()
                .filter(|c| c.id == declaration.lift_incident_id)
                && let Some(decision) = detect::lift(current, when.max(current.effective_at))
                && self
                    .commit(&at, &snapshot, &decision)
                    .await
                    .map_err(failed("lift"))?
            {
                self.store
                    .set_declared(&at, false)
                    .await
                    .map_err(failed("lift"))?;
                changed.push(at);
            }
            self.count(topics::INCIDENTS_DECLARED, "lifted");
            return Ok(changed);
        }
        let carrier = carrier_code::canonical(&declaration.carrier);
        let Some(province) = place::province(&declaration.province, "") else {
            self.count(topics::INCIDENTS_DECLARED, "no_area");
            tracing::warn!(carrier = %carrier, "incidents: declaration without a province ignored");
            return Ok(changed);
        };
        let city = place::city(&declaration.city).unwrap_or_default();
        let mut places: Vec<String> = self
            .store
            .places(&carrier)
            .await
            .map_err(failed("declaration"))?
            .into_iter()
            .filter(|p| place::within(p, &province, &city))
            .collect();
        if places.is_empty() {
            places.push(if city.is_empty() {
                province.clone()
            } else {
                format!("{province}/{city}")
            });
        }
        let reason = IncidentReason::try_from(declaration.reason)
            .ok()
            .filter(|r| *r != IncidentReason::Unspecified)
            .unwrap_or(IncidentReason::Unknown);
        for key in places {
            let at = PlaceId {
                carrier: carrier.clone(),
                place: key,
            };
            let newest = self
                .store
                .newest(&at)
                .await
                .map_err(failed("declaration"))?;
            let when = match time::millis(declaration.starts_at.as_ref()) {
                0 if newest > 0 => newest,
                0 => chrono::Utc::now().timestamp_millis(),
                starts => starts,
            };
            let window = IncidentsConfig::ms(self.config.active_window);
            let active = self
                .store
                .active(&at, when.saturating_sub(window))
                .await
                .map_err(failed("declaration"))?;
            for (member, _) in &active {
                self.store
                    .hold(&at, member, true)
                    .await
                    .map_err(failed("declaration"))?;
            }
            for _ in 0..8 {
                let snapshot = self.read(&at, when).await.map_err(failed("declaration"))?;
                let view = self.view(&at, when, &snapshot);
                let decision =
                    detect::declare(&view, reason, time::millis(declaration.until.as_ref()));
                if self
                    .commit(&at, &snapshot, &decision)
                    .await
                    .map_err(failed("declaration"))?
                {
                    changed.push(at.clone());
                    break;
                }
            }
        }
        self.count(topics::INCIDENTS_DECLARED, "declared");
        tracing::info!(carrier = %carrier, province = %province, city = %city,
            declared_by = %declaration.declared_by, places = changed.len(), "incident declared");
        Ok(changed)
    }
}
