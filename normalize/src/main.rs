//! `trackstream-normalize` binary: config from `--config FILE` / env, then either
//! run the service until SIGTERM or SIGINT, or (`replay ...`) re-normalize a range
//! of `scans.raw` and print a JSON summary as the last line of stdout. The
//! arguments are [`Cli`] (clap), shared with `trackstream replay`.

use anyhow::Context;
use clap::Parser;
use trackstream_normalize::cli::{Cli, CliCommand};
use trackstream_normalize::replay;
use trackstream_runtime::{cli as runtime_cli, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config: trackstream_normalize::Config =
        cli.service.load().context("loading normalize config")?;
    match cli.command {
        Some(CliCommand::Replay(args)) => {
            telemetry::init_tracing(&config.admin);
            let options = args.into_options()?;
            let summary = replay::run(&config, &options)
                .await
                .context("replaying scans.raw")?;
            println!(
                "{}",
                serde_json::to_string(&summary).context("encoding the summary")?
            );
        }
        None => {
            let admin = config.admin.clone();
            runtime_cli::serve("normalize", &admin, |shutdown| async move {
                Ok(trackstream_normalize::start(config, shutdown).await?.task)
            })
            .await?;
        }
    }
    Ok(())
}
