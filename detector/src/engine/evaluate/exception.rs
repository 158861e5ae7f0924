//! The carrier exception: opened at once by a problem scan, escalated by the
//! parcel's continued silence while it is open (the one alert of its problem:
//! no silence rule watches meanwhile), resolved when the parcel moves on.

use super::*;

impl Engine {
    pub(super) fn carrier_exception(
        &self,
        wb: &mut Waybill,
        status: Status,
        reason: Reason,
        at: i64,
        late: bool,
        fx: &mut Effects,
    ) {
        let rule = RuleId::CarrierException;
        if !self.rules.carrier_exception.enabled {
            return;
        }
        let severity = self.rules.carrier_exception.severity;
        let current_is_problem = is_problem_state(&wb.state);
        if rules::is_carrier_problem(status, reason) {
            let slot = wb.state.slot_mut(rule);
            if slot.open {
                return;
            }
            slot.episode += 1;
            slot.open = true;
            slot.tier = 0;
            slot.opened_at = at;
            slot.reason = if reason == Reason::Unspecified {
                problem_reason(status) as i32
            } else {
                reason as i32
            };
            let opened = slot.clone();
            fx.outputs.push(Output::Alert(Box::new(self.alert(
                wb,
                rule,
                &opened,
                AlertState::Opened,
                severity,
                at,
            ))));
            if late && !current_is_problem {
                // A later scan already shows the parcel moving again.
                self.resolve_exception(wb, wb.state.last_event_at, fx);
            }
        } else if !late && !current_is_problem {
            self.resolve_exception(wb, at, fx);
        }
    }

    pub(super) fn resolve_exception(&self, wb: &mut Waybill, at: i64, fx: &mut Effects) {
        let rule = RuleId::CarrierException;
        let Some(slot) = wb.state.slot(rule).filter(|s| s.open).cloned() else {
            return;
        };
        let stored = wb.state.slot_mut(rule);
        stored.open = false;
        stored.deadline = 0;
        let severity = self.rules.carrier_exception.severity;
        fx.outputs.push(Output::Alert(Box::new(self.alert(
            wb,
            rule,
            &slot,
            AlertState::Resolved,
            severity,
            at,
        ))));
    }

    /// Escalates the open carrier exception one tier (its silence passed the
    /// next `escalate_after`) and arms the tier after it.
    pub(super) fn escalate_exception(&self, wb: &mut Waybill, deadline: i64, fx: &mut Effects) {
        let rule = RuleId::CarrierException;
        let config = &self.rules.carrier_exception;
        let (carrier, level) = carrier_and_level(wb);
        let escalation = config.escalation_for(&carrier, &level);
        let terminal = rules::is_terminal(wb.state.status());
        let slot = wb.state.slot_mut(rule);
        if !config.enabled || !slot.open || terminal {
            slot.deadline = 0;
            return;
        }
        slot.tier += 1;
        slot.deadline = match escalation_deadline(slot.anchor, escalation, slot.tier) {
            0 => 0,
            next => next.max(deadline.saturating_add(1)),
        };
        let slot = slot.clone();
        fx.outputs.push(Output::Alert(Box::new(self.alert(
            wb,
            rule,
            &slot,
            AlertState::Escalated,
            config.severity,
            deadline.saturating_sub(1),
        ))));
    }

    /// Arms the open carrier exception's next escalation from the parcel's
    /// last scan (its silence); disarms it when the exception is closed, the
    /// parcel is terminal (no scan will come) or no tier is left.
    pub(super) fn arm_exception(&self, wb: &mut Waybill) {
        let rule = RuleId::CarrierException;
        let config = &self.rules.carrier_exception;
        let (carrier, level) = carrier_and_level(wb);
        let escalation = config.escalation_for(&carrier, &level);
        let terminal = rules::is_terminal(wb.state.status());
        let last_scan = wb.state.last_event_at;
        let Some(slot) = wb.state.slots.iter_mut().find(|s| s.rule == rule.code()) else {
            return;
        };
        if !config.enabled || !slot.open || terminal {
            slot.deadline = 0;
            return;
        }
        slot.anchor = last_scan;
        slot.deadline = escalation_deadline(last_scan, escalation, slot.tier);
    }
}

/// Deadline of an open exception's escalation to `tier + 1`: past the last
/// scan plus `escalate_after[tier]` (tier 0 is the opening; 0 = none left).
fn escalation_deadline(last_scan: i64, escalate_after: &[std::time::Duration], tier: u32) -> i64 {
    usize::try_from(tier)
        .ok()
        .and_then(|i| escalate_after.get(i))
        .map_or(0, |t| {
            past(last_scan.saturating_add(trackstream_runtime::config::duration::millis(*t))).max(1)
        })
}

fn is_problem_state(state: &WaybillState) -> bool {
    let reason = Reason::try_from(state.reason).unwrap_or(Reason::Unspecified);
    state.events > 0 && rules::is_carrier_problem(state.status(), reason)
}

fn problem_reason(status: Status) -> Reason {
    match status {
        Status::DeliveryAttemptFailed => Reason::DeliveryAttemptFailed,
        Status::Returning | Status::Returned => Reason::ReturnToSender,
        Status::Cancelled => Reason::Cancelled,
        _ => Reason::Unspecified,
    }
}
