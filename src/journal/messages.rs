//! Message-level statuses in the journal: one row per message a job sends (recorded with its
//! batches, before any upload, so a status can never arrive before its row), the statuses the
//! gateway reports for it, and each job's tracking window (`tracking`: none yet, `open`, `done`).
//!
//! A status is matched by correlation id, and by destination number when the status names one.
//! Applying statuses is idempotent: the same status twice changes nothing, so a restart or a
//! gateway that repeats itself never counts a message twice.

use super::tx::Tx;
use super::{now, Journal, JournalError, Result};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// A message as recorded with its job's batches.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NewMessage {
    /// The row's line in the job's input (as in the result CSV before a continuation's offset).
    pub line: u64,
    /// Which batch file of the job carries it.
    pub part: u32,
    pub number: String,
    /// The id written into the batch file (what the gateway's statuses carry).
    pub correlation_id: String,
    /// The ERP's own id (empty when it gave none).
    pub erp_id: String,
    /// Why the message cannot be tracked (no id, ambiguous), or `None`.
    pub untracked: Option<String>,
}

/// Why [`Journal::each_message`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum EachError {
    #[error(transparent)]
    Journal(JournalError),
    #[error(transparent)]
    Stopped(std::io::Error),
}

/// Why messages could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error(transparent)]
    Db(#[from] JournalError),
    #[error("reading the messages' spool file: {0}")]
    Read(std::io::Error),
}

/// A message with what is known of it.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub line: u64,
    pub part: u32,
    pub number: String,
    pub correlation_id: String,
    pub erp_id: String,
    pub untracked: Option<String>,
    pub sent_code: Option<i64>,
    pub sent_status: Option<String>,
    /// Epoch milliseconds.
    pub sent_at: Option<i64>,
    pub delivered_code: Option<i64>,
    pub delivered_status: Option<String>,
    pub delivered_at: Option<i64>,
    pub carrier: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl Message {
    /// Whether the message failed: a first status other than `SENT_SUCCESS`, or a delivery
    /// report other than `DELIVERED_SUCCESS`.
    pub fn failed(&self) -> bool {
        matches!(self.sent_code, Some(c) if c != 2)
            || matches!(self.delivered_code, Some(c) if c != 4)
    }

    /// Whether the message reached the phone, or (for a carrier without delivery reports) the
    /// carrier took it: final and not failed.
    pub fn delivered(&self) -> bool {
        self.is_final && !self.failed()
    }
}

/// One status as the gateway reported it (either the first or the delivery report, or both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusUpdate {
    pub correlation_id: String,
    /// Digits of the destination, when the status names it.
    pub destination: Option<String>,
    pub carrier: Option<String>,
    pub sent_code: Option<i64>,
    pub sent_status: Option<String>,
    pub sent_at: Option<i64>,
    pub delivered_code: Option<i64>,
    pub delivered_status: Option<String>,
    pub delivered_at: Option<i64>,
}

/// What applying a set of statuses did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Statuses matched to one of our messages (repeats included).
    pub matched: usize,
    /// Of those, how many changed something.
    pub changed: usize,
    /// Statuses whose id is no message smsdrop tracks.
    pub unknown: Vec<String>,
    /// Statuses for messages whose job's tracking has ended (ignored).
    pub closed: usize,
    /// Statuses matching more than one message (not applied).
    pub ambiguous: Vec<String>,
}

/// Per-message counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MessageCounts {
    /// Messages in files the gateway took.
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Sent and tracked, no final status yet.
    pub pending: u64,
    /// Sent, but without an id that can be matched (no id, or ambiguous).
    pub untracked: u64,
}

const MSG_COLS: &str = "line, part, number, correlation_id, erp_id, untracked, sent_code, \
    sent_status, sent_at, delivered_code, delivered_status, delivered_at, carrier, final";

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        line: r.get::<_, i64>(0)? as u64,
        part: r.get(1)?,
        number: r.get(2)?,
        correlation_id: r.get(3)?,
        erp_id: r.get(4)?,
        untracked: r.get(5)?,
        sent_code: r.get(6)?,
        sent_status: r.get(7)?,
        sent_at: r.get(8)?,
        delivered_code: r.get(9)?,
        delivered_status: r.get(10)?,
        delivered_at: r.get(11)?,
        carrier: r.get(12)?,
        is_final: r.get::<_, i64>(13)? != 0,
    })
}

