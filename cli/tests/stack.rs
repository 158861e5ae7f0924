//! The `trackstream` binary against a real stack (redis-server, a Kafka-protocol
//! broker and the four services, from the sandbox): what an operator sees.

use trackstream_testkit::binary;

use std::time::Duration;

use prost::Message as _;
use serde_json::Value;
use trackstream_carriers::{AccountSecret, ProviderSettings};
use trackstream_proto::topics;
use trackstream_proto::v1::{RawScan, TrackingEvent};
use trackstream_runtime::dlq::headers;
use trackstream_runtime::kafka::{OutRecord, Producer};
use trackstream_sandbox::{ACME_TOKEN, GENERIC_SECRET, Sandbox};
use trackstream_testkit::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_trackstream");
const WAIT: Duration = Duration::from_secs(60);
const KDNIAO_KEY: &str = "kdniao-app-key";

fn sample(name: &str) -> String {
    format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The environment that points the CLI at `sandbox`.
fn env_of(sandbox: &Sandbox) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BROKERS", sandbox.bootstrap()),
        (
            "TRACKSTREAM_INGEST_URL",
            format!("http://{}", sandbox.ingest_addr),
        ),
        (
            "TRACKSTREAM_GRPC_URL",
            format!("http://{}", sandbox.grpc_addr),
        ),
        ("TRACKSTREAM_TOKEN", ACME_TOKEN.to_owned()),
    ]
}

async fn cli(sandbox: &Sandbox, args: &[&str]) -> binary::Ran {
    binary::run(BIN, args, &env_of(sandbox), WAIT).await
}

