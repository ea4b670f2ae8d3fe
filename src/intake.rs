//! Intake: from a complete input file to a recorded job with named batch files.
//!
//! Order of steps, each safe to crash after: (1) record the job as `detected`; (2) convert into
//! spool files (ours, rewritten on a retry), keeping back rows to numbers that opted out
//! ([`crate::optout`]) and rows already sent (the duplicate guard); (3) in one
//! transaction, allocate the remote names and record the batch files (`converted`) or the
//! rejection; (4) archive the input ([`crate::archive`]). A restart resumes a job from its
//! recorded step. This module never deletes an input and never talks to the server except
//! through the sequence probe.

use crate::archive::{store_inputs, Origin};
use crate::batch::BatchWriter;
use crate::claim::{claim, open_range, Claimed};
use crate::config::IdMode;
use crate::convert::billing::Billing;
use crate::convert::{ConvertError, ConvertReport};
use crate::convert::{RejectedRow, Row, RowSink, SendAt};
use crate::fsutil::{hash_file, parent, sync_dir, sync_fs};
use crate::journal::{row_key, BatchCache, Duplicate, Earlier, InsertError, Journal, RowKey};
use crate::journal::{Job, JobState, JournalError, NewBatch, NewJob, OptedOut};
use crate::spool::{spool_dir, spool_path};
use crate::stage::{Ctx, StageError};
use crate::status::ids::{read_messages, IdSink};
use crate::upload::probe_sequences;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file to take, and the subaccount its folder names (`Ok(None)`: the configured one).
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub subaccount: Result<Option<String>, String>,
}

/// Takes new inputs as one group: records them, converts them, names their batches, archives
/// them, with one journal transaction per step for the whole group (not per file). Returns the
/// job ids; a file that vanished before it could be looked at gets none.
///
/// # Errors
/// [`StageError`]; jobs are then left at their last recorded step and resumed later.
pub fn take_all(
    ctx: &mut Ctx<'_>,
    inputs: &[Input],
    origin: Origin,
) -> Result<Vec<i64>, StageError> {
    struct Found<'a> {
        input: &'a Input,
        name: String,
        size: u64,
        dev_ino: Option<(u64, u64)>,
        sub: Option<String>,
        early: Option<String>,
    }
    let mut found = Vec::with_capacity(inputs.len());
    for input in inputs {
        let meta = match std::fs::metadata(&input.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(input = %input.path.display(), error = %e, "cannot look at the file");
                continue;
            }
        };
        let name = input
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sub = input
            .subaccount
            .clone()
            .ok()
            .flatten()
            .or_else(|| ctx.cfg.batch.subaccount.clone());
        let early = match (&input.subaccount, &sub) {
            (Err(why), _) => Some(why.clone()),
            (Ok(_), None) => Some(
                "no subaccount: set [batch] subaccount or drop the file into inbox/<SUBACCOUNT>/"
                    .into(),
            ),
            _ => match File::open(&input.path) {
                Ok(_) => None,
                Err(e) if crate::fsutil::is_transient(&e) => {
                    // Out of descriptors (or the like): not the file's fault; next round.
                    tracing::warn!(input = ?input.path, error = %e, "cannot open the file now; it stays in the inbox and is tried again");
                    continue;
                }
                Err(e) => Some(format!(
                    "the file could not be read ({e}); check its permissions"
                )),
            },
        };
        found.push(Found {
            input,
            name,
            size: meta.len(),
            dev_ino: Some((meta.dev(), meta.ino())),
            sub,
            early,
        });
    }
    if found.is_empty() {
        return Ok(vec![]);
    }
    let ids = ctx.journal.transaction(|t| {
        let mut ids = Vec::with_capacity(found.len());
        for f in &found {
            let new = NewJob {
                input_name: &f.name,
                input_path: &f.input.path,
                subaccount: f.sub.as_deref().unwrap_or(""),
                hash: "",
                size: f.size,
                dev_ino: f.dev_ino,
            };
            let id = t.insert_job(&new)?;
            if let Some(why) = &f.early {
                t.set_job_state(id, JobState::Rejected, Some(why))?;
            }
            ids.push(id);
        }
        Ok(ids)
    })?;
    crate::crash::point("detected");
    for (f, id) in found.iter().zip(&ids) {
        tracing::info!(job = id, input = %f.input.path.display(), "input taken");
    }
    let (early, pending): (Vec<_>, Vec<_>) = found
        .iter()
        .zip(ids.iter().copied())
        .partition(|(f, _)| f.early.is_some());
    for (f, id) in early {
        tracing::warn!(job = id, input = %f.input.path.display(), reason = f.early.as_deref(), "input rejected");
    }
    let pending: Vec<i64> = pending.into_iter().map(|(_, id)| id).collect();
    let rejected_early: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !pending.contains(id))
        .collect();
    store_inputs(ctx, &rejected_early, origin)?;
    process_all(ctx, &pending, origin)?;
    Ok(ids)
}

