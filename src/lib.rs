//! smsdrop: takes the CSV files a legacy ERP drops into a folder and delivers them to an SMS
//! gateway's SFTP interface as batch files, exactly once, reporting what became of every row.
//!
//! # Layout
//! - [`config`]: the TOML schema, defaults and validation into typed values.
//! - [`convert`]: ERP export bytes in, validated rows out (dialects, field rules, billing).
//! - [`batch`]: the gateway's batch file: names, line format, safe writing.
//! - [`commands`]: what each CLI subcommand does, on top of the stages above.
//! - `sandbox` (feature `sandbox`, on by default): an embedded SFTP server and gateway simulator
//!   for trying smsdrop on one machine without gateway credentials.
//! - `main.rs`: argument parsing, tracing, exit codes only.

pub mod batch;
pub mod commands;
pub mod config;
pub mod convert;
pub mod crash;
pub mod daemon;
pub mod intake;
pub mod journal;
pub mod remote;
pub mod report;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod track;
pub mod upload;
pub mod watch;

/// How a command ended, as the process exit code operators and scripts see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything went through.
    Ok = 0,
    /// A runtime failure (disk, network) stopped the work.
    Failure = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// The work finished but some rows or inputs were rejected, or a batch failed.
    Partial = 3,
}
