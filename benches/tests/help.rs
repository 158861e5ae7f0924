//! The end-to-end benchmark answers `--help` and `--version` through clap and
//! exit, instead of starting a stack.

use trackstream_testkit::binary;

#[tokio::test]
async fn the_bench_answers_help_without_starting() {
    binary::assert_help(
        env!("CARGO_BIN_EXE_trackstream-bench"),
        "trackstream-bench",
        &["--steps <STEPS>", "--bin-dir <BIN_DIR>", "--no-repeat"],
    )
    .await;
}
