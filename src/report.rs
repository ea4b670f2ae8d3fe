//! Reports: what became of each finished job, for people and for the ERP.
//!
//! Per job, under `[report] dir`: `<id>-<input>.json` (input, hash, subaccount, counts, rejected
//! rows with reasons, remote files, state history with times) and `<id>-<input>.result.csv`, one
//! line per input row (`line;number;correlation_id;status;reason;remote_file`) for the ERP to
//! import; its rows are the input read again ([`crate::job_input`]), and no field from outside
//! can start a spreadsheet formula ([`csv_field`]). Then the `on_outcome` hook is queued
//! (`hooks`). Reports never hold a secret.

use crate::config::Config;
use crate::convert::{RejectedRow, Row, RowSink};
use crate::fsutil::{sync_dir, sync_fs, write_replacing};
pub use crate::hooks::Event;
use crate::job_input::AsConverted;
use crate::journal::{Batch, Job, JobState, Journal, Message};
use crate::stage::{Ctx, StageError};
use serde_json::json;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where a job's per-message outcomes go when its tracking ends.
pub fn delivery_path(cfg: &Config, job: &Job) -> PathBuf {
    cfg.report
        .dir
        .join(format!("{}-{}.delivery.csv", job.id, job.input_name))
}

/// The report files of a job.
pub fn report_paths(cfg: &Config, job: &Job) -> (PathBuf, PathBuf) {
    let base = format!("{}-{}", job.id, job.input_name);
    (
        cfg.report.dir.join(format!("{base}.json")),
        cfg.report.dir.join(format!("{base}.result.csv")),
    )
}

