//! The gateway's batch file (SPEC.md): its name `<SUBACCOUNT>.<YYYYMMDD>.<SEQ>.txt`, its lines
//! `number;text;correlationId;` and `EOF` trailer, and writing it safely: to a temporary file in the
//! target folder, synced, then linked under its final name only if that name is free.

use crate::config::check_subaccount;
use crate::convert::rules::{MAX_ID_CHARS, MAX_NUMBER_DIGITS, MAX_TEXT_CHARS, MIN_NUMBER_DIGITS};
use crate::convert::{Row, RowSink};
use chrono::NaiveDate;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// The optional first line naming the columns.
pub const HEADER_LINE: &str = "number;text;correlationId;";
/// The last line of every batch file.
pub const TRAILER: &str = "EOF";
/// A batch file's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BatchName {
    pub subaccount: String,
    pub date: NaiveDate,
    pub seq: u32,
}

impl fmt::Display for BatchName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{:02}.txt",
            self.subaccount,
            self.date.format("%Y%m%d"),
            self.seq
        )
    }
}

impl BatchName {
    /// Parses `SUB.YYYYMMDD.SEQ.txt`; `None` for anything else.
    pub fn parse(name: &str) -> Option<BatchName> {
        let stem = name.strip_suffix(".txt")?;
        let mut parts = stem.rsplitn(3, '.');
        let seq = parts.next()?;
        let date = parts.next()?;
        let subaccount = parts.next()?;
        check_subaccount(subaccount).ok()?;
        // chrono's `%Y%m%d` alone also takes a signed year and spaces (`-017 101`): found by fuzzing.
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if seq.len() < 2 || !digits(seq) || date.len() != 8 || !digits(date) {
            return None;
        }
        Some(BatchName {
            subaccount: subaccount.to_owned(),
            date: NaiveDate::parse_from_str(date, "%Y%m%d").ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// Checks one message line of a batch file against SPEC.md (the gateway simulator's rule).
///
/// # Errors
/// What is wrong with the line.
pub fn check_line(line: &str) -> Result<(), String> {
    let fields: Vec<&str> = line.split(';').collect();
    let [number, text, id, ""] = fields[..] else {
        return Err(format!(
            "expected `number;text;correlationId;` (3 fields and a trailing ';'), found {} ';'",
            fields.len() - 1
        ));
    };
    if !(MIN_NUMBER_DIGITS..=MAX_NUMBER_DIGITS).contains(&number.len())
        || !number.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "number {number:?} is not {MIN_NUMBER_DIGITS}-{MAX_NUMBER_DIGITS} digits"
        ));
    }
    let text_len = text.chars().count();
    if text_len == 0 || text_len > MAX_TEXT_CHARS {
        return Err(format!(
            "text has {text_len} characters (1 to {MAX_TEXT_CHARS} allowed)"
        ));
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "correlation id longer than {MAX_ID_CHARS} characters"
        ));
    }
    if let Some(c) = text.chars().chain(id.chars()).find(|c| c.is_control()) {
        return Err(format!(
            "control character U+{:04X} inside a field",
            c as u32
        ));
    }
    Ok(())
}

/// What a whole batch file's bytes amount to, by SPEC.md's rules (see [`check_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchCheck {
    /// No `EOF` last line (yet): the file may still be being written.
    Incomplete,
    /// A complete, valid batch with this many message lines.
    Valid { messages: usize },
    /// A complete batch the gateway would refuse, and why.
    Invalid(String),
}

/// Checks a whole batch file: UTF-8, an optional [`HEADER_LINE`] first, message lines that pass
/// [`check_line`], and [`TRAILER`] last (a final newline after it is fine). A batch without
/// message lines is invalid. Pure: the caller reads the file and decides what to do.
pub fn check_batch(bytes: &[u8]) -> BatchCheck {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let trailer = TRAILER.as_bytes();
    let ends_with_trailer = body == trailer
        || (body.ends_with(trailer) && body[..body.len() - trailer.len()].ends_with(b"\n"));
    if !ends_with_trailer {
        return BatchCheck::Incomplete;
    }
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return BatchCheck::Invalid(format!("not UTF-8: {e}")),
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    lines.pop(); // the trailer
    let skip = usize::from(lines.first() == Some(&HEADER_LINE));
    if lines.len() == skip {
        return BatchCheck::Invalid(format!("no message lines before {TRAILER}"));
    }
    for (i, line) in lines.iter().enumerate().skip(skip) {
        if let Err(e) = check_line(line) {
            return BatchCheck::Invalid(format!("line {}: {e}", i + 1));
        }
    }
    BatchCheck::Valid {
        messages: lines.len() - skip,
    }
}

