//! Rule evaluation: how one event moves a waybill's status and anchors, how
//! deadlines are armed from the rules' tiers, and the alerts a fired deadline
//! or a carrier exception emits. Called by the fold in `engine.rs`.

use super::*;

mod exception;

impl Engine {
    /// Applies one event to the state: status, anchors, carrier exceptions,
    /// return received, then re-arms timers.
    pub(super) fn apply_to_state(
        &self,
        wb: &mut Waybill,
        event: &TrackingEvent,
        at: i64,
        fx: &mut Effects,
    ) {
        let status = Status::try_from(event.status).unwrap_or(Status::Unspecified);
        let reason = Reason::try_from(event.reason).unwrap_or(Reason::Unspecified);
        let state = &mut wb.state;
        let late = state.events > 0 && at < state.last_event_at;
        if wins(status, at, state) {
            state.status = status as i32;
            state.status_at = at;
            state.reason = reason as i32;
        }
        if (state.events == 0 || at >= state.last_event_at)
            && let Some(location) = event.location.as_ref().filter(|l| !place_unknown(l))
        {
            state.place = Some(location.clone());
        }
        state.last_event_at = if state.events == 0 {
            at
        } else {
            state.last_event_at.max(at)
        };
        state.events = state.events.saturating_add(1);
        if matches!(status, Status::Pending | Status::InfoReceived)
            && (state.info_at == 0 || at < state.info_at)
        {
            state.info_at = at;
        }
        self.carrier_exception(wb, status, reason, at, late, fx);
        // The refund trigger needs this parcel's delivery: a delivery dated
        // before the join window is an earlier parcel's under the same number.
        let window = trackstream_runtime::config::duration::millis(self.rules.join_window);
        if !wb.state.return_received
            && wb.state.status() == Status::Delivered
            && let Some(reg) = wb
                .registration
                .as_ref()
                .filter(|r| r.is_return && wb.state.status_at >= registration::join_from(r, window))
        {
            wb.state.return_received = true;
            fx.outputs.push(return_received(&wb.key, reg, event));
        }
        self.evaluate(wb, wb.state.last_event_at, fx);
    }

    /// Fires `rule`'s deadline (armed at [`past`] its threshold): opens or
    /// escalates its alert, effective at the threshold. A deadline whose rule
    /// no longer watches the parcel from that anchor (state stored by an
    /// earlier version with other watching rules) is re-evaluated instead.
    pub(super) fn fire(&self, wb: &mut Waybill, rule: RuleId, deadline: i64, fx: &mut Effects) {
        wb.state.folded_at = wb.state.folded_at.max(deadline);
        let threshold = deadline.saturating_sub(1);
        if rule == RuleId::CarrierException {
            self.escalate_exception(wb, deadline, fx);
            return;
        }
        let Some(config) = self.rules.timer(rule) else {
            wb.state.slot_mut(rule).deadline = 0;
            return;
        };
        if wb.state.slot(rule).map(|s| s.anchor) != anchor(rule, wb) {
            self.evaluate(wb, threshold, fx);
            return;
        }
        let (carrier, level) = carrier_and_level(wb);
        let tiers = config.tiers_for(&carrier, &level);
        let slot = wb.state.slot_mut(rule);
        let state = if slot.open {
            slot.tier += 1;
            AlertState::Escalated
        } else {
            slot.episode += 1;
            slot.open = true;
            slot.tier = 0;
            slot.opened_at = threshold;
            AlertState::Opened
        };
        slot.deadline = next_deadline(slot.anchor, tiers, slot.tier, deadline);
        let slot = slot.clone();
        let severity = config.severity(slot.tier);
        fx.outputs.push(Output::Alert(Box::new(
            self.alert(wb, rule, &slot, state, severity, threshold),
        )));
    }