impl Tx<'_> {
    /// Records a job's messages. A tracked message whose (id, number) is still awaited in
    /// another job is recorded as untracked (ambiguous), naming that job.
    pub fn insert_messages(&mut self, job_id: i64, msgs: &[NewMessage]) -> rusqlite::Result<()> {
        self.insert_only(job_id, msgs)?;
        self.mark_repeated_ids(job_id)
    }

    fn insert_only(&mut self, job_id: i64, msgs: &[NewMessage]) -> rusqlite::Result<()> {
        let mut other = self.tx.prepare_cached(
            "SELECT m.job_id FROM messages m JOIN jobs j ON j.id = m.job_id \
             WHERE m.correlation_id = ?1 AND m.number = ?2 AND m.job_id != ?3 AND m.final = 0 \
             AND m.untracked IS NULL AND (j.tracking IS NULL OR j.tracking = 'open') LIMIT 1",
        )?;
        let mut ins = self.tx.prepare_cached(
            "INSERT INTO messages (job_id, line, part, number, correlation_id, erp_id, untracked) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for m in msgs {
            let mut untracked = m.untracked.clone();
            if untracked.is_none() {
                let clash: Option<i64> = other
                    .query_row(params![m.correlation_id, m.number, job_id], |r| r.get(0))
                    .optional()?;
                if let Some(j) = clash {
                    untracked = Some(format!(
                        "ambiguous: the same correlation id and number are still awaited in job {j}"
                    ));
                }
            }
            ins.execute(params![
                job_id,
                m.line as i64,
                m.part,
                m.number,
                m.correlation_id,
                m.erp_id,
                untracked
            ])?;
        }
        Ok(())
    }

    /// Marks ids repeated within the job as ambiguous.
    fn mark_repeated_ids(&mut self, job_id: i64) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE messages SET untracked = 'ambiguous: correlation id \"' || correlation_id || \
                 '\" is on lines ' || (SELECT group_concat(line, ', ') FROM \
                     (SELECT line FROM messages m2 WHERE m2.job_id = messages.job_id \
                      AND m2.correlation_id = messages.correlation_id ORDER BY line LIMIT 5)) || \
                 ' of this input' \
             WHERE job_id = ?1 AND untracked IS NULL AND correlation_id IN \
                 (SELECT correlation_id FROM messages WHERE job_id = ?1 AND untracked IS NULL \
                  GROUP BY correlation_id HAVING count(*) > 1)",
            [job_id],
        )?;
        Ok(())
    }

    /// Opens a finished job's message tracking until `until_ms`: messages in files the gateway
    /// did not take are marked as not sent. Jobs without messages are left alone.
    pub fn open_tracking(&mut self, job_id: i64, until_ms: i64) -> rusqlite::Result<bool> {
        let has: bool = self.tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE job_id = ?1)",
            [job_id],
            |r| r.get(0),
        )?;
        if !has {
            return Ok(false);
        }
        // Only a file the gateway refused (error/) was certainly not sent; an expired one may
        // have been, and a file sent again (retry) or with a late outcome counts again. A message
        // with a status was sent, whatever its file's folder says.
        self.tx.execute(
            "UPDATE messages SET untracked = NULL WHERE job_id = ?1 AND untracked LIKE 'not sent%' \
             AND part NOT IN (SELECT part FROM batches WHERE job_id = ?1 AND state = 'failed')",
            [job_id],
        )?;
        self.tx.execute(
            "UPDATE messages SET untracked = 'not sent: its file went to error/' \
             WHERE job_id = ?1 AND untracked IS NULL AND sent_code IS NULL \
             AND delivered_code IS NULL AND part IN \
                 (SELECT part FROM batches WHERE job_id = ?1 AND state = 'failed')",
            [job_id],
        )?;
        // Opened, or opened again when the job is reported again (a retry, a late outcome).
        self.tx.execute(
            "UPDATE jobs SET tracking = 'open', tracking_until = max(coalesce(tracking_until, 0), ?2) \
             WHERE id = ?1",
            params![job_id, until_ms],
        )?;
        Ok(true)
    }

    /// Ends a job's message tracking.
    pub fn close_tracking(&mut self, job_id: i64) -> rusqlite::Result<()> {
        self.tx.execute(
            "UPDATE jobs SET tracking = 'done', tracking_done_at = ?2 WHERE id = ?1",
            params![job_id, now()],
        )?;
        Ok(())
    }
}

/// Whether a message with these statuses has its last word: a first status other than
/// `SENT_SUCCESS`, a delivery report, or `SENT_SUCCESS` from a carrier that sends no reports.
fn is_final(
    sent: Option<i64>,
    delivered: Option<i64>,
    carrier: Option<&str>,
    no_dlr: &dyn Fn(&str) -> bool,
) -> bool {
    delivered.is_some()
        || matches!(sent, Some(c) if c != 2)
        || (sent == Some(2) && carrier.is_some_and(no_dlr))
}

