//! Writes inside one journal transaction: every state change goes through the transition table
//! ([`super::JobState`]); nothing here commits (the caller's [`super::Journal::transaction`]
//! does, once).

use super::state::illegal;
use super::{path_to_sql, BatchName, Job, JobState, NewBatch, NewJob};
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, Transaction};
use std::path::Path;

/// Writes inside one transaction.
pub struct Tx<'c> {
    pub(super) tx: Transaction<'c>,
    /// The time this transaction stamps, in milliseconds (the journal's clock at its start).
    pub(super) now: i64,
}

impl Tx<'_> {
    /// Records a newly found input as `detected`.
    pub fn insert_job(&mut self, job: &NewJob<'_>) -> rusqlite::Result<i64> {
        let t = self.now;
        self.tx.execute(
            "INSERT INTO jobs (input_name, input_path, subaccount, hash, size, state, created_at, \
             updated_at, input_dev, input_ino) VALUES (?1, ?2, ?3, ?4, ?5, 'detected', ?6, ?6, ?7, ?8)",
            params![
                job.input_name,
                path_to_sql(job.input_path),
                job.subaccount,
                job.hash,
                job.size,
                t,
                job.dev_ino.map(|(d, _)| d as i64),
                job.dev_ino.map(|(_, i)| i as i64)
            ],
        )?;
        let id = self.tx.last_insert_rowid();
        self.note(id, "detected", None)?;
        Ok(id)
    }

    fn note(&mut self, job_id: i64, state: &str, note: Option<&str>) -> rusqlite::Result<()> {
        self.tx.execute(
            "INSERT INTO history (job_id, state, at, note) VALUES (?1, ?2, ?3, ?4)",
            params![job_id, state, self.now, note],
        )?;
        Ok(())
    }

    /// A job's state as this transaction sees it (decisions re-check it under the write lock).
    pub fn job_state(&mut self, job_id: i64) -> rusqlite::Result<JobState> {
        self.tx
            .query_row("SELECT state FROM jobs WHERE id = ?1", [job_id], |r| {
                r.get(0)
            })
    }

    /// Moves a job to `state`, with a reason for the history and the job.
    pub fn set_job_state(
        &mut self,
        job_id: i64,
        state: JobState,
        reason: Option<&str>,
    ) -> rusqlite::Result<()> {
        let from: JobState =
            self.tx
                .query_row("SELECT state FROM jobs WHERE id = ?1", [job_id], |r| {
                    r.get(0)
                })?;
        if from != state && !from.job_may_become(state) {
            return Err(illegal("job", job_id, from, state));
        }
        self.tx.execute(
            "UPDATE jobs SET state = ?2, reason = COALESCE(?3, reason), updated_at = ?4 WHERE id = ?1",
            params![job_id, state.as_str(), reason, self.now],
        )?;
        if from == state && reason.is_none() {
            return Ok(());
        }
        self.note(job_id, state.as_str(), reason)
    }

    /// A converted job waits for its send window: `held` with `why` (once in its history),
    /// since now unless it already waited.
    pub fn hold(&mut self, job_id: i64, why: &str) -> rusqlite::Result<()> {
        self.set_job_state(job_id, JobState::Held, Some(why))?;
        self.tx.execute(
            "UPDATE jobs SET held_since = COALESCE(held_since, ?2) WHERE id = ?1",
            params![job_id, self.now],
        )?;
        Ok(())
    }

    /// An operator sends a waiting job now, whatever its window says (`smsdrop release`).
    pub fn release(&mut self, job_id: i64) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET released_at = COALESCE(released_at, ?2) WHERE id = ?1",
            params![job_id, self.now],
        )?;
        self.note_job(
            job_id,
            "released by an operator (smsdrop release): sent now, outside its send window",
        )
    }

    /// Adds a line to a job's history without changing its state (e.g. a batch renamed because
    /// another system's file held its name), for its report.
    pub fn note_job(&mut self, job_id: i64, note: &str) -> rusqlite::Result<()> {
        let state: JobState =
            self.tx
                .query_row("SELECT state FROM jobs WHERE id = ?1", [job_id], |r| {
                    r.get(0)
                })?;
        self.note(job_id, state.as_str(), Some(note))
    }

    /// Records the conversion's counts and report.
    pub fn set_counts(
        &mut self,
        job_id: i64,
        read: u64,
        sent: u64,
        rejected: u64,
        report: &str,
    ) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET rows_read = ?2, rows_sent = ?3, rows_rejected = ?4, report = ?5 WHERE id = ?1",
            params![job_id, read, sent, rejected, report],
        )?;
        Ok(())
    }

    /// Records where the input was moved.
    pub fn set_stored_path(&mut self, job_id: i64, path: &Path) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET stored_path = ?2 WHERE id = ?1",
            params![job_id, path_to_sql(path)],
        )?;
        Ok(())
    }

    /// Records that the input was claimed: moved (or copied) to `path`, which holds the file
    /// with this device and inode.
    pub fn set_claimed(
        &mut self,
        job_id: i64,
        path: &Path,
        dev: u64,
        ino: u64,
    ) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET claimed_path = ?2, input_dev = ?3, input_ino = ?4 WHERE id = ?1",
            params![job_id, path_to_sql(path), dev as i64, ino as i64],
        )?;
        Ok(())
    }

    /// Records how many bytes of the input (from its start offset) the conversion read, and
    /// until when late writes are looked for (`None`: not watched).
    pub fn set_consumed(
        &mut self,
        job_id: i64,
        consumed: u64,
        watch_until: Option<DateTime<Utc>>,
    ) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET consumed = ?2, watch_until = ?3 WHERE id = ?1",
            params![job_id, consumed, watch_until.map(|t| t.timestamp_millis())],
        )?;
        Ok(())
    }

    /// Stops (`None`) or moves a job's late-write watch.
    pub fn set_watch(&mut self, job_id: i64, until: Option<DateTime<Utc>>) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET watch_until = ?2 WHERE id = ?1",
            params![job_id, until.map(|t| t.timestamp_millis())],
        )?;
        Ok(())
    }

    /// Records what arrived after the pickup, and has the job's report written again.
    pub fn set_late(&mut self, job_id: i64, late: &str) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET late = ?2, reported = 0 WHERE id = ?1",
            params![job_id, late],
        )?;
        self.note_job(job_id, late)
    }

    /// Records a continuation of `parent`: the rows written to the same input after
    /// `offset`, read from the same claimed file, as a new `detected` job.
    pub fn insert_continuation(&mut self, parent: &Job, offset: u64) -> rusqlite::Result<i64> {
        let t = self.now;
        self.tx.execute(
            "INSERT INTO jobs (input_name, input_path, claimed_path, subaccount, hash, \
             size, state, created_at, updated_at, start_offset, parent_job, input_dev, input_ino) \
             SELECT input_name, input_path, claimed_path, subaccount, '', 0, 'detected', \
             ?2, ?2, ?3, ?1, input_dev, input_ino FROM jobs WHERE id = ?1",
            params![parent.parent_job.unwrap_or(parent.id), t, offset],
        )?;
        let id = self.tx.last_insert_rowid();
        self.note(
            id,
            "detected",
            Some(&format!("continues job {} from byte {offset}", parent.id)),
        )?;
        Ok(id)
    }

    /// The claimed file moved from `from` to `to` (archived at the end of its watch): every job
    /// reading it (its continuations too) now reads it there, stored.
    pub fn relocate(&mut self, from: &Path, to: &Path) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET claimed_path = ?2, stored_path = CASE WHEN stored_path IS NULL \
             OR stored_path = ?1 THEN ?2 ELSE stored_path END WHERE claimed_path = ?1",
            params![path_to_sql(from), path_to_sql(to)],
        )?;
        Ok(())
    }

    /// Has a job's report written again (its outcome changed, e.g. a late outcome).
    pub fn unreport(&mut self, job_id: i64) -> rusqlite::Result<()> {
        self.tx
            .execute("UPDATE jobs SET reported = 0 WHERE id = ?1", [job_id])?;
        Ok(())
    }

    /// Marks a final job's report as written.
    pub fn set_reported(&mut self, job_id: i64) -> rusqlite::Result<()> {
        self.tx
            .execute("UPDATE jobs SET reported = 1 WHERE id = ?1", [job_id])?;
        Ok(())
    }

    /// Raises the day's next sequence number above `used` (a number seen on the server).
    pub fn reserve_above(
        &mut self,
        subaccount: &str,
        day: NaiveDate,
        used: u32,
    ) -> rusqlite::Result<()> {
        self.tx.execute(
            "INSERT INTO sequences (subaccount, day, next) VALUES (?1, ?2, ?3) \
             ON CONFLICT (subaccount, day) DO UPDATE SET next = MAX(next, excluded.next)",
            params![subaccount, day.to_string(), i64::from(used) + 1],
        )?;
        Ok(())
    }

    /// Allocates names for `batches` and records them for `job_id`, moving it to `converted`.
    /// Numbers only ever go up, so a name is never handed out twice.
    pub fn record_batches(
        &mut self,
        job_id: i64,
        subaccount: &str,
        day: NaiveDate,
        batches: &[NewBatch],
    ) -> rusqlite::Result<Vec<String>> {
        let mut names = Vec::with_capacity(batches.len());
        for (part, b) in batches.iter().enumerate() {
            let name = self.next_name(subaccount, day)?;
            self.tx.execute(
                "INSERT INTO batches (job_id, part, name, rows, bytes, state) VALUES (?1, ?2, ?3, ?4, ?5, 'converted')",
                params![job_id, part as u32, name, b.rows, b.bytes],
            )?;
            names.push(name);
        }
        self.set_job_state(job_id, JobState::Converted, None)?;
        Ok(names)
    }

    /// Gives a batch a new name (its old one turned out to be taken on the server).
    pub fn rename_batch(
        &mut self,
        batch_id: i64,
        subaccount: &str,
        day: NaiveDate,
    ) -> rusqlite::Result<String> {
        let name = self.next_name(subaccount, day)?;
        self.tx.execute(
            "UPDATE batches SET name = ?2, renaming = 0 WHERE id = ?1",
            params![batch_id, name],
        )?;
        Ok(name)
    }

    /// The next free batch name of the day for this subaccount.
    fn next_name(&mut self, subaccount: &str, day: NaiveDate) -> rusqlite::Result<String> {
        let seq = self.next_seq(subaccount, day)?;
        Ok(BatchName {
            subaccount: subaccount.to_owned(),
            date: day,
            seq,
        }
        .to_string())
    }

    fn next_seq(&mut self, subaccount: &str, day: NaiveDate) -> rusqlite::Result<u32> {
        self.reserve_above(subaccount, day, 0)?;
        let seq: i64 = self.tx.query_row(
            "UPDATE sequences SET next = next + 1 WHERE subaccount = ?1 AND day = ?2 RETURNING next - 1",
            params![subaccount, day.to_string()],
            |r| r.get(0),
        )?;
        u32::try_from(seq).map_err(|_| {
            rusqlite::Error::ToSqlConversionFailure(
                format!(
                    "the sequence numbers of {subaccount} for {day} ran out (next {seq}); \
                     wait for the next day or use another subaccount name"
                )
                .into(),
            )
        })
    }

    /// Sets a batch's state; `uploaded` also stamps the time. Errors are kept for reports.
    pub fn set_batch_state(
        &mut self,
        batch_id: i64,
        state: JobState,
        error: Option<&str>,
    ) -> rusqlite::Result<()> {
        let from: JobState =
            self.tx
                .query_row("SELECT state FROM batches WHERE id = ?1", [batch_id], |r| {
                    r.get(0)
                })?;
        if from != state && !from.batch_may_become(state) {
            return Err(illegal("batch", batch_id, from, state));
        }
        let uploaded = (state == JobState::Uploaded).then_some(self.now);
        self.tx.execute(
            "UPDATE batches SET state = ?2, last_error = COALESCE(?3, last_error), \
             uploaded_at = COALESCE(?4, uploaded_at), \
             renaming = CASE WHEN ?2 = 'uploading' THEN renaming ELSE 0 END WHERE id = ?1",
            params![batch_id, state.as_str(), error, uploaded],
        )?;
        Ok(())
    }

    /// Records a job's content hash (known once its input has been read).
    pub fn set_hash(&mut self, job_id: i64, hash: &str) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET hash = ?2 WHERE id = ?1",
            params![job_id, hash],
        )?;
        Ok(())
    }

    /// Sets or clears a job's reason without changing its state (e.g. why uploads are retried).
    pub fn set_reason(&mut self, job_id: i64, reason: Option<&str>) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET reason = ?2, updated_at = ?3 WHERE id = ?1",
            params![job_id, reason, self.now],
        )?;
        Ok(())
    }

    /// Notes what was found about a batch on the server; true when the note is new.
    pub fn note_batch(&mut self, batch_id: i64, note: &str) -> rusqlite::Result<bool> {
        let n = self.tx.execute(
            "UPDATE batches SET note = ?2 WHERE id = ?1 AND note IS NOT ?2",
            params![batch_id, note],
        )?;
        Ok(n > 0)
    }

    /// Counts a failed upload attempt.
    pub fn batch_attempt_failed(&mut self, batch_id: i64, error: &str) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE batches SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            params![batch_id, error],
        )?;
        Ok(())
    }
}
