//! The `trackstream-normalize` command line (clap): the service by default, or
//! `replay`. [`ReplayArgs`] is also flattened into `trackstream replay` (the
//! operator CLI), so both accept the same options with the same checks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::replay::{ReplayError, ReplayOptions, Start};

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the service.
    Serve,
    /// Re-normalize a range of `scans.raw`.
    Replay(ReplayOptions),
    /// Print the help (the text is in the error clap returned).
    Help(String),
}

/// The `trackstream-normalize` command line: the service by default, or
/// `replay` (also `trackstream replay`, which shares [`ReplayArgs`]).
#[derive(Debug, clap::Parser)]
#[command(name = "trackstream-normalize", version)]
pub struct Cli {
    /// `--config FILE`.
    #[command(flatten)]
    pub service: trackstream_runtime::cli::ServiceArgs,
    /// `replay ...`, or nothing to run the service.
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

/// Subcommands of `trackstream-normalize`.
#[derive(Debug, clap::Subcommand)]
pub enum CliCommand {
    /// Re-normalize scans.raw from a point (see docs/REPLAY.md) and print a JSON
    /// summary.
    Replay(ReplayArgs),
}

/// The replay's options as command-line arguments. At least one of `--from` and
/// `--offsets` is required.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("start").required(true).multiple(true).args(["from", "offsets"])))]
pub struct ReplayArgs {
    /// Start at the first record at or after TIME (RFC 3339) in every partition;
    /// `earliest` starts at the oldest retained record.
    #[arg(long, value_name = "TIME|earliest", value_parser = parse_start)]
    pub from: Option<Start>,
    /// Start partition P at offset O (comma-separated P:O pairs); these
    /// partitions override --from, and without --from only they are replayed.
    #[arg(long, value_name = "P:O,...", value_parser = parse_offsets)]
    pub offsets: Option<BTreeMap<i32, i64>>,
    /// Stop before the first record at or after TIME (default: the end of each
    /// partition when the replay starts).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Read and normalize, count, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ReplayArgs {
    /// The options, checked for what clap cannot see (`--to` after `--from`).
    pub fn into_options(self) -> Result<ReplayOptions, ReplayError> {
        let options = ReplayOptions {
            from: self.from,
            offsets: self.offsets.unwrap_or_default(),
            to: self.to,
            dry_run: self.dry_run,
        };
        if options.from.is_none() && options.offsets.is_empty() {
            return Err(ReplayError::Usage(
                "replay needs --from and/or --offsets".into(),
            ));
        }
        if let (Some(Start::Time(from)), Some(to)) = (options.from, options.to)
            && to <= from
        {
            return Err(ReplayError::Usage(format!(
                "--to {to} is not after --from {from}"
            )));
        }
        Ok(options)
    }
}

/// Parses the binary's arguments (without the program name) with [`Cli`];
/// `--config` is read separately by the binary. Kept for tests that drive a
/// replay by its command line.
pub fn parse_command(args: &[String]) -> Result<Command, ReplayError> {
    use clap::Parser as _;
    let argv = std::iter::once("trackstream-normalize").chain(args.iter().map(String::as_str));
    match Cli::try_parse_from(argv) {
        Ok(Cli { command: None, .. }) => Ok(Command::Serve),
        Ok(Cli {
            command: Some(CliCommand::Replay(replay)),
            ..
        }) => replay.into_options().map(Command::Replay),
        Err(err) if err.kind() == clap::error::ErrorKind::DisplayHelp => {
            Ok(Command::Help(err.to_string()))
        }
        Err(err) => Err(ReplayError::Usage(err.to_string())),
    }
}

fn parse_start(text: &str) -> Result<Start, String> {
    if text == "earliest" {
        Ok(Start::Earliest)
    } else {
        parse_time(text).map(Start::Time)
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?}: {e} (RFC 3339 with offset expected)"))
}

/// Parses `P:O,P:O`.
fn parse_offsets(text: &str) -> Result<BTreeMap<i32, i64>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let parsed = part.split_once(':').and_then(|(p, o)| {
                Some((p.trim().parse::<i32>().ok()?, o.trim().parse::<i64>().ok()?))
            });
            match parsed {
                Some((p, o)) if p >= 0 && o >= 0 => Ok((p, o)),
                _ => Err(format!("entry {part:?} is not PARTITION:OFFSET")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::format_offsets;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn replay(text: &str) -> ReplayOptions {
        match parse_command(&args(text)) {
            Ok(Command::Replay(options)) => options,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn usage_error(text: &str) -> String {
        match parse_command(&args(text)) {
            Err(ReplayError::Usage(message)) => message,
            other => panic!("{text}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn no_command_serves_and_config_may_appear_anywhere() {
        assert!(matches!(parse_command(&[]), Ok(Command::Serve)));
        assert!(matches!(
            parse_command(&args("--config n.toml")),
            Ok(Command::Serve)
        ));
        match parse_command(&args("--help")) {
            Ok(Command::Help(text)) => assert!(text.contains("replay"), "{text}"),
            other => panic!("--help: {other:?}"),
        }
        let options = replay("replay --config n.toml --from 2026-11-20T08:00:00+08:00");
        let at = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        assert_eq!(options.from, at.map(Start::Time));
        assert!(options.offsets.is_empty() && !options.dry_run && options.to.is_none());
    }

    #[test]
    fn offsets_to_and_dry_run_are_read() {
        let options = replay(
            "--config=n.toml replay --offsets 0:120,3:7 --from=earliest --to 2026-11-21T00:00:00Z --dry-run",
        );
        assert_eq!(options.offsets, BTreeMap::from([(0, 120), (3, 7)]));
        assert_eq!(options.from, Some(Start::Earliest));
        assert!(options.to.is_some() && options.dry_run);
        assert_eq!(format_offsets(&options.offsets), "0:120,3:7");
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        assert!(usage_error("replay").contains("--from"));
        assert!(usage_error("replay --from yesterday").contains("RFC 3339"));
        assert!(usage_error("replay --offsets 0-12").contains("PARTITION:OFFSET"));
        assert!(usage_error("replay --offsets=-1:5").contains("PARTITION:OFFSET"));
        assert!(usage_error("replay --from").contains("value is required"));
        assert!(usage_error("replay --from earliest --frm x").contains("--frm"));
        assert!(
            usage_error("replay --from 2026-11-21T00:00:00Z --to 2026-11-20T00:00:00Z")
                .contains("not after")
        );
        assert!(usage_error("replya --from earliest").contains("replya"));
    }
}
