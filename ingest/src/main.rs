//! `trackstream-ingest` binary: config from `--config FILE` / env, then run until
//! SIGTERM or SIGINT. `--help` and `--version` answer without starting.

use anyhow::Context;
use trackstream_runtime::cli;

/// The help text: what the service does.
const ABOUT: &str = "Accepts provider pushes and merchant registrations over HTTP and writes \
them to Kafka (scans.raw, shipments).";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = cli::parse_service_args("trackstream-ingest", ABOUT, env!("CARGO_PKG_VERSION"));
    let config: trackstream_ingest::Config = args.load().context("loading ingest config")?;
    let admin = config.admin.clone();
    cli::serve("ingest", &admin, |shutdown| async move {
        Ok(trackstream_ingest::start(config, shutdown).await?.task)
    })
    .await?;
    Ok(())
}
