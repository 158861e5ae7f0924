//! Rules as configuration: which stalls and exceptions raise alerts, after how
//! long, how they escalate, and per-carrier / per-service-level overrides.
//!
//! ```toml
//! [rules.stalled_in_transit]
//! tiers = ["24h", "48h", "72h"]          # open, then escalate twice
//! severities = ["warning", "warning", "critical"]
//! [[rules.stalled_in_transit.overrides]]
//! carrier = "sf"
//! service_level = "express"
//! tiers = ["12h", "24h"]
//! [rules.carrier_exception]
//! escalate_after = ["24h", "72h"]       # silence while the exception is open
//! ```
//!
//! Thresholds are strict: a tier of 24 h means *more than* 24 h, so a scan
//! exactly 24 h after the last one is folded before the deadline and raises
//! nothing (the engine arms each deadline at the first millisecond past its
//! threshold). Which rule watches a parcel in which status: [`silence_rule`]
//! and `docs/RULES.md`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use trackstream_proto::v1::Severity;
use trackstream_runtime::config::duration;

mod status;

pub use status::{is_carrier_problem, is_terminal, rank, silence_rule};

/// The stable id of each rule; part of every alert id, so never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    /// Registered / info received but not picked up.
    NoPickup,
    /// No new scan while moving (picked up, in transit).
    StalledInTransit,
    /// No new scan while in customs clearance (longer tiers than transit).
    StalledInCustoms,
    /// Out for delivery but not delivered.
    OutForDeliveryNotDelivered,
    /// Waiting at a locker or pickup point.
    UncollectedAtPickupPoint,
    /// Promised delivery time passed without delivery.
    PromisedDateMissed,
    /// A return shipment not picked up.
    ReturnNotPickedUp,
    /// A carrier-reported problem (raised at once).
    CarrierException,
    /// The prediction says the promised delivery time will likely be missed
    /// (before it passes).
    PromiseAtRisk,
}

impl RuleId {
    /// Every timer-driven rule, in evaluation order.
    pub const TIMED: [RuleId; 8] = [
        RuleId::NoPickup,
        RuleId::StalledInTransit,
        RuleId::StalledInCustoms,
        RuleId::OutForDeliveryNotDelivered,
        RuleId::UncollectedAtPickupPoint,
        RuleId::PromisedDateMissed,
        RuleId::ReturnNotPickedUp,
        RuleId::PromiseAtRisk,
    ];

    /// The name used in config, alert records, timer members and alert ids.
    pub fn name(self) -> &'static str {
        match self {
            RuleId::NoPickup => "no_pickup",
            RuleId::StalledInTransit => "stalled_in_transit",
            RuleId::StalledInCustoms => "stalled_in_customs",
            RuleId::OutForDeliveryNotDelivered => "out_for_delivery_not_delivered",
            RuleId::UncollectedAtPickupPoint => "uncollected_at_pickup_point",
            RuleId::PromisedDateMissed => "promised_date_missed",
            RuleId::ReturnNotPickedUp => "return_not_picked_up",
            RuleId::CarrierException => "carrier_exception",
            RuleId::PromiseAtRisk => "promise_at_risk",
        }
    }

    /// Parses a rule name.
    pub fn from_name(name: &str) -> Option<RuleId> {
        RuleId::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Every rule.
    pub const ALL: [RuleId; 9] = [
        RuleId::NoPickup,
        RuleId::StalledInTransit,
        RuleId::StalledInCustoms,
        RuleId::OutForDeliveryNotDelivered,
        RuleId::UncollectedAtPickupPoint,
        RuleId::PromisedDateMissed,
        RuleId::ReturnNotPickedUp,
        RuleId::CarrierException,
        RuleId::PromiseAtRisk,
    ];

    /// The compact code stored in Redis (state slots and timer members). Redis
    /// holds one state per active parcel, so two bytes instead of a 20-byte name
    /// per slot and per timer member is most of the memory budget. Never reuse one.
    pub fn code(self) -> &'static str {
        match self {
            RuleId::NoPickup => "np",
            RuleId::StalledInTransit => "st",
            RuleId::StalledInCustoms => "sc",
            RuleId::OutForDeliveryNotDelivered => "od",
            RuleId::UncollectedAtPickupPoint => "up",
            RuleId::PromisedDateMissed => "pd",
            RuleId::ReturnNotPickedUp => "rp",
            RuleId::CarrierException => "ce",
            RuleId::PromiseAtRisk => "pr",
        }
    }

    /// Parses a [`RuleId::code`].
    pub fn from_code(code: &str) -> Option<RuleId> {
        RuleId::ALL.into_iter().find(|r| r.code() == code)
    }
}

fn severity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Severity>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    names
        .iter()
        .map(|n| {
            Severity::from_str_name(&format!("SEVERITY_{}", n.to_ascii_uppercase()))
                .filter(|s| *s != Severity::Unspecified)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown severity {n:?}")))
        })
        .collect()
}

/// A threshold override for one carrier and/or service level.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Canonical carrier code this applies to (any when absent).
    #[serde(default)]
    pub carrier: Option<String>,
    /// Service level this applies to (any when absent).
    #[serde(default)]
    pub service_level: Option<String>,
    /// Replacement tiers.
    #[serde(with = "duration::list")]
    pub tiers: Vec<Duration>,
}