/// Writes the reports of every finished job not yet reported, queues the hook, and removes the
/// job's spool files. Returns the jobs reported.
///
/// # Errors
/// [`StageError`] when the journal fails or a report cannot be written (retried next round).
pub fn report_finished(ctx: &mut Ctx<'_>) -> Result<Vec<Job>, StageError> {
    let jobs = ctx.journal.unreported()?;
    let mut done = vec![];
    let mut outcome = Ok(());
    for job in &jobs {
        let span = tracing::info_span!("job", id = job.id, input = %job.input_name);
        let _g = span.enter();
        match report_one(ctx, job) {
            Ok(()) => done.push(job.id),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    // One commit for the round (also when a later job failed), after one flush of the reports'
    // file system (not an fsync per file). A crash before it writes those reports again and may
    // run their hook twice: the hook runs at least once.
    if !done.is_empty() {
        let dir = &ctx.cfg.report.dir;
        sync_fs(dir)
            .and_then(|()| sync_dir(dir))
            .map_err(|e| StageError::local(format!("syncing {}", dir.display()), e))?;
        // Message tracking starts with the file outcome; statuses that came earlier are kept.
        let until = (ctx.clock.now()
            + chrono::TimeDelta::from_std(ctx.cfg.status.give_up_after)
                .unwrap_or(chrono::TimeDelta::MAX))
        .timestamp_millis();
        let tracks = ctx.cfg.status.tracks();
        ctx.journal.transaction(|t| {
            for id in &done {
                t.set_reported(*id)?;
                if tracks {
                    t.open_tracking(*id, until)?;
                }
            }
            Ok(())
        })?;
    }
    outcome.map(|()| jobs)
}

fn report_one(ctx: &mut Ctx<'_>, job: &Job) -> Result<(), StageError> {
    let batches = ctx.journal.batches(job.id)?;
    let (json_path, csv_path) = report_paths(ctx.cfg, job);
    let how = AsConverted::of(ctx.journal, job, ctx.cfg)?;
    let zone = &ctx.cfg.batch.zone;
    let duplicates = ctx
        .journal
        .duplicates(job.id)?
        .into_iter()
        .map(|d| (d.line, d.reason(zone)))
        .collect();
    let skipped = Skipped {
        opted_out: ctx
            .journal
            .opted_out(job.id)?
            .iter()
            .map(|o| (o.line, crate::optout::reason(o, zone)))
            .collect(),
        duplicates,
    };
    write_result_csv(ctx.cfg, job, &batches, &csv_path, &how, &skipped)
        .map_err(|e| StageError::local(format!("writing {}", csv_path.display()), e))?;
    write_json(
        ctx.cfg,
        ctx.journal,
        job,
        &batches,
        &json_path,
        &csv_path,
        false,
    )?;
    crate::crash::point("reported");
    queue_hook(ctx.cfg, job, &json_path, &csv_path, Event::File)?;
    // Spool files go only with batches that succeeded: a failed or expired batch's file is what
    // `smsdrop retry` sends again (and what a late outcome is compared with).
    for b in batches.iter().filter(|b| b.state == JobState::Succeeded) {
        crate::spool::remove(ctx.cfg, job.id, b.part);
    }
    tracing::info!(outcome = job.state.as_str(), report = %json_path.display(), "job finished");
    Ok(())
}

/// Writes a job's JSON report (again, when its message tracking ends).
///
/// # Errors
/// When the journal fails or the file cannot be written.
pub fn write_json(
    cfg: &Config,
    journal: &Journal,
    job: &Job,
    batches: &[Batch],
    path: &Path,
    csv: &Path,
    tracking_ends: bool,
) -> Result<(), StageError> {
    let conversion: serde_json::Value = journal
        .convert_report(job.id)?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    let doc = json!({
        "job": job.id,
        "input": job.input_name,
        "input_path": job.input_path.to_string_lossy(),
        "stored_path": job.stored_path.as_ref().map(|p| p.to_string_lossy()),
        "hash_sha256": job.hash,
        "subaccount": job.subaccount,
        "outcome": job.state,
        "reason": job.reason,
        "late_write": job.late,
        "continues_job": job.parent_job,
        "input_bytes": {"from": job.start_offset, "read": job.consumed},
        "rows_read": job.rows_read,
        "rows_sent": job.rows_sent,
        "rows_rejected": job.rows_rejected,
        "rows_duplicate": conversion.get("rows_duplicate").cloned().unwrap_or(0.into()),
        "rows_opted_out": conversion.get("rows_opted_out").cloned().unwrap_or(0.into()),
        "remote_files": batches.iter().map(|b| json!({
            "name": b.name, "rows": b.rows, "bytes": b.bytes, "state": b.state,
            "uploaded_at": b.uploaded_at, "upload_attempts_failed": b.attempts, "last_error": b.last_error,
            "note": b.note,
        })).collect::<Vec<_>>(),
        "history": journal.history(job.id)?,
        "conversion": conversion,
        "result_csv": csv.to_string_lossy(),
        "messages": messages_json(cfg, journal, job, tracking_ends)?,
    });
    let text = serde_json::to_string_pretty(&doc).expect("reports always serialise");
    write_replacing(path, |w| w.write_all(text.as_bytes()), false)
        .map_err(|e| StageError::local(format!("writing {}", path.display()), e))
}

/// The rows a job kept back, by line (as the conversion numbered them), with why.
struct Skipped {
    /// To numbers that opted out (`[optout] apply`); looked at first.
    opted_out: std::collections::HashMap<u64, String>,
    /// Already sent (`[batch] duplicate_rows`).
    duplicates: std::collections::HashMap<u64, String>,
}

/// Writes one line per input row by reading the stored input again (conversion is
/// deterministic), so no per-row state is kept in the journal beyond the rows kept back.
fn write_result_csv(
    cfg: &Config,
    job: &Job,
    batches: &[Batch],
    path: &Path,
    how: &AsConverted,
    skipped: &Skipped,
) -> io::Result<()> {
    write_replacing(
        path,
        |out| {
            let mut sink = ResultSink {
                out,
                batches,
                skipped,
                sent: 0,
                job_reason: (job.state == JobState::Rejected)
                    .then(|| job.reason.clone().unwrap_or_default()),
                line_offset: line_offset(job, how.header),
            };
            writeln!(
                sink.out,
                "line;number;correlation_id;status;reason;remote_file"
            )?;
            let read = crate::job_input::convert_again(cfg, job, how, &mut sink);
            let wrote_rows = matches!(&read, Ok(Ok(r)) if r.rows_read > 0);
            if !wrote_rows {
                let why = job
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the input could not be read again".into());
                writeln!(
                    sink.out,
                    "0;;;{};{};",
                    status_of(job.state),
                    csv_field(&why)
                )?;
            }
            Ok(())
        },
        false,
    )
}

/// How far down the input a continuation's rows are: its rows are numbered from its own first
/// line (the header line, when carried, is line 1).
pub(crate) fn line_offset(job: &Job, header: bool) -> u64 {
    if job.start_offset == 0 {
        return 0;
    }
    let before = crate::claim::count_breaks(job.kept_path(), 0, job.start_offset).unwrap_or(0);
    (before + 1).saturating_sub(if header { 2 } else { 1 })
}

/// The first `limit` rows a job sent, read again from its input (the status page with
/// `[http] show_messages`): line (as in the result CSV), number, text.
///
/// # Errors
/// When the input cannot be read again.
pub fn sent_rows(
    cfg: &Config,
    job: &Job,
    how: &AsConverted,
    limit: usize,
) -> io::Result<Vec<(u64, String, String)>> {
    struct Take(Vec<(u64, String, String)>, usize);
    impl RowSink for Take {
        fn row(&mut self, r: &Row<'_>) -> io::Result<()> {
            if self.0.len() >= self.1 {
                // Enough: stop reading the input.
                return Err(io::Error::new(io::ErrorKind::Interrupted, "enough rows"));
            }
            self.0
                .push((r.line, r.number.to_owned(), r.text.to_owned()));
            Ok(())
        }
    }
    let offset = line_offset(job, how.header);
    let mut take = Take(vec![], limit);
    match crate::job_input::convert_again(cfg, job, how, &mut take)? {
        Ok(_) => {}
        Err(crate::convert::ConvertError::Write(e)) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(io::Error::other(e.to_string())),
    }
    Ok(take
        .0
        .into_iter()
        .map(|(l, n, t)| (l + offset, n, t))
        .collect())
}

fn status_of(state: JobState) -> &'static str {
    state.as_str()
}

struct ResultSink<'a, W: Write> {
    out: W,
    batches: &'a [Batch],
    /// Rows kept back (opted out, already sent), by line.
    skipped: &'a Skipped,
    sent: u64,
    job_reason: Option<String>,
    /// Added to line numbers: a continuation's rows sit further down in the input.
    line_offset: u64,
}

