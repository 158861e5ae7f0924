//! `trackstream-normalize` binary: config from `--config FILE` / env, then run
//! until SIGTERM or SIGINT.

use anyhow::Context;
use trackstream_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: trackstream_normalize::Config =
        config::load(config::path_from_args().as_deref()).context("loading normalize config")?;
    telemetry::init_tracing(&config.admin);
    let running = trackstream_normalize::start(config, shutdown::on_signals())
        .await
        .context("starting normalize")?;
    running.task.await.context("normalize task panicked")??;
    Ok(())
}
