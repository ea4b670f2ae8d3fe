//! The journal: the durable record of every job (one per input file) and its batch files, in an
//! embedded SQLite database under `[state] dir`.
//!
//! It owns the state machine (DESIGN.md): `detected → converted → uploading → uploaded →
//! succeeded | failed | expired`, and `rejected`. Remote names and sequence numbers are allocated
//! in the same transaction that records a job's batch files, and a number is never handed out
//! twice. It must never hold a secret.

use crate::batch::BatchName;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A journal operation failed: the disk or the database is in trouble; the daemon stops.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

impl JournalError {
    /// A journal that should be there and is not.
    pub fn missing(path: &Path, why: &str) -> JournalError {
        JournalError {
            path: path.to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(why.to_owned().into()),
        }
    }

    /// True when the disk is full or failing: worth retrying once space is freed, rather than
    /// stopping (SQLite rolled the transaction back; the journal is intact).
    pub fn is_disk_problem(&self) -> bool {
        matches!(
            self.source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
        )
    }
}

type Result<T> = std::result::Result<T, JournalError>;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Detected,
    Converted,
    Uploading,
    Uploaded,
    Succeeded,
    Failed,
    Expired,
    Rejected,
    /// A batch only: it may or may not be on the server (a crash after its rename began, and
    /// its name is nowhere now); an operator decides (`smsdrop resolve`).
    Unknown,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Detected => "detected",
            JobState::Converted => "converted",
            JobState::Uploading => "uploading",
            JobState::Uploaded => "uploaded",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Rejected => "rejected",
            JobState::Unknown => "unknown",
        }
    }

    /// The state a stored name stands for; an unknown name is an error, never a guess.
    ///
    /// # Errors
    /// [`UnknownState`] names what was found.
    pub fn parse(s: &str) -> std::result::Result<JobState, UnknownState> {
        Ok(match s {
            "detected" => JobState::Detected,
            "converted" => JobState::Converted,
            "uploading" => JobState::Uploading,
            "uploaded" => JobState::Uploaded,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "expired" => JobState::Expired,
            "rejected" => JobState::Rejected,
            "unknown" => JobState::Unknown,
            other => return Err(UnknownState(other.to_owned())),
        })
    }

    /// The transition table of a job (DESIGN.md). Staying in a state is not a transition.
    pub fn job_may_become(self, to: JobState) -> bool {
        use JobState::*;
        match self {
            Detected => matches!(to, Converted | Rejected),
            // `failed` before any upload: every batch was set aside (e.g. its spool file lost).
            Converted => matches!(to, Uploading | Failed),
            // Back to `uploading`: an operator resends a batch (`resolve --resend`, `retry`).
            Uploading => matches!(to, Uploaded | Succeeded | Failed | Expired),
            Uploaded => matches!(to, Uploading | Succeeded | Failed | Expired),
            // A late outcome after expiry; an operator's `retry`.
            Expired => matches!(to, Succeeded | Failed | Uploading),
            Failed => matches!(to, Uploading),
            Succeeded | Rejected | Unknown => false,
        }
    }

    /// The transition table of a batch file. `failed` from `converted` or `uploading` is a batch
    /// set aside by a local problem (its reason says which).
    ///
    /// After `expired`, a late move to `success/` or `error/` still counts. `unknown` waits for an
    /// operator: `resolve --sent` makes it `succeeded`, `--resend` or `retry` make it
    /// (or a `failed`/`expired` one) `converted` again under a new name.
    pub fn batch_may_become(self, to: JobState) -> bool {
        use JobState::*;
        match self {
            Converted => matches!(to, Uploading | Failed),
            Uploading => matches!(to, Uploaded | Failed | Unknown),
            Uploaded => matches!(to, Succeeded | Failed | Expired),
            Expired => matches!(to, Succeeded | Failed | Converted),
            Failed => matches!(to, Converted),
            Unknown => matches!(to, Succeeded | Converted),
            Succeeded | Detected | Rejected => false,
        }
    }

    /// True once nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Expired | JobState::Rejected
        )
    }
}