impl<W: Write> RowSink for ResultSink<'_, W> {
    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        let kept_back = match self.skipped.opted_out.get(&row.line) {
            Some(why) => Some(("opted_out", why)),
            None => self
                .skipped
                .duplicates
                .get(&row.line)
                .map(|why| ("duplicate", why)),
        };
        if let Some((status, why)) = kept_back {
            return writeln!(
                self.out,
                "{};{};{};{status};{};",
                row.line + self.line_offset,
                row.number,
                csv_field(row.correlation_id),
                csv_field(why)
            );
        }
        if let Some(why) = &self.job_reason {
            return writeln!(
                self.out,
                "{};{};{};rejected;{};",
                row.line + self.line_offset,
                row.number,
                csv_field(row.correlation_id),
                csv_field(why)
            );
        }
        let mut before = 0;
        let batch = self.batches.iter().find(|b| {
            before += b.rows;
            self.sent < before
        });
        self.sent += 1;
        let (status, reason, name) = match batch {
            Some(b) => (b.state.as_str(), batch_reason(b), b.name.as_str()),
            None => (
                "unknown",
                "not found in the job's batch files (was the config changed?)",
                "",
            ),
        };
        writeln!(
            self.out,
            "{};{};{};{status};{reason};{name}",
            row.line + self.line_offset,
            row.number,
            csv_field(row.correlation_id)
        )
    }

    fn rejected(&mut self, row: &RejectedRow) -> io::Result<()> {
        writeln!(
            self.out,
            "{};{};{};rejected;{};",
            row.line + self.line_offset,
            csv_field(&row.number),
            csv_field(&row.correlation_id),
            csv_field(&row.reason)
        )
    }
}

fn batch_reason(b: &Batch) -> &'static str {
    match b.state {
        JobState::Succeeded => "",
        JobState::Failed if b.uploaded_at.is_none() => {
            "not uploaded: the batch was set aside (see the job's report)"
        }
        JobState::Failed => "the gateway moved the file to error/",
        JobState::Expired => "no outcome from the gateway in time",
        _ => "no outcome yet",
    }
}

