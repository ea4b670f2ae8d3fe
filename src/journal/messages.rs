//! Message-level statuses in the journal: one row per message a job sends (recorded with its
//! batches, before any upload, so a status can never arrive before its row), the statuses the
//! gateway reports for it, and each job's tracking window (`tracking`: none yet, `open`, `done`).
//!
//! A status is matched by correlation id, and by destination number when the status names one.
//! Applying statuses is idempotent: the same status twice changes nothing, so a restart or a
//! gateway that repeats itself never counts a message twice.

use super::optouts::StatusOptout;
use super::tx::Tx;
use super::{Journal, JournalError, Result};
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
    #[cfg(test)]
    pub fn failed(&self) -> bool {
        matches!(self.sent_code, Some(c) if c != 2)
            || matches!(self.delivered_code, Some(c) if c != 4)
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
    /// Statuses that contradicted a final one and were not applied (see `precedence`).
    pub conflicts: usize,
    /// Numbers a first status put on an opt-out list: (subaccount, number).
    pub opted_out: Vec<(String, String)>,
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
    #[cfg(test)]
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
            params![job_id, self.now],
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

    /// Applies statuses in one transaction (durable when this returns), in the order of their
    /// own times (a status without one after those with), each ranked against what the message
    /// already has by `precedence`. Statuses that contradict a final one are logged (job, line,
    /// correlation id) and counted in `smsdrop_status_conflicts_total` once committed.
    ///
    /// A message whose first status recorded is one of `optout_codes` (`[optout]
    /// from_statuses`: 204, and 203 when configured) puts its number on its job's subaccount's
    /// opt-out list, in the same transaction; a failure that replaces an earlier
    /// `SENT_SUCCESS` does not.
    ///
    /// # Errors
    /// When the journal fails; nothing is then applied.
    pub fn apply_statuses(
        &mut self,
        updates: &[StatusUpdate],
        no_dlr: &dyn Fn(&str) -> bool,
        optout_codes: &[i64],
    ) -> Result<Applied> {
        let (applied, conflicts) =
            self.transaction(|t| apply_all(t, updates, no_dlr, optout_codes))?;
        for c in conflicts.iter().take(CONFLICTS_LOGGED) {
            tracing::warn!(
                job = c.job_id,
                line = c.line,
                correlation_id = %c.correlation_id,
                kept = %c.kept,
                heard = %c.heard,
                "conflicting status for a message: the final status recorded first is kept"
            );
        }
        if conflicts.len() > CONFLICTS_LOGGED {
            tracing::warn!(
                more = conflicts.len() - CONFLICTS_LOGGED,
                "further statuses contradicted final ones and were not applied"
            );
        }
        if !conflicts.is_empty() {
            // The facade directly: the journal must not name `ops` (it names the journal).
            metrics::counter!("smsdrop_status_conflicts_total").increment(conflicts.len() as u64);
        }
        Ok(applied)
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

    /// A job's messages, in line order (the demo's table).
    ///
    /// # Errors
    /// When the query fails.
    #[cfg(any(test, feature = "sandbox"))]
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
        let at = (self.now_ms)();
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
    #[cfg(test)]
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

/// Conflicts logged one by one per call (then one line with how many more).
const CONFLICTS_LOGGED: usize = 20;

/// A message's statuses as the journal keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Statuses {
    sent_code: Option<i64>,
    sent_status: Option<String>,
    sent_at: Option<i64>,
    delivered_code: Option<i64>,
    delivered_status: Option<String>,
    delivered_at: Option<i64>,
    carrier: Option<String>,
    is_final: bool,
}

/// Which of a message's two statuses one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The first status (the carrier took the message or refused it).
    First,
    /// The delivery report.
    Report,
}

/// One status heard for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heard {
    kind: Kind,
    code: i64,
    name: Option<String>,
    at: Option<i64>,
    carrier: Option<String>,
}

/// What [`precedence`] did with a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Already known (a repeat): nothing changes.
    Unchanged,
    /// Recorded, or filled in what was missing.
    Changed,
    /// Contradicts what the message has, which is kept.
    Conflict,
}

/// The delivery report codes (SPEC.md); every other code is a first status.
fn is_report_code(code: i64) -> bool {
    matches!(code, 4 | 104)
}