/// A state name in the journal that this smsdrop does not know (a newer release, or an edit).
#[derive(Debug, thiserror::Error)]
#[error("unknown state {0:?} in the journal: was it written by a newer smsdrop? Upgrade, or restore the journal from a backup")]
pub struct UnknownState(pub String);

/// A state change the state machine does not allow: a bug, never silently applied.
#[derive(Debug, thiserror::Error)]
#[error("illegal state change of {what} {id}: {from} -> {to}")]
pub struct IllegalTransition {
    pub what: &'static str,
    pub id: i64,
    pub from: &'static str,
    pub to: &'static str,
}

impl rusqlite::types::FromSql for JobState {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        JobState::parse(s).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

/// One input file's job. (Not `Serialize`: its paths need not be UTF-8.)
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub input_name: String,
    pub input_path: PathBuf,
    pub stored_path: Option<PathBuf>,
    pub subaccount: String,
    pub hash: String,
    pub state: JobState,
    pub reason: Option<String>,
    pub rows_read: u64,
    pub rows_sent: u64,
    pub rows_rejected: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub reported: bool,
    /// Where the input's file is now, once claimed (moved out of the inbox before reading).
    pub claimed_path: Option<PathBuf>,
    /// Bytes of the input this job converted, from `start_offset`.
    pub consumed: Option<u64>,
    /// Where this job's rows start in the input (a continuation of late writes; 0 otherwise).
    pub start_offset: u64,
    /// The first job of the same input, for a continuation.
    pub parent_job: Option<i64>,
    /// Late writes are looked for until then.
    pub watch_until: Option<DateTime<Utc>>,
    /// What arrived after the pickup, once seen (for reports and `status`).
    pub late: Option<String>,
    /// The input's device and inode (as found, then as claimed).
    pub dev_ino: Option<(u64, u64)>,
}

impl Job {
    /// Where the input's bytes are read from: the claimed file, else (a job from before claims,
    /// or not yet claimed) the original path.
    pub fn source(&self) -> &Path {
        self.claimed_path.as_deref().unwrap_or(&self.input_path)
    }
}

/// One batch file of a job.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub id: i64,
    pub job_id: i64,
    pub part: u32,
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub state: JobState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub uploaded_at: Option<DateTime<Utc>>,
    /// The rename into place may have begun (recorded before it).
    pub renaming: bool,
    /// What was found about this batch on the server (e.g. another system's file), for reports.
    pub note: Option<String>,
}

/// A state change, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub state: String,
    pub at: DateTime<Utc>,
    pub note: Option<String>,
}

/// A new job's input, as found.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub input_name: &'a str,
    pub input_path: &'a Path,
    pub subaccount: &'a str,
    pub hash: &'a str,
    pub size: u64,
    /// The file's device and inode when it was found (a claim after a crash checks them).
    pub dev_ino: Option<(u64, u64)>,
}

/// A converted batch file waiting for its name.
#[derive(Debug, Clone, Copy)]
pub struct NewBatch {
    pub rows: u64,
    pub bytes: u64,
}

