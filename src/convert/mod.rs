//! Convert: bytes of an ERP export in, validated gateway rows out.
//!
//! [`convert`] reads any dialect the ERP wrote (see [`dialect`]), applies the field rules of
//! [`rules`] to every row, counts billable parts ([`billing`]) and hands each good row to a
//! [`RowSink`]. It is pure: no I/O beyond the reader and sink it is given, never a panic on input,
//! and memory bounded whatever the input's size. What happened to every row ends in a
//! [`ConvertReport`].

pub mod billing;
pub mod dialect;
pub mod reader;
pub mod rules;

use crate::config::{Delimiter, HeaderChoice, InputConfig, InvalidRows};
use billing::Billing;
use dialect::{FieldDecoder, Layout};
use reader::{Bom, Next, RawRecord, RecordReader};
use rules::{FieldProblem, NumberRules, MAX_ID_CHARS, MAX_TEXT_CHARS};
use serde::Serialize;
use std::io::{self, Read};

/// Rows whose details a report keeps; beyond it they are only counted.
pub const REPORT_DETAIL_LIMIT: usize = 1000;

/// One row ready for the batch file: every field already safe for the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub line: u64,
    pub number: &'a str,
    pub text: &'a str,
    pub correlation_id: &'a str,
}

/// A row that will not be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRow {
    pub line: u64,
    /// The number as written (clipped), to help find the row.
    pub number: String,
    pub correlation_id: String,
    pub reason: String,
}

/// A row that was sent changed by sanitising.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedRow {
    pub line: u64,
    pub fields: Vec<&'static str>,
}

/// Where good rows go; the batch writer in production, a vector in tests.
pub trait RowSink {
    /// Takes one good row.
    ///
    /// # Errors
    /// When writing fails; conversion stops.
    fn row(&mut self, row: &Row<'_>) -> io::Result<()>;

    /// Hears of one rejected row (for per-row result files). The default ignores it.
    ///
    /// # Errors
    /// When writing fails; conversion stops.
    fn rejected(&mut self, _row: &RejectedRow) -> io::Result<()> {
        Ok(())
    }
}

impl RowSink for Vec<(u64, String, String, String)> {
    fn row(&mut self, r: &Row<'_>) -> io::Result<()> {
        self.push((
            r.line,
            r.number.into(),
            r.text.into(),
            r.correlation_id.into(),
        ));
        Ok(())
    }
}

/// Everything known about one input after conversion.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvertReport {
    /// The encoding the input was read in.
    pub encoding: String,
    /// The delimiter used.
    pub delimiter: String,
    /// The header row's names, if line 1 was a header.
    pub header: Option<Vec<String>>,
    /// Non-blank data rows read.
    pub rows_read: u64,
    /// Rows handed on for sending.
    pub rows_sent: u64,
    /// Rows not sent.
    pub rows_rejected: u64,
    /// Sent rows changed by sanitising.
    pub rows_changed: u64,
    /// Blank lines and rows of only delimiters, ignored.
    pub blank_rows: u64,
    /// The first rejected rows, with reasons.
    pub rejected: Vec<RejectedRow>,
    /// The first changed rows.
    pub changed: Vec<ChangedRow>,
    /// Things the operator should know that did not stop the input.
    pub warnings: Vec<String>,
    /// Billable parts of the rows sent.
    pub billing: Billing,
    /// Set when the whole input is rejected: nothing of it may be sent.
    pub input_rejected: Option<String>,
}

