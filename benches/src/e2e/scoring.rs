//! Scoring the detector against the generator's ground truth: precision and
//! recall of the alerts raised, by rule and tier.

use std::collections::{BTreeMap, HashMap};

use trackstream_loadgen::Parcel;
use trackstream_proto::v1::AlertState;

use super::follower::{AlertSeen, Observed};
use super::load::SENTINEL_PREFIX;

/// The detector's alerts against the generator's ground truth.
#[derive(Default)]
pub(crate) struct Score {
    pub(crate) expected: usize,
    pub(crate) raised: usize,
    pub(crate) matched: usize,
    pub(crate) tier_agrees: usize,
    /// Raised but not expected: (rule, still open at scoring) → count.
    pub(crate) false_by_rule: BTreeMap<(String, bool), usize>,
    pub(crate) missed_by_rule: BTreeMap<String, usize>,
    pub(crate) redelivered: usize,
}

impl Score {
    pub(crate) fn precision(&self) -> f64 {
        self.matched as f64 / self.raised.max(1) as f64
    }
    pub(crate) fn recall(&self) -> f64 {
        self.matched as f64 / self.expected.max(1) as f64
    }
}

/// Per (waybill, rule): the highest tier opened or escalated, and whether an
/// episode is still open (opened and not resolved).
pub(crate) fn raised_alerts(
    alerts: &BTreeMap<(String, i32, u32), AlertSeen>,
) -> BTreeMap<(String, String), (u32, bool)> {
    let resolved: std::collections::BTreeSet<&str> = alerts
        .values()
        .filter(|a| a.state == AlertState::Resolved as i32)
        .map(|a| a.alert_id.as_str())
        .collect();
    let mut raised: BTreeMap<(String, String), (u32, bool)> = BTreeMap::new();
    for alert in alerts.values() {
        if alert.state == AlertState::Opened as i32 || alert.state == AlertState::Escalated as i32 {
            let open = !resolved.contains(alert.alert_id.as_str());
            let entry = raised
                .entry((alert.waybill.clone(), alert.rule.clone()))
                .or_insert((alert.tier, open));
            entry.0 = entry.0.max(alert.tier);
            entry.1 |= open;
        }
    }
    raised
}

pub(crate) fn score(
    parcels: &[Parcel],
    score_at: chrono::DateTime<chrono::Utc>,
    seen: &Observed,
) -> Score {
    let expected: BTreeMap<(String, String), u32> = parcels
        .iter()
        .flat_map(|p| {
            p.expected_alerts(score_at)
                .into_iter()
                .map(|(rule, tier)| ((p.waybill.clone(), rule.to_owned()), tier))
        })
        .collect();
    let mut raised = raised_alerts(&seen.alerts);
    // Sentinels are the benchmark's own clock moves, not parcels: one moved
    // before the repeated step stalls by the end of the run (by design).
    raised.retain(|(waybill, _), _| !waybill.starts_with(SENTINEL_PREFIX));
    let kind_of: HashMap<&str, &Parcel> = parcels.iter().map(|p| (p.waybill.as_str(), p)).collect();
    let mut result = Score {
        expected: expected.len(),
        raised: raised.len(),
        redelivered: seen.redelivered_alerts,
        ..Score::default()
    };
    let mut disagreements: BTreeMap<(&str, String, String), usize> = BTreeMap::new();
    let mut examples: BTreeMap<(&str, String, String), Vec<String>> = BTreeMap::new();
    let describe = |waybill: &str| {
        kind_of.get(waybill).map_or_else(
            || "?".to_owned(),
            |p| {
                let scans: Vec<String> = p
                    .scans
                    .iter()
                    .map(|s| format!("{:?}@{}", s.stage, s.at.format("%m-%d %H:%M")))
                    .collect();
                format!(
                    "{waybill} {:?} {:?} [{}]",
                    p.kind,
                    p.format,
                    scans.join(", ")
                )
            },
        )
    };
    let kind = |waybill: &str| {
        kind_of
            .get(waybill)
            .map_or_else(|| "?".to_owned(), |p| format!("{:?}", p.kind))
    };
    for ((waybill, rule), (tier, open)) in &raised {
        match expected.get(&(waybill.clone(), rule.clone())) {
            Some(want) => {
                result.matched += 1;
                if want == tier && *open {
                    result.tier_agrees += 1;
                } else {
                    let key = ("tier/state differs", rule.clone(), kind(waybill));
                    *disagreements.entry(key.clone()).or_default() += 1;
                    examples.entry(key).or_default().push(format!(
                        "{} — expected tier {want}, raised tier {tier}, open {open}",
                        describe(waybill)
                    ));
                }
            }
            None => {
                *result
                    .false_by_rule
                    .entry((rule.clone(), *open))
                    .or_default() += 1;
                let what = if *open {
                    "false, open"
                } else {
                    "false, resolved"
                };
                let key = (what, rule.clone(), kind(waybill));
                *disagreements.entry(key.clone()).or_default() += 1;
                examples
                    .entry(key)
                    .or_default()
                    .push(format!("{} — tier {tier}", describe(waybill)));
            }
        }
    }
    for (waybill, rule) in expected.keys() {
        if !raised.contains_key(&(waybill.clone(), rule.clone())) {
            *result.missed_by_rule.entry(rule.clone()).or_default() += 1;
            let key = ("missed", rule.clone(), kind(waybill));
            *disagreements.entry(key.clone()).or_default() += 1;
            examples.entry(key).or_default().push(describe(waybill));
        }
    }
    for (key, n) in &disagreements {
        let (what, rule, kind) = key;
        eprintln!("[bench]   {what:<18} {rule:<32} {kind:<15} {n}");
        for example in examples.get(key).into_iter().flatten().take(2) {
            eprintln!("[bench]       e.g. {example}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_resolved_episode_is_raised_but_not_open() {
        let alert = |id: &str, state: AlertState, tier: u32| AlertSeen {
            alert_id: id.into(),
            waybill: "W1".into(),
            rule: "stalled_in_transit".into(),
            state: state as i32,
            tier,
        };
        let mut alerts = BTreeMap::new();
        for a in [
            alert("a", AlertState::Opened, 0),
            alert("a", AlertState::Escalated, 1),
            alert("a", AlertState::Resolved, 1),
        ] {
            alerts.insert((a.alert_id.clone(), a.state, a.tier), a);
        }
        let raised = raised_alerts(&alerts);
        assert_eq!(
            raised.get(&("W1".to_owned(), "stalled_in_transit".to_owned())),
            Some(&(1, false))
        );
        alerts.insert(
            ("b".into(), AlertState::Opened as i32, 0),
            alert("b", AlertState::Opened, 0),
        );
        let raised = raised_alerts(&alerts);
        assert_eq!(
            raised.get(&("W1".to_owned(), "stalled_in_transit".to_owned())),
            Some(&(1, true))
        );
    }
}