/// Messages recorded per transaction: SQLite keeps a transaction's pages in memory, so a
/// million-row input is recorded in slices (about 300 bytes a row otherwise).
const MESSAGES_PER_TX: usize = 20_000;

impl Journal {
    /// Records a job's messages (from an `status::ids::IdSink`'s spool file) in
    /// slices of [`MESSAGES_PER_TX`], replacing any recorded before (a conversion repeated after
    /// a crash), then marks ids repeated within the job as ambiguous. Done before the job's
    /// batches are recorded: until then no status can be for them.
    ///
    /// # Errors
    /// When the journal or the spool file fails.
    pub fn record_messages(
        &mut self,
        job_id: i64,
        mut msgs: impl Iterator<Item = std::io::Result<NewMessage>>,
    ) -> std::result::Result<(), InsertError> {
        self.transaction(|t| {
            t.tx.execute("DELETE FROM messages WHERE job_id = ?1", [job_id])?;
            Ok(())
        })?;
        loop {
            let mut slice = Vec::with_capacity(MESSAGES_PER_TX);
            for m in msgs.by_ref().take(MESSAGES_PER_TX) {
                slice.push(m.map_err(InsertError::Read)?);
            }
            if slice.is_empty() {
                break;
            }
            self.transaction(|t| t.insert_only(job_id, &slice))?;
            crate::liveness::progress();
        }
        Ok(self.transaction(|t| t.mark_repeated_ids(job_id))?)
    }

    /// Applies statuses in one transaction (durable when this returns).
    ///
    /// # Errors
    /// When the journal fails; nothing is then applied.
    pub fn apply_statuses(
        &mut self,
        updates: &[StatusUpdate],
        no_dlr: &dyn Fn(&str) -> bool,
    ) -> Result<Applied> {
        self.transaction(|t| {
            let mut applied = Applied::default();
            for u in updates {
                apply_one(t, u, no_dlr, &mut applied)?;
            }
            Ok(applied)
        })
    }

    /// Jobs whose tracking is open: (job id, until, in ms).
    ///
    /// # Errors
    /// When the query fails.
    pub fn tracking_open(&self) -> Result<Vec<(i64, i64)>> {
        self.query(
            "SELECT id, tracking_until FROM jobs WHERE tracking = 'open' ORDER BY id",
            [],
            |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
        )
    }

    /// A job's tracking: `None` (not tracked, or not yet), `open` or `done`.
    ///
    /// # Errors
    /// When the query fails.
    pub fn tracking(&self, job_id: i64) -> Result<Option<String>> {
        Ok(self
            .query("SELECT tracking FROM jobs WHERE id = ?1", [job_id], |r| {
                r.get::<_, Option<String>>(0)
            })?
            .into_iter()
            .next()
            .flatten())
    }

    /// A job's messages, in line order.
    ///
    /// # Errors
    /// When the query fails.
    pub fn messages(&self, job_id: i64) -> Result<Vec<Message>> {
        let sql = format!("SELECT {MSG_COLS} FROM messages WHERE job_id = ?1 ORDER BY line");
        self.query(&sql, [job_id], message_from_row)
    }

    /// Calls `f` with each of a job's messages in line order, one at a time (memory stays flat
    /// for a million-row job); stops at `f`'s first error.
    ///
    /// # Errors
    /// When the query fails, or `f` does (its error in [`EachError::Stopped`]).
    pub fn each_message(
        &self,
        job_id: i64,
        mut f: impl FnMut(Message) -> std::io::Result<()>,
    ) -> std::result::Result<(), EachError> {
        let sql = format!("SELECT {MSG_COLS} FROM messages WHERE job_id = ?1 ORDER BY line");
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(|e| EachError::Journal(self.err(e)))?;
        let mut rows = stmt
            .query([job_id])
            .map_err(|e| EachError::Journal(self.err(e)))?;
        while let Some(r) = rows.next().map_err(|e| EachError::Journal(self.err(e)))? {
            let m = message_from_row(r).map_err(|e| EachError::Journal(self.err(e)))?;
            f(m).map_err(EachError::Stopped)?;
        }
        Ok(())
    }

