//! A job's input as rows: the settings its bytes are read with, the one rule for intake's
//! conversion and for every reading again (the result CSV, the status page's message texts).
//! It never writes: what the rows become is the caller's sink.

use crate::config::{Config, InputConfig};
use crate::convert::{ConvertError, ConvertReport, RowSink, SendAt};
use crate::journal::{Job, Journal};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::io::{self, Read};

/// Converts `input`, the bytes of `job`, into `sink`, read with `[input]` and the overrides of
/// the job's subaccount (`[subaccounts.NAME]`); rows past their `send_before` at `send_at` are
/// rejected.
///
/// # Errors
/// As [`crate::convert::convert`].
pub(crate) fn convert<R: Read + Send + 'static>(
    cfg: &Config,
    job: &Job,
    send_at: SendAt,
    input: R,
    sink: &mut dyn RowSink,
) -> Result<ConvertReport, ConvertError> {
    crate::convert::convert(input, &cfg.input_for(Some(&job.subaccount)), send_at, sink)
}

/// What a job's conversion recorded that reading its input again needs, so that every row comes
/// out as it did then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsConverted {
    /// The job's rows follow a header carried from its input's first job (a continuation).
    pub header: bool,
    /// The send time its rows' `send_before` was checked against; `None`: none was checked.
    pub send_at: Option<SendAt>,
}

impl AsConverted {
    /// Reads what `job`'s conversion recorded.
    ///
    /// # Errors
    /// When the journal fails.
    pub(crate) fn of(
        journal: &Journal,
        job: &Job,
        cfg: &Config,
    ) -> Result<AsConverted, crate::journal::JournalError> {
        #[derive(serde::Deserialize)]
        struct Recorded {
            at: DateTime<Utc>,
            #[serde(default)]
            later: bool,
        }
        let send_at = journal
            .convert_report(job.id)?
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
            .and_then(|mut v| v.get_mut("send_at").map(serde_json::Value::take))
            .and_then(|s| serde_json::from_value::<Recorded>(s).ok())
            .map(|r| SendAt {
                at: r.at,
                later: r.later,
                zone: cfg.batch.zone,
            });
        Ok(AsConverted {
            header: journal.carries_header(job)?,
            send_at,
        })
    }
}

/// Reads the bytes `job` converted again, from where its input is kept ([`Job::kept_path`]),
/// and converts them as intake did: conversion is deterministic, so the rows are the same.
/// Deadlines are checked against the send time the conversion recorded, not now (a row sent
/// then is still sent, a row rejected then still rejected); a job that recorded none checked
/// none (converted before `send_before` was configured), and neither does its reading again.
///
/// # Errors
/// The outer error when the input cannot be opened; the inner as [`convert`].
pub(crate) fn convert_again(
    cfg: &Config,
    job: &Job,
    how: &AsConverted,
    sink: &mut dyn RowSink,
) -> io::Result<Result<ConvertReport, ConvertError>> {
    let (prefix, body) =
        crate::claim::open_range(job.kept_path(), job.start_offset, job.consumed, how.header)?;
    let mut input: Cow<'_, InputConfig> = cfg.input_for(Some(&job.subaccount));
    let send_at = match how.send_at {
        Some(s) => s,
        None => {
            if input.columns.send_before.is_some() {
                input.to_mut().columns.send_before = None;
            }
            // Not looked at: no column to check.
            SendAt::now(cfg.batch.zone)
        }
    };
    Ok(crate::convert::convert(
        prefix.chain(body),
        &input,
        send_at,
        sink,
    ))
}
