//! `trackstream-notifier` binary: config from `--config FILE` / env, then run
//! until SIGTERM or SIGINT.

use anyhow::Context;
use trackstream_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: trackstream_notifier::Config =
        config::load(config::path_from_args().as_deref()).context("loading notifier config")?;
    telemetry::init_tracing(&config.admin);
    let running = trackstream_notifier::start(config, shutdown::on_signals())
        .await
        .context("starting notifier")?;
    running.task.await.context("notifier task panicked")??;
    Ok(())
}