/// The first status and report an update carries, each slot taken for what its code is (a
/// delivery report's code given as the sent status is a delivery report, and the other way);
/// when both slots say the same kind, the one given in its own slot is heard.
fn heard_of(u: &StatusUpdate) -> Vec<Heard> {
    let carrier = u.carrier.clone().filter(|c| !c.is_empty());
    let slot = |code: Option<i64>, name: &Option<String>, at: Option<i64>, given: Kind| {
        let code = code?;
        let kind = if is_report_code(code) {
            Kind::Report
        } else if is_first_code(code) {
            Kind::First
        } else {
            given
        };
        let heard = Heard {
            kind,
            code,
            name: name.clone(),
            at,
            carrier: carrier.clone(),
        };
        Some((kind != given, heard))
    };
    let mut slots: Vec<(bool, Heard)> = [
        slot(u.sent_code, &u.sent_status, u.sent_at, Kind::First),
        slot(
            u.delivered_code,
            &u.delivered_status,
            u.delivered_at,
            Kind::Report,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    slots.sort_by_key(|(moved, _)| *moved);
    let mut out: Vec<Heard> = Vec::with_capacity(2);
    for (_, h) in slots {
        if !out.iter().any(|o| o.kind == h.kind) {
            out.push(h);
        }
    }
    out
}

/// The first-status codes SPEC.md lists (a code it does not list keeps the slot it came in).
fn is_first_code(code: i64) -> bool {
    matches!(code, 2 | 101 | 102 | 103 | 201..=207 | 301)
}

/// How statuses rank: the one place this is decided (README, "Message statuses").
///
/// - A final status is never replaced: the message's outcome (delivered or failed) never changes
///   once final. A status that would change it is a conflict: the first final one is kept.
/// - A delivery report beats a first status: a first status arriving after its report only fills
///   in `SENT_SUCCESS`; a failing one is a conflict.
/// - A first-status failure is final: a later `SENT_SUCCESS` or report is a conflict. It does
///   replace a `SENT_SUCCESS` still waiting for its report (that was not final).
/// - `SENT_SUCCESS` from a carrier without reports is final (delivered): a `DELIVERED_SUCCESS`
///   report fills in, any other report is a conflict.
/// - The same status again only fills in what was missing (its name, time): a repeat changes
///   nothing.
fn precedence(m: &mut Statuses, h: &Heard, no_dlr: &dyn Fn(&str) -> bool) -> Verdict {
    let before = m.clone();
    let fill = |name: &mut Option<String>, at: &mut Option<i64>| {
        if name.is_none() {
            name.clone_from(&h.name);
        }
        if at.is_none() {
            *at = h.at;
        }
    };
    match h.kind {
        Kind::First => match m.sent_code {
            Some(c) if c == h.code => fill(&mut m.sent_status, &mut m.sent_at),
            Some(2) if h.code != 2 && !m.is_final && m.delivered_code.is_none() => {
                (m.sent_code, m.sent_status, m.sent_at) = (Some(h.code), h.name.clone(), h.at);
            }
            Some(_) => return Verdict::Conflict,
            None if m.delivered_code.is_some() && h.code != 2 => return Verdict::Conflict,
            None => (m.sent_code, m.sent_status, m.sent_at) = (Some(h.code), h.name.clone(), h.at),
        },
        Kind::Report => match m.delivered_code {
            Some(d) if d == h.code => fill(&mut m.delivered_status, &mut m.delivered_at),
            Some(_) => return Verdict::Conflict,
            None if m.sent_code.is_some_and(|c| c != 2) => return Verdict::Conflict,
            None if m.is_final && h.code != 4 => return Verdict::Conflict,
            None => {
                (m.delivered_code, m.delivered_status, m.delivered_at) =
                    (Some(h.code), h.name.clone(), h.at);
            }
        },
    }
    // The carrier: the latest while the message waits, the first known once it is final.
    if let Some(c) = &h.carrier {
        if m.carrier.is_none() || !before.is_final {
            m.carrier = Some(c.clone());
        }
    }
    m.is_final =
        m.is_final || is_final(m.sent_code, m.delivered_code, m.carrier.as_deref(), no_dlr);
    if *m == before {
        Verdict::Unchanged
    } else {
        Verdict::Changed
    }
}

/// A status's name and code, for a log line.
fn describe(code: Option<i64>, name: Option<&str>) -> String {
    match (code, name) {
        (Some(c), Some(n)) => format!("{n} ({c})"),
        (Some(c), None) => format!("code {c}"),
        _ => "none".into(),
    }
}

/// A status that contradicted a final one (logged and counted once committed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conflict {
    job_id: i64,
    line: i64,
    correlation_id: String,
    kept: String,
    heard: String,
}

/// Which message a status is for.
enum Target {
    Message(i64, i64),
    Closed,
    Unknown,
    Ambiguous,
}

fn apply_all(
    t: &mut Tx<'_>,
    updates: &[StatusUpdate],
    no_dlr: &dyn Fn(&str) -> bool,
    optout_codes: &[i64],
) -> rusqlite::Result<(Applied, Vec<Conflict>)> {
    let mut applied = Applied::default();
    // Each status's message, then each status heard, in the order of its own time.
    let mut events: Vec<(usize, (i64, i64), Heard)> = Vec::with_capacity(updates.len());
    for (i, u) in updates.iter().enumerate() {
        match find_message(t, u)? {
            Target::Message(job, line) => {
                applied.matched += 1;
                events.extend(heard_of(u).into_iter().map(|h| (i, (job, line), h)));
            }
            Target::Closed => applied.closed += 1,
            Target::Unknown => applied.unknown.push(u.correlation_id.clone()),
            Target::Ambiguous => applied.ambiguous.push(u.correlation_id.clone()),
        }
    }
    events.sort_by_key(|(i, _, h)| (h.at.unwrap_or(i64::MAX), h.kind, *i));
    let mut states: std::collections::HashMap<(i64, i64), (Statuses, Statuses)> =
        std::collections::HashMap::new();
    let mut changed = vec![false; updates.len()];
    let mut conflicts = Vec::new();
    let mut optouts = Vec::new();
    for (i, key, h) in &events {
        let (m, _) = match states.entry(*key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let s = load_statuses(t, key.0, key.1)?;
                e.insert((s.clone(), s))
            }
        };
        let first = m.sent_code.is_none();
        match precedence(m, h, no_dlr) {
            Verdict::Unchanged => {}
            Verdict::Changed => {
                changed[*i] = true;
                // The first status recorded for the message (not one replacing SENT_SUCCESS).
                if first && m.sent_code.is_some_and(|c| optout_codes.contains(&c)) {
                    optouts.push(StatusOptout {
                        job_id: key.0,
                        line: key.1,
                        code: h.code,
                        name: h.name.clone(),
                        at: h.at,
                    });
                }
            }
            Verdict::Conflict => {
                let kept = if m.delivered_code.is_some() {
                    describe(m.delivered_code, m.delivered_status.as_deref())
                } else {
                    describe(m.sent_code, m.sent_status.as_deref())
                };
                conflicts.push(Conflict {
                    job_id: key.0,
                    line: key.1,
                    correlation_id: updates[*i].correlation_id.clone(),
                    kept,
                    heard: describe(Some(h.code), h.name.as_deref()),
                });
            }
        }
    }
    applied.changed = changed.iter().filter(|c| **c).count();
    applied.conflicts = conflicts.len();
    let mut st = t.tx.prepare_cached(
        "UPDATE messages SET sent_code = ?3, sent_status = ?4, sent_at = ?5, delivered_code = ?6, \
         delivered_status = ?7, delivered_at = ?8, carrier = ?9, final = ?10 \
         WHERE job_id = ?1 AND line = ?2",
    )?;
    for ((job_id, line), (m, was)) in &states {
        if m != was {
            st.execute(params![
                job_id,
                line,
                m.sent_code,
                m.sent_status,
                m.sent_at,
                m.delivered_code,
                m.delivered_status,
                m.delivered_at,
                m.carrier,
                m.is_final
            ])?;
        }
    }
    drop(st);
    applied.opted_out = t.add_status_optouts(&optouts)?;
    Ok((applied, conflicts))
}

