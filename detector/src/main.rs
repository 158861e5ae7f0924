//! `trackstream-detector` binary: config from `--config FILE` / env; `--clock
//! event` selects the event-time clock for replays. Runs until SIGTERM or SIGINT.

use anyhow::Context;
use trackstream_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config: trackstream_detector::Config =
        config::load(config::path_from_args().as_deref()).context("loading detector config")?;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--clock") {
        config.timers.clock = match args.get(i + 1).map(String::as_str) {
            Some("event") => trackstream_detector::config::ClockMode::Event,
            Some("wall") => trackstream_detector::config::ClockMode::Wall,
            other => anyhow::bail!("--clock takes `wall` or `event`, got {other:?}"),
        };
    }
    telemetry::init_tracing(&config.admin);
    let running = trackstream_detector::start(config, shutdown::on_signals())
        .await
        .context("starting detector")?;
    running.task.await.context("detector task panicked")??;
    Ok(())
}
