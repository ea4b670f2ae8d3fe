//! Command-line arguments and their dispatch.

use anyhow::Context;
use clap::{Parser, Subcommand};
use smsdrop::commands::{self, convert::ConvertArgs, convert::ConvertCmdError};
use smsdrop::Outcome;
use std::path::PathBuf;

/// Delivers SMS batches from ERP CSV exports to an SMS gateway over SFTP, exactly once.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Config file (TOML). Default: ./smsdrop.toml when it exists, else built-in defaults.
    #[arg(long, global = true, env = "SMSDROP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Converts ERP exports into gateway batch files in a local folder; never connects anywhere.
    Convert {
        /// Gateway subaccount for the file names (default: [batch] subaccount).
        #[arg(long)]
        subaccount: Option<String>,
        /// Folder for the batch files.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Sending day for the file names, YYYY-MM-DD (default: today in [batch] timezone).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// ERP export files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

/// A problem with how smsdrop was called or configured (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let cfg =
        commands::load_config(cli.config.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    match cli.command {
        Command::Convert {
            subaccount,
            out,
            date,
            json,
            inputs,
        } => {
            let args = ConvertArgs {
                inputs,
                out,
                subaccount,
                date,
                json,
            };
            match commands::convert::run(&cfg, &args) {
                Ok(o) => Ok(o),
                Err(ConvertCmdError::Usage(m)) => Err(UsageError(m).into()),
                Err(e) => Err(e).context("convert stopped"),
            }
        }
    }
}
