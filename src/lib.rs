//! smsdrop: takes the CSV files a legacy ERP drops into a folder and delivers them to an SMS
//! gateway's SFTP interface as batch files, exactly once, reporting what became of every row.
//!
//! # Layout
//! The pipeline (DESIGN.md), one stage a module:
//! - [`watch`]: the inbox: stable files, done markers, file events as hints.
//! - [`writers`]: who is writing a file (file events, `/proc`): never take one being written.
//! - [`intake`]: a complete input to a recorded job: claim, convert, duplicate guard, name batches.
//! - [`optout`]: rows to numbers on the subaccount's opt-out list are kept back, with why.
//! - [`claim`]: an input taken out of the inbox before it is read; the byte range a job reads.
//! - [`job_input`]: a job's bytes as rows, read with its subaccount's settings: for intake, and
//!   again (with the send time its deadlines were checked against) for the result CSV and the
//!   status page.
//! - [`late`]: taken inputs watched for late writes: continuation jobs, rewrites reported.
//! - [`archive`]: where inputs go once recorded (moved or copied, made durable first).
//! - [`hold`]: send windows: converted batches go, wait (`held`) or expire (`max_hold`).
//! - [`upload`]: each batch on the server once: temp name, size check, no-clobber rename.
//! - [`track`]: `success/` and `error/` listings to batch and job outcomes.
//! - [`report`]: JSON and `.result.csv` per finished job.
//! - [`hooks`]: the outcome hook, queued durably and run beside the engine.
//! - [`replies`]: customers' replies (MOs): read from the gateway, written to the ERP's outbox.
//! - [`status`]: message-level statuses: correlation ids, the status API poller, the webhook,
//!   and the stage that ends a job's tracking with its `.delivery.csv`.
//!
//! What the stages share:
//! - [`stage`]: the context a stage runs in (config, journal, server, clock) and its error.
//! - [`journal`]: the durable record (SQLite): jobs, batches, the state machine, sequence
//!   numbers, schema versions.
//! - [`spool`]: the state folder's layout (spool, queue, archive, reports).
//! - [`fsutil`]: durability helpers (sync before record, cross-file-system moves).
//! - [`lock`]: one owner per state folder.
//! - [`liveness`]: the engine's heartbeat for systemd's watchdog and `/healthz` (the ground floor).
//! - [`handoff`]: the queue through which `send` hands files to a running daemon.
//! - [`remote`]: the SFTP client behind a trait, and a local-folder stand-in for unit tests.
//! - [`daemon`]: the engine loop wiring the stages; no business rules.
//! - [`http`]: the embedded HTTP stack (axum on tokio): the status webhook and [`ops`].
//! - [`ops`]: operations: metrics, health, the status page.
//!
//! Around them:
//! - [`config`]: the TOML schema, defaults and validation into typed values.
//! - [`convert`]: ERP export bytes in, validated rows out (dialects, field rules, billing, the
//!   repair of unquoted delimiters, message templates, spreadsheets, per-row deadlines).
//! - [`batch`]: the gateway's batch file: names, line format, safe writing.
//! - [`schedule`]: send windows and holidays: whether uploads may run now, and when that changes.
//! - [`commands`]: what each CLI subcommand does, on top of the stages above.
//! - [`crash`]: crash points for the crash tests (feature `crash-points`, never in a release).
//! - `sandbox` (feature `sandbox`, on by default): an embedded SFTP server and gateway simulator
//!   for trying smsdrop on one machine without gateway credentials.
//! - `main.rs`: argument parsing, tracing, exit codes only.

#![forbid(unsafe_code)]

pub(crate) mod archive;
pub mod batch;
pub(crate) mod claim;
pub mod commands;
pub mod config;
pub mod convert;
pub mod crash;
pub(crate) mod daemon;
pub(crate) mod fsutil;
pub(crate) mod handoff;
pub(crate) mod hold;
pub(crate) mod hooks;
pub(crate) mod http;
pub(crate) mod intake;
pub(crate) mod job_input;
pub(crate) mod journal;
pub(crate) mod late;
pub(crate) mod liveness;
pub(crate) mod lock;
pub(crate) mod ops;
pub(crate) mod optout;
pub mod remote;
pub(crate) mod replies;
pub(crate) mod report;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod schedule;
pub(crate) mod spool;
pub(crate) mod stage;
pub(crate) mod status;
pub(crate) mod track;
pub(crate) mod upload;
pub(crate) mod watch;
pub(crate) mod writers;

#[cfg(test)]
mod pipeline_tests;

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