/// A timer-driven rule: tier `i` fires at `anchor + tiers[i]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimerRule {
    /// Off switch.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Offsets from the rule's anchor: the first opens, later ones escalate.
    #[serde(with = "duration::list")]
    pub tiers: Vec<Duration>,
    /// Severity per tier (the last one repeats).
    #[serde(default = "default_severities", deserialize_with = "severity")]
    pub severities: Vec<Severity>,
    /// Most specific match wins (carrier + service level, then carrier, then level).
    #[serde(default)]
    pub overrides: Vec<Override>,
}

fn yes() -> bool {
    true
}

fn default_severities() -> Vec<Severity> {
    vec![Severity::Warning, Severity::Warning, Severity::Critical]
}

impl TimerRule {
    fn hours(tiers: &[u64]) -> Self {
        TimerRule {
            enabled: true,
            tiers: tiers
                .iter()
                .map(|h| Duration::from_secs(h * 3_600))
                .collect(),
            severities: default_severities(),
            overrides: Vec::new(),
        }
    }

    /// The tiers for a parcel of `carrier` at `service_level`.
    pub fn tiers_for(&self, carrier: &str, service_level: &str) -> &[Duration] {
        pick(&self.overrides, &self.tiers, carrier, service_level)
    }

    /// Severity of tier `tier`.
    pub fn severity(&self, tier: u32) -> Severity {
        let index = usize::try_from(tier).unwrap_or(usize::MAX);
        self.severities
            .get(index)
            .or(self.severities.last())
            .copied()
            .unwrap_or(Severity::Warning)
    }
}

/// The tiers of the most specific override matching `carrier` and
/// `service_level` (carrier + service level, then carrier, then level), else
/// `default`.
fn pick<'a>(
    overrides: &'a [Override],
    default: &'a [Duration],
    carrier: &str,
    service_level: &str,
) -> &'a [Duration] {
    let matches = |o: &&Override| {
        o.carrier.as_deref().is_none_or(|c| c == carrier)
            && o.service_level
                .as_deref()
                .is_none_or(|s| s == service_level)
    };
    let specificity = |o: &Override| {
        usize::from(o.carrier.is_some()) * 2 + usize::from(o.service_level.is_some())
    };
    overrides
        .iter()
        .filter(matches)
        .max_by_key(|o| specificity(o))
        .map_or(default, |o| o.tiers.as_slice())
}

/// The carrier-exception rule: raised at once, with the carrier's reason; while
/// it is open, continued silence escalates it (one problem, one alert: no
/// stall rule watches the parcel meanwhile).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRule {
    /// Off switch.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Severity of a carrier exception alert, at opening and at every
    /// escalation: the carrier itself reported the problem, so the alert starts
    /// at the top and an escalation never lowers it. Default `critical`.
    #[serde(default = "critical", deserialize_with = "one_severity")]
    pub severity: Severity,
    /// How long the parcel may stay without a new scan while the exception is
    /// open before the alert escalates: tier 1 when the last scan is more than
    /// `escalate_after[0]` old, tier 2 past `escalate_after[1]`, ... A new
    /// problem scan (a second failed attempt) restarts the silence; a scan
    /// that shows the parcel moving resolves the alert. Empty: never
    /// escalates. Default `["24h", "72h"]`.
    #[serde(default = "default_escalation", with = "duration::list")]
    pub escalate_after: Vec<Duration>,
    /// Replacement `escalate_after` per carrier and/or service level (an
    /// override's `tiers`), most specific match wins, as for the timer rules.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

fn default_escalation() -> Vec<Duration> {
    vec![
        Duration::from_secs(24 * 3_600),
        Duration::from_secs(72 * 3_600),
    ]
}

impl ExceptionRule {
    /// The escalation offsets for a parcel of `carrier` at `service_level`.
    pub fn escalation_for(&self, carrier: &str, service_level: &str) -> &[Duration] {
        pick(
            &self.overrides,
            &self.escalate_after,
            carrier,
            service_level,
        )
    }
}

fn critical() -> Severity {
    Severity::Critical
}

fn one_severity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Severity, D::Error> {
    let name = String::deserialize(deserializer)?;
    Severity::from_str_name(&format!("SEVERITY_{}", name.to_ascii_uppercase()))
        .filter(|s| *s != Severity::Unspecified)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown severity {name:?}")))
}