/// Conversion could not finish: the input could not be read or the output not written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("reading the input failed: {0}")]
    Read(#[source] io::Error),
    #[error("writing the batch failed: {0}")]
    Write(#[source] io::Error),
}

/// Reads `input`, validates every row by `cfg`, and sends good rows to `sink`.
///
/// A whole-input problem (binary file, missing column, no sendable row, a bad row under
/// `invalid_rows = "reject-file"`) is reported in [`ConvertReport::input_rejected`]; the caller
/// must then discard whatever the sink received.
///
/// # Errors
/// [`ConvertError`] when reading the input or writing to the sink fails.
pub fn convert<R: Read + 'static>(
    input: R,
    cfg: &InputConfig,
    sink: &mut dyn RowSink,
) -> Result<ConvertReport, ConvertError> {
    let mut report = ConvertReport::default();
    let opened = match reader::open(input).map_err(ConvertError::Read)? {
        Ok(o) => o,
        Err(reader::NotText(why)) => {
            report.input_rejected = Some(why);
            return Ok(report);
        }
    };
    let fixed = match cfg.delimiter {
        Delimiter::Fixed(d) => Some(d),
        Delimiter::Auto => None,
    };
    let whole = opened.head.len() < reader::HEAD_BYTES;
    let (delimiter, usual_fields) = dialect::sniff(&opened.head, whole, fixed);
    report.delimiter = match delimiter {
        b'\t' => "tab".into(),
        d => (d as char).to_string(),
    };
    let utf16 = match opened.bom {
        Bom::Utf16Le => Some("utf-16le"),
        Bom::Utf16Be => Some("utf-16be"),
        _ => None,
    };
    let mut run = Run {
        cfg,
        decoder: FieldDecoder::new(if utf16.is_some() {
            crate::config::EncodingChoice::Utf8
        } else {
            cfg.encoding
        }),
        report,
        width: usual_fields,
        bufs: Default::default(),
        text: String::new(),
        id: String::new(),
    };
    let result = run.rows(RecordReader::new(opened.stream, delimiter), sink);
    let mut report = run.report;
    report.encoding = run.decoder.describe(utf16);
    result?;
    if report.input_rejected.is_none() && report.rows_sent == 0 {
        report.input_rejected = Some(if report.rows_read == 0 {
            "the file has no data rows (it is empty or holds only a header)".into()
        } else {
            format!(
                "none of its {} rows can be sent; see the rejected rows",
                report.rows_read
            )
        });
    }
    Ok(report)
}

/// The state of one conversion.
struct Run<'c> {
    cfg: &'c InputConfig,
    decoder: FieldDecoder,
    report: ConvertReport,
    /// Fields a row should have: the header's, or the usual count of a headerless file.
    width: usize,
    /// Decoding buffers for number, correlation id and text.
    bufs: [String; 3],
    text: String,
    id: String,
}

/// How a row went.
enum RowResult {
    Sent,
    Rejected,
}