fn json_lines(ran: &binary::Ran) -> Vec<Value> {
    ran.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Polls `tail TOPIC` (bounded, from the beginning) until a record matches.
async fn tail_until(
    sandbox: &Sandbox,
    topic: &str,
    what: &str,
    found: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let ran = cli(sandbox, &["tail", topic]).await;
        assert_eq!(ran.code, Some(0), "{ran:?}");
        json_lines(&ran).into_iter().find(|line| found(line))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_decoded_updates_the_pipeline_produced() {
    let sandbox = Sandbox::start().await;
    let registered = cli(
        &sandbox,
        &[
            "register",
            "--order-id",
            "O-TAIL",
            "--carrier",
            "sf",
            "--waybill",
            "SF1400000000001",
        ],
    )
    .await;
    assert_eq!(registered.code, Some(0), "{registered:?}");
    assert_eq!(json_lines(&registered)[0]["status"], 200);
    let pushed = cli(
        &sandbox,
        &[
            "push",
            "generic",
            &sample("generic.json"),
            "--secret",
            GENERIC_SECRET,
        ],
    )
    .await;
    assert_eq!(pushed.code, Some(0), "{pushed:?}");

    let update = tail_until(
        &sandbox,
        topics::TRACKING_UPDATES,
        "a decoded update",
        |line| line["value"]["event"]["waybill"] == "SF1400000000001",
    )
    .await;
    assert_eq!(update["topic"], topics::TRACKING_UPDATES);
    assert_eq!(update["key"], "sf:SF1400000000001");
    assert_eq!(update["value"]["orderId"], "O-TAIL", "{update}");
    assert_eq!(
        update["value"]["event"]["status"], "STATUS_IN_TRANSIT",
        "{update}"
    );

    // --from end without --follow reads nothing; --max bounds the output.
    let from_end = cli(
        &sandbox,
        &["tail", topics::TRACKING_UPDATES, "--from", "end"],
    )
    .await;
    assert_eq!((from_end.code, from_end.stdout.as_str()), (Some(0), ""));
    let one = cli(&sandbox, &["tail", topics::SCANS_RAW, "--max", "1"]).await;
    let lines = json_lines(&one);
    assert_eq!(lines.len(), 1, "{one:?}");
    assert!(
        lines[0]["value"]["payloadText"]
            .as_str()
            .is_some_and(|t| t.contains("SF1400000000001"))
    );

    // The same order through the gRPC API.
    let order = eventually(WAIT, "the order through gRPC", || async {
        let ran = cli(&sandbox, &["order", "get", "O-TAIL"]).await;
        let order = json_lines(&ran).into_iter().next()?;
        (order["parcels"][0]["currentStatus"] == "STATUS_IN_TRANSIT").then_some(order)
    })
    .await;
    assert_eq!(order["orderId"], "O-TAIL");
    let watched = cli(&sandbox, &["order", "watch", "O-TAIL", "--max", "1"]).await;
    assert_eq!(json_lines(&watched)[0]["orderId"], "O-TAIL", "{watched:?}");
    // Topic creation is idempotent: the sandbox's topics exist already.
    let topics_ran = cli(
        &sandbox,
        &[
            "topics",
            "create",
            "--partitions",
            "4",
            "--replication-factor",
            "1",
        ],
    )
    .await;
    assert_eq!(topics_ran.code, Some(0), "{topics_ran:?}");
    let outcomes = json_lines(&topics_ran);
    assert_eq!(outcomes.len(), topics::ALL.len());
    assert!(
        outcomes.iter().all(|o| o["outcome"] == "existed"),
        "{outcomes:?}"
    );
    let bad = cli(&sandbox, &["tail", "no.such.topic"]).await;
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("no.such.topic"), "{}", bad.stderr);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_gets_the_providers_200_and_the_scan_reaches_tracking_events() {
    let sandbox = Sandbox::start_with(|c| {
        c.ingest.providers.insert(
            "kdniao".into(),
            ProviderSettings {
                secrets: vec![AccountSecret {
                    account: "1237100".into(),
                    secret: KDNIAO_KEY.into(),
                }],
                ..Default::default()
            },
        );
    })
    .await;
    // Kdniao signs a form field with a send time inside: the CLI stamps and signs.
    let pushed = cli(
        &sandbox,
        &[
            "push",
            "kdniao",
            &sample("kdniao.json"),
            "--secret",
            KDNIAO_KEY,
        ],
    )
    .await;
    assert_eq!(pushed.code, Some(0), "{pushed:?}");
    let reply = &json_lines(&pushed)[0];
    assert_eq!(reply["status"], 200, "{reply}");
    assert_eq!(reply["body"]["Success"], true, "{reply}");
    let mut events = sandbox.reader(topics::TRACKING_EVENTS);
    events
        .until(WAIT, "the pushed scans as events", |records| {
            trackstream_testkit::kafka::all::<TrackingEvent>(records, |events| {
                events.iter().any(|e| e.waybill == "SF1400000000001")
            })
        })
        .await;

    // A wrong secret: the provider's 401, printed, and a non-zero exit.
    let forged = cli(
        &sandbox,
        &[
            "push",
            "kdniao",
            &sample("kdniao.json"),
            "--secret",
            "wrong",
        ],
    )
    .await;
    assert_eq!(forged.code, Some(1), "{forged:?}");
    assert_eq!(json_lines(&forged)[0]["status"], 401);
    assert!(forged.stderr.contains("401"), "{}", forged.stderr);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_moves_a_letter_back_and_it_is_processed() {
    let sandbox = Sandbox::start().await;
    // A raw scan as ingest writes it, set aside by normalize (say, a provider
    // setting was missing) and now fixed: the letter carries the standard headers.
    let scan = br#"[{"carrier":"sf","waybill":"SFDLQ1","status":"in_transit","occurred_at":"2026-11-20T14:03:00+08:00"}]"#;
    let raw = RawScan {
        ingest_id: "ing-dlq-1".into(),
        provider: trackstream_proto::v1::Provider::Generic as i32,
        carrier: "sf".into(),
        waybill: "SFDLQ1".into(),
        received_at: Some(trackstream_proto::time::to_proto(chrono::Utc::now())),
        payload: scan.to_vec(),
        ..RawScan::default()
    };
    let kafka = trackstream_runtime::config::KafkaConfig {
        brokers: sandbox.bootstrap(),
        ..Default::default()
    };
    let mut registry = trackstream_runtime::telemetry::registry("test");
    let producer = Producer::new(&kafka, "test", &mut registry).unwrap_or_else(|e| panic!("{e}"));
    let letter = |cause: &str| {
        OutRecord::new(topics::SCANS_DLQ, "sf:SFDLQ1", raw.encode_to_vec())
            .with_header(headers::STAGE, "normalize")
            .with_header(headers::CAUSE, cause.to_owned())
            .with_header(headers::DETAIL, "provider settings missing")
            .with_header(headers::SOURCE_TOPIC, topics::SCANS_RAW)
            .with_header(headers::SOURCE_PARTITION, "0")
            .with_header(headers::SOURCE_OFFSET, "0")
    };
    producer
        .send_all(vec![letter("unparseable"), letter("other_cause")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let listed = cli(
        &sandbox,
        &[
            "dlq",
            "list",
            "--topic",
            topics::SCANS_DLQ,
            "--cause",
            "unparseable",
        ],
    )
    .await;
    let letters = json_lines(&listed);
    assert_eq!(letters.len(), 1, "{listed:?}");
    assert_eq!(letters[0]["headers"][headers::STAGE], "normalize");
    assert_eq!(letters[0]["value"]["waybill"], "SFDLQ1");

    let redriven = cli(
        &sandbox,
        &[
            "dlq",
            "redrive",
            "--topic",
            topics::SCANS_DLQ,
            "--cause",
            "unparseable",
        ],
    )
    .await;
    assert_eq!(redriven.code, Some(0), "{redriven:?}");
    let summary = &json_lines(&redriven)[0];
    assert_eq!(
        (summary["read"].as_u64(), summary["redriven"].as_u64()),
        (Some(2), Some(1)),
        "{summary}"
    );

    // Back on scans.raw, marked, and normalized into an event.
    let back = tail_until(&sandbox, topics::SCANS_RAW, "the redriven scan", |line| {
        line["value"]["waybill"] == "SFDLQ1"
    })
    .await;
    assert!(
        back["headers"]["dlq.redriven.from"]
            .as_str()
            .is_some_and(|f| f.starts_with("scans.dlq/")),
        "{back}"
    );
    tail_until(
        &sandbox,
        topics::TRACKING_EVENTS,
        "the redriven scan's event",
        |line| line["value"]["waybill"] == "SFDLQ1",
    )
    .await;
    // Processed, not set aside again.
    let letters = cli(&sandbox, &["tail", topics::SCANS_DLQ]).await;
    assert_eq!(json_lines(&letters).len(), 2, "{}", letters.stdout);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn help_is_answered_everywhere_and_completions_are_printed() {
    let no_env: &[(&str, String)] = &[];
    let top = binary::run(BIN, &["--help"], no_env, WAIT).await;
    assert_eq!(top.code, Some(0));
    for command in [
        "topics",
        "tail",
        "order",
        "push",
        "register",
        "replay",
        "dlq",
        "repartition",
        "completions",
    ] {
        assert!(
            top.stdout.contains(command),
            "{command} missing: {}",
            top.stdout
        );
    }
    let nested: [(&[&str], &str); 9] = [
        (
            &["topics", "create", "--help"],
            "--replication-factor <REPLICATION_FACTOR>",
        ),
        (&["tail", "--help"], "--follow"),
        (&["order", "watch", "--help"], "--after-seq"),
        (
            &["push", "--help"],
            "[possible values: generic, kdniao, kuaidi100, 17track, aftership, easypost]",
        ),
        (&["register", "--help"], "--order-id"),
        (&["replay", "--help"], "--dry-run"),
        (&["dlq", "list", "--help"], "--cause"),
        (&["dlq", "redrive", "--help"], "--stage"),
        (&["repartition", "--help"], "--cluster-node <URL>"),
    ];
    for (args, expected) in nested {
        let ran = binary::run(BIN, args, no_env, WAIT).await;
        assert_eq!(ran.code, Some(0), "{args:?}: {ran:?}");
        assert!(
            ran.stdout.contains(expected),
            "{args:?}: {expected} missing from {}",
            ran.stdout
        );
    }
    let bash = binary::run(BIN, &["completions", "bash"], no_env, WAIT).await;
    assert_eq!(bash.code, Some(0));
    assert!(bash.stdout.contains("_trackstream()"), "{}", bash.stdout);
    // Bad input is a usage error, not a panic.
    let bad = binary::run(BIN, &["tail", "x", "--from", "yesterday"], no_env, WAIT).await;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr.contains("RFC 3339") && !bad.stderr.contains("panicked"),
        "{}",
        bad.stderr
    );
    let property = binary::run(
        BIN,
        &["tail", "x", "--kafka-property", "nope"],
        no_env,
        WAIT,
    )
    .await;
    assert_eq!(property.code, Some(2));
    assert!(property.stderr.contains("KEY=VALUE"), "{}", property.stderr);
    let replay = binary::run(
        BIN,
        &["replay", "--to", "2026-11-20T00:00:00Z"],
        no_env,
        WAIT,
    )
    .await;
    assert_eq!(replay.code, Some(2), "{replay:?}");
}