fn load_statuses(t: &mut Tx<'_>, job_id: i64, line: i64) -> rusqlite::Result<Statuses> {
    let mut st = t.tx.prepare_cached(
        "SELECT sent_code, sent_status, sent_at, delivered_code, delivered_status, delivered_at, \
                carrier, final FROM messages WHERE job_id = ?1 AND line = ?2",
    )?;
    st.query_row(params![job_id, line], |r| {
        Ok(Statuses {
            sent_code: r.get(0)?,
            sent_status: r.get(1)?,
            sent_at: r.get(2)?,
            delivered_code: r.get(3)?,
            delivered_status: r.get(4)?,
            delivered_at: r.get(5)?,
            carrier: r.get(6)?,
            is_final: r.get::<_, i64>(7)? != 0,
        })
    })
}

/// The message a status is for: by correlation id, narrowed by the destination when the status
/// names one. The status's time is used only to choose between messages sharing the id (one
/// whose file was uploaded after the status was sent is not its message).
fn find_message(t: &mut Tx<'_>, u: &StatusUpdate) -> rusqlite::Result<Target> {
    let mut st = t.tx.prepare_cached(
        "SELECT m.job_id, m.line, m.number, m.final, coalesce(j.tracking, ''), b.uploaded_at \
         FROM messages m JOIN jobs j ON j.id = m.job_id \
         LEFT JOIN batches b ON b.job_id = m.job_id AND b.part = m.part \
         WHERE m.correlation_id = ?1 AND m.untracked IS NULL",
    )?;
    struct Cand {
        job_id: i64,
        line: i64,
        number: String,
        is_final: bool,
        closed: bool,
        uploaded_at: Option<i64>,
    }
    let mut cands: Vec<Cand> = st
        .query_map([&u.correlation_id], |r| {
            Ok(Cand {
                job_id: r.get(0)?,
                line: r.get(1)?,
                number: r.get(2)?,
                is_final: r.get::<_, i64>(3)? != 0,
                closed: r.get::<_, String>(4)? == "done",
                uploaded_at: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(dest) = &u.destination {
        cands.retain(|c| same_number(&c.number, dest));
    }
    // Of several, one whose file was uploaded after the status was sent is not its message
    // (an id the ERP used again within the gateway's 3 days); clocks may differ by minutes.
    if let (true, Some(at)) = (cands.len() > 1, u.sent_at.or(u.delivered_at)) {
        let possible = |c: &Cand| c.uploaded_at.is_none_or(|up| at >= up - CLOCK_SKEW_MS);
        if cands.iter().any(possible) {
            cands.retain(possible);
        }
    }
    let (mut open, closed): (Vec<Cand>, Vec<Cand>) = cands.into_iter().partition(|c| !c.closed);
    // Of several, a message still waiting is the one a new status is for.
    if open.len() > 1 && open.iter().filter(|c| !c.is_final).count() == 1 {
        open.retain(|c| !c.is_final);
    }
    Ok(match open.as_slice() {
        [] if !closed.is_empty() => Target::Closed,
        [] => Target::Unknown,
        [c] => Target::Message(c.job_id, c.line),
        _ => Target::Ambiguous,
    })
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

#[cfg(test)]
mod precedence_tests {
    use super::*;

    fn no_dlr(c: &str) -> bool {
        c.eq_ignore_ascii_case("OI")
    }

    /// A message with these codes (a carrier with reports unless `oi`).
    fn state(sent: Option<i64>, delivered: Option<i64>, oi: bool) -> Statuses {
        let carrier = Some(if oi { "OI" } else { "VIVO" }.to_owned());
        Statuses {
            sent_code: sent,
            sent_status: None,
            sent_at: sent.map(|_| 1),
            delivered_code: delivered,
            delivered_status: None,
            delivered_at: delivered.map(|_| 2),
            is_final: is_final(sent, delivered, carrier.as_deref(), &no_dlr),
            carrier,
        }
    }

    fn heard(kind: Kind, code: i64) -> Heard {
        Heard {
            kind,
            code,
            name: None,
            at: Some(3),
            carrier: Some("VIVO".into()),
        }
    }

    /// "pending", "delivered" or "failed", as the journal counts it.
    fn outcome(m: &Statuses) -> &'static str {
        let failed = matches!(m.sent_code, Some(c) if c != 2)
            || matches!(m.delivered_code, Some(c) if c != 4);
        match (m.is_final, failed) {
            (_, true) => "failed",
            (true, false) => "delivered",
            (false, false) => "pending",
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        use Kind::{First, Report};
        use Verdict::{Changed, Conflict, Unchanged};
        #[rustfmt::skip]
        let table: &[(&str, Statuses, Heard, Verdict, &str)] = &[
            ("first status", state(None, None, false), heard(First, 2), Changed, "pending"),
            ("first-status failure", state(None, None, false), heard(First, 202), Changed, "failed"),
            ("report alone", state(None, None, false), heard(Report, 104), Changed, "failed"),
            ("report after SENT_SUCCESS", state(Some(2), None, false), heard(Report, 4), Changed, "delivered"),
            ("a repeat", state(Some(2), Some(4), false), heard(Report, 4), Unchanged, "delivered"),
            ("SENT_SUCCESS after a failure", state(Some(202), None, false), heard(First, 2), Conflict, "failed"),
            ("another failure after a failure", state(Some(202), None, false), heard(First, 203), Conflict, "failed"),
            ("a report after a failure", state(Some(202), None, false), heard(Report, 4), Conflict, "failed"),
            ("NOT_DELIVERED after DELIVERED_SUCCESS", state(Some(2), Some(4), false), heard(Report, 104), Conflict, "delivered"),
            ("DELIVERED_SUCCESS after NOT_DELIVERED", state(Some(2), Some(104), false), heard(Report, 4), Conflict, "failed"),
            ("a failure while the report is awaited", state(Some(2), None, false), heard(First, 103), Changed, "failed"),
            ("a failing first status after the report", state(Some(2), Some(4), false), heard(First, 103), Conflict, "delivered"),
            ("SENT_SUCCESS after its report", state(None, Some(4), false), heard(First, 2), Changed, "delivered"),
            ("a failing first status after a lone report", state(None, Some(4), false), heard(First, 202), Conflict, "delivered"),
            ("NOT_DELIVERED for a carrier without reports", state(Some(2), None, true), heard(Report, 104), Conflict, "delivered"),
            ("DELIVERED_SUCCESS for a carrier without reports", state(Some(2), None, true), heard(Report, 4), Changed, "delivered"),
            ("a failure after a final SENT_SUCCESS", state(Some(2), None, true), heard(First, 202), Conflict, "delivered"),
        ];
        for (what, start, h, verdict, want) in table {
            let mut m = start.clone();
            let got = precedence(&mut m, h, &no_dlr);
            assert_eq!(got, *verdict, "{what}");
            assert_eq!(outcome(&m), *want, "{what}: {m:?}");
            if got != Changed {
                assert_eq!(
                    &m, start,
                    "{what}: a status not applied changed the message"
                );
            }
            // Whatever came, a final outcome stays.
            if start.is_final {
                assert_eq!(outcome(&m), outcome(start), "{what}");
                assert!(m.is_final, "{what}");
            }
        }
    }

    #[test]
    fn a_repeat_fills_in_only_what_was_missing() {
        let mut m = state(Some(2), None, false);
        m.sent_at = None;
        let h = Heard {
            name: Some("SENT_SUCCESS".into()),
            ..heard(Kind::First, 2)
        };
        assert_eq!(precedence(&mut m, &h, &no_dlr), Verdict::Changed);
        assert_eq!(
            (m.sent_at, m.sent_status.as_deref()),
            (Some(3), Some("SENT_SUCCESS"))
        );
        assert_eq!(precedence(&mut m, &h, &no_dlr), Verdict::Unchanged);
    }

    #[test]
    fn each_slot_is_heard_for_what_its_code_is() {
        let u = |sent: Option<i64>, delivered: Option<i64>| StatusUpdate {
            correlation_id: "c".into(),
            sent_code: sent,
            sent_at: Some(1),
            delivered_code: delivered,
            delivered_at: Some(2),
            ..StatusUpdate::default()
        };
        let kinds = |u: &StatusUpdate| {
            heard_of(u)
                .into_iter()
                .map(|h| (h.kind, h.code, h.at))
                .collect::<Vec<_>>()
        };
        // A delivery report's code given as the sent status is a delivery report (at its time).
        assert_eq!(kinds(&u(Some(4), None)), vec![(Kind::Report, 4, Some(1))]);
        assert_eq!(kinds(&u(None, Some(2))), vec![(Kind::First, 2, Some(2))]);
        // Both slots the same kind: the one in its own slot is heard.
        assert_eq!(
            kinds(&u(Some(104), Some(4))),
            vec![(Kind::Report, 4, Some(2))]
        );
        assert_eq!(
            kinds(&u(Some(2), Some(4))),
            vec![(Kind::First, 2, Some(1)), (Kind::Report, 4, Some(2))]
        );
        // A code SPEC.md does not list keeps its slot.
        assert_eq!(
            kinds(&u(Some(999), None)),
            vec![(Kind::First, 999, Some(1))]
        );
    }
}
