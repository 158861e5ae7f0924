//! `trackstream-ingest` binary: config from `--config FILE` / env, then run until
//! SIGTERM or SIGINT. `--help` and `--version` answer without starting.

use anyhow::Context;
use clap::Parser;
use trackstream_runtime::cli::ServiceArgs;
use trackstream_runtime::{shutdown, telemetry};

/// Accepts provider pushes and merchant registrations over HTTP and writes them to
/// Kafka (`scans.raw`, `shipments`).
#[derive(Parser)]
#[command(name = "trackstream-ingest", version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: trackstream_ingest::Config =
        args.service.load().context("loading ingest config")?;
    telemetry::init_tracing(&config.admin);
    let running = trackstream_ingest::start(config, shutdown::on_signals())
        .await
        .context("starting ingest")?;
    running.task.await.context("ingest task panicked")??;
    Ok(())
}
