//! Predictions on updates and the `promise_at_risk` anchor.
//!
//! Each scan update gets the prediction its milestones and lane give
//! ([`trackstream_lanes::forecast`], read from windows the service fetched
//! before the fold, so this stays pure); the first one is kept in the state
//! (its window, confidence and time: [`trackstream_lanes::parcel::kept`]) and
//! rides on every later update. The latest update's prediction decides
//! the rule's anchor, [`WaybillState::risk_at`]: the first instant the
//! promise becomes likely missed. While the parcel stays at risk the anchor
//! stays put (one episode, not one per scan); a prediction back on track
//! moves or clears it, which resolves the open alert like any moved anchor;
//! a delivery resolves it because terminal parcels have no anchor.

use super::*;

impl Engine {
    /// Predicts every scan update of this apply (in order) and re-anchors
    /// `promise_at_risk` from the last one.
    pub(super) fn forecast(&self, wb: &mut Waybill, updates: &mut [Output], fx: &mut Effects) {
        let Some(forecaster) = self.forecaster.as_deref() else {
            return;
        };
        let mut last = None;
        for output in updates.iter_mut() {
            let Output::Update { update, .. } = output else {
                continue;
            };
            if update.kind != UpdateKind::Scan as i32 {
                continue;
            }
            let forecast = forecaster.forecast(update);
            if let Some(forecast) = &forecast {
                update.prediction = Some(forecast.prediction.clone());
                if wb.state.first_prediction.is_none() {
                    wb.state.first_prediction =
                        Some(trackstream_lanes::parcel::kept(&forecast.prediction));
                }
            }
            update.first_prediction = wb.state.first_prediction.clone();
            let now = update
                .milestones
                .as_ref()
                .map_or(0, |m| time::millis(m.newest_scan_at.as_ref()));
            last = Some((forecast.and_then(|f| f.risk_at), now));
        }
        let Some((risk, now)) = last else {
            return;
        };
        let current = wb.state.risk_at;
        let next = match risk {
            Some(at) if current > 0 && current <= now && at <= now => current,
            Some(at) => at.max(1),
            None => 0,
        };
        if next != current {
            wb.state.risk_at = next;
            let at = wb.state.folded_at.max(wb.state.last_event_at);
            self.evaluate(wb, at, fx);
        }
    }
}
