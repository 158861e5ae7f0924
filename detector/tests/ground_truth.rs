//! The load generator's ground truth (`Parcel::expected_alerts`, which the
//! end-to-end benchmark scores the detector against) and the engine agree:
//! every generated parcel, folded in order with the default rules and the
//! clock at the scoring time, raises exactly the expected rules at exactly the
//! expected tiers — precision and recall 1.000 without Kafka, so a rule change
//! that forgets the generator fails here, not only in a benchmark run.

mod common;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use common::*;
use trackstream_detector::rules::RulesConfig;
use trackstream_loadgen::{Mix, Parcel};
use trackstream_proto::v1::{AlertState, Shipment};

/// The parcel as the detector sees it: its registration (an hour before its
/// first scan, as `Parcel::registration`) and its scans in canonical form.
fn fold(parcel: &Parcel, now: DateTime<Utc>) -> BTreeSet<(String, u32)> {
    let key = format!("{}:{}", parcel.carrier, parcel.waybill);
    let mut sim = Sim::new(RulesConfig::default(), &key);
    let first = parcel.scans.first().map_or(now, |s| s.at);
    let registered_at = (first - Span::hours(1)).timestamp_millis();
    sim.register(
        Shipment {
            order_id: parcel.order_id.clone(),
            service_level: if parcel.index.is_multiple_of(3) {
                "express".into()
            } else {
                "standard".into()
            },
            ..shipment(&key, &parcel.order_id, registered_at)
        },
        registered_at,
    );
    for scan in &parcel.scans {
        let status = parcel.expected_status(scan.stage);
        sim.event(event(
            &key,
            status,
            trackstream_proto::v1::Reason::Unspecified,
            scan.at.timestamp_millis(),
        ));
    }
    sim.advance(now.timestamp_millis());
    // Per rule, the highest tier opened or escalated (as the benchmark scores).
    let mut raised: Vec<(String, u32)> = Vec::new();
    for alert in alerts(&sim.outputs) {
        if alert.state == AlertState::Resolved as i32 {
            continue;
        }
        match raised.iter_mut().find(|(rule, _)| *rule == alert.rule) {
            Some(entry) => entry.1 = entry.1.max(alert.tier),
            None => raised.push((alert.rule.clone(), alert.tier)),
        }
    }
    raised.into_iter().collect()
}

fn expected(parcel: &Parcel, now: DateTime<Utc>) -> BTreeSet<(String, u32)> {
    parcel
        .expected_alerts(now)
        .into_iter()
        .map(|(rule, tier)| (rule.to_owned(), tier))
        .collect()
}

/// Every instant at or after `generated` where one of the parcels' scans or
/// registrations passes a rule's threshold, exactly and a millisecond later,
/// plus a day and a week on.
fn scoring_moments(parcels: &[Parcel], generated: DateTime<Utc>) -> BTreeSet<DateTime<Utc>> {
    let mut moments: BTreeSet<DateTime<Utc>> = [
        generated,
        generated + Span::days(1),
        generated + Span::days(7),
    ]
    .into();
    for parcel in parcels {
        let anchors = parcel
            .scans
            .iter()
            .map(|s| s.at)
            .chain(parcel.scans.first().map(|s| s.at - Span::hours(1)));
        for anchor in anchors {
            for hours in [18, 24, 36, 48, 72] {
                let threshold = anchor + Span::hours(hours);
                for moment in [threshold, threshold + Span::milliseconds(1)] {
                    if moment >= generated {
                        moments.insert(moment);
                    }
                }
            }
        }
    }
    moments
}

#[test]
fn the_generators_ground_truth_is_what_the_engine_raises() {
    let generated = Utc.timestamp_millis_opt(T0).single().unwrap_or_default() + Span::days(30);
    let mix = Mix {
        stall_soon: 0.05,
        ..Mix::default()
    };
    let parcels = trackstream_loadgen::generate(200, &mix, 16, generated, "GT", 0);
    let moments = scoring_moments(&parcels, generated);
    let mut kinds = BTreeSet::new();
    for now in &moments {
        for parcel in &parcels {
            let want = expected(parcel, *now);
            let got = fold(parcel, *now);
            assert_eq!(
                got,
                want,
                "{:?} {:?} scored at {now}: {:?}",
                parcel.kind,
                parcel.format,
                parcel
                    .scans
                    .iter()
                    .map(|s| (s.stage, s.at.to_rfc3339()))
                    .collect::<Vec<_>>()
            );
            kinds.extend(
                want.into_iter()
                    .map(|(rule, tier)| format!("{rule}/{tier}")),
            );
        }
    }
    // Every rule the generator can raise, at every tier it can reach (no
    // lifecycle stops while out for delivery).
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [
            "carrier_exception/0",
            "carrier_exception/1",
            "carrier_exception/2",
            "no_pickup/0",
            "no_pickup/1",
            "no_pickup/2",
            "stalled_in_transit/0",
            "stalled_in_transit/1",
            "stalled_in_transit/2",
            "uncollected_at_pickup_point/0",
        ]
    );
}