/// What converting one job gave.
enum Converted {
    Ready {
        job: Job,
        hash: String,
        report: ConvertReport,
        batches: Vec<NewBatch>,
        /// Bytes of the input read (from the job's start offset).
        consumed: u64,
        /// Its messages (a spool file), when message statuses are tracked.
        messages: Option<tempfile::NamedTempFile>,
        /// What the row-level duplicate guard found, when it is on.
        guard: Option<Guarded>,
        /// The rows kept back because their number opted out (`[optout] apply`).
        opted_out: Vec<OptedOut>,
    },
    Rejected {
        job: Job,
        hash: Option<String>,
        why: String,
        report: Option<ConvertReport>,
        /// Bytes read, when the whole file was read (it may then still be watched).
        consumed: Option<u64>,
        /// The rows skipped as already sent, when that is why nothing is left to send.
        guard: Option<Guarded>,
        /// The rows kept back as opted out, when that is why nothing is left to send.
        opted_out: Vec<OptedOut>,
    },
    Vanished {
        job: Job,
    },
}

/// Converts `detected` jobs and names their batches (steps 2-4), as one group. Safe to call again
/// after a crash: spool files are rewritten, nothing is recorded twice.
///
/// # Errors
/// [`StageError`] leaves the jobs `detected`, to be resumed.
pub fn process_all(ctx: &mut Ctx<'_>, ids: &[i64], origin: Origin) -> Result<(), StageError> {
    if ids.is_empty() {
        return Ok(());
    }
    let since = ctx.cfg.inbox.duplicate_since(ctx.clock.now());
    let mut hashes_in_group: Vec<(String, String)> = vec![];
    let mut results = Vec::with_capacity(ids.len());
    let mut claim_failed = None;
    let guard_on = row_guard(ctx.cfg);
    if guard_on {
        ctx.journal.prepare_remembered(since)?;
    }
    let mut sent_in_group: HashMap<RowKey, Earlier> = HashMap::new();
    for job in claim_all(ctx, ids, origin, &mut claim_failed)? {
        let guard = guard_on.then_some((since, &sent_in_group));
        let mut converted = convert_one(ctx, job, guard)?;
        // The duplicate guard, against the journal and against this group (a continuation of
        // late writes is part of an input already taken, never a duplicate).
        if let (Converted::Ready { job, hash, .. }, true) = (
            &converted,
            ctx.cfg.inbox.duplicate_days > 0 && !is_continuation(&converted),
        ) {
            let earlier = ctx
                .journal
                .accepted_with_hash(hash, since)?
                .filter(|p| p.id != job.id);
            let why = match earlier {
                Some(prev) => Some(duplicate_reason(
                    &prev.input_name,
                    prev.id,
                    &prev.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                )),
                None => hashes_in_group
                    .iter()
                    .find(|(h, _)| h == hash)
                    .map(|(_, name)| duplicate_reason(name, 0, "just now")),
            };
            match why {
                Some(why) => {
                    let Converted::Ready { job, hash, .. } = converted else {
                        unreachable!()
                    };
                    converted = Converted::Rejected {
                        job,
                        hash: Some(hash),
                        why,
                        report: None,
                        consumed: None,
                        guard: None,
                        opted_out: vec![],
                    };
                }
                None => hashes_in_group.push((hash.clone(), job.input_name.clone())),
            }
        }
        let converted = nothing_left_to_send(ctx, converted);
        // Rows of this group count as recorded for upload for the inputs after it.
        if let Converted::Ready {
            job,
            guard: Some(g),
            ..
        } = &converted
        {
            let at = ctx.clock.now();
            for (key, line) in &g.sent {
                sent_in_group.entry(*key).or_insert(Earlier {
                    job: job.id,
                    line: *line,
                    at,
                });
            }
        }
        results.push(converted);
    }
    let ready: Vec<&Converted> = results
        .iter()
        .filter(|c| matches!(c, Converted::Ready { .. }))
        .collect();
    if !ready.is_empty() {
        sync_fs(&spool_dir(ctx.cfg)).map_err(|e| StageError::local("syncing the spool", e))?;
    }
    let day = ctx.today();
    let mut subs: Vec<(String, chrono::NaiveDate)> = vec![];
    for c in &ready {
        if let Converted::Ready { job, .. } = c {
            if !subs.iter().any(|(s, _)| *s == job.subaccount) {
                subs.push((job.subaccount.clone(), day));
            }
        }
    }
    if let Err(e) = probe_sequences(ctx, &subs) {
        // Say on each job why it waits (status shows it), then let the daemon retry.
        let why = format!("waiting for the server to number its batch files: {e}");
        ctx.journal.transaction(|t| {
            for c in &ready {
                if let Converted::Ready { job, .. } = c {
                    t.set_reason(job.id, Some(&why))?;
                }
            }
            Ok(())
        })?;
        return Err(e);
    }
    // Messages first, in slices (memory stays flat): no status can be for them before their
    // batches are recorded below, and a conversion repeated after a crash replaces them.
    for c in &results {
        if let Converted::Ready {
            job,
            messages: Some(file),
            ..
        } = c
        {
            ctx.journal
                .record_messages(job.id, read_messages(file))
                .map_err(|e| match e {
                    InsertError::Db(e) => StageError::Journal(e),
                    InsertError::Read(e) => {
                        StageError::local("reading the messages' spool file".to_owned(), e)
                    }
                })?;
        }
    }
    let names = ctx.journal.transaction(|t| {
        let mut names = vec![];
        for c in &results {
            match c {
                Converted::Ready {
                    job,
                    hash,
                    report,
                    batches,
                    consumed,
                    guard,
                    opted_out,
                    ..
                } => {
                    let json = report_json(report, guard.as_ref(), opted_out, &ctx.cfg.batch.zone);
                    t.set_hash(job.id, hash)?;
                    t.set_consumed(job.id, *consumed, watch_until(ctx.cfg, ctx.clock, job))?;
                    t.set_counts(
                        job.id,
                        report.rows_read,
                        report.rows_sent,
                        report.rows_rejected,
                        &json,
                    )?;
                    t.set_reason(job.id, None)?;
                    names.push((
                        job.id,
                        t.record_batches(job.id, &job.subaccount, day, batches)?,
                    ));
                    // Recorded for upload with its batches: from now on these rows count as
                    // sent for the guard, and a crash leaves both or neither.
                    if let Some(g) = guard {
                        t.remember_rows(job.id, ctx.clock.now(), &g.sent)?;
                        t.set_duplicates(job.id, &g.dups)?;
                    }
                    t.set_opted_out(job.id, opted_out)?;
                }
                Converted::Rejected {
                    job,
                    hash,
                    why,
                    report,
                    consumed,
                    guard,
                    opted_out,
                } => {
                    if let Some(h) = hash {
                        t.set_hash(job.id, h)?;
                    }
                    if let Some(n) = consumed {
                        t.set_consumed(job.id, *n, watch_until(ctx.cfg, ctx.clock, job))?;
                    }
                    if let Some(r) = report {
                        let json = report_json(r, guard.as_ref(), opted_out, &ctx.cfg.batch.zone);
                        t.set_counts(job.id, r.rows_read, r.rows_sent, r.rows_rejected, &json)?;
                    }
                    if let Some(g) = guard {
                        t.set_duplicates(job.id, &g.dups)?;
                    }
                    t.set_opted_out(job.id, opted_out)?;
                    t.set_job_state(job.id, JobState::Rejected, Some(why))?;
                }
                Converted::Vanished { job } => {
                    t.set_job_state(
                        job.id,
                        JobState::Rejected,
                        Some("the input disappeared before it was converted"),
                    )?;
                    // Nothing to store: an empty path marks it, so a new file of that name is free.
                    t.set_stored_path(job.id, Path::new(""))?;
                }
            }
        }
        Ok(names)
    })?;
    crate::crash::point("converted");
    for (id, n) in &names {
        tracing::info!(job = id, remote = ?n, "converted");
    }
    for c in &results {
        if let Converted::Ready {
            job,
            guard: Some(g),
            ..
        } = c
        {
            tracing::info!(
                job = job.id,
                sent = g.sent.len(),
                duplicate = g.dups.len(),
                "duplicate guard: rows already sent are not sent again"
            );
        }
    }
    for c in &results {
        if let Converted::Ready { job, opted_out, .. } = c {
            if !opted_out.is_empty() {
                tracing::info!(
                    job = job.id,
                    opted_out = opted_out.len(),
                    "opt-outs: rows to numbers that opted out are not sent"
                );
            }
        }
    }
    for c in &results {
        if let Converted::Rejected { job, why, .. } = c {
            tracing::warn!(job = job.id, input = %job.input_path.display(), reason = %why, "input rejected");
        }
    }
    let to_store: Vec<i64> = results
        .iter()
        .filter_map(|c| match c {
            Converted::Ready { job, .. } | Converted::Rejected { job, .. } => Some(job.id),
            Converted::Vanished { .. } => None,
        })
        .collect();
    store_inputs(ctx, &to_store, origin)?;
    match claim_failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn duplicate_reason(name: &str, id: i64, when: &str) -> String {
    let job = if id > 0 {
        format!("job {id}, ")
    } else {
        "in the same group, ".into()
    };
    let retry = if id > 0 {
        format!("if that job's files did not go out, `smsdrop retry {id}` sends them again; ")
    } else {
        String::new()
    };
    format!(
        "duplicate: the same content as {name:?} ({job}taken {when}); sending it again would send \
         every message twice. {retry}to send this file anyway, set [inbox] duplicate_days = 0 or \
         change the file"
    )
}

/// Converts one job's input into spool files, hashing (and counting) its bytes on the way; with
/// `guard` (the window's start, and the rows earlier inputs of this group send), rows already
/// sent are skipped.
fn convert_one(
    ctx: &mut Ctx<'_>,
    job: Job,
    guard: Option<(chrono::DateTime<chrono::Utc>, &HashMap<RowKey, Earlier>)>,
) -> Result<Converted, StageError> {
    let header = ctx.journal.carries_header(&job)?;
    // Without a view of the writer (`watch = "poll"`), a file still being written may end in the
    // middle of a row: read up to its last line break, and leave the rest to the late-write
    // watch (sent when complete, or when the watch ends).
    // A workbook is never cut: it is read whole, from its kept copy.
    let limit = if !ctx.cfg.inbox.use_events
        && watch_until(ctx.cfg, ctx.clock, &job).is_some()
        && !crate::convert::sheet::is_workbook_file(job.source())
    {
        crate::claim::last_line_break(job.source(), job.start_offset).unwrap_or(None)
    } else {
        None
    };
    let (prefix, body) = match open_range(job.source(), job.start_offset, limit, header) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Converted::Vanished { job }),
        Err(e) if crate::fsutil::is_transient(&e) => {
            return Err(StageError::local(
                format!("opening {} (tried again)", job.source().display()),
                e,
            ))
        }
        Err(e) => {
            let why = format!("the file could not be read: {e}");
            return Ok(Converted::Rejected {
                job,
                hash: None,
                why,
                report: None,
                consumed: None,
                guard: None,
                opted_out: vec![],
            });
        }
    };
    let hasher = Hashing::new(body);
    let digest = hasher.digest.clone();
    let spool = spool_dir(ctx.cfg);
    let local = |e: io::Error| StageError::local(format!("writing to {}", spool.display()), e);
    // The spool is synced once per group (sync_fs), not once per file.
    let mut writer = BatchWriter::new(
        &spool,
        ctx.cfg.batch.max_rows_per_file,
        ctx.cfg.batch.header_line,
    )
    .without_sync();
    // Rows get smsdrop's correlation ids where `[status] correlation_ids` says so; with message
    // tracking on, every row is recorded to match statuses to.
    let status = &ctx.cfg.status;
    let journal_id = if status.record_messages || status.correlation_ids != IdMode::Keep {
        Some(ctx.journal.journal_id()?)
    } else {
        None
    };
    // The send time is taken before now: when it is now (no window to wait for), it is not
    // later, and rows past their send_before are rejected without naming it.
    let at = send_time(ctx, &job.subaccount);
    let send_at = SendAt {
        at,
        later: at > ctx.clock.now(),
        zone: ctx.cfg.batch.zone,
    };
    let cfg = ctx.cfg;
    let input = prefix.chain(hasher);
    // The row guard sits in front of the writer (and of the correlation ids: a skipped row gets
    // none and is not tracked).
    let mut guarded = None;
    let journal: &Journal = ctx.journal;
    let line_offset = if guard.is_some() {
        crate::report::line_offset(&job, header)
    } else {
        0
    };
    // The opt-out filter sits in front of the guard: a row to a number that opted out is
    // reported as that, never as a duplicate, and never counts as sent.
    let optouts = if cfg.optout.apply {
        Some(crate::optout::load(journal, &job.subaccount)?)
    } else {
        None
    };
    let mut filtered = None;
    let run = |sink: &mut dyn RowSink| {
        let mut g = None;
        let after_filter: &mut dyn RowSink = match guard {
            Some((since, group)) => g.insert(Guard {
                inner: sink,
                journal,
                subaccount: &job.subaccount,
                since,
                group,
                cache: BatchCache::new(),
                line_offset,
                found: Guarded::default(),
                billing: Billing::default(),
                failed: None,
            }),
            None => sink,
        };
        let mut f = None;
        let first: &mut dyn RowSink = match &optouts {
            Some(list) => f.insert(crate::optout::Filter::new(after_filter, list)),
            None => after_filter,
        };
        let r = crate::job_input::convert(cfg, &job, send_at, input, first);
        filtered = f.map(|f| (f.skipped, f.billing));
        guarded = g.map(|g| (g.found, g.billing, g.failed));
        r
    };
    let (mut converted, messages) = match journal_id.as_deref() {
        Some(jid) => {
            let max_rows = ctx.cfg.batch.max_rows_per_file;
            let record = status.record_messages.then_some(spool.as_path());
            let mut ids = IdSink::new(
                &mut writer,
                status.correlation_ids,
                jid,
                job.id,
                max_rows,
                record,
            )
            .map_err(local)?;
            let converted = run(&mut ids);
            (converted, ids.finish().map_err(local)?)
        }
        None => (run(&mut writer), None),
    };
    let mut guard = None;
    if let Some((found, billing, failed)) = guarded {
        if let Some(e) = failed {
            return Err(StageError::Journal(e));
        }
        if let Ok(r) = converted.as_mut() {
            r.not_sent(found.dups.len() as u64, &billing);
        }
        guard = Some(found);
    }
    let mut opted_out = vec![];
    if let Some((skipped, billing)) = filtered {
        if let Ok(r) = converted.as_mut() {
            r.not_sent(skipped.len() as u64, &billing);
        }
        opted_out = skipped;
    }
    let report = match converted {
        Ok(r) => r,
        Err(ConvertError::Read(e)) if crate::fsutil::is_transient(&e) => {
            return Err(StageError::local(
                format!("reading {} (tried again)", job.source().display()),
                e,
            ))
        }
        Err(ConvertError::Read(e)) => {
            let why = format!("reading the file failed: {e}");
            return Ok(Converted::Rejected {
                job,
                hash: None,
                why,
                report: None,
                consumed: None,
                guard: None,
                opted_out: vec![],
            });
        }
        Err(ConvertError::Write(e)) => return Err(local(e)),
    };
    let pending = writer.finish().map_err(local)?;
    let (hash, consumed) = {
        let mut d = digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = d.bytes;
        (d.finish(), n)
    };
    if let Some(why) = report.input_rejected.clone() {
        // Read to its end (not cut short as binary): rows the ERP adds later are still watched
        // for, and the hash covers exactly what was read.
        let whole =
            std::fs::metadata(job.source()).is_ok_and(|m| m.len() == job.start_offset + consumed);
        let hash = if whole {
            Some(hash)
        } else {
            hash_file(job.source()).ok()
        };
        return Ok(Converted::Rejected {
            job,
            hash,
            why,
            report: Some(report),
            consumed: whole.then_some(consumed),
            guard: None,
            opted_out: vec![],
        });
    }
    let mut batches = Vec::with_capacity(pending.len());
    for (part, p) in pending.into_iter().enumerate() {
        let dest = spool_path(ctx.cfg, job.id, part as u32);
        let bytes = std::fs::metadata(p.path()).map(|m| m.len()).unwrap_or(0);
        batches.push(NewBatch {
            rows: p.rows,
            bytes,
        });
        p.persist(&dest)
            .map_err(|e| StageError::local(format!("spool file {}", dest.display()), e))?;
    }
    Ok(Converted::Ready {
        job,
        hash,
        report,
        batches,
        consumed,
        messages,
        guard,
        opted_out,
    })
}

