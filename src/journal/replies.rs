//! Customers' replies (MOs) and the opt-out list: each reply recorded once by the gateway's id
//! and matched to the row it answers; replies grouped into outbox files (a file's name is
//! recorded with its replies before it is written, so each reply is in exactly one file across
//! crashes); opt-outs per subaccount.

use super::{Journal, Result};
use rusqlite::{params, OptionalExtension};

/// A reply as the gateway gave it (fields smsdrop uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReply {
    pub id: String,
    pub received_at_ms: i64,
    /// The number that replied, digits with the country code first.
    pub number: String,
    pub text: String,
    /// The subaccount the gateway names (empty when it does not).
    pub subaccount: String,
    /// The original message's correlation id (empty when none).
    pub correlation_id: String,
    pub carrier: Option<String>,
    pub short_code: Option<String>,
}

/// A recorded reply, with what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    pub received_at_ms: i64,
    pub number: String,
    pub text: String,
    pub subaccount: String,
    pub correlation_id: String,
    /// The ERP's own id when smsdrop generated the one in the batch.
    pub erp_id: Option<String>,
    pub job_id: Option<i64>,
    pub input: Option<String>,
    pub line: Option<i64>,
    pub carrier: Option<String>,
    pub short_code: Option<String>,
    pub opt_out: bool,
}

/// What recording a slice of replies did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordedReplies {
    /// Replies not seen before.
    pub new: usize,
    /// Of them, matched to a sent row.
    pub matched: usize,
    /// Numbers added to an opt-out list: (subaccount, number).
    pub opted_out: Vec<(String, String)>,
}

/// One entry of the opt-out list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Optout {
    pub subaccount: String,
    pub number: String,
    pub at_ms: i64,
    /// `reply`, `status`, `operator` or `import`.
    pub source: String,
    pub detail: Option<String>,
}

/// An outbox file recorded and not yet known written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxFile {
    pub name: String,
    pub subaccount: String,
}

/// The sent row a reply answers: job, line, the ERP's id, input name, subaccount, number.
type Answered = (i64, i64, String, String, String, String);

/// Names an outbox file for a subaccount, given whether a name was ever used.
pub type NameOutbox<'a> = &'a dyn Fn(&str, &dyn Fn(&str) -> bool) -> String;

const REPLY_COLS: &str = "id, received_at, number, text, subaccount, correlation_id, erp_id, \
     job_id, input, line, carrier, short_code, opt_out";

fn reply_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Reply> {
    Ok(Reply {
        id: r.get(0)?,
        received_at_ms: r.get(1)?,
        number: r.get(2)?,
        text: r.get(3)?,
        subaccount: r.get(4)?,
        correlation_id: r.get(5)?,
        erp_id: r.get(6)?,
        job_id: r.get(7)?,
        input: r.get(8)?,
        line: r.get(9)?,
        carrier: r.get(10)?,
        short_code: r.get(11)?,
        opt_out: r.get(12)?,
    })
}