impl Run<'_> {
    fn rows(
        &mut self,
        mut records: RecordReader<Box<dyn io::BufRead>>,
        sink: &mut dyn RowSink,
    ) -> Result<(), ConvertError> {
        let mut rec = RawRecord::default();
        let mut layout: Option<Layout> = None;
        loop {
            match records.read(&mut rec).map_err(ConvertError::Read)? {
                Next::End => return Ok(()),
                Next::Record if rec.is_blank() => self.report.blank_rows += 1,
                Next::TooLarge {
                    line,
                    bytes,
                    fields,
                } => {
                    let reason = format!(
                        "the row is too large ({bytes} bytes, {fields} fields); a row holds at most \
                         {} bytes and {} fields. An unclosed quote (\") makes the rest of a file one \
                         row: check the quotes from line {line} on",
                        reader::MAX_RECORD_BYTES,
                        reader::MAX_FIELDS
                    );
                    if layout.is_none() {
                        self.report.input_rejected = Some(format!("line {line}: {reason}"));
                        return Ok(());
                    }
                    self.report.rows_read += 1;
                    self.reject(sink, line, "", "", reason)?;
                }
                Next::Record => {
                    let layout = match &layout {
                        Some(l) => l,
                        None => match self.first_record(&rec) {
                            Ok((l, is_header)) => {
                                self.report.warnings.extend(l.warnings.iter().cloned());
                                layout = Some(l);
                                if is_header {
                                    continue;
                                }
                                layout.as_ref().expect("just set")
                            }
                            Err(why) => {
                                self.report.input_rejected = Some(why);
                                return Ok(());
                            }
                        },
                    };
                    self.report.rows_read += 1;
                    if let RowResult::Rejected = self.row(&rec, layout, sink)? {
                        if self.cfg.invalid_rows == InvalidRows::RejectFile {
                            let first = &self.report.rejected[0];
                            self.report.input_rejected = Some(format!(
                                "line {} was rejected ({}) and invalid_rows = \"reject-file\"; \
                                 fix the row and drop the file again",
                                first.line, first.reason
                            ));
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Decides from the first non-blank record whether there is a header, and where columns are.
    fn first_record(&mut self, rec: &RawRecord) -> Result<(Layout, bool), String> {
        let mut names = Vec::with_capacity(rec.len());
        for i in 0..rec.len() {
            let mut s = String::new();
            // A header that is not valid text is no header: it will be read as data.
            let _ = self
                .decoder
                .decode_into(rec.get(i).unwrap_or_default(), &mut s);
            names.push(s.trim().to_owned());
        }
        let is_header = match self.cfg.header {
            HeaderChoice::Yes => true,
            HeaderChoice::No => false,
            HeaderChoice::Auto => {
                let rules = self.number_rules();
                let has_phone = names
                    .iter()
                    .any(|n| rules::normalize_number(n, rules).is_ok());
                !has_phone
                    && (dialect::names_a_column(&names)
                        || names.iter().all(|n| !n.chars().any(|c| c.is_ascii_digit())))
            }
        };
        let layout = dialect::resolve_layout(&self.cfg.columns, is_header.then_some(&names[..]))?;
        if is_header {
            self.width = names.len();
            self.report.header = Some(names);
        }
        Ok((layout, is_header))
    }

    fn number_rules(&self) -> NumberRules<'_> {
        NumberRules {
            country_code: &self.cfg.default_country_code,
            national_lengths: &self.cfg.national_lengths,
        }
    }

    fn row(
        &mut self,
        rec: &RawRecord,
        layout: &Layout,
        sink: &mut dyn RowSink,
    ) -> Result<RowResult, ConvertError> {
        // Buffers reused from row to row: no allocation per row on the common path.
        let mut bufs = std::mem::take(&mut self.bufs);
        let whole = self.decoder.whole(rec.bytes());
        let [nbuf, ibuf, tbuf] = &mut bufs;
        let d = &mut self.decoder;
        let number = field_str(d, whole, rec, Some(layout.number), nbuf);
        let id = field_str(d, whole, rec, layout.correlation_id, ibuf);
        let text = field_str(d, whole, rec, Some(layout.text), tbuf);
        let (raw_number, raw_id) = (
            number.as_ref().map_or("", |s| *s),
            id.as_ref().map_or("", |s| *s),
        );
        let checked = match (number, text, id) {
            (Err(e), _, _) => Err(bad_encoding("number", &e)),
            (_, Err(e), _) => Err(bad_encoding("text", &e)),
            (_, _, Err(e)) => Err(bad_encoding("correlation id", &e)),
            (Ok(n), Ok(t), Ok(i)) => self.check(rec, layout, n, t, i),
        };
        let result = match checked {
            Ok((number, changed)) => {
                let row = Row {
                    line: rec.line,
                    number: &number,
                    text: &self.text,
                    correlation_id: &self.id,
                };
                sink.row(&row).map_err(ConvertError::Write)?;
                self.report.billing.add(billing::cost(&self.text));
                self.report.rows_sent += 1;
                if !changed.is_empty() {
                    self.report.rows_changed += 1;
                    if self.report.changed.len() < REPORT_DETAIL_LIMIT {
                        self.report.changed.push(ChangedRow {
                            line: rec.line,
                            fields: changed,
                        });
                    }
                }
                Ok(RowResult::Sent)
            }
            Err(reason) => {
                self.reject(sink, rec.line, raw_number, raw_id, reason)?;
                Ok(RowResult::Rejected)
            }
        };
        self.bufs = bufs;
        result
    }

    /// Validates one row into `self.text` / `self.id`; returns the number and changed fields.
    fn check(
        &mut self,
        rec: &RawRecord,
        layout: &Layout,
        raw_number: &str,
        raw_text: &str,
        raw_id: &str,
    ) -> Result<(String, Vec<&'static str>), String> {
        let needed = layout.number.max(layout.text) + 1;
        if rec.len() < needed {
            return Err(format!(
                "the row has {} field(s) but the {} is in column {needed}; check the delimiter \
                 (read as {:?}) and the column settings",
                rec.len(),
                if layout.text >= layout.number {
                    "text"
                } else {
                    "number"
                },
                self.report.delimiter
            ));
        }
        let used = needed.max(layout.correlation_id.map_or(0, |i| i + 1));
        let mut extra = (self.width.max(used)..rec.len())
            .filter(|&i| !rec.get(i).unwrap_or_default().is_empty());
        if let Some(last) = extra.next_back() {
            return Err(format!(
                "the row has {} fields where the {} has {}: a {:?} inside a field without quotes \
                 shifts the columns; quote the field (\"...\") or remove the character in the export",
                last + 1,
                if self.report.header.is_some() { "header" } else { "file usually" },
                self.width.max(used),
                self.report.delimiter
            ));
        }
        let number = rules::normalize_number(raw_number, self.number_rules()).map_err(say)?;
        self.check_swallowed_rows(raw_text, rec.line)?;
        let mode = self.cfg.sanitize;
        let mut changed = vec![];
        self.text.clear();
        if rules::sanitize_into("text", raw_text, mode, &mut self.text).map_err(say)? {
            changed.push("text");
        }
        if self.text.is_empty() {
            return Err(say(FieldProblem::TextEmpty));
        }
        rules::check_length("text", &self.text, MAX_TEXT_CHARS).map_err(say)?;
        self.id.clear();
        if rules::sanitize_into("correlation id", raw_id, mode, &mut self.id).map_err(say)? {
            changed.push("correlation id");
        }
        rules::check_length("correlation id", &self.id, MAX_ID_CHARS).map_err(say)?;
        Ok((number, changed))
    }

    /// Refuses a text whose embedded lines look like rows of their own: an unclosed quote made
    /// the following rows part of this field, and sending it would mail other customers' messages
    /// to this row's number.
    fn check_swallowed_rows(&self, text: &str, line: u64) -> Result<(), String> {
        if !text.contains(['\n', '\r']) {
            return Ok(());
        }
        let delimiter = match self.report.delimiter.as_str() {
            "tab" => '\t',
            d => d.chars().next().unwrap_or(';'),
        };
        let rules = self.number_rules();
        for (i, embedded) in text.split(['\n', '\r']).enumerate().skip(1) {
            let mut fields = embedded.split(delimiter);
            let first = fields.next().unwrap_or_default().trim_matches('"');
            if fields.next().is_some() && rules::normalize_number(first, rules).is_ok() {
                return Err(format!(
                    "the text runs over line breaks into what looks like another row ({:?} on the \
                     {} line of this field): probably an unclosed quote (\") on line {line}; fix the \
                     quotes in the export",
                    first,
                    ordinal(i + 1)
                ));
            }
        }
        Ok(())
    }

    fn reject(
        &mut self,
        sink: &mut dyn RowSink,
        line: u64,
        number: &str,
        correlation_id: &str,
        reason: String,
    ) -> Result<(), ConvertError> {
        let clip = |s: &str| s.chars().take(MAX_ID_CHARS).collect::<String>();
        let row = RejectedRow {
            line,
            number: clip(number),
            correlation_id: clip(correlation_id),
            reason,
        };
        sink.rejected(&row).map_err(ConvertError::Write)?;
        self.report.rows_rejected += 1;
        if self.report.rejected.len() < REPORT_DETAIL_LIMIT {
            self.report.rejected.push(row);
        }
        Ok(())
    }
}

/// Field `i` as text: a slice of the whole record when it is UTF-8, else decoded into `buf`.
/// A missing field is empty.
fn field_str<'a>(
    decoder: &mut FieldDecoder,
    whole: Option<&'a str>,
    rec: &'a RawRecord,
    i: Option<usize>,
    buf: &'a mut String,
) -> Result<&'a str, dialect::BadEncoding> {
    let Some(range) = i.and_then(|i| rec.range(i)) else {
        return Ok("");
    };
    // The record holds its fields without delimiters or quotes, so bytes of two fields can join
    // into one character (`\xCE` ends one, `\xB0` starts the next): the whole record is UTF-8
    // but the field is not. Such a field is decoded on its own.
    match whole.and_then(|w| w.get(range.clone())) {
        Some(s) => Ok(s),
        None => decoder.decode(&rec.bytes()[range], buf),
    }
}

fn bad_encoding(field: &str, e: &dialect::BadEncoding) -> String {
    format!(
        "{field} is not valid UTF-8 (byte {}); the file is probably Windows-1252: set \
         [input] encoding = \"auto\" or \"windows-1252\"",
        e.offset + 1
    )
}

fn ordinal(n: usize) -> String {
    match n {
        2 => "2nd".into(),
        3 => "3rd".into(),
        n => format!("{n}th"),
    }
}

fn say(p: FieldProblem) -> String {
    p.to_string()
}

#[cfg(test)]
mod tests;
