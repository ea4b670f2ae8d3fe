//! Figures for operations (metrics, the status page, `status`'s summary line), read in a few
//! aggregate queries.

use super::{JobState, Journal, Result};
use std::collections::BTreeMap;

/// The job states a job can be in (a batch may also be `unknown`).
pub const JOB_STATES: [JobState; 9] = [
    JobState::Detected,
    JobState::Converted,
    JobState::Held,
    JobState::Uploading,
    JobState::Uploaded,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Expired,
    JobState::Rejected,
];

/// What the journal holds, in totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Jobs now in each state (every state present).
    pub jobs: BTreeMap<&'static str, u64>,
    /// Jobs created since the start of today, by their state now (every state present).
    pub jobs_today: BTreeMap<&'static str, u64>,
    pub rows_sent: u64,
    pub rows_rejected: u64,
    /// Rows not sent because they were already sent (`[batch] duplicate_rows = "skip"`).
    pub rows_duplicate: u64,
    /// Rows not sent because their number opted out (`[optout] apply`).
    pub rows_opted_out: u64,
    pub batches_uploaded: u64,
    pub upload_bytes: u64,
    /// When the oldest job not yet final was created (ms), if any.
    pub oldest_pending_ms: Option<i64>,
    /// Messages by state: delivered, failed, pending, untracked (jobs of the last 7 days).
    pub messages: BTreeMap<&'static str, u64>,
    /// Jobs that ended failed or expired today (by when they ended).
    pub failed_today: u64,
}

/// How far back `smsdrop_messages` counts (a scrape must not read every message ever sent).
const MESSAGES_WINDOW_MS: i64 = 7 * 86_400_000;

impl Journal {
    /// A page of jobs, newest first: in `state` when given, created in `[from_ms, to_ms)` when
    /// given, at most `limit`.
    ///
    /// # Errors
    /// When the query fails.
    pub fn jobs_filtered(
        &self,
        state: Option<&str>,
        range: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<super::Job>> {
        let (from, to) = range.unwrap_or((i64::MIN, i64::MAX));
        let sql = format!(
            "SELECT {} FROM jobs WHERE (?1 IS NULL OR state = ?1) AND created_at >= ?2 \
             AND created_at < ?3 ORDER BY id DESC LIMIT ?4",
            super::JOB_COLS
        );
        self.query_jobs(&sql, rusqlite::params![state, from, to, limit])
    }

    /// Totals for operations; `today_ms` is when today began.
    ///
    /// # Errors
    /// When a query fails.
    pub fn stats(&self, today_ms: i64) -> Result<Stats> {
        let mut s = Stats::default();
        for st in JOB_STATES {
            s.jobs.insert(st.as_str(), 0);
            s.jobs_today.insert(st.as_str(), 0);
        }
        let by_state = self.query(
            "SELECT state, count(*), sum(created_at >= ?1), \
             sum(updated_at >= ?1 AND state IN ('failed', 'expired')) FROM jobs GROUP BY state",
            [today_ms],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                    r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                ))
            },
        )?;
        for (state, all, today, failed_today) in by_state {
            s.failed_today += failed_today;
            if let Some(st) = JOB_STATES.iter().find(|s| s.as_str() == state) {
                s.jobs.insert(st.as_str(), all);
                s.jobs_today.insert(st.as_str(), today);
            }
        }
        let (sent, rejected, oldest, (duplicate, opted_out)) = self
            .query(
                "SELECT coalesce(sum(rows_sent), 0), coalesce(sum(rows_rejected), 0), \
                 (SELECT min(created_at) FROM jobs WHERE state NOT IN \
                   ('succeeded', 'failed', 'expired', 'rejected')), \
                 coalesce(sum(rows_duplicate), 0), coalesce(sum(rows_opted_out), 0) FROM jobs",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, Option<i64>>(2)?,
                        (r.get::<_, i64>(3)? as u64, r.get::<_, i64>(4)? as u64),
                    ))
                },
            )?
            .into_iter()
            .next()
            .unwrap_or_default();
        (s.rows_sent, s.rows_rejected, s.oldest_pending_ms) = (sent, rejected, oldest);
        (s.rows_duplicate, s.rows_opted_out) = (duplicate, opted_out);
        let (batches, bytes) = self
            .query(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM batches WHERE uploaded_at IS NOT NULL",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?
            .into_iter()
            .next()
            .unwrap_or_default();
        (s.batches_uploaded, s.upload_bytes) = (batches, bytes);
        let m = self
            .query(
                "SELECT \
                   coalesce(sum(untracked IS NULL AND final = 1 AND coalesce(sent_code, 2) = 2 \
                       AND coalesce(delivered_code, 4) = 4), 0), \
                   coalesce(sum(untracked IS NULL AND (coalesce(sent_code, 2) != 2 \
                       OR coalesce(delivered_code, 4) != 4)), 0), \
                   coalesce(sum(untracked IS NULL AND final = 0 AND job_id NOT IN \
                       (SELECT id FROM jobs WHERE tracking = 'done')), 0), \
                   coalesce(sum(untracked IS NOT NULL AND untracked NOT LIKE 'not sent%'), 0) \
                                  FROM messages WHERE job_id >= \
                   (SELECT coalesce(min(id), 0) FROM jobs WHERE created_at >= ?1)",
                [today_ms - MESSAGES_WINDOW_MS],
                |r| {
                    Ok([
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ])
                },
            )?
            .into_iter()
            .next()
            .unwrap_or_default();
        for (k, v) in ["delivered", "failed", "pending", "untracked"]
            .into_iter()
            .zip(m)
        {
            s.messages.insert(k, v);
        }
        Ok(s)
    }
}
