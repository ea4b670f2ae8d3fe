//! A job's input as rows: the settings its bytes are read with, the one rule for intake's
//! conversion and for every reading again (the result CSV, the status page's message texts).
//! It never writes: what the rows become is the caller's sink.

use crate::config::Config;
use crate::convert::{ConvertError, ConvertReport, RowSink};
use crate::journal::Job;
use std::io::{self, Read};

/// Converts `input`, the bytes of `job`, into `sink`, read with `[input]` and the overrides of
/// the job's subaccount (`[subaccounts.NAME]`).
///
/// # Errors
/// As [`crate::convert::convert`].
pub(crate) fn convert<R: Read + Send + 'static>(
    cfg: &Config,
    job: &Job,
    input: R,
    sink: &mut dyn RowSink,
) -> Result<ConvertReport, ConvertError> {
    crate::convert::convert(input, &cfg.input_for(Some(&job.subaccount)), sink)
}

/// Reads the bytes `job` converted again, from where its input is kept ([`Job::kept_path`]),
/// and converts them as intake did: conversion is deterministic, so the rows are the same.
///
/// # Errors
/// The outer error when the input cannot be opened; the inner as [`convert`].
pub(crate) fn convert_again(
    cfg: &Config,
    job: &Job,
    header: bool,
    sink: &mut dyn RowSink,
) -> io::Result<Result<ConvertReport, ConvertError>> {
    let (prefix, body) =
        crate::claim::open_range(job.kept_path(), job.start_offset, job.consumed, header)?;
    Ok(convert(cfg, job, prefix.chain(body), sink))
}
