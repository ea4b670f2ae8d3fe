//! Correlation ids that can be matched: while a job's rows are written into its batch files,
//! rows get smsdrop's own id where `[status] correlation_ids` says so, and every row is recorded
//! as a [`NewMessage`] (which id went out, the ERP's id, and whether it can be tracked).
//!
//! smsdrop's ids are `sd-<journal id>-<job>-<line>`: at most 61 characters of letters, digits
//! and `-`; the journal id is random per journal, so ids are unique across jobs, days and
//! reinstalls.

use crate::config::IdMode;
use crate::convert::{RejectedRow, Row, RowSink};
use crate::journal::NewMessage;
use std::collections::HashMap;
use std::io;

/// smsdrop's id for a row.
pub fn generated_id(journal_id: &str, job_id: i64, line: u64) -> String {
    format!("sd-{journal_id}-{job_id}-{line}")
}

/// A [`RowSink`] in front of the batch writer: gives ids, records messages.
pub struct IdSink<'a, S: RowSink> {
    inner: &'a mut S,
    mode: IdMode,
    journal_id: &'a str,
    job_id: i64,
    max_rows: u64,
    written: u64,
    id: String,
    messages: Vec<NewMessage>,
}

impl<'a, S: RowSink> IdSink<'a, S> {
    pub fn new(
        inner: &'a mut S,
        mode: IdMode,
        journal_id: &'a str,
        job_id: i64,
        max_rows: usize,
    ) -> Self {
        IdSink {
            inner,
            mode,
            journal_id,
            job_id,
            max_rows: max_rows.max(1) as u64,
            written: 0,
            id: String::new(),
            messages: vec![],
        }
    }

    /// The messages written, with ids repeated within the job marked as ambiguous.
    pub fn finish(mut self) -> Vec<NewMessage> {
        let mut lines: HashMap<&str, Vec<u64>> = HashMap::new();
        for m in &self.messages {
            if m.untracked.is_none() {
                lines.entry(&m.correlation_id).or_default().push(m.line);
            }
        }
        let repeated: HashMap<String, String> = lines
            .into_iter()
            .filter(|(_, l)| l.len() > 1)
            .map(|(id, l)| {
                let shown: Vec<String> = l.iter().take(5).map(u64::to_string).collect();
                let more = if l.len() > 5 { ", ..." } else { "" };
                (
                    id.to_owned(),
                    format!(
                        "ambiguous: correlation id {id:?} is on lines {}{more} of this input",
                        shown.join(", ")
                    ),
                )
            })
            .collect();
        if !repeated.is_empty() {
            for m in &mut self.messages {
                if m.untracked.is_none() {
                    if let Some(why) = repeated.get(&m.correlation_id) {
                        m.untracked = Some(why.clone());
                    }
                }
            }
        }
        self.messages
    }
}

impl<S: RowSink> RowSink for IdSink<'_, S> {
    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        let ours = match self.mode {
            IdMode::Generate => true,
            IdMode::GenerateMissing => row.correlation_id.is_empty(),
            IdMode::Keep => false,
        };
        self.id.clear();
        if ours {
            self.id
                .push_str(&generated_id(self.journal_id, self.job_id, row.line));
        } else {
            self.id.push_str(row.correlation_id);
        }
        self.inner.row(&Row {
            line: row.line,
            number: row.number,
            text: row.text,
            correlation_id: &self.id,
        })?;
        self.messages.push(NewMessage {
            line: row.line,
            part: (self.written / self.max_rows) as u32,
            number: row.number.to_owned(),
            correlation_id: self.id.clone(),
            erp_id: row.correlation_id.to_owned(),
            untracked: self
                .id
                .is_empty()
                .then(|| "no correlation id: the row cannot be matched to statuses".to_owned()),
        });
        self.written += 1;
        Ok(())
    }

    fn rejected(&mut self, row: &RejectedRow) -> io::Result<()> {
        self.inner.rejected(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<String>);
    impl RowSink for Collect {
        fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
            self.0.push(row.correlation_id.to_owned());
            Ok(())
        }
    }

    fn feed(mode: IdMode, ids: &[&str]) -> (Vec<String>, Vec<NewMessage>) {
        let mut c = Collect::default();
        let mut s = IdSink::new(&mut c, mode, "00ff", 7, 2);
        for (i, id) in ids.iter().enumerate() {
            s.row(&Row {
                line: i as u64 + 2,
                number: "5511999990000",
                text: "oi",
                correlation_id: id,
            })
            .unwrap();
        }
        let m = s.finish();
        (c.0, m)
    }

    #[test]
    fn modes() {
        let (ids, m) = feed(IdMode::Keep, &["a", "", "b"]);
        assert_eq!(ids, ["a", "", "b"]);
        assert!(m[1]
            .untracked
            .as_deref()
            .unwrap()
            .starts_with("no correlation id"));
        assert_eq!(m.iter().map(|m| m.part).collect::<Vec<_>>(), [0, 0, 1]);
        let (ids, m) = feed(IdMode::GenerateMissing, &["a", "", "b"]);
        assert_eq!(ids, ["a", "sd-00ff-7-3", "b"]);
        assert!(m.iter().all(|m| m.untracked.is_none()));
        assert_eq!(m[1].erp_id, "");
        let (ids, m) = feed(IdMode::Generate, &["a", "a"]);
        assert_eq!(ids, ["sd-00ff-7-2", "sd-00ff-7-3"]);
        assert_eq!(m[0].erp_id, "a");
        assert!(m.iter().all(|m| m.untracked.is_none()));
        let (_, m) = feed(IdMode::GenerateMissing, &["a", "b", "a"]);
        assert!(m[0].untracked.as_deref().unwrap().contains("lines 2, 4"));
        assert!(m[1].untracked.is_none());
        let long = generated_id("0123456789abcdef", i64::MAX, u64::MAX);
        assert!(long.len() <= 64, "{}", long.len());
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
