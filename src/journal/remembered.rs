//! The rows already sent, for the row-level duplicate guard (`[batch] duplicate_rows`).
//!
//! Each batch file's rows are remembered as one journal row (`remembered`): a key per row (the
//! first 16 bytes of SHA-256 over subaccount, normalised number and text) and its input line,
//! packed, written in the transaction that records the batch. Inserting stays one row per batch
//! however many rows are remembered (a B-tree keyed by row hash is rewritten page by page by
//! every large insert). Lookups go to an in-memory open-addressing index over every remembered
//! key, loaded once per process and topped up from the journal; a key found there only counts
//! once the journal confirms its batch still counts (not `failed`, within the window).
//!
//! Per job, the rows skipped as duplicates are kept packed too (`jobs.duplicates`), so the
//! result CSV can say which rows went and which were already sent. This module must never make a
//! row count as sent that the journal does not hold.

use super::{time, Result, Tx};
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A row's key: 16 bytes of SHA-256 over `subaccount NUL number NUL text`.
pub type RowKey = [u8; 16];

/// Bytes per remembered row in a batch's packed list: key and line (u32, little-endian).
const PACKED: usize = 20;

/// Bytes per skipped row in a job's packed list: line, earlier job, earlier line, when.
const PACKED_DUP: usize = 32;

/// The key of a row of `subaccount` (the number already normalised, the text as sent).
pub fn row_key(subaccount: &str, number: &str, text: &str) -> RowKey {
    let mut h = Sha256::new();
    h.update(subaccount.as_bytes());
    h.update([0]);
    h.update(number.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

/// Where a row went before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earlier {
    pub job: i64,
    /// Its line in that job's result CSV.
    pub line: u64,
    pub at: DateTime<Utc>,
}

/// A row a job did not send because it was already sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    /// The row's line as the conversion numbered it (before a continuation's offset).
    pub line: u64,
    pub earlier: Earlier,
}

impl Duplicate {
    /// Why the row was not sent, for reports: "already sent in job 12, line 4, on 2026-12-07".
    pub fn reason(&self, zone: &crate::config::Zone) -> String {
        format!(
            "already sent in job {}, line {}, on {}",
            self.earlier.job,
            self.earlier.line,
            zone.day_of(self.earlier.at)
        )
    }
}

/// Every remembered key, in memory: `slots` (open addressing, linear probing) hold a tag (4
/// more bytes of the key, so a miss rarely reads `keys`) and an index into `keys`; a key
/// remembered twice (a batch that failed, then sent again) has two entries.
#[derive(Debug, Default)]
pub(super) struct RowIndex {
    keys: Vec<(RowKey, u32, u32)>,
    /// Batch ids, by the index `keys` holds.
    batches: Vec<i64>,
    slots: Vec<u64>,
    /// The highest batch id loaded.
    loaded_to: i64,
    /// Entries whose journal rows were pruned (rebuilt once they are half the index).
    stale: usize,
}

impl RowIndex {
    fn slot_of(&self, key: &RowKey) -> usize {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key[..8]);
        (u64::from_le_bytes(b) as usize) & (self.slots.len() - 1)
    }

    fn add(&mut self, key: RowKey, batch: u32, line: u32) {
        if (self.keys.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.keys.push((key, batch, line));
        let at = self.keys.len() as u32;
        self.place(key, at);
    }

    fn place(&mut self, key: RowKey, at: u32) {
        let mask = self.slots.len() - 1;
        let mut i = self.slot_of(&key);
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (u64::from(tag(&key)) << 32) | u64::from(at);
    }

    fn grow(&mut self) {
        let n = (self.slots.len() * 2).max(1024);
        self.slots = vec![0; n];
        for i in 0..self.keys.len() {
            let key = self.keys[i].0;
            self.place(key, i as u32 + 1);
        }
    }

    /// Every (batch id, line) remembered for `key`.
    fn find<'s>(&'s self, key: &'s RowKey) -> impl Iterator<Item = (i64, u32)> + 's {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = if self.slots.is_empty() {
            0
        } else {
            self.slot_of(key)
        };
        std::iter::from_fn(move || loop {
            let slot = *self.slots.get(i)?;
            if slot == 0 {
                return None;
            }
            i = (i + 1) & mask;
            if (slot >> 32) as u32 != tag(key) {
                continue;
            }
            let (k, b, line) = &self.keys[(slot as u32) as usize - 1];
            if k == key {
                return Some((self.batches[*b as usize], *line));
            }
        })
    }

    /// Bytes the index holds, for the README's figures.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<(RowKey, u32, u32)>()
            + self.slots.capacity() * 8
            + self.batches.capacity() * 8
    }
}

/// Bytes 8..12 of a key (the slot is chosen by bytes 0..8).
fn tag(key: &RowKey) -> u32 {
    u32::from_le_bytes([key[8], key[9], key[10], key[11]])
}

