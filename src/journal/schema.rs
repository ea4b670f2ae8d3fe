//! The journal's schema and its versions: the tables the first releases wrote (version 0, no
//! `user_version`), and the forward migrations since, each in one transaction with its version
//! bump. Append a migration, never edit one.

use rusqlite::Connection;

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
    // 4: message-level statuses: one row per sent message (matched by correlation id and
    // number), the per-job tracking window, and the status poller's own state.
    "CREATE TABLE IF NOT EXISTS messages (
         job_id INTEGER NOT NULL,
         line INTEGER NOT NULL,
         part INTEGER NOT NULL,
         number TEXT NOT NULL,
         correlation_id TEXT NOT NULL,
         erp_id TEXT NOT NULL,
         untracked TEXT,
         sent_code INTEGER,
         sent_status TEXT,
         sent_at INTEGER,
         delivered_code INTEGER,
         delivered_status TEXT,
         delivered_at INTEGER,
         carrier TEXT,
         final INTEGER NOT NULL DEFAULT 0,
         searched_at INTEGER,
         PRIMARY KEY (job_id, line)
     ) WITHOUT ROWID;
     CREATE INDEX IF NOT EXISTS messages_id ON messages(correlation_id);
     CREATE INDEX IF NOT EXISTS messages_waiting ON messages(job_id, line)
         WHERE final = 0 AND untracked IS NULL;
     ALTER TABLE jobs ADD COLUMN tracking TEXT;
     ALTER TABLE jobs ADD COLUMN tracking_until INTEGER;
     ALTER TABLE jobs ADD COLUMN tracking_done_at INTEGER;
     CREATE INDEX IF NOT EXISTS jobs_tracking ON jobs(tracking) WHERE tracking IS NOT NULL;",
    // 5: the row-level duplicate guard: per batch, the keys (hash of subaccount, number, text)
    // and input lines of its rows, packed (one journal row per batch file, pruned by age); per
    // job, the rows skipped as already sent and where they went before.
    "CREATE TABLE IF NOT EXISTS remembered (
         batch_id INTEGER PRIMARY KEY,
         at INTEGER NOT NULL,
         rows BLOB NOT NULL
     );
     CREATE INDEX IF NOT EXISTS remembered_at ON remembered(at);
     ALTER TABLE jobs ADD COLUMN rows_duplicate INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN duplicates BLOB;",
    // 6: send windows: a converted job may wait (`held`) for its subaccount's window, since
    // when (for `[schedule] max_hold`), and an operator may release it (`smsdrop release`).
    "ALTER TABLE jobs ADD COLUMN held_since INTEGER;
     ALTER TABLE jobs ADD COLUMN released_at INTEGER;",
    // 7: customers' replies (each once by the gateway's id, matched to the row it answers, and
    // the outbox file it went into), the outbox files (written once), and the opt-out list per
    // subaccount.
    "CREATE TABLE IF NOT EXISTS replies (
         id TEXT PRIMARY KEY,
         received_at INTEGER NOT NULL,
         number TEXT NOT NULL,
         text TEXT NOT NULL,
         subaccount TEXT NOT NULL,
         correlation_id TEXT NOT NULL,
         erp_id TEXT,
         job_id INTEGER,
         input TEXT,
         line INTEGER,
         carrier TEXT,
         short_code TEXT,
         opt_out INTEGER NOT NULL DEFAULT 0,
         outbox TEXT,
         recorded_at INTEGER NOT NULL
     );
     CREATE INDEX IF NOT EXISTS replies_waiting ON replies(received_at) WHERE outbox IS NULL;
     CREATE INDEX IF NOT EXISTS replies_outbox ON replies(outbox);
     CREATE TABLE IF NOT EXISTS outbox_files (
         name TEXT PRIMARY KEY,
         subaccount TEXT NOT NULL,
         written INTEGER NOT NULL DEFAULT 0,
         created_at INTEGER NOT NULL
     );
     CREATE TABLE IF NOT EXISTS optouts (
         subaccount TEXT NOT NULL,
         number TEXT NOT NULL,
         at INTEGER NOT NULL,
         source TEXT NOT NULL,
         detail TEXT,
         PRIMARY KEY (subaccount, number)
     );",
    // 8: opt-outs applied in conversion: per job, how many rows were not sent because their
    // number is on the subaccount's opt-out list, and those rows (JSON: line, number, and when,
    // how and why the number opted out), so the result CSV marks exactly those lines.
    "ALTER TABLE jobs ADD COLUMN rows_opted_out INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN opted_out TEXT;",
];

/// The schema version this smsdrop writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<std::result::Result<(), i64>> {
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

pub(super) fn newer_schema(version: i64) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        format!(
            "schema version {version} was written by a newer smsdrop (this one knows up to \
             {SCHEMA_VERSION}); run that release, or restore the journal from a backup"
        )
        .into(),
    )
}
