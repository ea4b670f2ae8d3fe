//! Late writes: after an input is taken, its claimed file (the one a writer still holding it
//! open writes into) is watched for `[inbox] late_write_secs`. Rows appended after the bytes a
//! job read become a continuation job of the same input (`late_writes = "send"`), once the
//! appended part is quiet and the bytes already read are unchanged; or are only reported
//! (`"report"`). A file truncated or rewritten after the pickup is reported, never sent again.
//! Whatever is found is recorded loudly: log error, the job's report (written again, with the
//! hook), `status`.
//!
//! This module never sends a byte twice: a continuation starts where the last job's bytes end,
//! and only after those bytes are proven unchanged.

use crate::archive::{store_inputs, Origin};
use crate::claim::{count_breaks, ends_a_line, next_line};
use crate::config::LateWrites;
use crate::journal::{Job, JobState};
use crate::stage::{Ctx, StageError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Instant, SystemTime};

/// Appended parts seen growing: job → (size, since when); and the modification time at which
/// each watched input's read bytes were last proven unchanged.
#[derive(Debug, Default)]
pub struct LateWatch {
    growing: HashMap<i64, (u64, Instant)>,
    verified: HashMap<i64, SystemTime>,
}

impl LateWatch {
    /// Looks at every watched input once. Returns the continuation jobs it recorded (`detected`,
    /// for intake to convert).
    ///
    /// # Errors
    /// [`StageError::Journal`]; a file that cannot be read is looked at again next round.
    pub fn check(
        &mut self,
        ctx: &mut Ctx<'_>,
        writing: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<i64>, StageError> {
        let mut continuations = vec![];
        let mut ended = vec![];
        for job in ctx.journal.watched()? {
            match self.look(ctx, &job, writing)? {
                Look::Nothing => {}
                Look::Ended => ended.push(job.id),
                Look::Continued(id) => continuations.push(id),
            }
        }
        if !ended.is_empty() {
            // Claimed into a hidden folder: archived (through the input's first job, which
            // moves every job's view of the file) now that nothing watches it.
            let mut roots: Vec<i64> = vec![];
            for id in ended {
                if let Some(j) = ctx.journal.job(id)? {
                    let root = j.parent_job.unwrap_or(j.id);
                    if !roots.contains(&root) {
                        roots.push(root);
                    }
                }
            }
            store_inputs(ctx, &roots, Origin::Inbox)?;
        }
        Ok(continuations)
    }

    fn look(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        writing: &dyn Fn(&Path) -> bool,
    ) -> Result<Look, StageError> {
        let path = job.source().to_owned();
        let end = job.start_offset + job.consumed.unwrap_or(0);
        let (size, modified) = match std::fs::metadata(&path) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let why = format!(
                    "{} disappeared while it was watched for late writes",
                    path.display()
                );
                return self.stop(ctx, job, Some(&why));
            }
            Err(_) => return Ok(Look::Nothing),
        };
        let over = job.watch_until.is_some_and(|t| ctx.clock.now() >= t);
        if size == end {
            self.growing.remove(&job.id);
            // A rewrite in place keeps the size: the read bytes are hashed again whenever the
            // file's modification time moved since they were last proven unchanged (and once
            // after a start, when nothing is known).
            if modified.is_none() || self.verified.get(&job.id) != modified.as_ref() {
                let unchanged = hash_range(&path, job.start_offset, job.consumed.unwrap_or(0))
                    .is_ok_and(|h| h == job.hash);
                if !unchanged {
                    return self.stop(ctx, job, Some(&rewritten(size)));
                }
                if let Some(m) = modified {
                    self.verified.insert(job.id, m);
                }
            }
            return if over {
                self.stop(ctx, job, None)
            } else {
                Ok(Look::Nothing)
            };
        }
        if size < end {
            let why = format!(
                "the input was truncated after smsdrop took it ({size} bytes now, {end} were \
                 read): nothing was sent again; check what the ERP meant to send and drop a new \
                 export if rows are missing"
            );
            return self.stop(ctx, job, Some(&why));
        }
        // It grew: wait until the appended part is quiet and no one writes it.
        let seen = self.growing.entry(job.id).or_insert((size, Instant::now()));
        if seen.0 != size {
            *seen = (size, Instant::now());
        }
        if seen.1.elapsed() < ctx.cfg.inbox.stable || writing(&path) {
            return Ok(Look::Nothing);
        }
        self.growing.remove(&job.id);
        let unchanged = hash_range(&path, job.start_offset, job.consumed.unwrap_or(0))
            .is_ok_and(|h| h == job.hash);
        if !unchanged {
            let why = "the input was rewritten after smsdrop took it (the bytes it had read \
                       changed): nothing was sent again; check what the ERP meant to send and \
                       drop a new export if rows are missing";
            return self.stop(ctx, job, Some(why));
        }
        if job.state == JobState::Rejected
            && ctx.journal.duplicates(job.id)?.is_empty()
            && ctx.journal.opted_out(job.id)?.is_empty()
        {
            return self.appended_to_rejected(ctx, job, end, size);
        }
        self.appended(ctx, job, &path, end, size, over)
    }

    /// Rows were appended after `end`: a continuation (or a report only).
    fn appended(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        path: &Path,
        end: u64,
        size: u64,
        over: bool,
    ) -> Result<Look, StageError> {
        let late = size - end;
        // A row cut at the pickup (the writer paused inside it): its rest is not a row.
        let (start, cut) = if ends_a_line(path, end).unwrap_or(true) {
            (end, String::new())
        } else {
            match next_line(path, end).ok().flatten() {
                Some(skip) => (
                    end + skip,
                    format!(
                        "; the row being written at the pickup was cut at byte {end}: its first \
                         part went out with job {} (or was rejected, see its report), its rest \
                         ({skip} bytes) is not sent",
                        job.id
                    ),
                ),
                // The cut row is still being written: wait for its end.
                None if !over => return Ok(Look::Nothing),
                None => (size, String::new()),
            }
        };
        // Rows still being written (no line break yet) wait for theirs, or for the watch's end.
        if start < size && !over && next_line(path, start).ok().flatten().is_none() {
            return Ok(Look::Nothing);
        }
        if start >= size && !over {
            return Ok(Look::Nothing);
        }
        let rows = count_breaks(path, start, size)
            .unwrap_or(0)
            .max(u64::from(start < size));
        let name = &job.input_name;
        let (continued, msg) = match ctx.cfg.inbox.late_writes {
            LateWrites::Send if start < size => {
                let id = ctx.journal.transaction(|t| {
                    let id = t.insert_continuation(job, start)?;
                    t.set_watch(job.id, None)?;
                    t.set_late(
                        job.id,
                        &format!(
                            "late write: {late} bytes (about {rows} rows) were written to {name} \
                             after smsdrop took it; they are sent as job {id}{cut}"
                        ),
                    )?;
                    Ok(id)
                })?;
                (Some(id), format!("sent as job {id}"))
            }
            _ => {
                let why = format!(
                    "late write: {late} bytes (about {rows} rows) were written to {name} after \
                     smsdrop took it and were NOT sent ([inbox] late_writes = \"report\"){cut}; \
                     send them in a new file"
                );
                ctx.journal.transaction(|t| {
                    t.set_watch(job.id, None)?;
                    t.set_late(job.id, &why)
                })?;
                (None, "not sent".to_owned())
            }
        };
        tracing::error!(job = job.id, input = %job.input_path.display(), late_bytes = late, rows, outcome = %msg, "rows were written to the input after it was taken");
        Ok(match continued {
            Some(id) => Look::Continued(id),
            None if in_claim_folder(job) => Look::Ended,
            None => Look::Nothing,
        })
    }

    /// Rows appended to an input rejected whole: it stays rejected, they are reported and never
    /// sent (under `invalid_rows = "reject-file"` one bad row holds back the whole file, and a
    /// continuation would send part of it).
    fn appended_to_rejected(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        end: u64,
        size: u64,
    ) -> Result<Look, StageError> {
        let rows = count_breaks(job.source(), end, size).unwrap_or(0);
        let why = format!(
            "late write: {} bytes (about {rows} rows) were written to {} after smsdrop took it \
             and were NOT sent: the input was rejected whole ({}), so it stays rejected; fix \
             the export and drop it again as a new file",
            size - end,
            job.input_name,
            job.reason.as_deref().unwrap_or("see its report")
        );
        self.stop(ctx, job, Some(&why))
    }

    /// Ends a job's watch, recording why when something went wrong.
    fn stop(
        &mut self,
        ctx: &mut Ctx<'_>,
        job: &Job,
        why: Option<&str>,
    ) -> Result<Look, StageError> {
        self.growing.remove(&job.id);
        self.verified.remove(&job.id);
        ctx.journal.transaction(|t| {
            t.set_watch(job.id, None)?;
            match why {
                Some(w) => t.set_late(job.id, w),
                None => Ok(()),
            }
        })?;
        if let Some(w) = why {
            tracing::error!(job = job.id, input = %job.input_path.display(), reason = w, "the input changed after it was taken");
        }
        Ok(if in_claim_folder(job) {
            Look::Ended
        } else {
            Look::Nothing
        })
    }
}

fn rewritten(size: u64) -> String {
    format!(
        "the input was rewritten in place after smsdrop took it (same size, {size} bytes, but the \
         bytes it had read changed): nothing was sent again; check what the ERP meant to send \
         and drop a new export if rows changed"
    )
}

/// True while the input's file waits in a claim folder (the archive is on another file system),
/// to be archived when nothing watches it any more.
fn in_claim_folder(job: &Job) -> bool {
    job.claimed_path
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|n| n == ".smsdrop-claimed")
}

enum Look {
    Nothing,
    /// The watch is over and the input waits to be archived.
    Ended,
    Continued(i64),
}

/// SHA-256 (hex) of `len` bytes of `path` from `start`.
fn hash_range(path: &Path, start: u64, len: u64) -> io::Result<String> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut h = Sha256::new();
    let copied = io::copy(&mut f.take(len), &mut HashWriter(&mut h))?;
    if copied != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(hex::encode(h.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
