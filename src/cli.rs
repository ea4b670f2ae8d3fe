//! Command-line arguments and their dispatch.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use smsdrop::commands::deliver::DeliverError;
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
        #[arg(long, value_parser = commands::convert::parse_date)]
        date: Option<chrono::NaiveDate>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// ERP export files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Runs the daemon in the foreground: watches the inbox and delivers every file exactly once.
    Run,
    /// Delivers the named files now and waits for the gateway's outcome (exit 0: all succeeded).
    Send {
        /// Return once the files are uploaded, without waiting for outcomes.
        #[arg(long)]
        no_wait: bool,
        /// ERP export files (copied to the archive; the originals stay).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Shows the jobs in the journal and their states.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Show at most this many jobs, newest first.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Refresh every SECS seconds (in place on a terminal) until Ctrl-C.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5", conflicts_with = "json")]
        watch: Option<u64>,
    },
    /// Decides a batch whose outcome is unknown (its rename had begun when smsdrop stopped, and
    /// its name is nowhere on the server): after checking with the gateway.
    Resolve {
        /// The job (see `smsdrop status`).
        job: i64,
        /// The gateway received it: count it as delivered, never send it again.
        #[arg(long, conflicts_with = "resend", required_unless_present = "resend")]
        sent: bool,
        /// The gateway did not receive it: send it again under a new name.
        #[arg(long)]
        resend: bool,
    },
    /// Sends a failed or expired job's batch files again under new names, after the gateway
    /// confirmed they did not go out.
    Retry {
        /// The job (see `smsdrop status`).
        job: i64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Sends a job held for its send window (`[schedule]`) now, outside the window; recorded in
    /// the job's history.
    Release {
        /// The job (see `smsdrop status`).
        job: i64,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Manages a subaccount's opt-out list: numbers later exports never send to (works while
    /// the daemon runs).
    Optout {
        /// The subaccount (default: [batch] subaccount).
        #[arg(long, global = true)]
        subaccount: Option<String>,
        #[command(subcommand)]
        action: OptoutAction,
    },
    /// After the journal was lost: lists what the state folder still holds; with --yes sets it
    /// aside and queues the pending batch files again as new jobs.
    Recover {
        /// Set the leftovers aside and queue the pending batch files again (after checking with
        /// the gateway that they did not go out).
        #[arg(long)]
        yes: bool,
    },
    /// Checks config, credentials, host key, login, remote folders and disk; one line each.
    Check {
        /// Record the server's host key in known_hosts if it has none (after you confirmed the
        /// fingerprint with the gateway). A changed key is never accepted.
        #[arg(long)]
        accept_new_host_key: bool,
    },
    /// Runs a local SFTP server + gateway simulator to try smsdrop without gateway credentials.
    #[cfg(feature = "sandbox")]
    Sandbox(commands::sandbox::SandboxArgs),
    /// Shows the whole flow on this machine: sandbox server, daemon, the samples, their outcomes.
    #[cfg(feature = "sandbox")]
    Demo {
        /// Workspace folder (default: a new folder under the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Writes shell completions and man pages generated from this CLI (for packagers).
    #[command(hide = true)]
    Generate(crate::generate::GenerateArgs),
}

#[derive(Debug, Subcommand)]
enum OptoutAction {
    /// Prints the list: subaccount, number, since, source, detail.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Puts numbers on the list (normalised as rows are; all or nothing).
    Add {
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Takes numbers off the list: later exports send to them again.
    Remove {
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Puts the numbers of a CSV file on the list (`;`, `,` or TAB; a header line is skipped;
    /// a line's number is its first field that is a phone number); lines without one are
    /// reported with their line numbers (exit 3).
    Import { file: PathBuf },
    /// Writes the list as CSV (subaccount;number;since;source;detail), which `import` reads.
    Export {
        /// Write to FILE instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// A problem with how smsdrop was called or configured (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Runs the chosen command.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    // Generated files come from the CLI definition alone: no config is read.
    if let Command::Generate(args) = &cli.command {
        crate::generate::run(args, Cli::command()).context("generate")?;
        return Ok(Outcome::Ok);
    }
    // The sandbox and the demo bring their own settings: a broken ./smsdrop.toml must not stop them.
    #[cfg(feature = "sandbox")]
    match &cli.command {
        Command::Demo { dir } => {
            init_quiet_logging();
            return commands::demo::run(dir.as_deref()).context("demo");
        }
        Command::Sandbox(args) => {
            commands::init_logging(&smsdrop::config::Config::defaults());
            return commands::sandbox::run(args).map_err(|e| {
                if e.is_usage() {
                    UsageError(e.to_string()).into()
                } else {
                    anyhow::Error::new(e).context("sandbox")
                }
            });
        }
        _ => {}
    }
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
        Command::Run => {
            commands::init_logging(&cfg);
            deliver_result(commands::deliver::run(&cfg))
        }
        Command::Send { no_wait, files } => {
            commands::init_logging(&cfg);
            deliver_result(commands::deliver::send(&cfg, &files, !no_wait))
        }
        Command::Status { json, limit, watch } => {
            match watch {
                Some(secs) => commands::status::watch(
                    &cfg,
                    limit,
                    std::time::Duration::from_secs(secs.clamp(1, 3600)),
                ),
                None => commands::status::run(&cfg, json, limit),
            }
            .context("status")?;
            Ok(Outcome::Ok)
        }
        Command::Recover { yes } => {
            commands::init_logging(&cfg);
            match commands::recover::run(&cfg, yes) {
                Ok(o) => Ok(o),
                Err(commands::recover::RecoverError::Refused(m)) => Err(UsageError(m).into()),
                Err(e) => Err(e.into()),
            }
        }
        Command::Resolve { job, sent, .. } => {
            decide_result(commands::decide::resolve(&cfg, job, sent))
        }
        Command::Optout { subaccount, action } => {
            use commands::optout::{OptoutCmd, OptoutError};
            let cmd = match action {
                OptoutAction::List { json } => OptoutCmd::List { json },
                OptoutAction::Add { numbers } => OptoutCmd::Add { numbers },
                OptoutAction::Remove { numbers } => OptoutCmd::Remove { numbers },
                OptoutAction::Import { file } => OptoutCmd::Import { file },
                OptoutAction::Export { out } => OptoutCmd::Export { out },
            };
            match commands::optout::run(&cfg, subaccount.as_deref(), cmd) {
                Ok(o) => Ok(o),
                Err(OptoutError::Refused(m)) => Err(UsageError(m).into()),
                Err(e) => Err(anyhow::Error::new(e).context("optout")),
            }
        }
        Command::Retry { job, yes } => decide_result(commands::decide::retry(&cfg, job, yes)),
        Command::Release { job, yes } => decide_result(commands::decide::release(&cfg, job, yes)),
        Command::Check {
            accept_new_host_key,
        } => {
            commands::init_logging(&cfg);
            Ok(commands::check::run(&cfg, accept_new_host_key))
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox(_) | Command::Demo { .. } => unreachable!("handled above"),
        Command::Generate(_) => unreachable!("handled above"),
    }
}

/// Warnings and errors only (`RUST_LOG` overrides): the demo prints its own progress.
#[cfg(feature = "sandbox")]
fn init_quiet_logging() {
    let mut cfg = smsdrop::config::Config::defaults();
    cfg.report.log_level = "warn".into();
    commands::init_logging(&cfg);
}

fn decide_result(r: Result<Outcome, commands::decide::DecideError>) -> anyhow::Result<Outcome> {
    match r {
        Ok(o) => Ok(o),
        Err(commands::decide::DecideError::Refused(m)) => Err(UsageError(m).into()),
        Err(e) => Err(e.into()),
    }
}

fn deliver_result(r: Result<Outcome, DeliverError>) -> anyhow::Result<Outcome> {
    match r {
        Ok(o) => Ok(o),
        Err(DeliverError::Config(m)) => Err(UsageError(m).into()),
        Err(e) => Err(e.into()),
    }
}