    /// Resolves, re-arms or disarms every timer rule after a change, then the
    /// open carrier exception's escalation.
    ///
    /// A stall-type rule (anchored at the last scan or status change) resolves
    /// when its anchor moves: the parcel moved. The "not picked up" rules resolve
    /// only when the parcel is picked up; their anchor (earliest of registration
    /// and info received) can move earlier when a registration joins late, which
    /// reschedules the open alert instead of resolving it, so a late registration
    /// yields the alerts of an early one.
    pub(super) fn evaluate(&self, wb: &mut Waybill, at: i64, fx: &mut Effects) {
        let (carrier, level) = carrier_and_level(wb);
        for rule in RuleId::TIMED {
            let config = self.rules.timer(rule);
            let anchor = config.and_then(|_| anchor(rule, wb));
            let tiers = config.map_or(&[][..], |c| c.tiers_for(&carrier, &level));
            let first = tiers
                .first()
                .map_or(0, |t| trackstream_runtime::config::duration::millis(*t));
            let Some(index) = wb.state.slots.iter().position(|s| s.rule == rule.code()) else {
                if let (Some(_), Some(anchor)) = (config, anchor) {
                    let slot = wb.state.slot_mut(rule);
                    slot.anchor = anchor;
                    slot.deadline = past(anchor.saturating_add(first)).max(1);
                }
                continue;
            };
            let current = wb.state.slots[index].clone();
            let sticky = matches!(rule, RuleId::NoPickup | RuleId::ReturnNotPickedUp);
            if current.open && anchor != Some(current.anchor) {
                if let (true, Some(anchor)) = (sticky, anchor) {
                    let slot = &mut wb.state.slots[index];
                    slot.anchor = anchor;
                    if slot.deadline > 0 {
                        slot.deadline =
                            next_deadline(anchor, tiers, slot.tier, past(slot.opened_at));
                    }
                    continue;
                }
                let severity = config.map_or(Severity::Warning, |c| c.severity(current.tier));
                let slot = &mut wb.state.slots[index];
                slot.open = false;
                slot.deadline = 0;
                fx.outputs.push(Output::Alert(Box::new(self.alert(
                    wb,
                    rule,
                    &current,
                    AlertState::Resolved,
                    severity,
                    at,
                ))));
            }
            let slot = &mut wb.state.slots[index];
            if !slot.open {
                match anchor {
                    Some(anchor) => {
                        slot.anchor = anchor;
                        slot.deadline = past(anchor.saturating_add(first)).max(1);
                    }
                    None => slot.deadline = 0,
                }
            }
        }
        self.arm_exception(wb);
    }

    pub(super) fn alert(
        &self,
        wb: &Waybill,
        rule: RuleId,
        slot: &RuleSlot,
        state: AlertState,
        severity: Severity,
        effective_at: i64,
    ) -> Alert {
        let (carrier, waybill) = keys::split_waybill_key(&wb.key).unwrap_or(("", &wb.key));
        let reg = wb.registration.as_ref();
        let status = wb.state.status();
        let summary = format!(
            "{} {} {}: {} (tier {}, last scan {}, status {})",
            wb.key,
            rule.name(),
            state
                .as_str_name()
                .trim_start_matches("ALERT_STATE_")
                .to_ascii_lowercase(),
            describe(rule),
            slot.tier,
            time::from_proto(&time::from_millis(wb.state.last_event_at))
                .filter(|_| wb.state.events > 0)
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
            status.as_str_name().trim_start_matches("STATUS_"),
        );
        Alert {
            alert_id: alert_id(&wb.key, rule, slot.episode),
            rule: rule.name().to_owned(),
            state: state as i32,
            severity: severity as i32,
            tier: slot.tier,
            episode: slot.episode,
            carrier: carrier.to_owned(),
            waybill: waybill.to_owned(),
            order_id: reg.map(|r| r.order_id.clone()).unwrap_or_default(),
            merchant_id: reg.map(|r| r.merchant_id.clone()).unwrap_or_default(),
            reason: slot.reason,
            last_status: status as i32,
            last_event_at: (wb.state.events > 0).then(|| time::from_millis(wb.state.last_event_at)),
            effective_at: Some(time::from_millis(effective_at)),
            opened_at: Some(time::from_millis(slot.opened_at)),
            summary,
            lead_seconds: lead_seconds(rule, reg, slot),
            location: stuck_at(rule, wb),
            incident_id: String::new(),
        }
    }
}

/// Whether a scan's location names no place at all.
fn place_unknown(location: &Location) -> bool {
    location.city.is_empty() && location.region.is_empty() && location.text.is_empty()
}

/// Where the parcel is stuck, for the incident detector: the newest scan's
/// location, or — before pickup — the registration's origin area.
fn stuck_at(rule: RuleId, wb: &Waybill) -> Option<Location> {
    let before_pickup = matches!(rule, RuleId::NoPickup | RuleId::ReturnNotPickedUp);
    if !before_pickup && let Some(place) = wb.state.place.as_ref() {
        return Some(place.clone());
    }
    let origin = wb.registration.as_ref()?.origin.as_ref()?;
    Some(Location {
        region: origin.province.clone(),
        city: origin.city.clone(),
        admin_area_code: origin.admin_code.clone(),
        ..Location::default()
    })
    .filter(|l| !place_unknown(l) || !l.admin_area_code.is_empty())
}