/// A CSV field holding text from outside (the ERP, the gateway), safe for a spreadsheet: one
/// that a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return, as OWASP lists them) gets a `'` in front, and it is quoted when it holds
/// `;`, `"` or a line break. Digits alone (a number smsdrop normalised) pass unchanged.
pub(crate) fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([';', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Queues the outcome hook for `job` (run beside the engine by [`crate::hooks::Runner`]) with
/// the outcome in its environment.
///
/// # Errors
/// When the queue file cannot be written (the job is reported again in a later round).
pub(crate) fn queue_hook(
    cfg: &Config,
    job: &Job,
    json: &Path,
    csv: &Path,
    event: Event,
) -> Result<(), StageError> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut env = vec![
        ("SMSDROP_JOB_ID", job.id.to_string()),
        ("SMSDROP_OUTCOME", job.state.as_str().to_owned()),
        ("SMSDROP_INPUT", job.input_name.clone()),
        ("SMSDROP_SUBACCOUNT", job.subaccount.clone()),
        ("SMSDROP_REPORT", path(json)),
        ("SMSDROP_RESULT_CSV", path(csv)),
    ];
    if event == Event::Delivery {
        env.push(("SMSDROP_DELIVERY_CSV", path(&delivery_path(cfg, job))));
    }
    crate::hooks::queue(cfg, job.id, event, env).map_err(|e| {
        StageError::local(
            format!(
                "queueing the hook in {}",
                crate::hooks::queue_dir(cfg).display()
            ),
            e,
        )
    })
}

/// The most failed messages listed one by one in a JSON report.
const MAX_LISTED: u32 = 10_000;

/// What a failed status means, for people.
fn failure_reason(m: &Message) -> String {
    let (code, name) = match (m.delivered_code, m.sent_code) {
        (Some(c), _) if c != 4 => (c, m.delivered_status.clone()),
        (_, Some(c)) => (c, m.sent_status.clone()),
        _ => (0, None),
    };
    let what = match code {
        101 => "expired before the carrier took it",
        102 => "the gateway could not reach the carrier",
        103 => "the carrier rejected it",
        104 => "the carrier could not deliver it to the phone",
        201 => "no credit on the gateway account",
        202 => "invalid destination number",
        203 => "the number is blacklisted",
        204 => "the number opted out",
        205 => "the number reached its message limit",
        207 => "invalid message text",
        301 => "the gateway had an internal error",
        _ => "failed",
    };
    match name {
        Some(n) => format!("{n}: {what}"),
        None => what.to_owned(),
    }
}

/// The `messages` section of a job's JSON report: `null` without message tracking.
///
/// # Errors
/// When the journal fails.
pub fn messages_json(
    cfg: &Config,
    journal: &Journal,
    job: &Job,
    ending: bool,
) -> Result<serde_json::Value, StageError> {
    let Some(counts) = journal.message_counts(job.id)? else {
        return Ok(serde_json::Value::Null);
    };
    let header = journal.carries_header(job)?;
    let offset = line_offset(job, header);
    let failed: Vec<_> = journal
        .failed_messages(job.id, MAX_LISTED)?
        .iter()
        .map(|m| {
            json!({
                "line": m.line + offset, "number": m.number, "correlation_id": m.correlation_id,
                "erp_correlation_id": m.erp_id, "carrier": m.carrier,
                "status": m.delivered_status.clone().filter(|_| m.delivered_code.is_some_and(|c| c != 4))
                    .or(m.sent_status.clone()),
                "reason": failure_reason(m),
            })
        })
        .collect();
    let untracked: Vec<_> = journal
        .untracked_messages(job.id, MAX_LISTED)?
        .iter()
        .map(|m| json!({"line": m.line + offset, "correlation_id": m.correlation_id, "reason": m.untracked}))
        .collect();
    let tracking = if ending {
        Some("done".to_owned())
    } else {
        journal.tracking(job.id)?
    };
    Ok(json!({
        "tracking": tracking.as_deref().unwrap_or("waiting for the file outcome"),
        "correlation_ids": cfg.status.correlation_ids.as_str(),
        "sent": counts.sent,
        "delivered": counts.delivered,
        "failed": counts.failed,
        "pending": counts.pending,
        "untracked": counts.untracked,
        "failed_messages": failed,
        "untracked_messages": untracked,
        "delivery_csv": (tracking.as_deref() == Some("done"))
            .then(|| delivery_path(cfg, job).to_string_lossy().into_owned()),
    }))
}