/// The database.
pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    input_name TEXT NOT NULL,
    input_path BLOB NOT NULL,
    stored_path BLOB,
    subaccount TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    rows_read INTEGER NOT NULL DEFAULT 0,
    rows_sent INTEGER NOT NULL DEFAULT 0,
    rows_rejected INTEGER NOT NULL DEFAULT 0,
    report TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_hash ON jobs(hash, created_at);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    part INTEGER NOT NULL,
    name TEXT NOT NULL UNIQUE,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    uploaded_at INTEGER
);
CREATE INDEX IF NOT EXISTS batches_job ON batches(job_id);
CREATE INDEX IF NOT EXISTS batches_state ON batches(state);
CREATE TABLE IF NOT EXISTS history (
    job_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    at INTEGER NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS history_job ON history(job_id);
CREATE TABLE IF NOT EXISTS sequences (
    subaccount TEXT NOT NULL,
    day TEXT NOT NULL,
    next INTEGER NOT NULL,
    PRIMARY KEY (subaccount, day)
);
";

/// Forward migrations: `MIGRATIONS[i]` takes a journal from schema version `i` to `i + 1`
/// (`PRAGMA user_version`). Version 0 is [`SCHEMA`] as the first releases wrote it, without a
/// version. Each runs in one transaction with the version bump, so a crash leaves either the old
/// or the new schema. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: look jobs up by input path (the send queue waits on its files' jobs); a per-journal
    // identity (message-level statuses will build correlation ids on it).
    "CREATE INDEX IF NOT EXISTS jobs_input ON jobs(input_path);
     CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     INSERT OR IGNORE INTO meta (key, value) VALUES ('journal_id', lower(hex(randomblob(8))));",
    // 2: inputs are claimed before they are read (where the file is now, and which file it is),
    // watched for late writes, and continued by further jobs; files the inbox never takes.
    "ALTER TABLE jobs ADD COLUMN claimed_path BLOB;
     ALTER TABLE jobs ADD COLUMN input_dev INTEGER;
     ALTER TABLE jobs ADD COLUMN input_ino INTEGER;
     ALTER TABLE jobs ADD COLUMN consumed INTEGER;
     ALTER TABLE jobs ADD COLUMN start_offset INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN parent_job INTEGER;
     ALTER TABLE jobs ADD COLUMN watch_until INTEGER;
     ALTER TABLE jobs ADD COLUMN late TEXT;
     CREATE INDEX IF NOT EXISTS jobs_watch ON jobs(watch_until) WHERE watch_until IS NOT NULL;
     CREATE TABLE IF NOT EXISTS ignored (
         path BLOB PRIMARY KEY, reason TEXT NOT NULL, seen_at INTEGER NOT NULL);",
    // 3: the intent to rename a batch into place is recorded before the rename (after a crash,
    // a batch whose name is nowhere is then `unknown`, not sent again); notes on foreign files.
    "ALTER TABLE batches ADD COLUMN renaming INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE batches ADD COLUMN note TEXT;",
];

/// The schema version this smsdrop writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn migrate(conn: &mut Connection) -> rusqlite::Result<std::result::Result<(), i64>> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Err(version));
    }
    if version == 0 {
        conn.execute_batch(SCHEMA)?;
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
        tracing::debug!(from, to = from + 1, "journal schema migrated");
    }
    Ok(Ok(()))
}