/// A finished batch file under a temporary name, waiting for its final name.
#[derive(Debug)]
pub struct PendingBatch {
    temp: NamedTempFile,
    /// Message lines in it.
    pub rows: u64,
}

impl PendingBatch {
    /// Where the file is now.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Moves the file to `dest`, replacing what is there: for smsdrop's own spool files, which a
    /// retried conversion rewrites.
    ///
    /// # Errors
    /// When the rename fails.
    pub fn persist(self, dest: &Path) -> io::Result<()> {
        self.temp.persist(dest).map(drop).map_err(|e| e.error)
    }

    /// Gives the file its final name, never replacing an existing file.
    ///
    /// # Errors
    /// `AlreadyExists` when `dest` is taken (the file stays pending); other I/O errors.
    pub fn commit(self, dest: &Path) -> Result<(), (Self, io::Error)> {
        // A hard link fails when the destination exists, unlike rename: no clobbering.
        match std::fs::hard_link(self.temp.path(), dest) {
            Ok(()) => {
                let dir = dest.parent().unwrap_or(Path::new("."));
                // The temporary name goes away when `temp` is dropped.
                drop(self.temp);
                sync_dir(dir).ok();
                Ok(())
            }
            Err(e) => Err((self, e)),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes rows into batch files of at most `max_rows` rows each, under temporary names in `dir`.
pub struct BatchWriter {
    dir: PathBuf,
    max_rows: u64,
    header_line: bool,
    done: Vec<PendingBatch>,
    current: Option<(BufWriter<NamedTempFile>, u64)>,
    sync: bool,
}

impl BatchWriter {
    /// A writer creating its files in `dir` (which must exist).
    pub fn new(dir: &Path, max_rows: usize, header_line: bool) -> Self {
        BatchWriter {
            dir: dir.to_owned(),
            max_rows: max_rows as u64,
            header_line,
            done: vec![],
            current: None,
            sync: true,
        }
    }

    /// Leaves syncing to the caller (who syncs a whole group of files at once).
    pub fn without_sync(mut self) -> Self {
        self.sync = false;
        self
    }

    /// Ends the last file and returns all of them, in row order, synced to disk.
    ///
    /// # Errors
    /// When writing or syncing fails.
    pub fn finish(mut self) -> io::Result<Vec<PendingBatch>> {
        self.close_current()?;
        Ok(self.done)
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some((mut w, rows)) = self.current.take() {
            writeln!(w, "{TRAILER}")?;
            let temp = w.into_inner().map_err(io::IntoInnerError::into_error)?;
            if self.sync {
                temp.as_file().sync_all()?;
            }
            self.done.push(PendingBatch { temp, rows });
        }
        Ok(())
    }
}

impl RowSink for BatchWriter {
    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, n)| *n >= self.max_rows)
        {
            self.close_current()?;
        }
        let (w, n) = match &mut self.current {
            Some(c) => c,
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(".smsdrop-")
                    .suffix(".tmp")
                    .tempfile_in(&self.dir)?;
                let mut w = BufWriter::with_capacity(256 * 1024, temp);
                if self.header_line {
                    writeln!(w, "{HEADER_LINE}")?;
                }
                self.current.insert((w, 0))
            }
        };
        // Fields are already safe (no ';' or line break): written as they are.
        w.write_all(row.number.as_bytes())?;
        w.write_all(b";")?;
        w.write_all(row.text.as_bytes())?;
        w.write_all(b";")?;
        w.write_all(row.correlation_id.as_bytes())?;
        w.write_all(b";\n")?;
        *n += 1;
        if n.is_multiple_of(4096) {
            // A big input converting is progress (systemd's watchdog, /healthz).
            crate::liveness::progress();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_format_and_parse() {
        let n = BatchName {
            subaccount: "ACME".into(),
            date: NaiveDate::from_ymd_opt(2017, 1, 1).unwrap(),
            seq: 1,
        };
        assert_eq!(n.to_string(), "ACME.20170101.01.txt");
        assert_eq!(BatchName::parse("ACME.20170101.01.txt"), Some(n.clone()));
        assert_eq!(
            BatchName::parse("ACME.20170101.123.txt").map(|n| n.seq),
            Some(123)
        );
        for bad in [
            "ACME.20170101.1.txt",
            "ACME.2017011.01.txt",
            "AC ME.20170101.01.txt",
            "../x.20170101.01.txt",
            "ACME.20171301.01.txt",
            "ACME.20170101.01.csv",
            ".20170101.01.txt",
        ] {
            assert_eq!(BatchName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn subaccounts_are_never_paths() {
        for good in ["3486", "PROJECT1", "a_b-c"] {
            assert!(check_subaccount(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "a.b", "á", "a b", &"x".repeat(65)] {
            assert!(check_subaccount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_checks() {
        assert!(check_line("5511900000000;message 1;;").is_ok());
        assert!(check_line("5511900000000;oi;abc;").is_ok());
        for bad in [
            "5511900000000;message 1;",
            "5511900000000;a;b;c;",
            "55119;x;;",
            "5511900000000;;;",
            "55119000000x0;x;;",
            "5511900000000;a\rb;;",
        ] {
            assert!(check_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn whole_batch_checks() {
        let valid = |n| BatchCheck::Valid { messages: n };
        let cases: &[(&[u8], BatchCheck)] = &[
            (b"5511900000000;oi;;\nEOF\n", valid(1)),
            (b"5511900000000;oi;;\nEOF", valid(1)),
            (
                b"number;text;correlationId;\n5511900000000;oi;a;\n5511900000001;x;;\nEOF\n",
                valid(2),
            ),
            (b"", BatchCheck::Incomplete),
            (b"5511900000000;oi;;\n", BatchCheck::Incomplete),
            (b"5511900000000;oi;;\nEOF\r\n", BatchCheck::Incomplete),
            (b"5511900000000;oi;;\nEOF\n\n", BatchCheck::Incomplete),
            (b"5511900000000;oi;;EOF\n", BatchCheck::Incomplete),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                &check_batch(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        for bad in [
            &b"EOF\n"[..],
            b"number;text;correlationId;\nEOF\n",
            b"5511900000000;oi;;\n55119;x;;\nEOF\n",
            b"5511900000000;\xff;;\nEOF\n",
            b"5511900000000;oi;;\r\nEOF\n",
            b"5511900000000;oi;;\n\nEOF\n",
        ] {
            let got = check_batch(bad);
            assert!(matches!(got, BatchCheck::Invalid(_)), "{bad:?}: {got:?}");
        }
        let BatchCheck::Invalid(why) = check_batch(b"5511900000000;oi;;\n55119;x;;\nEOF\n") else {
            panic!("not invalid");
        };
        assert!(why.starts_with("line 2: number"), "{why}");
    }

    #[test]
    fn writer_splits_and_commit_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BatchWriter::new(dir.path(), 2, true);
        for i in 0..5u64 {
            let number = format!("551199999000{i}");
            w.row(&Row {
                line: i + 1,
                number: &number,
                text: "oi",
                correlation_id: "",
            })
            .unwrap();
        }
        let parts = w.finish().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let first = std::fs::read_to_string(parts[0].path()).unwrap();
        assert_eq!(
            first,
            "number;text;correlationId;\n5511999990000;oi;;\n5511999990001;oi;;\nEOF\n"
        );
        let dest = dir.path().join("A.20200101.01.txt");
        std::fs::write(&dest, "theirs").unwrap();
        let mut parts = parts.into_iter();
        let (back, err) = parts.next().unwrap().commit(&dest).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "theirs");
        let temp = back.path().to_owned();
        back.commit(&dir.path().join("A.20200101.02.txt")).unwrap();
        assert!(!temp.exists());
    }
}
