//! `trackstream-notifier` binary: config from `--config FILE` / env, then run
//! until SIGTERM or SIGINT. `--help` and `--version` answer without starting.

use anyhow::Context;
use clap::Parser;
use trackstream_runtime::cli::ServiceArgs;
use trackstream_runtime::{shutdown, telemetry};

/// Serves the merchant gRPC API (orders, live updates, alerts) and renders buyer
/// notifications from `tracking.updates` and `tracking.alerts`.
#[derive(Parser)]
#[command(name = "trackstream-notifier", version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: trackstream_notifier::Config =
        args.service.load().context("loading notifier config")?;
    telemetry::init_tracing(&config.admin);
    let running = trackstream_notifier::start(config, shutdown::on_signals())
        .await
        .context("starting notifier")?;
    running.task.await.context("notifier task panicked")??;
    Ok(())
}