fn now() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Journal {
    /// Opens (creating if needed) the journal `journal.db` in `dir`.
    ///
    /// # Errors
    /// When the database cannot be opened or its schema created.
    pub fn open(dir: &Path) -> Result<Journal> {
        let path = dir.join("journal.db");
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        // WAL with full sync: a committed step survives a crash or a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        if let Err(newer) = migrate(&mut conn).map_err(err)? {
            return Err(err(newer_schema(newer)));
        }
        Ok(Journal { conn, path })
    }

    /// Opens an existing journal for reading only (`smsdrop status`); `None` when there is none
    /// yet (no file, or a daemon is creating it right now).
    ///
    /// # Errors
    /// When the journal cannot be read.
    pub fn open_read_only(dir: &Path) -> Result<Option<Journal>> {
        let path = dir.join("journal.db");
        if !path.exists() {
            return Ok(None);
        }
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'jobs'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(err(newer_schema(version)));
        }
        // An older schema is being upgraded by the daemon that owns it (or waits for one):
        // nothing to read yet, like a journal still being created.
        Ok((tables > 0 && version == SCHEMA_VERSION).then_some(Journal { conn, path }))
    }

    /// SQLite's quick integrity check: `"ok"`, or what is wrong.
    ///
    /// # Errors
    /// When the check cannot run (a file too damaged to open counts as an error).
    pub fn quick_check(&self) -> Result<String> {
        let rows = self.query("PRAGMA quick_check", [], |r| r.get::<_, String>(0))?;
        Ok(rows.join("; "))
    }

    /// The schema version of the open journal.
    ///
    /// # Errors
    /// When the query fails.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Jobs whose input was at `path` when taken, oldest first (`smsdrop send` finds the jobs of
    /// the files it queued this way).
    ///
    /// # Errors
    /// When the query fails.
    pub fn jobs_with_input(&self, path: &Path) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE input_path = ?1 ORDER BY id");
        self.query_jobs(&sql, [path_to_sql(path)])
    }

    fn err(&self, source: rusqlite::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one transaction (one fsync).
    ///
    /// # Errors
    /// When any statement or the commit fails; nothing is then recorded.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let path = self.path.clone();
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut t = Tx { tx };
        let out = f(&mut t).map_err(err)?;
        t.tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Records that a batch's rename into place is about to begin. Not synced to disk (no
    /// `fsync` per file): it survives a crash of smsdrop, which is what it is for; after a power
    /// cut it may be lost, and the batch is then looked for and sent again as before.
    ///
    /// # Errors
    /// When the write fails.
    pub fn mark_renaming(&mut self, batch_id: i64) -> Result<()> {
        let path = self.path.clone();
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let r = self
            .conn
            .execute("UPDATE batches SET renaming = 1 WHERE id = ?1", [batch_id]);
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        r.map(drop).map_err(err)
    }

    /// Jobs in any of `states`, oldest first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn jobs_in(&self, states: &[JobState]) -> Result<Vec<Job>> {
        let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state IN ({}) ORDER BY id",
            list.join(",")
        );
        self.query_jobs(&sql, [])
    }

    /// Final jobs whose report has not been written yet.
    ///
    /// # Errors
    /// When the query fails.
    pub fn unreported(&self) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE reported = 0 AND state IN \
             ('succeeded','failed','expired','rejected') ORDER BY id"
        );
        self.query_jobs(&sql, [])
    }

    /// All jobs, newest first, at most `limit`.
    ///
    /// # Errors
    /// When the query fails.
    pub fn recent_jobs(&self, limit: u32) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs ORDER BY id DESC LIMIT ?1");
        self.query_jobs(&sql, [limit])
    }

    /// Inputs recorded but not yet claimed (their inbox path is still theirs).
    ///
    /// # Errors
    /// When the query fails.
    pub fn unclaimed(&self) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE claimed_path IS NULL AND stored_path IS NULL \
             AND state = 'detected' ORDER BY id"
        );
        self.query_jobs(&sql, [])
    }

    /// True while a job reading the claimed file at `path` is watched or not yet converted:
    /// the file must stay where a writer's handle still reaches it.
    ///
    /// # Errors
    /// When the query fails.
    pub fn claimed_file_busy(&self, path: &Path) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE claimed_path = ?1 AND \
                 (watch_until IS NOT NULL OR state = 'detected'))",
                [path_to_sql(path)],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Jobs whose input is watched for late writes.
    ///
    /// # Errors
    /// When the query fails.
    pub fn watched(&self) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE watch_until IS NOT NULL ORDER BY id");
        self.query_jobs(&sql, [])
    }

    /// Records files the inbox will never take (new ones) and forgets those gone, in one
    /// transaction.
    ///
    /// # Errors
    /// When the write fails.
    pub fn update_ignored(&mut self, added: &[(PathBuf, String)], gone: &[PathBuf]) -> Result<()> {
        self.transaction(|t| {
            for (p, why) in added {
                t.tx.execute(
                    "INSERT OR REPLACE INTO ignored (path, reason, seen_at) VALUES (?1, ?2, ?3)",
                    params![path_to_sql(p), why, now()],
                )?;
            }
            for p in gone {
                t.tx.execute("DELETE FROM ignored WHERE path = ?1", [path_to_sql(p)])?;
            }
            Ok(())
        })
    }

    /// Files in the inbox that smsdrop will never take, with why.
    ///
    /// # Errors
    /// When the query fails.
    pub fn ignored(&self) -> Result<Vec<(PathBuf, String)>> {
        let has: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'ignored'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if has == 0 {
            return Ok(vec![]);
        }
        self.query("SELECT path, reason FROM ignored ORDER BY path", [], |r| {
            Ok((path_from_sql(r.get(0)?), r.get(1)?))
        })
    }

    /// Jobs whose input has not been moved to the archive or rejected folder yet.
    ///
    /// # Errors
    /// When the query fails.
    pub fn unstored(&self) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE stored_path IS NULL ORDER BY id");
        self.query_jobs(&sql, [])
    }

    /// One job.
    ///
    /// # Errors
    /// When the query fails.
    pub fn job(&self, id: i64) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1");
        Ok(self.query_jobs(&sql, [id])?.pop())
    }

    fn query_jobs<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<Job>> {
        self.query(sql, p, job_from_row)
    }

    fn query<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        p: P,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt.query_map(p, row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// A job's batch files, in order.
    ///
    /// # Errors
    /// When the query fails.
    pub fn batches(&self, job_id: i64) -> Result<Vec<Batch>> {
        let sql = format!("SELECT {BATCH_COLS} FROM batches WHERE job_id = ?1 ORDER BY part");
        self.query(&sql, [job_id], batch_from_row)
    }

    /// Batch files in `state`, oldest job first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn batches_in(&self, state: JobState) -> Result<Vec<Batch>> {
        let sql =
            format!("SELECT {BATCH_COLS} FROM batches WHERE state = ?1 ORDER BY job_id, part");
        self.query(&sql, [state.as_str()], batch_from_row)
    }

    /// A job's state history.
    ///
    /// # Errors
    /// When the query fails.
    pub fn history(&self, job_id: i64) -> Result<Vec<HistoryEntry>> {
        let sql = "SELECT state, at, note FROM history WHERE job_id = ?1 ORDER BY rowid";
        self.query(sql, [job_id], |r| {
            Ok(HistoryEntry {
                state: r.get(0)?,
                at: time(r.get(1)?),
                note: r.get(2)?,
            })
        })
    }

    /// The conversion report stored with a job (JSON).
    ///
    /// # Errors
    /// When the query fails.
    pub fn convert_report(&self, job_id: i64) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT report FROM jobs WHERE id = ?1", [job_id], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// An accepted job with this content hash created since `since` whose rows may have been
    /// delivered, if any. A job whose every batch failed (in `error/`, or set aside) does not
    /// count: sending its input again sends nothing twice.
    ///
    /// # Errors
    /// When the query fails.
    pub fn accepted_with_hash(&self, hash: &str, since: DateTime<Utc>) -> Result<Option<Job>> {
        let sql = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE hash = ?1 AND created_at >= ?2 \
             AND state NOT IN ('detected','rejected') AND parent_job IS NULL \
             AND (state IN ('converted','uploading','uploaded') OR EXISTS \
                 (SELECT 1 FROM batches b WHERE b.job_id = jobs.id AND b.state IN \
                  ('succeeded','uploaded','uploading','expired','unknown'))) \
             ORDER BY id LIMIT 1"
        );
        Ok(self
            .query_jobs(&sql, params![hash, since.timestamp_millis()])?
            .pop())
    }

    /// Before the first allocation of each (subaccount, day) in `wanted`, asks `probe` for the
    /// highest sequence number the server already holds for it and starts above it, so a number
    /// used by another system or a lost journal is never reused. Pairs allocated before are not
    /// probed again.
    ///
    /// # Errors
    /// What `probe` returns, or a journal failure.
    pub fn prime_sequences<E: From<JournalError>>(
        &mut self,
        wanted: &[(String, NaiveDate)],
        mut probe: impl FnMut(&str, NaiveDate) -> std::result::Result<u32, E>,
    ) -> std::result::Result<(), E> {
        let mut found = vec![];
        for (sub, day) in wanted {
            if self.first_of_day(sub, *day)? && !found.iter().any(|(s, d, _)| s == sub && d == day)
            {
                found.push((sub.as_str(), *day, probe(sub, *day)?));
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        self.transaction(|t| {
            for (sub, day, highest) in &found {
                t.reserve_above(sub, *day, *highest)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// True when no sequence has been allocated yet for this subaccount and day.
    ///
    /// # Errors
    /// When the query fails.
    pub fn first_of_day(&self, subaccount: &str, day: NaiveDate) -> Result<bool> {
        let n: Option<i64> = self
            .conn
            .query_row(
                "SELECT next FROM sequences WHERE subaccount = ?1 AND day = ?2",
                params![subaccount, day.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(n.is_none())
    }
}

const JOB_COLS: &str = "id, input_name, input_path, stored_path, subaccount, hash, state, reason, \
     rows_read, rows_sent, rows_rejected, created_at, updated_at, reported, claimed_path, consumed, \
     start_offset, parent_job, watch_until, late, input_dev, input_ino";
const BATCH_COLS: &str = "id, job_id, part, name, rows, bytes, state, attempts, last_error, \
     uploaded_at, renaming, note";

/// Paths are stored as their raw bytes: a file name need not be UTF-8, and a lossy copy would
/// name a file that does not exist.
fn path_to_sql(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

fn path_from_sql(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        input_name: r.get(1)?,
        input_path: path_from_sql(r.get(2)?),
        stored_path: r.get::<_, Option<Vec<u8>>>(3)?.map(path_from_sql),
        subaccount: r.get(4)?,
        hash: r.get(5)?,
        state: r.get(6)?,
        reason: r.get(7)?,
        rows_read: r.get(8)?,
        rows_sent: r.get(9)?,
        rows_rejected: r.get(10)?,
        created_at: time(r.get(11)?),
        updated_at: time(r.get(12)?),
        reported: r.get(13)?,
        claimed_path: r.get::<_, Option<Vec<u8>>>(14)?.map(path_from_sql),
        consumed: r.get(15)?,
        start_offset: r.get(16)?,
        parent_job: r.get(17)?,
        watch_until: r.get::<_, Option<i64>>(18)?.map(time),
        late: r.get(19)?,
        dev_ino: match (r.get::<_, Option<i64>>(20)?, r.get::<_, Option<i64>>(21)?) {
            (Some(d), Some(i)) => Some((d as u64, i as u64)),
            _ => None,
        },
    })
}

fn batch_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Batch> {
    Ok(Batch {
        id: r.get(0)?,
        job_id: r.get(1)?,
        part: r.get(2)?,
        name: r.get(3)?,
        rows: r.get(4)?,
        bytes: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        last_error: r.get(8)?,
        uploaded_at: r.get::<_, Option<i64>>(9)?.map(time),
        renaming: r.get(10)?,
        note: r.get(11)?,
    })
}

fn newer_schema(version: i64) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        format!(
            "schema version {version} was written by a newer smsdrop (this one knows up to \
             {SCHEMA_VERSION}); run that release, or restore the journal from a backup"
        )
        .into(),
    )
}

fn illegal(what: &'static str, id: i64, from: JobState, to: JobState) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(IllegalTransition {
        what,
        id,
        from: from.as_str(),
        to: to.as_str(),
    }))
}

/// Writes inside one transaction.
pub struct Tx<'c> {
    tx: Transaction<'c>,
}