/// What a lookup learned about a batch: the job it belongs to and when it was remembered, when
/// it still counts.
pub type BatchCache = HashMap<i64, Option<(i64, DateTime<Utc>)>>;

impl super::Journal {
    /// Forgets rows remembered before `since`, then brings the in-memory index up to date with
    /// the journal. Call before a group's lookups.
    ///
    /// # Errors
    /// When the journal fails.
    pub fn prepare_remembered(&mut self, since: DateTime<Utc>) -> Result<()> {
        let old: i64 = self
            .conn
            .query_row(
                "SELECT coalesce(sum(length(rows)), 0) FROM remembered WHERE at < ?1",
                [since.timestamp_millis()],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if old > 0 {
            self.transaction(|t| {
                t.tx.execute(
                    "DELETE FROM remembered WHERE at < ?1",
                    [since.timestamp_millis()],
                )?;
                Ok(())
            })?;
            if let Some(ix) = &mut self.rows {
                ix.stale += old as usize / PACKED;
                if ix.stale * 2 > ix.keys.len() {
                    self.rows = None;
                }
            }
        }
        let mut ix = self.rows.take().unwrap_or_default();
        let loaded = self.load_remembered(&mut ix);
        self.rows = Some(ix);
        loaded
    }

    fn load_remembered(&self, ix: &mut RowIndex) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT batch_id, rows FROM remembered WHERE batch_id > ?1 ORDER BY batch_id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([ix.loaded_to]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let batch: i64 = r.get(0).map_err(|e| self.err(e))?;
            let packed = r.get_ref(1).map_err(|e| self.err(e))?;
            let packed = packed.as_blob().unwrap_or_default();
            let b = ix.batches.len() as u32;
            ix.batches.push(batch);
            for c in packed.chunks_exact(PACKED) {
                let mut key = [0u8; 16];
                key.copy_from_slice(&c[..16]);
                let line = u32::from_le_bytes([c[16], c[17], c[18], c[19]]);
                ix.add(key, b, line);
            }
            ix.loaded_to = batch;
        }
        Ok(())
    }

    /// Where a row with `key` was sent before, if it still counts: its batch not `failed`, and
    /// remembered since `since`. `cache` keeps what was learned about batches across calls.
    ///
    /// # Errors
    /// When the journal fails.
    pub fn sent_before(
        &self,
        key: &RowKey,
        since: DateTime<Utc>,
        cache: &mut BatchCache,
    ) -> Result<Option<Earlier>> {
        let Some(ix) = &self.rows else {
            return Ok(None);
        };
        let mut best: Option<Earlier> = None;
        for (batch, line) in ix.find(key) {
            let found = match cache.get(&batch) {
                Some(f) => *f,
                None => {
                    let f = self.batch_counts(batch, since)?;
                    cache.insert(batch, f);
                    f
                }
            };
            if let Some((job, at)) = found {
                let e = Earlier {
                    job,
                    line: u64::from(line),
                    at,
                };
                if best.is_none_or(|b| (e.at, e.job) < (b.at, b.job)) {
                    best = Some(e);
                }
            }
        }
        Ok(best)
    }

