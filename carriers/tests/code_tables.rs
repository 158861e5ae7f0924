//! Every row of every provider code table is reachable through `lookup` and maps
//! to a real canonical status; tables are data, so this walks them all.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use trackstream_carriers::event::{CodeRow, lookup};
use trackstream_carriers::{aftership, easypost, kdniao, kuaidi100, seventeen_track};
use trackstream_proto::v1::{Reason, Status};

const TABLES: &[(&str, &[CodeRow])] = &[
    ("kdniao::STATES", kdniao::STATES),
    ("kuaidi100::STATES", kuaidi100::STATES),
    ("seventeen_track::STATUSES", seventeen_track::STATUSES),
    (
        "seventeen_track::SUB_STATUSES",
        seventeen_track::SUB_STATUSES,
    ),
    ("seventeen_track::STAGES", seventeen_track::STAGES),
    ("aftership::TAGS", aftership::TAGS),
    ("aftership::SUBTAGS", aftership::SUBTAGS),
    ("easypost::STATUSES", easypost::STATUSES),
];

#[test]
fn every_row_looks_up_to_itself_and_none_is_unspecified() {
    for (name, table) in TABLES {
        let mut seen = BTreeSet::new();
        for (code, status, reason) in *table {
            assert!(seen.insert(*code), "{name}: duplicate code {code:?}");
            assert_ne!(*status, Status::Unspecified, "{name}: {code:?}");
            assert_ne!(*reason, Reason::Unknown, "{name}: {code:?} is known");
            // A fallback that no row uses proves the row, not the fallback, answered.
            assert_eq!(
                lookup(table, code, Status::Expired),
                (*status, *reason),
                "{name}: {code:?}"
            );
        }
        assert_eq!(
            lookup(table, "no-such-code", Status::InTransit),
            (Status::InTransit, Reason::Unknown)
        );
    }
}

#[test]
fn every_code_in_carriers_md_has_a_row() {
    let kdniao_codes = "0 1 2 201 204 205 206 202 211 3 301 302 304 311 4 401 402 403 404 405 406 407 \
        412 413 414 415 416 417 418 419 420 421 422 423 5 6 601 602 603 604 10";
    let kuaidi100_codes = "0 1 2 3 4 5 6 7 8 10 11 12 13 14";
    let st_statuses = "NotFound InfoReceived InTransit Expired AvailableForPickup OutForDelivery \
        DeliveryFailure Delivered Exception";
    let st_subs = "InTransit_PickedUp InTransit_CustomsProcessing DeliveryFailure_InvalidAddress \
        Exception_Returning Exception_Returned Exception_Lost Exception_Damage Exception_Delayed \
        Exception_Rejected Exception_Cancel";
    let as_tags = "Pending InfoReceived InTransit OutForDelivery AttemptFail Delivered \
        AvailableForPickup Exception Expired";
    let as_subtags = "Delivered_001 Exception_007 Exception_010 Exception_011 Exception_012 \
        Exception_013 AttemptFail_002";
    let ep = "unknown pre_transit in_transit out_for_delivery delivered available_for_pickup \
        return_to_sender failure cancelled error";
    for (table, codes) in [
        (kdniao::STATES, kdniao_codes),
        (kuaidi100::STATES, kuaidi100_codes),
        (seventeen_track::STATUSES, st_statuses),
        (seventeen_track::SUB_STATUSES, st_subs),
        (aftership::TAGS, as_tags),
        (aftership::SUBTAGS, as_subtags),
        (easypost::STATUSES, ep),
    ] {
        for code in codes.split_whitespace() {
            assert!(table.iter().any(|(c, _, _)| *c == code), "missing {code}");
        }
    }
}

#[test]
fn the_documented_meanings_hold() {
    assert_eq!(
        lookup(kdniao::STATES, "404", Status::InTransit),
        (Status::Returning, Reason::Refused)
    );
    assert_eq!(
        lookup(kuaidi100::STATES, "4", Status::InTransit),
        (Status::Returned, Reason::ReturnToSender)
    );
    assert_eq!(
        lookup(aftership::SUBTAGS, "AttemptFail_002", Status::InTransit).1,
        Reason::RecipientUnreachable
    );
    assert_eq!(
        lookup(easypost::STATUSES, "return_to_sender", Status::InTransit),
        (Status::Returning, Reason::ReturnToSender)
    );
}

#[test]
fn secondary_tables_point_at_real_codes_and_reasons() {
    for (text, code) in kuaidi100::STATUS_TEXT {
        assert!(
            kuaidi100::STATES.iter().any(|(c, _, _)| c == code),
            "{text} → {code}"
        );
    }
    for (detail, reason) in easypost::DETAIL_REASONS {
        assert!(
            !matches!(reason, Reason::Unspecified | Reason::Unknown),
            "{detail}"
        );
    }
}