impl Tx<'_> {
    /// Records a newly found input as `detected`.
    pub fn insert_job(&mut self, job: &NewJob<'_>) -> rusqlite::Result<i64> {
        let t = now();
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
            params![job_id, state, now(), note],
        )?;
        Ok(())
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
            params![job_id, state.as_str(), reason, now()],
        )?;
        if from == state && reason.is_none() {
            return Ok(());
        }
        self.note(job_id, state.as_str(), reason)
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
        let t = now();
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
        let uploaded = (state == JobState::Uploaded).then(now);
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
            params![job_id, reason, now()],
        )?;
        Ok(())
    }

    /// Records (or clears) the intent to rename a batch into place.
    pub fn set_renaming(&mut self, batch_id: i64, renaming: bool) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE batches SET renaming = ?2 WHERE id = ?1",
            params![batch_id, renaming],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job<'a>(path: &'a Path, hash: &'a str) -> NewJob<'a> {
        NewJob {
            input_name: "a.csv",
            input_path: path,
            subaccount: "ACME",
            hash,
            size: 3,
            dev_ino: None,
        }
    }

    #[test]
    fn sequences_start_above_remote_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        assert!(j.first_of_day("ACME", day).unwrap());
        let p = PathBuf::from("/in/a.csv");
        let names = j
            .transaction(|t| {
                t.reserve_above("ACME", day, 7)?;
                let id = t.insert_job(&new_job(&p, "h1"))?;
                t.record_batches(
                    id,
                    "ACME",
                    day,
                    &[
                        NewBatch { rows: 1, bytes: 1 },
                        NewBatch { rows: 1, bytes: 1 },
                    ],
                )
            })
            .unwrap();
        assert_eq!(names, vec!["ACME.20261125.08.txt", "ACME.20261125.09.txt"]);
        assert!(!j.first_of_day("ACME", day).unwrap());
        // A lower remote number later never lowers the counter.
        let names = j
            .transaction(|t| {
                t.reserve_above("ACME", day, 3)?;
                let id = t.insert_job(&new_job(&p, "h2"))?;
                t.record_batches(id, "ACME", day, &[NewBatch { rows: 1, bytes: 1 }])
            })
            .unwrap();
        assert_eq!(names, vec!["ACME.20261125.10.txt"]);
        // Another subaccount or day counts on its own.
        let other = j
            .transaction(|t| {
                let id = t.insert_job(&new_job(&p, "h3"))?;
                t.record_batches(id, "OTHER", day, &[NewBatch { rows: 1, bytes: 1 }])
            })
            .unwrap();
        assert_eq!(other, vec!["OTHER.20261125.01.txt"]);
    }

    #[test]
    fn states_history_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let p = PathBuf::from("/in/a.csv");
        let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let id = j
            .transaction(|t| t.insert_job(&new_job(&p, "same")))
            .unwrap();
        let since = Utc::now() - chrono::Duration::days(7);
        assert!(
            j.accepted_with_hash("same", since).unwrap().is_none(),
            "detected is not accepted yet"
        );
        j.transaction(|t| t.record_batches(id, "ACME", day, &[NewBatch { rows: 2, bytes: 9 }]))
            .unwrap();
        assert_eq!(
            j.accepted_with_hash("same", since).unwrap().map(|j| j.id),
            Some(id)
        );
        let b = &j.batches(id).unwrap()[0];
        j.transaction(|t| {
            t.set_batch_state(b.id, JobState::Uploading, None)?;
            t.set_job_state(id, JobState::Uploading, None)?;
            t.set_batch_state(b.id, JobState::Uploaded, None)?;
            t.set_batch_state(b.id, JobState::Succeeded, None)?;
            t.set_job_state(id, JobState::Succeeded, None)
        })
        .unwrap();
        let states: Vec<String> = j
            .history(id)
            .unwrap()
            .into_iter()
            .map(|h| h.state)
            .collect();
        assert_eq!(
            states,
            vec!["detected", "converted", "uploading", "succeeded"]
        );
        assert_eq!(j.unreported().unwrap().len(), 1);
        j.transaction(|t| t.set_reported(id)).unwrap();
        assert!(j.unreported().unwrap().is_empty());
        assert!(j.batches(id).unwrap()[0].uploaded_at.is_some());
    }

    #[test]
    fn a_failed_transaction_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let p = PathBuf::from("/in/a.csv");
        let r = j.transaction(|t| {
            t.insert_job(&new_job(&p, "x"))?;
            Err::<(), _>(rusqlite::Error::InvalidQuery)
        });
        assert!(r.is_err());
        assert!(j.recent_jobs(10).unwrap().is_empty());
    }

    #[test]
    fn illegal_transitions_are_errors_naming_job_from_and_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let p = PathBuf::from("/in/a.csv");
        let id = j.transaction(|t| t.insert_job(&new_job(&p, "x"))).unwrap();
        let e = j
            .transaction(|t| t.set_job_state(id, JobState::Uploaded, None))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("job {id}: detected -> uploaded")),
            "{e}"
        );
        j.transaction(|t| t.set_job_state(id, JobState::Rejected, Some("bad")))
            .unwrap();
        // Rejected is final.
        for to in [JobState::Detected, JobState::Converted, JobState::Succeeded] {
            assert!(j.transaction(|t| t.set_job_state(id, to, None)).is_err());
        }
        assert_eq!(j.job(id).unwrap().unwrap().state, JobState::Rejected);
        // The whole table: a final state goes nowhere, every state is reachable from detected.
        let all = [
            JobState::Detected,
            JobState::Converted,
            JobState::Uploading,
            JobState::Uploaded,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Expired,
            JobState::Rejected,
        ];
        for from in all {
            for to in all {
                // Succeeded and rejected are final for good; failed and expired move on only by
                // an operator's retry or a late outcome.
                if matches!(from, JobState::Succeeded | JobState::Rejected) {
                    assert!(!from.job_may_become(to), "{from:?} -> {to:?}");
                    assert!(!from.batch_may_become(to), "{from:?} -> {to:?}");
                }
                if matches!(from, JobState::Failed | JobState::Expired) {
                    assert_eq!(
                        from.job_may_become(to),
                        to == JobState::Uploading
                            || (from == JobState::Expired
                                && matches!(to, JobState::Succeeded | JobState::Failed)),
                        "{from:?} -> {to:?}"
                    );
                }
            }
            assert_eq!(JobState::parse(from.as_str()).unwrap(), from);
        }
        assert_eq!(JobState::parse("unknown").unwrap(), JobState::Unknown);
        assert!(!JobState::Unknown.is_final());
    }

    #[test]
    fn an_unknown_stored_state_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let p = PathBuf::from("/in/a.csv");
        let id = j.transaction(|t| t.insert_job(&new_job(&p, "x"))).unwrap();
        j.conn
            .execute("UPDATE jobs SET state = 'paused' WHERE id = ?1", [id])
            .unwrap();
        let e = j.job(id).unwrap_err().to_string();
        assert!(e.contains("unknown state \"paused\""), "{e}");
        assert!(j
            .transaction(|t| t.set_job_state(id, JobState::Converted, None))
            .is_err());
    }

    /// `tests/fixtures/journal-v0/journal.db` was written by the release before schema versions
    /// (`smsdrop demo`, then `send --no-wait` of two files against a gateway that held them, and
    /// one rejected file): 4 succeeded, 2 uploaded, 1 rejected job.
    #[test]
    fn a_journal_from_the_release_before_versions_upgrades_and_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v0/journal.db");
        std::fs::copy(&fixture, dir.path().join("journal.db")).unwrap();
        {
            let old = Connection::open(dir.path().join("journal.db")).unwrap();
            let v: i64 = old
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, 0, "the fixture predates schema versions");
        }
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
        let jobs = j.recent_jobs(100).unwrap();
        let states: Vec<&str> = jobs.iter().rev().map(|j| j.state.as_str()).collect();
        assert_eq!(
            states,
            [
                "succeeded",
                "succeeded",
                "succeeded",
                "succeeded",
                "uploaded",
                "uploaded",
                "rejected"
            ]
        );
        assert_eq!(j.history(1).unwrap().len(), 5);
        // The uploaded jobs go on to their outcome under the new state machine.
        let b = j.batches(5).unwrap().remove(0);
        assert_eq!(b.state, JobState::Uploaded);
        j.transaction(|t| {
            t.set_batch_state(b.id, JobState::Succeeded, None)?;
            t.set_job_state(5, JobState::Succeeded, None)
        })
        .unwrap();
        // Numbering goes on above what the old release handed out.
        let day = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        assert!(!j.first_of_day("DEMO", day).unwrap());
        let p = PathBuf::from("/in/new.csv");
        let names = j
            .transaction(|t| {
                let id = t.insert_job(&new_job(&p, "new"))?;
                t.record_batches(id, "DEMO", day, &[NewBatch { rows: 1, bytes: 1 }])
            })
            .unwrap();
        assert_eq!(names, ["DEMO.20261203.07.txt"]);
        drop(j);
        // Opening again is a no-op; a reader sees the same version.
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
        let ro = Journal::open_read_only(dir.path()).unwrap().unwrap();
        assert_eq!(ro.recent_jobs(100).unwrap().len(), 8);
    }

    #[test]
    fn a_journal_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::open(dir.path()).unwrap());
        let c = Connection::open(dir.path().join("journal.db")).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        let e = Journal::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("newer smsdrop"), "{e}");
        assert!(Journal::open_read_only(dir.path()).is_err());
    }
}
