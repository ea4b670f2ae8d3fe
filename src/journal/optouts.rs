//! Opt-outs where conversion and statuses meet them: the rows a job did not send because their
//! number is on its subaccount's opt-out list (kept with the job, so the result CSV read again
//! marks exactly those lines), and the numbers a first status puts on the list. The list itself
//! (add, remove, look up) is in `replies`. Nothing here decides whether a row is sent.

use super::{Journal, Result, Tx};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// A row a job did not send because its number opted out, with the list's entry as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptedOut {
    /// The row's line as the conversion numbered it (before a continuation's offset).
    pub line: u64,
    pub number: String,
    /// When the number opted out (ms).
    pub at_ms: i64,
    /// `reply`, `status`, `operator` or `import`.
    pub source: String,
    pub detail: Option<String>,
}

/// A message whose first status put its number on the opt-out list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatusOptout {
    pub job_id: i64,
    pub line: i64,
    pub code: i64,
    pub name: Option<String>,
    /// The status's own time (ms), when it gave one.
    pub at: Option<i64>,
}

impl StatusOptout {
    /// "status 204 DESTINATION_BLOCKED_BY_OPTOUT".
    fn detail(&self) -> String {
        let name = self.name.as_deref().unwrap_or(match self.code {
            203 => "BLACKLISTED",
            204 => "DESTINATION_BLOCKED_BY_OPTOUT",
            _ => "",
        });
        format!("status {} {name}", self.code).trim_end().to_owned()
    }
}

impl Tx<'_> {
    /// Records the rows a job did not send because their number opted out (replacing any
    /// recorded before: a conversion repeated after a crash).
    pub fn set_opted_out(&mut self, job_id: i64, rows: &[OptedOut]) -> rusqlite::Result<()> {
        let json = (!rows.is_empty())
            .then(|| serde_json::to_string(rows).expect("opted-out rows always serialise"));
        self.tx.execute(
            "UPDATE jobs SET rows_opted_out = ?2, opted_out = ?3 WHERE id = ?1",
            params![job_id, rows.len() as i64, json],
        )?;
        Ok(())
    }

    /// Puts the numbers of these messages on their job's subaccount's opt-out list (source
    /// `status`); a number already on it keeps its entry. Returns (subaccount, number) added.
    pub(super) fn add_status_optouts(
        &mut self,
        found: &[StatusOptout],
    ) -> rusqlite::Result<Vec<(String, String)>> {
        let mut added = vec![];
        for s in found {
            let row: Option<(String, String)> = self
                .tx
                .query_row(
                    "SELECT j.subaccount, m.number FROM messages m JOIN jobs j ON j.id = m.job_id \
                     WHERE m.job_id = ?1 AND m.line = ?2",
                    params![s.job_id, s.line],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((sub, number)) = row else { continue };
            let n = self.tx.execute(
                "INSERT INTO optouts (subaccount, number, at, source, detail) \
                 VALUES (?1, ?2, ?3, 'status', ?4) ON CONFLICT DO NOTHING",
                params![sub, number, s.at.unwrap_or(self.now), s.detail()],
            )?;
            if n > 0 {
                added.push((sub, number));
            }
        }
        Ok(added)
    }
}

impl Journal {
    /// The rows a job did not send because their number opted out, in line order.
    ///
    /// # Errors
    /// When the query fails.
    pub fn opted_out(&self, job_id: i64) -> Result<Vec<OptedOut>> {
        let json: Option<String> = self
            .query("SELECT opted_out FROM jobs WHERE id = ?1", [job_id], |r| {
                r.get(0)
            })?
            .into_iter()
            .next()
            .flatten();
        Ok(json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default())
    }
}
