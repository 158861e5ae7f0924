//! `trackstream incidents declare | lift` against a real stack: the operator's
//! declaration reaches the incident detector, which opens a declared incident
//! on `tracking.incidents` and resolves it when lifted; bad input is refused
//! with a reason before anything is written.

use std::time::Duration;

use serde_json::Value;
use trackstream_proto::topics;
use trackstream_proto::v1::{Incident, IncidentReason, IncidentSource, IncidentState};
use trackstream_sandbox::Sandbox;
use trackstream_testkit::binary;

const BIN: &str = env!("CARGO_BIN_EXE_trackstream");
const WAIT: Duration = Duration::from_secs(60);

async fn cli(sandbox: &Sandbox, args: &[&str]) -> binary::Ran {
    binary::run(BIN, args, &[("KAFKA_BROKERS", sandbox.bootstrap())], WAIT).await
}

fn platform(records: &[trackstream_testkit::kafka::Record]) -> Vec<Incident> {
    records
        .iter()
        .filter_map(|r| prost::Message::decode(r.payload.as_slice()).ok())
        .filter(|i: &Incident| i.merchant_id.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_declares_a_closure_and_lifts_it() {
    let sandbox = Sandbox::start().await;
    let mut records = sandbox.reader(topics::TRACKING_INCIDENTS);

    // Refused before anything is written: the end before the start, no area,
    // nobody named.
    for (args, why) in [
        (
            vec![
                "--province",
                "广东",
                "--starts-at",
                "2026-12-04T00:00:00Z",
                "--until",
                "2026-12-03T00:00:00Z",
                "--by",
                "ops",
            ],
            "--until is not after --starts-at",
        ),
        (vec!["--province", " ", "--by", "ops"], "--province"),
        (vec!["--province", "广东", "--by", " "], "--by"),
    ] {
        let mut all = vec!["incidents", "declare", "--carrier", "zto"];
        all.extend(args);
        let ran = cli(&sandbox, &all).await;
        assert_ne!(ran.code, Some(0), "{ran:?}");
        assert!(ran.stderr.contains(why), "{why}: {}", ran.stderr);
    }

    let declared = cli(
        &sandbox,
        &[
            "incidents",
            "declare",
            "--carrier",
            "ZTO",
            "--province",
            "广东",
            "--city",
            "广州市",
            "--reason",
            "weather",
            "--starts-at",
            "2026-12-03T00:00:00Z",
            "--until",
            "2026-12-04T12:00:00Z",
            "--note",
            "台风停发",
            "--by",
            "ops@example",
        ],
    )
    .await;
    assert_eq!(declared.code, Some(0), "{declared:?}");
    let line: Value = serde_json::from_str(declared.stdout.trim()).expect("one JSON line");
    assert_eq!(line["topic"], topics::INCIDENTS_DECLARED);
    assert_eq!(line["declaration"]["reason"], "INCIDENT_REASON_WEATHER");

    records
        .until(WAIT, "the declared incident", |r| !platform(r).is_empty())
        .await;
    let opened = platform(&records.records).remove(0);
    assert_eq!(opened.state, IncidentState::Opened as i32);
    assert_eq!(opened.source, IncidentSource::Declared as i32);
    assert_eq!(opened.reason, IncidentReason::Weather as i32);
    assert_eq!(
        (opened.carrier.as_str(), opened.place.as_str()),
        ("zto", "广东省/广州市")
    );
    assert_eq!(opened.expected_delay_hours, 36);

    let lifted = cli(
        &sandbox,
        &[
            "incidents",
            "lift",
            &opened.incident_id,
            "--at",
            "2026-12-03T06:00:00Z",
            "--by",
            "ops@example",
        ],
    )
    .await;
    assert_eq!(lifted.code, Some(0), "{lifted:?}");
    records
        .until(WAIT, "the lifted incident", |r| {
            platform(r)
                .iter()
                .any(|i| i.state == IncidentState::Resolved as i32)
        })
        .await;
    let resolved = platform(&records.records).pop().expect("resolved");
    assert_eq!(resolved.incident_id, opened.incident_id);
    assert_eq!(
        resolved.resolved_at.map(|t| t.seconds),
        Some(
            chrono::DateTime::parse_from_rfc3339("2026-12-03T06:00:00Z")
                .map_or(0, |t| t.timestamp())
        )
    );

    let bad = cli(&sandbox, &["incidents", "lift", "not-an-id", "--by", "ops"]).await;
    assert_ne!(bad.code, Some(0));
    assert!(
        bad.stderr.contains("is not an incident id"),
        "{}",
        bad.stderr
    );
    sandbox.shutdown().await;
}