/// When this job's batches would go out: now, or when its send window opens (a row whose
/// `send_before` comes first is not sent).
fn send_time(ctx: &Ctx<'_>, subaccount: &str) -> DateTime<Utc> {
    crate::hold::send_time(ctx.cfg, subaccount, ctx.clock.now())
}

/// Whether the row-level duplicate guard is on: `[batch] duplicate_rows = "skip"` and a window
/// (`[inbox] duplicate_days` above 0).
fn row_guard(cfg: &crate::config::Config) -> bool {
    cfg.batch.duplicate_rows == crate::config::DuplicateRows::Skip && cfg.inbox.duplicate_days > 0
}

/// What the row guard found in one input.
#[derive(Debug, Default)]
struct Guarded {
    /// The rows handed on to be sent: key and line (as the result CSV numbers it), in order.
    sent: Vec<(RowKey, u64)>,
    /// The rows skipped, with where they went before.
    dups: Vec<Duplicate>,
}

/// The row-level duplicate guard: a row whose key was sent before (or goes out with an
/// earlier input of this group) is not handed on.
struct Guard<'a> {
    inner: &'a mut dyn RowSink,
    journal: &'a Journal,
    subaccount: &'a str,
    since: chrono::DateTime<chrono::Utc>,
    group: &'a HashMap<RowKey, Earlier>,
    cache: BatchCache,
    line_offset: u64,
    found: Guarded,
    /// What the skipped rows would have cost (taken off the report's totals).
    billing: Billing,
    failed: Option<JournalError>,
}

