//! Every generated push passes the real provider adapters, and schedules keep
//! their promises (every push present, duplicates and late pushes bounded).

use std::collections::BTreeMap;

use trackstream_carriers::{PushRequest, Registry};
use trackstream_proto::v1::RawScan;

use chrono::{DateTime, Duration as Span, Utc};
use trackstream_loadgen::*;

/// Every push of every format passes the real adapter: signature verified,
/// one item for the right waybill, and the newest scan normalizes to the
/// intended status with its tag in the text.
#[test]
fn every_generated_push_is_accepted_and_normalizes_as_intended() {
    let secrets = Secrets::default();
    let settings: BTreeMap<_, _> = secrets.provider_settings().into_iter().collect();
    let registry = Registry::builtin();
    let mix = Mix {
        duplicate_rate: 0.0,
        reorder_rate: 0.0,
        ..Mix::default()
    };
    let parcels = generate(120, &mix, 7, Utc::now(), "T", 0);
    let formats: std::collections::BTreeSet<_> = parcels.iter().map(|p| p.format).collect();
    assert_eq!(
        formats.len(),
        Format::ALL.len(),
        "every format is generated"
    );
    for parcel in &parcels {
        for upto in 1..=parcel.scans.len() {
            let push = parcel.push(upto, &secrets);
            let adapter = registry
                .by_route(parcel.format.route())
                .expect("route exists");
            let headers: BTreeMap<String, String> = push
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            let query = BTreeMap::new();
            let request = PushRequest {
                headers: &headers,
                query: &query,
                body: &push.body,
            };
            let setting = &settings[parcel.format.route()];
            let verified = adapter
                .accept(&request, setting)
                .unwrap_or_else(|e| panic!("{:?} push {upto}: {e}", parcel.format));
            assert_eq!(verified.items.len(), 1);
            let item = &verified.items[0];
            assert_eq!(
                (item.carrier.as_str(), item.waybill.as_str()),
                (parcel.carrier, parcel.waybill.as_str())
            );
            let raw = RawScan {
                provider: adapter.provider() as i32,
                carrier: item.carrier.clone(),
                waybill: item.waybill.clone(),
                payload: item.payload.clone(),
                envelope: item.envelope.clone().into_iter().collect(),
                ..RawScan::default()
            };
            let events = adapter.normalize(&raw, setting).expect("normalizes");
            let newest = &parcel.scans[upto - 1];
            let event = events
                .iter()
                .find(|e| e.raw_text.ends_with(&format!("#{}", newest.tag)))
                .unwrap_or_else(|| panic!("{:?}: no event for tag {}", parcel.format, newest.tag));
            assert_eq!(
                event.status,
                parcel.expected_status(newest.stage) as i32,
                "{:?} {:?}",
                parcel.format,
                newest.stage
            );
            assert_eq!(
                trackstream_proto::time::millis(event.occurred_at.as_ref()),
                newest.at.timestamp_millis()
            );
        }
    }
}

#[test]
fn schedules_cover_every_push_with_duplicates_and_swaps() {
    let mix = Mix {
        duplicate_rate: 0.5,
        reorder_rate: 0.5,
        reorder_within: Span::hours(30),
        ..Mix::default()
    };
    let parcels = generate(50, &mix, 1, Utc::now(), "S", 0);
    let order = schedule(&parcels, &mix, 1);
    let needed: usize = parcels.iter().map(|p| p.scans.len()).sum();
    assert!(order.len() > needed, "duplicates were added");
    for parcel in &parcels {
        for n in 1..=parcel.scans.len() {
            assert!(
                order.contains(&(parcel.index, n)),
                "push {n} of parcel {}",
                parcel.index
            );
        }
    }
    let mut highest: std::collections::HashMap<usize, usize> = Default::default();
    let mut overtaken = 0;
    for (parcel, n) in &order {
        let seen = highest.entry(*parcel).or_default();
        overtaken += usize::from(*n < *seen);
        *seen = (*seen).max(*n);
    }
    assert!(
        overtaken > 0,
        "some pushes arrive after the parcel's next one"
    );
}

/// The property the ground truth relies on: no scan reaches the detector more
/// than `reorder_within` (event time) after a newer scan of the same run, so
/// a detector allowing that much lateness folds every parcel in order.
#[test]
fn late_pushes_stay_within_the_reorder_window() {
    let mix = Mix {
        reorder_rate: 0.5,
        ..Mix::default()
    };
    let parcels = generate(400, &mix, 3, Utc::now(), "W", 0);
    let order = schedule(&parcels, &mix, 3);
    let mut newest_sent: Option<DateTime<Utc>> = None;
    let mut late = 0;
    for (parcel, n) in order {
        let at = parcels[parcel].scans[n - 1].at;
        if let Some(newest) = newest_sent {
            assert!(
                newest - at <= mix.reorder_within,
                "a scan {} behind",
                newest - at
            );
            late += usize::from(at < newest);
        }
        newest_sent = Some(newest_sent.map_or(at, |t| t.max(at)));
    }
    assert!(late > 0, "some pushes are late");
}

/// A stack that verifies only some providers is pushed only those formats,
/// and still sees every one of them.
#[test]
fn generate_in_rotates_over_the_given_formats_only() {
    let formats = [Format::Generic, Format::Kdniao];
    let parcels = generate_in(&formats, 60, &Mix::default(), 3, Utc::now(), "D", 0);
    let seen: std::collections::BTreeSet<_> = parcels.iter().map(|p| p.format).collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), formats.to_vec());
    let every = generate_in(&[], 12, &Mix::default(), 3, Utc::now(), "D", 0);
    assert!(
        every.iter().any(|p| p.format == Format::Easypost),
        "empty means all"
    );
}