impl Journal {
    /// Records replies not seen before (by id), each matched to the sent row it answers (its
    /// correlation id and number), in one transaction. `is_opt_out` says whether a reply's text
    /// opts out; such a number joins its subaccount's list (`default_subaccount` when neither
    /// the reply nor the row it answers names one).
    ///
    /// # Errors
    /// When the journal cannot be written; nothing is recorded then.
    pub fn record_replies(
        &mut self,
        replies: &[NewReply],
        default_subaccount: &str,
        is_opt_out: &dyn Fn(&str) -> bool,
        normalize: &dyn Fn(&str) -> String,
    ) -> Result<RecordedReplies> {
        self.transaction(|t| {
            let tx = &t.tx;
            let now = t.now;
            let mut out = RecordedReplies::default();
            for r in replies {
                let known: Option<i64> = tx
                    .query_row("SELECT 1 FROM replies WHERE id = ?1", [&r.id], |x| x.get(0))
                    .optional()?;
                if known.is_some() {
                    continue;
                }
                // The row it answers: its correlation id from that number; else the id alone
                // when only one row carries it (a number written differently).
                let mut found = None;
                if !r.correlation_id.is_empty() {
                    let sql = "SELECT m.job_id, m.line, m.erp_id, j.input_name, j.subaccount, \
                               m.number \
                               FROM messages m JOIN jobs j ON j.id = m.job_id \
                               WHERE m.correlation_id = ?1 AND (?2 = '' OR m.number = ?2) \
                               ORDER BY m.job_id DESC LIMIT 2";
                    let rows = |num: &str| -> rusqlite::Result<Vec<Answered>> {
                        let mut st = tx.prepare_cached(sql)?;
                        let v = st
                            .query_map(params![r.correlation_id, num], |x| {
                                Ok((
                                    x.get(0)?,
                                    x.get(1)?,
                                    x.get(2)?,
                                    x.get(3)?,
                                    x.get(4)?,
                                    x.get(5)?,
                                ))
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        Ok(v)
                    };
                    let exact = rows(&r.number)?;
                    found = match exact.first() {
                        Some(f) => Some(f.clone()),
                        None => {
                            let any = rows("")?;
                            (any.len() == 1).then(|| any[0].clone())
                        }
                    };
                }
                // The row it answers says whose list an opt-out joins, and under which number:
                // exactly what the next export of that subaccount is checked against. Without
                // one, the gateway's subaccount (or the default) and the number as rows write it.
                let (subaccount, listed_number) = match &found {
                    Some(f) => (f.4.clone(), f.5.clone()),
                    None if !r.subaccount.is_empty() => (r.subaccount.clone(), normalize(&r.number)),
                    None => (default_subaccount.to_owned(), normalize(&r.number)),
                };
                let opt_out = is_opt_out(&r.text);
                let (job, line, erp, input) = match &found {
                    Some((j, l, e, i, _, _)) => {
                        let erp = (!e.is_empty() && *e != r.correlation_id).then(|| e.clone());
                        (Some(*j), Some(*l), erp, Some(i.clone()))
                    }
                    None => (None, None, None, None),
                };
                tx.execute(
                    "INSERT INTO replies (id, received_at, number, text, subaccount, \
                     correlation_id, erp_id, job_id, input, line, carrier, short_code, opt_out, \
                     recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                    params![
                        r.id,
                        r.received_at_ms,
                        r.number,
                        r.text,
                        subaccount,
                        r.correlation_id,
                        erp,
                        job,
                        input,
                        line,
                        r.carrier,
                        r.short_code,
                        opt_out,
                        now
                    ],
                )?;
                out.new += 1;
                out.matched += usize::from(found.is_some());
                if opt_out {
                    let added = tx.execute(
                        "INSERT INTO optouts (subaccount, number, at, source, detail) \
                         VALUES (?1, ?2, ?3, 'reply', ?4) ON CONFLICT DO NOTHING",
                        params![
                            subaccount,
                            listed_number,
                            r.received_at_ms,
                            format!("replied {:?}", r.text.trim())
                        ],
                    )?;
                    if added > 0 {
                        out.opted_out.push((subaccount.clone(), listed_number.clone()));
                    }
                }
            }
            Ok(out)
        })
    }

    /// The newest reply's arrival (ms), for where `search` starts; `None` before any.
    ///
    /// # Errors
    /// When the query fails.
    pub fn last_reply_at(&self) -> Result<Option<i64>> {
        Ok(self
            .query("SELECT max(received_at) FROM replies", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .into_iter()
            .next()
            .flatten())
    }

    /// When the first job was created (ms): `search` needs nothing older on a first start.
    ///
    /// # Errors
    /// When the query fails.
    pub fn first_job_at(&self) -> Result<Option<i64>> {
        Ok(self
            .query("SELECT min(created_at) FROM jobs", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .into_iter()
            .next()
            .flatten())
    }

    /// How many replies wait for an outbox file.
    ///
    /// # Errors
    /// When the query fails.
    pub fn replies_waiting(&self) -> Result<u64> {
        Ok(self
            .query(
                "SELECT count(*) FROM replies WHERE outbox IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )?
            .into_iter()
            .next()
            .unwrap_or(0) as u64)
    }

    /// Replies received since `since_ms` (for `status`).
    ///
    /// # Errors
    /// When the query fails.
    pub fn replies_since(&self, since_ms: i64) -> Result<u64> {
        Ok(self
            .query(
                "SELECT count(*) FROM replies WHERE received_at >= ?1",
                [since_ms],
                |r| r.get::<_, i64>(0),
            )?
            .into_iter()
            .next()
            .unwrap_or(0) as u64)
    }

    /// Gives every waiting reply of each subaccount to one new outbox file, named by
    /// `name(subaccount, taken)` (`taken` says whether a name was ever used), in one
    /// transaction; returns the files. A file's replies are fixed from then on.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn assign_outbox(&mut self, name: NameOutbox<'_>) -> Result<Vec<OutboxFile>> {
        self.transaction(|t| {
            let tx = &t.tx;
            let subs: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT DISTINCT subaccount FROM replies WHERE outbox IS NULL ORDER BY 1",
                )?;
                let v = st
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                v
            };
            let mut files = vec![];
            for sub in subs {
                let taken = |n: &str| {
                    tx.query_row("SELECT 1 FROM outbox_files WHERE name = ?1", [n], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()
                    .ok()
                    .flatten()
                    .is_some()
                };
                let file = name(&sub, &taken);
                tx.execute(
                    "INSERT INTO outbox_files (name, subaccount, created_at) VALUES (?1, ?2, ?3)",
                    params![file, sub, t.now],
                )?;
                tx.execute(
                    "UPDATE replies SET outbox = ?1 WHERE outbox IS NULL AND subaccount = ?2",
                    params![file, sub],
                )?;
                files.push(OutboxFile {
                    name: file,
                    subaccount: sub,
                });
            }
            Ok(files)
        })
    }

    /// Outbox files recorded but not yet known written (a crash between), oldest first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn outbox_unwritten(&self) -> Result<Vec<OutboxFile>> {
        self.query(
            "SELECT name, subaccount FROM outbox_files WHERE written = 0 ORDER BY created_at, name",
            [],
            |r| {
                Ok(OutboxFile {
                    name: r.get(0)?,
                    subaccount: r.get(1)?,
                })
            },
        )
    }

    /// The replies of an outbox file, in the order they arrived.
    ///
    /// # Errors
    /// When the query fails.
    pub fn outbox_replies(&self, name: &str) -> Result<Vec<Reply>> {
        self.query(
            &format!("SELECT {REPLY_COLS} FROM replies WHERE outbox = ?1 ORDER BY received_at, id"),
            [name],
            reply_from_row,
        )
    }

    /// Records that an outbox file is in place.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn outbox_written(&mut self, name: &str) -> Result<()> {
        self.transaction(|t| {
            t.tx.execute(
                "UPDATE outbox_files SET written = 1 WHERE name = ?1",
                [name],
            )?;
            Ok(())
        })
    }