impl RowSink for Guard<'_> {
    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        let key = row_key(self.subaccount, row.number, row.text);
        let earlier = match self.group.get(&key) {
            Some(e) => Some(*e),
            None => match self.journal.sent_before(&key, self.since, &mut self.cache) {
                Ok(e) => e,
                Err(e) => {
                    self.failed = Some(e);
                    return Err(io::Error::other("the journal failed"));
                }
            },
        };
        match earlier {
            Some(earlier) => {
                self.found.dups.push(Duplicate {
                    line: row.line,
                    earlier,
                });
                self.billing.add(crate::convert::billing::cost(row.text));
                Ok(())
            }
            None => {
                self.found.sent.push((key, row.line + self.line_offset));
                self.inner.row(row)
            }
        }
    }

    fn rejected(&mut self, row: &RejectedRow) -> io::Result<()> {
        self.inner.rejected(row)
    }
}

/// A job whose every row was kept back (already sent, or to a number that opted out) has
/// nothing to send: rejected, saying why (the file-level guard, which says more, is asked
/// first).
fn nothing_left_to_send(ctx: &Ctx<'_>, c: Converted) -> Converted {
    match c {
        Converted::Ready {
            job,
            hash,
            report,
            batches,
            consumed,
            guard,
            opted_out,
            ..
        } if batches.is_empty()
            && (!opted_out.is_empty() || guard.as_ref().is_some_and(|g| !g.dups.is_empty())) =>
        {
            let zone = &ctx.cfg.batch.zone;
            let dups = guard.as_ref().map_or(&[][..], |g| &g.dups);
            let why = match (dups.first(), opted_out.first()) {
                (Some(d), None) => format!(
                    "nothing to send: every row ({}) was already sent, the first {}; the result \
                     CSV lists each ([batch] duplicate_rows = \"send\" sends such rows again)",
                    dups.len(),
                    d.reason(zone)
                ),
                (None, Some(o)) => format!(
                    "nothing to send: every row ({}) is to a number that opted out of {}, the \
                     first {}; the result CSV lists each (`smsdrop optout remove` takes a \
                     number off the list)",
                    opted_out.len(),
                    job.subaccount,
                    crate::optout::reason(o, zone)
                ),
                _ => format!(
                    "nothing to send: of its rows, {} were already sent and {} are to numbers \
                     that opted out of {}; the result CSV lists each",
                    dups.len(),
                    opted_out.len(),
                    job.subaccount
                ),
            };
            Converted::Rejected {
                job,
                hash: Some(hash),
                why,
                report: Some(report),
                consumed: Some(consumed),
                guard,
                opted_out,
            }
        }
        c => c,
    }
}

