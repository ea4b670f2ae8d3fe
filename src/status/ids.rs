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
use std::io::{self, BufRead, Seek, Write};
use std::path::Path;

/// smsdrop's id for a row.
pub fn generated_id(journal_id: &str, job_id: i64, line: u64) -> String {
    format!("sd-{journal_id}-{job_id}-{line}")
}

/// A [`RowSink`] in front of the batch writer: gives ids, and (when `record` is set) writes
/// each row's message to a spool file, one JSON line each, so memory stays flat whatever the
/// input's size; [`crate::journal::Tx::insert_messages_from`] records them.
pub struct IdSink<'a, S: RowSink> {
    inner: &'a mut S,
    mode: IdMode,
    journal_id: &'a str,
    job_id: i64,
    max_rows: u64,
    written: u64,
    id: String,
    record: Option<io::BufWriter<tempfile::NamedTempFile>>,
}

impl<'a, S: RowSink> IdSink<'a, S> {
    /// `record`: a folder for the messages' spool file, when they are to be recorded.
    ///
    /// # Errors
    /// When the spool file cannot be created.
    pub fn new(
        inner: &'a mut S,
        mode: IdMode,
        journal_id: &'a str,
        job_id: i64,
        max_rows: usize,
        record: Option<&Path>,
    ) -> io::Result<Self> {
        let record = match record {
            Some(dir) => Some(io::BufWriter::with_capacity(
                256 * 1024,
                tempfile::Builder::new()
                    .prefix(".smsdrop-messages-")
                    .tempfile_in(dir)?,
            )),
            None => None,
        };
        Ok(IdSink {
            inner,
            mode,
            journal_id,
            job_id,
            max_rows: max_rows.max(1) as u64,
            written: 0,
            id: String::new(),
            record,
        })
    }

    /// The messages' spool file, rewound for reading (when recording).
    ///
    /// # Errors
    /// When flushing it fails.
    pub fn finish(self) -> io::Result<Option<tempfile::NamedTempFile>> {
        match self.record {
            Some(w) => {
                let mut f = w.into_inner().map_err(io::IntoInnerError::into_error)?;
                f.as_file_mut().seek(io::SeekFrom::Start(0))?;
                Ok(Some(f))
            }
            None => Ok(None),
        }
    }
}

/// Reads back the messages an [`IdSink`] recorded.
pub fn read_messages(
    file: &tempfile::NamedTempFile,
) -> impl Iterator<Item = io::Result<NewMessage>> + '_ {
    io::BufReader::new(file.as_file()).lines().map(|l| {
        let l = l?;
        serde_json::from_str(&l).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    })
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
        if let Some(w) = &mut self.record {
            let m = NewMessage {
                line: row.line,
                part: (self.written / self.max_rows) as u32,
                number: row.number.to_owned(),
                correlation_id: self.id.clone(),
                erp_id: row.correlation_id.to_owned(),
                untracked: self
                    .id
                    .is_empty()
                    .then(|| "no correlation id: the row cannot be matched to statuses".to_owned()),
            };
            serde_json::to_writer(&mut *w, &m).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
        }
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
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collect::default();
        let mut s = IdSink::new(&mut c, mode, "00ff", 7, 2, Some(dir.path())).unwrap();
        for (i, id) in ids.iter().enumerate() {
            s.row(&Row {
                line: i as u64 + 2,
                number: "5511999990000",
                text: "oi",
                correlation_id: id,
            })
            .unwrap();
        }
        let f = s.finish().unwrap().unwrap();
        let m = read_messages(&f).collect::<io::Result<Vec<_>>>().unwrap();
        (c.0, m)
    }

    #[test]
    fn modes() {
        let (ids, m) = feed(IdMode::Keep, &["a", "", "b\tc"]);
        assert_eq!(ids, ["a", "", "b\tc"]);
        assert!(m[1]
            .untracked
            .as_deref()
            .unwrap()
            .starts_with("no correlation id"));
        assert_eq!(m[2].correlation_id, "b\tc");
        assert_eq!(m.iter().map(|m| m.part).collect::<Vec<_>>(), [0, 0, 1]);
        let (ids, m) = feed(IdMode::GenerateMissing, &["a", "", "b"]);
        assert_eq!(ids, ["a", "sd-00ff-7-3", "b"]);
        assert!(m.iter().all(|m| m.untracked.is_none()));
        assert_eq!(m[1].erp_id, "");
        let (ids, m) = feed(IdMode::Generate, &["a", "a"]);
        assert_eq!(ids, ["sd-00ff-7-2", "sd-00ff-7-3"]);
        assert_eq!(m[0].erp_id, "a");
        let long = generated_id("0123456789abcdef", i64::MAX, u64::MAX);
        assert!(long.len() <= 64, "{}", long.len());
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