/// How long before the promise `promise_at_risk` opened (0 for other rules).
fn lead_seconds(rule: RuleId, reg: Option<&Shipment>, slot: &RuleSlot) -> i64 {
    let promise = reg.map_or(0, |r| time::millis(r.promised_delivery_at.as_ref()));
    if rule != RuleId::PromiseAtRisk || promise == 0 {
        return 0;
    }
    (promise - slot.opened_at).max(0) / 1000
}

/// The instant a deadline fires for `threshold`: the first millisecond past
/// it. Thresholds are strict ("more than 24 h without a scan"), and the fold
/// folds an event at or before a deadline first, so a scan exactly at the
/// threshold moves the parcel on before anything fires (and a deadline is
/// never due while the clock stands exactly at its threshold).
pub(super) fn past(threshold: i64) -> i64 {
    threshold.saturating_add(1)
}

/// Deadline of the tier after `tier`, never at or before `after` (0 = none left).
pub(super) fn next_deadline(
    anchor: i64,
    tiers: &[std::time::Duration],
    tier: u32,
    after: i64,
) -> i64 {
    usize::try_from(tier.saturating_add(1))
        .ok()
        .and_then(|i| tiers.get(i))
        .map_or(0, |t| {
            past(anchor.saturating_add(trackstream_runtime::config::duration::millis(*t)))
                .max(after.saturating_add(1))
        })
}

fn wins(status: Status, at: i64, state: &WaybillState) -> bool {
    if state.events == 0 {
        return true;
    }
    let current = state.status();
    let key = |s: Status, t: i64| (rules::is_terminal(s), t, rules::rank(s));
    key(status, at) > key(current, state.status_at)
}

pub(super) fn anchor(rule: RuleId, wb: &Waybill) -> Option<i64> {
    let state = &wb.state;
    let status = if state.events == 0 {
        Status::Unspecified
    } else {
        state.status()
    };
    let reg = wb.registration.as_ref();
    let registered_at = reg.map_or(0, |r| time::millis(r.registered_at.as_ref()));
    let is_return = reg.is_some_and(|r| r.is_return);
    let not_picked_up = matches!(
        status,
        Status::Unspecified | Status::Pending | Status::InfoReceived
    );
    // One problem, one alert: while a carrier exception is open, its own
    // escalation watches the silence and no silence rule does.
    let exception_open = state.slot(RuleId::CarrierException).is_some_and(|s| s.open);
    let silent = |rule: RuleId| !exception_open && rules::silence_rule(status) == Some(rule);
    let earliest = [registered_at, state.info_at]
        .into_iter()
        .filter(|t| *t > 0)
        .min();
    match rule {
        RuleId::NoPickup => (not_picked_up && !is_return).then_some(earliest).flatten(),
        RuleId::ReturnNotPickedUp => (not_picked_up && is_return).then_some(earliest).flatten(),
        RuleId::StalledInTransit | RuleId::StalledInCustoms => {
            silent(rule).then_some(state.last_event_at)
        }
        RuleId::OutForDeliveryNotDelivered | RuleId::UncollectedAtPickupPoint => {
            silent(rule).then_some(state.status_at)
        }
        RuleId::PromisedDateMissed => reg
            .map(|r| time::millis(r.promised_delivery_at.as_ref()))
            .filter(|p| *p > 0 && !rules::is_terminal(status)),
        RuleId::PromiseAtRisk => (state.risk_at > 0 && !rules::is_terminal(status))
            .then_some(state.risk_at)
            .filter(|_| reg.is_some_and(|r| r.promised_delivery_at.is_some())),
        RuleId::CarrierException => None,
    }
}

pub(super) fn carrier_and_level(wb: &Waybill) -> (String, String) {
    let carrier = keys::split_waybill_key(&wb.key)
        .map_or("", |(c, _)| c)
        .to_owned();
    let level = wb
        .registration
        .as_ref()
        .map(|r| r.service_level.clone())
        .unwrap_or_default();
    (carrier, level)
}

fn describe(rule: RuleId) -> &'static str {
    match rule {
        RuleId::NoPickup => "not picked up",
        RuleId::StalledInTransit => "no new scan",
        RuleId::StalledInCustoms => "no new scan in customs",
        RuleId::OutForDeliveryNotDelivered => "out for delivery but not delivered",
        RuleId::UncollectedAtPickupPoint => "waiting at locker / pickup point",
        RuleId::PromisedDateMissed => "promised delivery time passed",
        RuleId::ReturnNotPickedUp => "return not picked up",
        RuleId::CarrierException => "carrier reported a problem",
        RuleId::PromiseAtRisk => "promised delivery time likely missed",
    }
}