    /// A job's first `limit` failed messages (tracked, with a failing status), in line order.
    ///
    /// # Errors
    /// When the query fails.
    pub fn failed_messages(&self, job_id: i64, limit: u32) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MSG_COLS} FROM messages WHERE job_id = ?1 AND untracked IS NULL \
             AND (coalesce(sent_code, 2) != 2 OR coalesce(delivered_code, 4) != 4) \
             ORDER BY line LIMIT ?2"
        );
        self.query(&sql, params![job_id, limit], message_from_row)
    }

    /// A job's first `limit` sent messages that cannot be tracked, in line order.
    ///
    /// # Errors
    /// When the query fails.
    pub fn untracked_messages(&self, job_id: i64, limit: u32) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MSG_COLS} FROM messages WHERE job_id = ?1 AND untracked IS NOT NULL \
             AND untracked NOT LIKE 'not sent%' ORDER BY line LIMIT ?2"
        );
        self.query(&sql, params![job_id, limit], message_from_row)
    }

    /// Whether any tracked message of the job still waits for its final status.
    ///
    /// # Errors
    /// When the query fails.
    pub fn messages_pending(&self, job_id: i64) -> Result<bool> {
        Ok(self
            .query(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE job_id = ?1 AND final = 0 \
                 AND untracked IS NULL)",
                [job_id],
                |r| r.get::<_, bool>(0),
            )?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// A job's per-message counts; `None` when it has no messages recorded.
    ///
    /// # Errors
    /// When the query fails.
    pub fn message_counts(&self, job_id: i64) -> Result<Option<MessageCounts>> {
        let row = self.query(
            "SELECT count(*), \
               sum(untracked IS NULL AND final = 1 AND NOT (coalesce(sent_code, 2) != 2 OR coalesce(delivered_code, 4) != 4)), \
               sum(untracked IS NULL AND (coalesce(sent_code, 2) != 2 OR coalesce(delivered_code, 4) != 4)), \
               sum(untracked IS NULL AND final = 0), \
               sum(untracked IS NOT NULL AND untracked NOT LIKE 'not sent%') \
             FROM messages WHERE job_id = ?1 AND (untracked IS NULL OR untracked NOT LIKE 'not sent%')",
            [job_id],
            |r| {
                Ok(MessageCounts {
                    sent: r.get::<_, i64>(0)? as u64,
                    delivered: r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64,
                    failed: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                    pending: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                    untracked: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                })
            },
        )?;
        let has: bool = self
            .query(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE job_id = ?1)",
                [job_id],
                |r| r.get(0),
            )?
            .first()
            .copied()
            .unwrap_or(false);
        Ok(row.into_iter().next().filter(|_| has))
    }

    /// Correlation ids of sent, tracked, pending messages to ask `search` about: their file was
    /// uploaded before `uploaded_before` ms, and they were not searched since `searched_before`.
    /// At most `limit`, longest-unsearched first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn ids_to_search(
        &self,
        uploaded_before: i64,
        searched_before: i64,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.query(
            "SELECT DISTINCT m.correlation_id FROM messages m \
             JOIN jobs j ON j.id = m.job_id \
             JOIN batches b ON b.job_id = m.job_id AND b.part = m.part \
             WHERE m.final = 0 AND m.untracked IS NULL \
               AND (j.tracking IS NULL OR j.tracking = 'open') \
               AND b.uploaded_at IS NOT NULL AND b.uploaded_at < ?1 \
               AND b.state IN ('uploaded', 'succeeded', 'expired') \
               AND (m.searched_at IS NULL OR m.searched_at < ?2) \
             ORDER BY coalesce(m.searched_at, 0), m.job_id, m.line LIMIT ?3",
            params![uploaded_before, searched_before, limit],
            |r| r.get(0),
        )
    }

    /// Records that `ids` were asked about now.
    ///
    /// # Errors
    /// When the write fails.
    pub fn mark_searched(&mut self, ids: &[String]) -> Result<()> {
        let at = now();
        self.transaction(|t| {
            let mut st = t.tx.prepare_cached(
                "UPDATE messages SET searched_at = ?2 WHERE correlation_id = ?1 AND final = 0",
            )?;
            for id in ids {
                st.execute(params![id, at])?;
            }
            Ok(())
        })
    }

    /// Messages still awaited across all jobs (for `status` and metrics).
    ///
    /// # Errors
    /// When the query fails.
    pub fn messages_awaited(&self) -> Result<u64> {
        Ok(self
            .query(
                "SELECT count(*) FROM messages m JOIN jobs j ON j.id = m.job_id \
                 WHERE m.final = 0 AND m.untracked IS NULL \
                 AND (j.tracking IS NULL OR j.tracking = 'open')",
                [],
                |r| r.get::<_, i64>(0),
            )?
            .first()
            .copied()
            .unwrap_or(0) as u64)
    }
}

