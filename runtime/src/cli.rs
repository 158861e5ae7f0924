//! The command-line arguments every service binary shares, parsed with clap so
//! `--help` and `--version` answer instead of starting the service.
//!
//! A binary flattens [`ServiceArgs`] into its own `clap::Parser` (the detector
//! adds `--clock`, normalize a `replay` subcommand) and loads its config with
//! [`ServiceArgs::load`]; the config file layering itself is [`crate::config`]'s.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// `--config FILE` (or `TRACKSTREAM_CONFIG`), plus the overlay file named by
/// `TRACKSTREAM_CONFIG_OVERLAY` ([`crate::config::OVERLAY_ENV`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceArgs {
    /// TOML config file; every key can also be set with
    /// `TRACKSTREAM__SECTION__KEY` (and `KAFKA_BROKERS`, `REDIS_URL`).
    /// `TRACKSTREAM_CONFIG_OVERLAY=FILE` merges a second TOML file over it
    /// (secrets kept apart from the config). Without a file, documented
    /// defaults apply.
    #[arg(long, value_name = "FILE", env = "TRACKSTREAM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

impl ServiceArgs {
    /// Loads the service's config from the file (if any) and the environment.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        crate::config::load(self.config.as_deref())
    }
}

/// Parses the command line of a service that takes nothing beyond
/// [`ServiceArgs`], as `name` with `about` as its help text (clap's builder,
/// so each binary does not declare the same one-field parser). `--help`,
/// `--version` and errors print and exit, as with a derived parser.
pub fn parse_service_args(
    name: &'static str,
    about: &'static str,
    version: &'static str,
) -> ServiceArgs {
    use clap::{Args as _, FromArgMatches as _};
    // The description goes on after augmenting: the derive sets `ServiceArgs`'
    // own doc comment as the command's (long) description.
    let command = ServiceArgs::augment_args(clap::Command::new(name).version(version))
        .about(about)
        .long_about(about);
    ServiceArgs::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Why a service binary stopped with a failure, by phase.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The service could not start (config it rejected, a broker or Redis it
    /// could not reach).
    #[error("starting {service}: {source}")]
    Start {
        /// `ingest`, `normalize`, ...
        service: &'static str,
        /// The cause.
        source: crate::Error,
    },
    /// The service ran and stopped with an error.
    #[error("{service} stopped: {source}")]
    Failed {
        /// `ingest`, `normalize`, ...
        service: &'static str,
        /// The cause.
        source: crate::Error,
    },
    /// The service's task panicked.
    #[error("{service} task panicked: {source}")]
    Panicked {
        /// `ingest`, `normalize`, ...
        service: &'static str,
        /// The join error carrying the panic.
        source: tokio::task::JoinError,
    },
}

/// What a service binary does once its config is loaded: starts tracing,
/// starts the service with a shutdown token cancelled on SIGTERM/SIGINT, and
/// waits until the service's task ends. `start` returns that task (each
/// service's `start(config, shutdown)` gives a `Running` holding it).
pub async fn serve<F, Fut>(
    service: &'static str,
    admin: &crate::config::AdminConfig,
    start: F,
) -> Result<(), ServeError>
where
    F: FnOnce(crate::CancellationToken) -> Fut,
    Fut: std::future::Future<
            Output = Result<tokio::task::JoinHandle<Result<(), crate::Error>>, crate::Error>,
        >,
{
    crate::telemetry::init_tracing(admin);
    let task = start(crate::shutdown::on_signals())
        .await
        .map_err(|source| ServeError::Start { service, source })?;
    match task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServeError::Failed { service, source }),
        Err(source) => Err(ServeError::Panicked { service, source }),
    }
}
