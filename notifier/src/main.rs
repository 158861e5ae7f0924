//! `trackstream-notifier` binary: config from `--config FILE` / env, then run
//! until SIGTERM or SIGINT. `--help` and `--version` answer without starting.

use anyhow::Context;
use trackstream_runtime::cli;

/// The help text: what the service does.
const ABOUT: &str = "Serves the merchant gRPC API (orders, live updates, alerts) and renders \
buyer notifications from tracking.updates and tracking.alerts.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli::parse_service_args("trackstream-notifier", ABOUT, env!("CARGO_PKG_VERSION"));
    let config: trackstream_notifier::Config = args.load().context("loading notifier config")?;
    let admin = config.admin.clone();
    cli::serve("notifier", &admin, |shutdown| async move {
        Ok(trackstream_notifier::start(config, shutdown).await?.task)
    })
    .await?;
    Ok(())
}