fn apply_one(
    t: &mut Tx<'_>,
    u: &StatusUpdate,
    no_dlr: &dyn Fn(&str) -> bool,
    applied: &mut Applied,
) -> rusqlite::Result<()> {
    // Candidates: tracked messages with this id; the destination narrows them when given.
    let mut st = t.tx.prepare_cached(
        "SELECT m.job_id, m.line, m.number, m.sent_code, m.sent_status, m.sent_at, \
                m.delivered_code, m.delivered_status, m.delivered_at, m.carrier, m.final, \
                coalesce(j.tracking, ''), b.uploaded_at \
         FROM messages m JOIN jobs j ON j.id = m.job_id \
         LEFT JOIN batches b ON b.job_id = m.job_id AND b.part = m.part \
         WHERE m.correlation_id = ?1 AND m.untracked IS NULL",
    )?;
    type Cand = (
        i64,
        i64,
        String,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
        Option<String>,
        bool,
        String,
        Option<i64>,
    );
    let mut cands: Vec<Cand> = st
        .query_map([&u.correlation_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get::<_, i64>(10)? != 0,
                r.get(11)?,
                r.get(12)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    drop(st);
    if let Some(dest) = &u.destination {
        cands.retain(|c| same_number(&c.2, dest));
    }
    // A status sent before a message's file was even uploaded is another message's (an id the
    // ERP used again within the gateway's 3 days); clocks may differ by some minutes.
    if let Some(sent) = u.sent_at {
        cands.retain(|c| c.12.is_none_or(|up| sent >= up - CLOCK_SKEW_MS));
    }
    let (mut open, closed): (Vec<Cand>, Vec<Cand>) =
        cands.into_iter().partition(|c| c.11 != "done");
    // Of several, a message still waiting is the one a new status is for.
    if open.len() > 1 && open.iter().filter(|c| !c.10).count() == 1 {
        open.retain(|c| !c.10);
    }
    let c = match open.len() {
        0 if !closed.is_empty() => {
            applied.closed += 1;
            return Ok(());
        }
        0 => {
            applied.unknown.push(u.correlation_id.clone());
            return Ok(());
        }
        1 => open.into_iter().next().expect("one candidate"),
        _ => {
            applied.ambiguous.push(u.correlation_id.clone());
            return Ok(());
        }
    };
    applied.matched += 1;
    let (job_id, line) = (c.0, c.1);
    // Known values are kept; a status only fills in or updates what it carries.
    let sent_code = u.sent_code.or(c.3);
    let sent_status = u.sent_status.clone().or(c.4.clone());
    let sent_at = u.sent_at.or(c.5);
    let delivered_code = u.delivered_code.or(c.6);
    let delivered_status = u.delivered_status.clone().or(c.7.clone());
    let delivered_at = u.delivered_at.or(c.8);
    let carrier = u.carrier.clone().filter(|s| !s.is_empty()).or(c.9.clone());
    let fin = c.10 || is_final(sent_code, delivered_code, carrier.as_deref(), no_dlr);
    let before = (&c.3, &c.4, &c.5, &c.6, &c.7, &c.8, &c.9, c.10);
    let after = (
        &sent_code,
        &sent_status,
        &sent_at,
        &delivered_code,
        &delivered_status,
        &delivered_at,
        &carrier,
        fin,
    );
    if before == after {
        return Ok(());
    }
    applied.changed += 1;
    t.tx.execute(
        "UPDATE messages SET sent_code = ?3, sent_status = ?4, sent_at = ?5, delivered_code = ?6, \
         delivered_status = ?7, delivered_at = ?8, carrier = ?9, final = ?10 \
         WHERE job_id = ?1 AND line = ?2",
        params![
            job_id,
            line,
            sent_code,
            sent_status,
            sent_at,
            delivered_code,
            delivered_status,
            delivered_at,
            carrier,
            fin
        ],
    )?;
    Ok(())
}

/// How far the gateway's clock may be behind ours.
const CLOCK_SKEW_MS: i64 = 10 * 60 * 1000;

/// Whether two phone numbers are the same, comparing digits (a status may write `+55...`).
fn same_number(ours: &str, theirs: &str) -> bool {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let (a, b) = (digits(ours), digits(theirs));
    !b.is_empty()
        && (a == b || a.ends_with(&b) && b.len() >= 10 || b.ends_with(&a) && a.len() >= 10)
}
