//! The demo answers `--help` and `--version` through clap and exits, instead
//! of driving a stack with default settings.

use trackstream_testkit::binary;

#[tokio::test]
async fn the_demo_answers_help_without_starting() {
    binary::assert_help(
        env!("CARGO_BIN_EXE_trackstream-demo"),
        "trackstream-demo",
        &["--parcels <PARCELS>", "--merchant-token <TOKEN>"],
    )
    .await;
}
