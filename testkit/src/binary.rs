//! Running a built binary in a test: arguments, environment, a deadline, and its
//! exit code and output. Used by the CLI's tests and the service binaries'
//! `--help` tests.

use std::time::Duration;

/// How a run ended.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `binary` with `args` and extra `env`; fails the test if it does not
/// exit within `deadline` (a service that started instead of answering
/// `--help` is killed and reported).
pub async fn run(binary: &str, args: &[&str], env: &[(&str, String)], deadline: Duration) -> Ran {
    let mut command = tokio::process::Command::new(binary);
    command.args(args).kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .unwrap_or_else(|_| panic!("{binary} {args:?} did not exit within {deadline:?}"))
        .unwrap_or_else(|e| panic!("running {binary}: {e}"));
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Checks that a service binary answers `--help` (with `--config <FILE>` and
/// `flags`) and `--version` and exits 0 without starting (it would not exit,
/// and would fail the deadline).
pub async fn assert_service_help(binary: &str, name: &str, flags: &[&str]) {
    let mut all = vec!["--config <FILE>"];
    all.extend_from_slice(flags);
    assert_help(binary, name, &all).await;
}

/// Checks that a binary answers `--help` naming `flags`, `--version` with its
/// name and the workspace version, and refuses an unknown flag with clap's
/// exit code 2 — all without starting anything.
pub async fn assert_help(binary: &str, name: &str, flags: &[&str]) {
    let help = run(binary, &["--help"], &[], Duration::from_secs(30)).await;
    assert_eq!(help.code, Some(0), "{help:?}");
    assert!(
        help.stdout.contains(&format!("Usage: {name}")),
        "{}",
        help.stdout
    );
    for flag in ["--version"].iter().chain(flags) {
        assert!(
            help.stdout.contains(flag),
            "{flag} missing from {}",
            help.stdout
        );
    }
    let version = run(binary, &["--version"], &[], Duration::from_secs(30)).await;
    assert_eq!(version.code, Some(0), "{version:?}");
    assert_eq!(
        version.stdout.trim(),
        format!("{name} {}", env!("CARGO_PKG_VERSION"))
    );
    let wrong = run(binary, &["--no-such-flag"], &[], Duration::from_secs(30)).await;
    assert_eq!(wrong.code, Some(2), "{wrong:?}");
    assert!(wrong.stderr.contains("--no-such-flag"), "{}", wrong.stderr);
}
