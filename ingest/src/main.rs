//! `trackstream-ingest` binary: config from `--config FILE` / env, then run until
//! SIGTERM or SIGINT.

use anyhow::Context;
use trackstream_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: trackstream_ingest::Config =
        config::load(config::path_from_args().as_deref()).context("loading ingest config")?;
    telemetry::init_tracing(&config.admin);
    let running = trackstream_ingest::start(config, shutdown::on_signals())
        .await
        .context("starting ingest")?;
    running.task.await.context("ingest task panicked")??;
    Ok(())
}
