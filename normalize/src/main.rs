//! `trackstream-normalize` binary: config from `--config FILE` / env, then either
//! run the service until SIGTERM or SIGINT, or (`replay ...`) re-normalize a range
//! of `scans.raw` and print a JSON summary as the last line of stdout. `--help`
//! prints the usage.

use anyhow::Context;
use trackstream_normalize::replay::{self, Command};
use trackstream_runtime::{config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = replay::parse_command(&args)?;
    if command == Command::Help {
        println!("{}", replay::USAGE);
        return Ok(());
    }
    let config: trackstream_normalize::Config =
        config::load(config::path_from_args().as_deref()).context("loading normalize config")?;
    telemetry::init_tracing(&config.admin);
    match command {
        Command::Replay(options) => {
            let summary = replay::run(&config, &options)
                .await
                .context("replaying scans.raw")?;
            println!(
                "{}",
                serde_json::to_string(&summary).context("encoding the summary")?
            );
        }
        Command::Serve | Command::Help => {
            let running = trackstream_normalize::start(config, shutdown::on_signals())
                .await
                .context("starting normalize")?;
            running.task.await.context("normalize task panicked")??;
        }
    }
    Ok(())
}
