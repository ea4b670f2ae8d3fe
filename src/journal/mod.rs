//! The journal: the durable record of every job (one per input file) and its batch files, in an
//! embedded SQLite database under `[state] dir`.
//!
//! It owns the state machine (DESIGN.md): `detected → converted → uploading → uploaded →
//! succeeded | failed | expired`, and `rejected`. Remote names and sequence numbers are allocated
//! in the same transaction that records a job's batch files, and a number is never handed out
//! twice. It must never hold a secret.

mod messages;
mod optouts;
mod remembered;
mod replies;
mod schema;
mod state;
mod stats;
#[cfg(test)]
mod tests;
mod tx;

pub use messages::{
    Applied, EachError, InsertError, Message, MessageCounts, NewMessage, StatusUpdate,
};
pub use optouts::OptedOut;
pub use remembered::{row_key, BatchCache, Duplicate, Earlier, RowKey};
pub use replies::{NewReply, Optout, Reply};
pub use schema::SCHEMA_VERSION;
pub use state::JobState;
pub use stats::{Stats, JOB_STATES};
pub use tx::Tx;

use crate::batch::BatchName;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use schema::{migrate, newer_schema};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A journal operation failed: the disk or the database is in trouble; the daemon stops.
#[derive(Debug, thiserror::Error)]
// The cause is in the message, not also a `source()`: printed as a chain (`{:#}`) it would
// say the same sentence twice.
#[error("journal {path}: {cause}")]
pub struct JournalError {
    path: PathBuf,
    cause: rusqlite::Error,
}

impl JournalError {
    /// A journal that should be there and is not.
    pub fn missing(path: &Path, why: &str) -> JournalError {
        JournalError {
            path: path.to_owned(),
            cause: rusqlite::Error::ToSqlConversionFailure(why.to_owned().into()),
        }
    }

    /// True when the disk is full or failing: worth retrying once space is freed, rather than
    /// stopping (SQLite rolled the transaction back; the journal is intact).
    pub fn is_disk_problem(&self) -> bool {
        matches!(
            self.cause.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
        )
    }

    /// Whether another connection held the journal longer than the busy timeout (tried again
    /// later, not a reason to stop).
    pub fn is_busy(&self) -> bool {
        matches!(
            self.cause.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

type Result<T> = std::result::Result<T, JournalError>;

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
    /// Since when its batches wait for the send window (`held`).
    pub held_since: Option<DateTime<Utc>>,
    /// When an operator released it to go out at once (`smsdrop release`).
    pub released_at: Option<DateTime<Utc>>,
}

impl Job {
    /// Where the input's bytes are read from: the claimed file, else (a job from before claims,
    /// or not yet claimed) the original path.
    pub fn source(&self) -> &Path {
        self.claimed_path.as_deref().unwrap_or(&self.input_path)
    }

    /// Where the input's bytes are now, to read them again (reports): the claimed file, else
    /// the archived copy (a job from before claims), else the original path.
    pub fn kept_path(&self) -> &Path {
        self.claimed_path
            .as_deref()
            .or(self.stored_path.as_deref())
            .unwrap_or(&self.input_path)
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
    /// The rows already sent, in memory, once the duplicate guard first looked
    /// ([`Journal::prepare_remembered`]).
    rows: Option<remembered::RowIndex>,
    /// Where the time stamped into the record comes from ([`Journal::set_clock`]).
    now_ms: NowMs,
}

/// A clock in milliseconds since the epoch, for the journal's timestamps (`created_at`, the
/// state history, ...). A plain function, so the journal needs nothing from the stages above it.
pub type NowMs = Box<dyn Fn() -> i64 + Send>;

/// The system clock in milliseconds: the journal's clock unless it is given another.
fn now() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A read-only connection to the journal in `dir` (with the busy timeout), and its path; `None`
/// when there is no journal file.
fn read_only_connection(dir: &Path) -> Result<Option<(Connection, PathBuf)>> {
    let path = dir.join("journal.db");
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.busy_timeout(std::time::Duration::from_secs(10))
                .map(|()| c)
        });
    match conn {
        Ok(conn) => Ok(Some((conn, path))),
        Err(source) => Err(JournalError {
            path,
            cause: source,
        }),
    }
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
            cause: source,
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
        Ok(Journal {
            conn,
            path,
            rows: None,
            now_ms: Box::new(now),
        })
    }