/// All rules. Defaults are the product defaults from the issue tracker.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Default 24 h / 48 h / 72 h after registration or info received.
    pub no_pickup: TimerRule,
    /// Default 24 h / 48 h / 72 h after the last scan, while picked up or in
    /// transit (and no carrier exception is open).
    pub stalled_in_transit: TimerRule,
    /// Default 72 h / 120 h / 168 h after the last scan, while in customs (and
    /// no carrier exception is open). Clearance takes days and its pace is
    /// the customs authority's, not the carrier's: transit tiers and their
    /// per-carrier overrides would alert on normal clearances.
    pub stalled_in_customs: TimerRule,
    /// Default 36 h after going out for delivery.
    pub out_for_delivery_not_delivered: TimerRule,
    /// Default 18 h at a locker or pickup point.
    pub uncollected_at_pickup_point: TimerRule,
    /// Default: at the promised time, escalating 24 h later.
    pub promised_date_missed: TimerRule,
    /// Default 7 days after a return was registered.
    pub return_not_picked_up: TimerRule,
    /// Default: at once (tier `0s`) when the parcel's prediction says its
    /// promise will likely be missed (the quantile is the detector's
    /// `forecast.risk_quantile`); resolves when a later scan's prediction is
    /// back on track or the parcel is delivered. Needs delivery statistics
    /// (`docs/ARCHITECTURE.md`, lanes).
    pub promise_at_risk: TimerRule,
    /// Carrier-reported problems (and failed delivery attempts): opened at
    /// once, escalated by continued silence. Default: critical, escalating
    /// after 24 h and 72 h without a scan.
    pub carrier_exception: ExceptionRule,
    /// How far before its `registered_at` a registration reaches back for
    /// scans: a first registration receives the stored scans dated from then
    /// on, and no scan dated earlier ever becomes an update of its order.
    /// Carriers reuse waybill numbers and a merchant may register a number
    /// that already has another parcel's scans; without a bound the new order
    /// would receive that parcel's history, proof of delivery included. Wide
    /// enough for a label printed and scanned well before the merchant
    /// registers it. Default 30 days (`30d`).
    #[serde(with = "duration")]
    pub join_window: Duration,
}

/// Default of [`RulesConfig::join_window`], in days.
pub const DEFAULT_JOIN_WINDOW_DAYS: u64 = 30;

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            no_pickup: TimerRule::hours(&[24, 48, 72]),
            stalled_in_transit: TimerRule::hours(&[24, 48, 72]),
            stalled_in_customs: TimerRule::hours(&[72, 120, 168]),
            out_for_delivery_not_delivered: TimerRule::hours(&[36]),
            uncollected_at_pickup_point: TimerRule::hours(&[18]),
            promised_date_missed: TimerRule::hours(&[0, 24]),
            return_not_picked_up: TimerRule::hours(&[7 * 24]),
            promise_at_risk: TimerRule::hours(&[0]),
            carrier_exception: ExceptionRule {
                enabled: true,
                severity: Severity::Critical,
                escalate_after: default_escalation(),
                overrides: Vec::new(),
            },
            join_window: Duration::from_secs(DEFAULT_JOIN_WINDOW_DAYS * 86_400),
        }
    }
}

impl RulesConfig {
    /// The config of a timer rule.
    pub fn timer(&self, rule: RuleId) -> Option<&TimerRule> {
        let rule = match rule {
            RuleId::NoPickup => &self.no_pickup,
            RuleId::StalledInTransit => &self.stalled_in_transit,
            RuleId::StalledInCustoms => &self.stalled_in_customs,
            RuleId::OutForDeliveryNotDelivered => &self.out_for_delivery_not_delivered,
            RuleId::UncollectedAtPickupPoint => &self.uncollected_at_pickup_point,
            RuleId::PromisedDateMissed => &self.promised_date_missed,
            RuleId::ReturnNotPickedUp => &self.return_not_picked_up,
            RuleId::PromiseAtRisk => &self.promise_at_risk,
            RuleId::CarrierException => return None,
        };
        (rule.enabled && !rule.tiers.is_empty()).then_some(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600;

    #[test]
    fn tiers_parse_with_units_and_reject_garbage() {
        let rule = toml_rule(r#"tiers = ["24h", "500ms", "3d", "1h 30m"]"#);
        assert_eq!(
            rule.tiers,
            [
                Duration::from_secs(24 * H),
                Duration::from_millis(500),
                Duration::from_secs(72 * H),
                Duration::from_secs(H + H / 2),
            ]
        );
        for bad in [
            r#"["24"]"#,
            r#"["h"]"#,
            r#"["9999999999999999999999d"]"#,
            "[24]",
        ] {
            let text = format!("tiers = {bad}");
            let parsed = trackstream_runtime::config::load_from::<TimerRule>(&text, Vec::new());
            assert!(parsed.is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn most_specific_override_wins() {
        let rule: TimerRule = toml_rule(
            r#"tiers = ["24h"]
            [[overrides]]
            carrier = "sf"
            tiers = ["12h"]
            [[overrides]]
            carrier = "sf"
            service_level = "express"
            tiers = ["6h"]
            [[overrides]]
            service_level = "economy"
            tiers = ["48h"]"#,
        );
        let hours = |h: u64| [Duration::from_secs(h * H)];
        assert_eq!(rule.tiers_for("sf", "express"), hours(6));
        assert_eq!(rule.tiers_for("sf", "standard"), hours(12));
        assert_eq!(rule.tiers_for("yto", "economy"), hours(48));
        assert_eq!(rule.tiers_for("yto", "standard"), hours(24));
    }

    fn toml_rule(text: &str) -> TimerRule {
        trackstream_runtime::config::load_from(text, Vec::new()).expect("valid rule")
    }
}
