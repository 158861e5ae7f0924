//! The command-line arguments every service binary shares, parsed with clap so
//! `--help` and `--version` answer instead of starting the service.
//!
//! A binary flattens [`ServiceArgs`] into its own `clap::Parser` (the detector
//! adds `--clock`, normalize a `replay` subcommand) and loads its config with
//! [`ServiceArgs::load`]; the config file layering itself is [`crate::config`]'s.

use std::path::PathBuf;

use serde::de::DeserializeOwned;

/// `--config FILE` (or `TRACKSTREAM_CONFIG`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServiceArgs {
    /// TOML config file; every key can also be set with
    /// `TRACKSTREAM__SECTION__KEY` (and `KAFKA_BROKERS`, `REDIS_URL`).
    /// Without a file, documented defaults apply.
    #[arg(long, value_name = "FILE", env = "TRACKSTREAM_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

impl ServiceArgs {
    /// Loads the service's config from the file (if any) and the environment.
    pub fn load<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        crate::config::load(self.config.as_deref())
    }
}