    /// Adds numbers to a subaccount's opt-out list (those already on it are kept as they were);
    /// returns how many were added.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn add_optouts(
        &mut self,
        subaccount: &str,
        numbers: &[String],
        source: &str,
        detail: Option<&str>,
    ) -> Result<usize> {
        self.transaction(|t| {
            let mut n = 0;
            for number in numbers {
                n += t.tx.execute(
                    "INSERT INTO optouts (subaccount, number, at, source, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    params![subaccount, number, t.now, source, detail],
                )?;
            }
            Ok(n)
        })
    }

    /// Takes numbers off a subaccount's opt-out list; returns how many were on it.
    ///
    /// # Errors
    /// When the journal cannot be written.
    pub fn remove_optouts(&mut self, subaccount: &str, numbers: &[String]) -> Result<usize> {
        self.transaction(|t| {
            let mut n = 0;
            for number in numbers {
                n += t.tx.execute(
                    "DELETE FROM optouts WHERE subaccount = ?1 AND number = ?2",
                    params![subaccount, number],
                )?;
            }
            Ok(n)
        })
    }

    /// The opt-out list: one subaccount's, or every one's (`None`), by subaccount and number.
    ///
    /// # Errors
    /// When the query fails.
    pub fn optouts(&self, subaccount: Option<&str>) -> Result<Vec<Optout>> {
        self.query(
            "SELECT subaccount, number, at, source, detail FROM optouts \
             WHERE ?1 IS NULL OR subaccount = ?1 ORDER BY subaccount, number",
            [subaccount],
            |r| {
                Ok(Optout {
                    subaccount: r.get(0)?,
                    number: r.get(1)?,
                    at_ms: r.get(2)?,
                    source: r.get(3)?,
                    detail: r.get(4)?,
                })
            },
        )
    }

    /// Why `number` is on `subaccount`'s opt-out list, if it is (tests).
    #[cfg(test)]
    pub fn optout(&self, subaccount: &str, number: &str) -> Result<Option<Optout>> {
        Ok(self
            .optouts(Some(subaccount))?
            .into_iter()
            .find(|o| o.number == number))
    }

    /// Replies recorded in all, and opt-outs by source (`reply`, `status`, `operator`,
    /// `import`), for `/metrics`.
    ///
    /// # Errors
    /// When a query fails.
    pub fn reply_totals(&self) -> Result<(u64, Vec<(String, u64)>)> {
        let replies = self
            .query("SELECT count(*) FROM replies", [], |r| r.get::<_, i64>(0))?
            .into_iter()
            .next()
            .unwrap_or(0) as u64;
        let by_source = self.query(
            "SELECT source, count(*) FROM optouts GROUP BY source ORDER BY source",
            [],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)),
        )?;
        Ok((replies, by_source))
    }

    /// How many numbers are on opt-out lists.
    ///
    /// # Errors
    /// When the query fails.
    pub fn optout_count(&self) -> Result<u64> {
        Ok(self
            .query("SELECT count(*) FROM optouts", [], |r| r.get::<_, i64>(0))?
            .into_iter()
            .next()
            .unwrap_or(0) as u64)
    }
}