/// The conversion report as stored with the job, with the guard's and the opt-out filter's
/// findings: how many rows were kept back, and the first ones with why.
fn report_json(
    report: &ConvertReport,
    guard: Option<&Guarded>,
    opted_out: &[OptedOut],
    zone: &crate::config::Zone,
) -> String {
    let mut v = serde_json::to_value(report).expect("reports always serialise");
    if let Some(map) = v.as_object_mut() {
        map.insert("rows_opted_out".into(), opted_out.len().into());
        map.insert(
            "opted_out_rows".into(),
            crate::optout::listed(opted_out, zone).into(),
        );
    }
    if let (Some(g), Some(map)) = (guard, v.as_object_mut()) {
        map.insert("rows_duplicate".into(), g.dups.len().into());
        let listed: Vec<serde_json::Value> = g
            .dups
            .iter()
            .take(crate::convert::REPORT_DETAIL_LIMIT)
            .map(|d| serde_json::json!({"line": d.line, "reason": d.reason(zone)}))
            .collect();
        map.insert("duplicate_rows".into(), listed.into());
    }
    v.to_string()
}

fn is_continuation(c: &Converted) -> bool {
    matches!(c, Converted::Ready { job, .. } if job.parent_job.is_some())
}

/// Until when an input just converted is watched for late writes: inputs the ERP wrote into the
/// inbox, while `[inbox] late_write_secs` is not 0.
fn watch_until(
    cfg: &crate::config::Config,
    clock: &dyn crate::stage::Clock,
    job: &Job,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let grace = cfg.inbox.late_write_grace;
    let from_inbox = job.input_path.starts_with(&cfg.inbox.dir);
    (from_inbox && !grace.is_zero()).then(|| cfg.inbox.late_watch_until(clock.now()))
}

