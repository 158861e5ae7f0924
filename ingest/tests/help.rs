//! The binary answers `--help` and `--version` through clap and exits, instead
//! of starting the service with default settings.

use trackstream_testkit::binary;

#[tokio::test]
async fn help_and_version_answer_without_starting() {
    binary::assert_service_help(
        env!("CARGO_BIN_EXE_trackstream-ingest"),
        "trackstream-ingest",
        &[],
    )
    .await;
}