    fn batch_counts(
        &self,
        batch: i64,
        since: DateTime<Utc>,
    ) -> Result<Option<(i64, DateTime<Utc>)>> {
        self.conn
            .query_row(
                "SELECT b.job_id, m.at FROM remembered m JOIN batches b ON b.id = m.batch_id \
                 WHERE m.batch_id = ?1 AND m.at >= ?2 AND b.state != 'failed'",
                params![batch, since.timestamp_millis()],
                |r| Ok((r.get::<_, i64>(0)?, time(r.get(1)?))),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Rows remembered in the journal, and the bytes the in-memory index holds (figures for
    /// the README's benchmark).
    ///
    /// # Errors
    /// When the journal fails.
    #[cfg(test)]
    pub fn remembered_size(&self) -> Result<(u64, usize)> {
        let bytes: i64 = self
            .conn
            .query_row(
                "SELECT coalesce(sum(length(rows)), 0) FROM remembered",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let heap = self.rows.as_ref().map_or(0, RowIndex::heap_bytes);
        Ok((bytes as u64 / PACKED as u64, heap))
    }

    /// The rows a job skipped as already sent, in line order.
    ///
    /// # Errors
    /// When the journal fails.
    pub fn duplicates(&self, job_id: i64) -> Result<Vec<Duplicate>> {
        let packed: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT duplicates FROM jobs WHERE id = ?1", [job_id], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))?;
        Ok(packed.as_deref().map(unpack_duplicates).unwrap_or_default())
    }
}

fn unpack_duplicates(packed: &[u8]) -> Vec<Duplicate> {
    let int = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        i64::from_le_bytes(a)
    };
    packed
        .chunks_exact(PACKED_DUP)
        .map(|c| Duplicate {
            line: int(&c[0..8]) as u64,
            earlier: Earlier {
                job: int(&c[8..16]),
                line: int(&c[16..24]) as u64,
                at: time(int(&c[24..32])),
            },
        })
        .collect()
}

impl Tx<'_> {
    /// Remembers the rows of a job's batch files, in the transaction that records them:
    /// `rows` in batch order, cut by each batch's row count.
    pub fn remember_rows(
        &mut self,
        job_id: i64,
        at: DateTime<Utc>,
        rows: &[(RowKey, u64)],
    ) -> rusqlite::Result<()> {
        let batches: Vec<(i64, u64)> = {
            let mut stmt = self
                .tx
                .prepare_cached("SELECT id, rows FROM batches WHERE job_id = ?1 ORDER BY part")?;
            let r = stmt.query_map([job_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            r.collect::<rusqlite::Result<_>>()?
        };
        let mut rest = rows;
        for (id, n) in batches {
            let (these, after) = rest.split_at((n as usize).min(rest.len()));
            rest = after;
            let mut packed = Vec::with_capacity(these.len() * PACKED);
            for (key, line) in these {
                packed.extend_from_slice(key);
                packed.extend_from_slice(&u32::try_from(*line).unwrap_or(u32::MAX).to_le_bytes());
            }
            self.tx.execute(
                "INSERT OR REPLACE INTO remembered (batch_id, at, rows) VALUES (?1, ?2, ?3)",
                params![id, at.timestamp_millis(), packed],
            )?;
        }
        Ok(())
    }

    /// Records the rows a job skipped as already sent.
    pub fn set_duplicates(&mut self, job_id: i64, dups: &[Duplicate]) -> rusqlite::Result<()> {
        let mut packed = Vec::with_capacity(dups.len() * PACKED_DUP);
        for d in dups {
            for n in [
                d.line as i64,
                d.earlier.job,
                d.earlier.line as i64,
                d.earlier.at.timestamp_millis(),
            ] {
                packed.extend_from_slice(&n.to_le_bytes());
            }
        }
        self.tx.execute(
            "UPDATE jobs SET rows_duplicate = ?2, duplicates = ?3 WHERE id = ?1",
            params![
                job_id,
                dups.len() as i64,
                (!dups.is_empty()).then_some(packed)
            ],
        )?;
        Ok(())
    }
}

impl super::Journal {
    /// Remembers `batches` batch files of `rows` made-up rows each (keys no export has), as
    /// recorded at `at`; returns the journal's size in bytes before and after. For the
    /// benchmark of the guard.
    #[cfg(test)]
    pub(crate) fn remember_made_up(
        &mut self,
        batches: u64,
        rows: u64,
        at: DateTime<Utc>,
    ) -> Result<(u64, u64)> {
        let size = |j: &Self| -> Result<u64> {
            j.conn
                .query_row(
                    "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(|e| j.err(e))
        };
        let before = size(self)?;
        self.transaction(|t| {
            for b in 0..batches {
                let mut packed = Vec::with_capacity((rows as usize) * PACKED);
                for r in 0..rows {
                    packed.extend_from_slice(&row_key("made-up", &b.to_string(), &r.to_string()));
                    packed.extend_from_slice(&(r as u32 + 2).to_le_bytes());
                }
                t.tx.execute(
                    "INSERT INTO remembered (batch_id, at, rows) VALUES (?1, ?2, ?3)",
                    params![1_000_000_000 + b as i64, at.timestamp_millis(), packed],
                )?;
            }
            Ok(())
        })?;
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(|e| self.err(e))?;
        Ok((before, size(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_finds_every_entry_of_a_key_and_grows() {
        let mut ix = RowIndex {
            batches: vec![10, 11],
            ..RowIndex::default()
        };
        for i in 0..5000u32 {
            ix.add(row_key("A", &i.to_string(), "t"), i % 2, i);
        }
        ix.add(row_key("A", "7", "t"), 0, 99);
        let found: Vec<_> = ix.find(&row_key("A", "7", "t")).collect();
        assert_eq!(found, [(11, 7), (10, 99)]);
        assert_eq!(ix.find(&row_key("B", "7", "t")).count(), 0);
        assert_eq!(ix.find(&row_key("A", "4999", "t")).count(), 1);
        assert_ne!(row_key("A", "1", "2"), row_key("A", "12", ""));
    }

    #[test]
    fn duplicates_pack_and_unpack() {
        let d = Duplicate {
            line: 4,
            earlier: Earlier {
                job: 12,
                line: 9,
                at: time(1_796_000_000_000),
            },
        };
        let mut packed = vec![];
        for n in [4i64, 12, 9, 1_796_000_000_000] {
            packed.extend_from_slice(&n.to_le_bytes());
        }
        assert_eq!(unpack_duplicates(&packed), [d]);
    }
}