/// Claims every job's input that is not claimed yet (a crash may have left some), records the
/// claims in one transaction, and returns the jobs that have an input to convert.
fn claim_all(
    ctx: &mut Ctx<'_>,
    ids: &[i64],
    origin: Origin,
    failed: &mut Option<StageError>,
) -> Result<Vec<Job>, StageError> {
    let mut jobs = Vec::with_capacity(ids.len());
    let mut claims = vec![];
    for &id in ids {
        let Some(job) = ctx.journal.job(id)? else {
            tracing::error!(job = id, "job missing from the journal; skipped");
            continue;
        };
        if job.claimed_path.is_some() {
            jobs.push(job);
            continue;
        }
        match claim(ctx.cfg, &job, origin) {
            Ok(c) => claims.push((job, c)),
            Err(e) => {
                let why = format!(
                    "could not take {} out of the inbox: {e}; it stays where it is and is retried",
                    job.input_path.display()
                );
                ctx.journal
                    .transaction(|t| t.set_reason(job.id, Some(&why)))?;
                tracing::error!(job = job.id, error = %why, "input not claimed");
                // The others go on; the engine then waits before trying this one again.
                *failed = Some(StageError::local(
                    format!("claiming {}", job.input_path.display()),
                    e,
                ));
            }
        }
    }
    if claims.is_empty() {
        return Ok(jobs);
    }
    // Both ends of every rename durable, once per folder, before the journal says "claimed".
    let mut dirs: Vec<PathBuf> = vec![];
    for (job, c) in &claims {
        if let Claimed::At { path, .. } = c {
            // A copy (named file) leaves the user's folder alone: only the claim folder.
            let from = (origin == Origin::Inbox).then(|| parent(&job.input_path));
            for d in std::iter::once(parent(path)).chain(from) {
                if !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_owned());
                }
            }
        }
    }
    for d in &dirs {
        if !d.exists() {
            // The input's folder tidied away after an earlier owner's rename: nothing to sync.
            continue;
        }
        let local = |e| StageError::local(format!("syncing {}", d.display()), e);
        if origin == Origin::Named {
            // Copies: their data too, once per file system for the group.
            sync_fs(d).map_err(local)?;
        }
        sync_dir(d).map_err(local)?;
    }
    crate::crash::point("claimed");
    ctx.journal.transaction(|t| {
        for (job, c) in &claims {
            match c {
                Claimed::At { path, dev, ino } => t.set_claimed(job.id, path, *dev, *ino)?,
                Claimed::Vanished => {
                    t.set_job_state(
                        job.id,
                        JobState::Rejected,
                        Some("the input disappeared before it was taken; nothing was sent"),
                    )?;
                    // Nothing to store: an empty path marks it, so a new file of that name is free.
                    t.set_stored_path(job.id, Path::new(""))?;
                }
            }
        }
        Ok(())
    })?;
    for (job, c) in claims {
        if let Claimed::At { path, .. } = c {
            jobs.push(Job {
                claimed_path: Some(path),
                ..job
            });
        } else {
            tracing::warn!(job = job.id, input = %job.input_path.display(), "input disappeared before it was taken");
        }
    }
    Ok(jobs)
}

/// A reader that hashes what passes through it (so a big input is read once, not twice).
struct Hashing<R> {
    inner: R,
    digest: std::sync::Arc<std::sync::Mutex<Digester>>,
}

/// SHA-256 state shared with [`Hashing`], and the bytes it saw.
struct Digester {
    sha: Option<Sha256>,
    bytes: u64,
}

impl Digester {
    fn finish(&mut self) -> String {
        let h = self.sha.take().unwrap_or_default();
        hex::encode(h.finalize())
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            digest: std::sync::Arc::new(std::sync::Mutex::new(Digester {
                sha: Some(Sha256::new()),
                bytes: 0,
            })),
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut d = self
            .digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        d.bytes += n as u64;
        if let Some(h) = d.sha.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}
