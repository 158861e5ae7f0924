//! `trackstream-detector` binary: config from `--config FILE` / env; `--clock
//! event` selects the event-time clock for replays. Runs until SIGTERM or SIGINT;
//! `--help` and `--version` answer without starting.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use trackstream_detector::config::ClockMode;
use trackstream_runtime::cli::{self, ServiceArgs};

/// Folds canonical events and registrations into per-order state, emits ordered
/// updates and raises or resolves alerts when deadlines pass.
#[derive(Parser)]
#[command(name = "trackstream-detector", version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// Which clock fires deadlines; overrides `timers.clock`. `event` follows the
    /// newest event time seen, for replaying history.
    #[arg(long, value_enum)]
    clock: Option<Clock>,
}

/// `--clock` values (clap's mirror of [`ClockMode`], which lives in the library
/// and stays free of CLI concerns).
#[derive(Clone, Copy, ValueEnum)]
enum Clock {
    /// Wall-clock time (production).
    Wall,
    /// Event time (replays).
    Event,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config: trackstream_detector::Config =
        args.service.load().context("loading detector config")?;
    if let Some(clock) = args.clock {
        config.timers.clock = match clock {
            Clock::Wall => ClockMode::Wall,
            Clock::Event => ClockMode::Event,
        };
    }
    let admin = config.admin.clone();
    cli::serve("detector", &admin, |shutdown| async move {
        Ok(trackstream_detector::start(config, shutdown).await?.task)
    })
    .await?;
    Ok(())
}