    /// Opens an existing journal for reading only (`smsdrop status`); `None` when there is none
    /// yet (no file, or a daemon is creating it right now).
    ///
    /// # Errors
    /// When the journal cannot be read.
    pub fn open_read_only(dir: &Path) -> Result<Option<Journal>> {
        let Some((conn, path)) = read_only_connection(dir)? else {
            return Ok(None);
        };
        let err = |source| JournalError {
            path: path.clone(),
            cause: source,
        };
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
        Ok(
            (tables > 0 && version == SCHEMA_VERSION).then_some(Journal {
                conn,
                path,
                rows: None,
                now_ms: Box::new(now),
            }),
        )
    }

    /// Stamps this journal's records with `now_ms` instead of the system clock: the engine's
    /// clock, so a test that sets the time finds that time in the record.
    #[cfg(test)]
    pub fn set_clock(&mut self, now_ms: NowMs) {
        self.now_ms = now_ms;
    }

    /// This journal's random identity (message correlation ids are built on it).
    ///
    /// # Errors
    /// When the query fails.
    pub fn journal_id(&self) -> Result<String> {
        Ok(self
            .query("SELECT value FROM meta WHERE key = 'journal_id'", [], |r| {
                r.get::<_, String>(0)
            })?
            .into_iter()
            .next()
            .unwrap_or_else(|| "0".into()))
    }

    /// The schema version of the journal in `dir` as stored, without upgrading it; `None` when
    /// there is no journal.
    ///
    /// # Errors
    /// When the journal cannot be read.
    pub fn stored_version(dir: &Path) -> Result<Option<i64>> {
        let Some((conn, path)) = read_only_connection(dir)? else {
            return Ok(None);
        };
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map(Some)
            .map_err(|source| JournalError {
                path,
                cause: source,
            })
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
    #[cfg(test)]
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
            cause: source,
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
            cause: source,
        };
        // IMMEDIATE: the write lock is taken at the start, so a writer on another connection
        // (the status webhook, the poller) makes this wait (busy timeout) instead of failing
        // when a read inside the transaction would have to become a write.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        // One time for the whole transaction: its stamps agree with each other.
        let mut t = Tx {
            tx,
            now: (self.now_ms)(),
        };
        let out = f(&mut t).map_err(err)?;
        t.tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Records that the renames of these batches into place are about to begin, in one
    /// transaction. Not synced to disk (no `fsync` per group): it survives a crash of smsdrop,
    /// which is what it is for; after a power cut it may be lost, and the batches are then looked
    /// for and sent again as before.
    ///
    /// # Errors
    /// When the write fails.
    pub fn mark_renaming(&mut self, batch_ids: &[i64]) -> Result<()> {
        let path = self.path.clone();
        let err = |source| JournalError {
            path: path.clone(),
            cause: source,
        };
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let r = self.transaction(|t| {
            let mut stmt =
                t.tx.prepare_cached("UPDATE batches SET renaming = 1 WHERE id = ?1")?;
            for id in batch_ids {
                stmt.execute([id])?;
            }
            Ok(())
        });
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        r
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
                    params![path_to_sql(p), why, t.now],
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

    /// Whether a continuation's rows are read after the input's header line: its first job
    /// found one. False for a first job.
    ///
    /// # Errors
    /// When the query fails.
    pub fn carries_header(&self, job: &Job) -> Result<bool> {
        let Some(first) = job.parent_job else {
            return Ok(false);
        };
        Ok(self
            .convert_report(first)?
            .and_then(|r| serde_json::from_str::<serde_json::Value>(&r).ok())
            .is_some_and(|v| v.get("header").is_some_and(|h| !h.is_null())))
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
     start_offset, parent_job, watch_until, late, input_dev, input_ino, held_since, released_at";
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
        held_since: r.get::<_, Option<i64>>(22)?.map(time),
        released_at: r.get::<_, Option<i64>>(23)?.map(time),
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
