//! Convert: bytes of an ERP export in, validated gateway rows out.
//!
//! [`convert`] reads any dialect the ERP wrote (see [`dialect`]), or a workbook ([`sheet`]),
//! places fields into columns (rebuilding texts split by unquoted delimiters, `repair`), builds
//! texts from [`template`]s, applies the field rules of [`rules`] to every row, rejects rows past
//! their own deadline (`deadline`, against the caller's [`SendAt`]), counts billable parts
//! ([`billing`]) and hands each good row to a [`RowSink`]. It is pure: no I/O beyond the
//! reader and sink it is given, never a panic on input, and memory bounded whatever the input's
//! size (a workbook: up to `[input] max_workbook_mb`). What happened to every row ends in a
//! [`ConvertReport`].

mod ahead;
pub mod billing;
mod deadline;
pub mod dialect;
pub mod reader;
mod repair;
pub mod rules;
pub mod sheet;
pub mod template;
mod xls_size;

use crate::config::{Delimiter, ExtraFields, HeaderChoice, InputConfig, InvalidRows};
use billing::Billing;
pub use deadline::SendAt;
use dialect::{FieldDecoder, Layout};
use reader::{Bom, Next, RawRecord};
use repair::{column_str, Placement, Repair};
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

/// A row that was sent changed by sanitising or a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedRow {
    pub line: u64,
    pub fields: Vec<&'static str>,
    /// What was done beyond sanitising, e.g. a text rebuilt from unquoted delimiters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
    /// Sent rows changed by sanitising or a rebuild.
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
    /// With a template: the first message it rendered, for people to check before sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_message: Option<String>,
    /// With `[input.columns] send_before`, once rows are read: the send time they were checked
    /// against. Stored with the job, so reading its input again (reports) checks against the
    /// same moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_at: Option<SendAt>,
}

impl ConvertReport {
    /// Takes rows held back after conversion (already sent, opted out) off the rows sent and
    /// the billing; `skipped` is what they would have cost.
    pub fn not_sent(&mut self, rows: u64, skipped: &Billing) {
        self.rows_sent = self.rows_sent.saturating_sub(rows);
        let b = &mut self.billing;
        b.gsm7_messages = b.gsm7_messages.saturating_sub(skipped.gsm7_messages);
        b.ucs2_messages = b.ucs2_messages.saturating_sub(skipped.ucs2_messages);
        b.concatenated_messages = b
            .concatenated_messages
            .saturating_sub(skipped.concatenated_messages);
        b.parts = b.parts.saturating_sub(skipped.parts);
    }
}

/// Conversion could not finish: the input could not be read or the output not written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("reading the input failed: {0}")]
    Read(#[source] io::Error),
    #[error("writing the batch failed: {0}")]
    Write(#[source] io::Error),
}

/// Reads `input`, validates every row by `cfg`, and sends good rows to `sink`. With
/// `[input.columns] send_before`, a row whose deadline is before `send_at` is rejected; without
/// it `send_at` is not looked at.
///
/// A whole-input problem (binary file, missing column, no sendable row, a bad row under
/// `invalid_rows = "reject-file"`) is reported in [`ConvertReport::input_rejected`]; the caller
/// must then discard whatever the sink received.
///
/// # Errors
/// [`ConvertError`] when reading the input or writing to the sink fails.
pub fn convert<R: Read + Send + 'static>(
    mut input: R,
    cfg: &InputConfig,
    send_at: SendAt,
    sink: &mut dyn RowSink,
) -> Result<ConvertReport, ConvertError> {
    let mut signature = Vec::with_capacity(sheet::SIGNATURE_BYTES);
    (&mut input)
        .take(sheet::SIGNATURE_BYTES as u64)
        .read_to_end(&mut signature)
        .map_err(ConvertError::Read)?;
    if sheet::is_workbook(&signature) {
        return convert_workbook(signature, input, cfg, send_at, sink);
    }
    let input = io::Cursor::new(signature).chain(input);
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
    let utf16 = match opened.bom {
        Bom::Utf16Le => Some("utf-16le"),
        Bom::Utf16Be => Some("utf-16be"),
        _ => None,
    };
    let encoding = if utf16.is_some() {
        crate::config::EncodingChoice::Utf8
    } else {
        cfg.encoding
    };
    let decoder = FieldDecoder::new(encoding);
    let mut run = Run::new(cfg, send_at, decoder, usual_fields, delimiter);
    let mut layout = None;
    let take = |next, rec: &RawRecord, text: Option<&str>| {
        let flow = run.take(next, rec, text, &mut layout, sink)?;
        Ok(matches!(flow, Flow::Go))
    };
    // An input larger than its head is read and split on a second thread while this one checks
    // and writes; a small one (most daemon drops) is not worth a thread.
    let result = if whole {
        ahead::for_each_here(opened.stream, delimiter, take, ConvertError::Read)
    } else {
        ahead::for_each(opened.stream, delimiter, take, ConvertError::Read)
    };
    let mut report = run.report;
    report.encoding = run.decoder.describe(utf16);
    result?;
    Ok(finish(report))
}

/// Reads a workbook (its signature already read) whole, up to `[input] max_workbook_mb`, and
/// converts its sheet's rows like a CSV's.
fn convert_workbook(
    mut data: Vec<u8>,
    input: impl Read,
    cfg: &InputConfig,
    send_at: SendAt,
    sink: &mut dyn RowSink,
) -> Result<ConvertReport, ConvertError> {
    let limit = cfg.max_workbook_bytes;
    input
        .take((limit + 1).saturating_sub(data.len() as u64))
        .read_to_end(&mut data)
        .map_err(ConvertError::Read)?;
    if data.len() as u64 > limit {
        let report = ConvertReport {
            input_rejected: Some(format!(
                "the workbook is larger than [input] max_workbook_mb ({} MB), and a workbook is \
                 read whole into memory; split it, save it as CSV (read as a stream, any size), \
                 or raise the limit",
                limit / (1024 * 1024)
            )),
            ..ConvertReport::default()
        };
        return Ok(report);
    }
    // Cells are text already: UTF-8 whatever [input] encoding says, and never split.
    let decoder = FieldDecoder::new(crate::config::EncodingChoice::Utf8);
    let mut run = Run::new(cfg, send_at, decoder, 0, b',');
    run.repair.sheet = true;
    run.report.delimiter = String::new();
    let mut layout = None;
    let format = sheet::CellFormat {
        date_format: &cfg.date_format,
        max_held_bytes: limit.saturating_mul(2),
    };
    let read = sheet::read(&data, cfg.sheet.as_deref(), &format, &mut |rec, note| {
        let next = match note {
            sheet::RowNote::Cells {
                errors,
                lost_digits,
            } => {
                run.cell_errors.clear();
                run.cell_errors.extend_from_slice(errors);
                run.lost_digits.clear();
                run.lost_digits.extend_from_slice(lost_digits);
                Next::Record
            }
            sheet::RowNote::TooLarge { bytes, fields } => Next::TooLarge {
                line: rec.line,
                bytes,
                fields,
            },
        };
        let text = std::str::from_utf8(rec.bytes()).ok();
        let flow = run.take(next, rec, text, &mut layout, sink)?;
        Ok::<_, ConvertError>(matches!(flow, Flow::Go))
    })?;
    let mut report = run.report;
    match read {
        Ok(described) => report.encoding = described,
        Err(why) => report.input_rejected = Some(why),
    }
    Ok(finish(report))
}

/// An input with no sendable row is rejected as a whole.
fn finish(mut report: ConvertReport) -> ConvertReport {
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
    report
}

/// Whether to read on.
enum Flow {
    Go,
    Stop,
}

/// The state of one conversion.
struct Run<'c> {
    cfg: &'c InputConfig,
    decoder: FieldDecoder,
    report: ConvertReport,
    /// Fields a row should have: the header's, or the usual count of a headerless file.
    width: usize,
    delimiter: char,
    /// The template resolved against this input's columns.
    template: Option<template::Resolved>,
    /// One buffer per placeholder, reused from row to row.
    scratch: Vec<String>,
    /// Columns of the current spreadsheet row holding formula errors, with the error.
    cell_errors: Vec<(usize, String)>,
    /// Columns of the current spreadsheet row holding a number stored with digits lost.
    lost_digits: Vec<usize>,
    /// Which column takes a row's surplus fields, if any.
    repair: Repair,
    /// Decoding buffers for number, correlation id, text and deadline.
    bufs: [String; 4],
    /// With `[input.columns] send_before`: how deadlines are read and checked.
    deadlines: Option<deadline::Deadlines>,
    text: String,
    id: String,
    /// Columns a row must reach to hold every field the layout and template use.
    used_width: Option<usize>,
}

/// How a row went.
enum RowResult {
    Sent,
    Rejected,
}

impl<'c> Run<'c> {
    fn new(
        cfg: &'c InputConfig,
        send_at: SendAt,
        decoder: FieldDecoder,
        width: usize,
        delimiter: u8,
    ) -> Self {
        let deadlines = cfg
            .columns
            .send_before
            .as_ref()
            .map(|_| deadline::Deadlines::new(&cfg.date_format, send_at));
        let report = ConvertReport {
            delimiter: match delimiter {
                b'\t' => "tab".into(),
                d => (d as char).to_string(),
            },
            send_at: deadlines.as_ref().map(|_| send_at),
            ..ConvertReport::default()
        };
        Run {
            cfg,
            decoder,
            report,
            width,
            delimiter: delimiter as char,
            repair: Repair::default(),
            template: None,
            scratch: vec![],
            cell_errors: vec![],
            lost_digits: vec![],
            bufs: Default::default(),
            deadlines,
            text: String::new(),
            id: String::new(),
            used_width: None,
        }
    }

    /// Takes one record (or the end): the header, a data row, or a row too large to hold.
    /// `text` is the record's bytes as text when they are valid UTF-8 (checked by the reader).
    fn take(
        &mut self,
        next: Next,
        rec: &RawRecord,
        text: Option<&str>,
        layout: &mut Option<Layout>,
        sink: &mut dyn RowSink,
    ) -> Result<Flow, ConvertError> {
        match next {
            Next::End => Ok(Flow::Stop),
            Next::Record if rec.is_blank() => {
                self.report.blank_rows += 1;
                Ok(Flow::Go)
            }
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
                    return Ok(Flow::Stop);
                }
                self.report.rows_read += 1;
                self.reject(sink, line, "", "", reason)?;
                Ok(Flow::Go)
            }
            Next::Record => {
                let layout = match layout {
                    Some(l) => &*l,
                    None => match self.first_record(rec) {
                        Ok((l, is_header)) => {
                            self.report.warnings.extend(l.warnings.iter().cloned());
                            let l = layout.insert(l);
                            if is_header {
                                return Ok(Flow::Go);
                            }
                            &*l
                        }
                        Err(why) => {
                            self.report.input_rejected = Some(why);
                            return Ok(Flow::Stop);
                        }
                    },
                };
                self.report.rows_read += 1;
                if let RowResult::Rejected = self.row(rec, text, layout, sink)? {
                    if self.cfg.invalid_rows == InvalidRows::RejectFile {
                        let first = &self.report.rejected[0];
                        self.report.input_rejected = Some(format!(
                            "line {} was rejected ({}) and invalid_rows = \"reject-file\"; \
                             fix the row and drop the file again",
                            first.line, first.reason
                        ));
                        return Ok(Flow::Stop);
                    }
                }
                Ok(Flow::Go)
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
        let header = is_header.then_some(&names[..]);
        let layout =
            dialect::resolve_layout(&self.cfg.columns, header, self.cfg.template.is_some())?;
        if is_header || self.repair.sheet {
            self.width = names.len();
        }
        if let Some(t) = &self.cfg.template {
            let resolved = t.resolve(header, self.width.max(rec.len()))?;
            self.scratch = vec![String::new(); resolved.placeholders()];
            self.template = Some(resolved);
        }
        self.repair.absorb = match &self.cfg.absorb_column {
            _ if self.cfg.extra_fields == ExtraFields::Reject => Err(String::new()),
            Some(col) => Ok(dialect::column_index(col, header, "absorb_column")?),
            None => repair::absorbing_column(&layout, header, self.width),
        };
        if is_header {
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
        text: Option<&str>,
        layout: &Layout,
        sink: &mut dyn RowSink,
    ) -> Result<RowResult, ConvertError> {
        // Buffers reused from row to row: no allocation per row on the common path.
        let mut bufs = std::mem::take(&mut self.bufs);
        let whole = self.decoder.whole(text);
        // The layout and template are settled by the first record: worked out once.
        let used = *self.used_width.get_or_insert_with(|| {
            [
                Some(layout.number),
                layout.text,
                layout.correlation_id,
                layout.send_before,
            ]
            .into_iter()
            .flatten()
            .chain(self.template.iter().flat_map(|t| t.columns()))
            .max()
            .map_or(0, |i| i + 1)
        });
        let placed = self.repair.place(
            rec,
            self.width.max(used),
            self.report.header.is_some(),
            &self.report.delimiter,
        );
        let at = placed.clone().unwrap_or_default();
        let [nbuf, ibuf, tbuf, dbuf] = &mut bufs;
        let (d, delim) = (&mut self.decoder, self.delimiter);
        let number = column_str(d, whole, rec, at.fields(Some(layout.number)), delim, nbuf);
        let id = column_str(d, whole, rec, at.fields(layout.correlation_id), delim, ibuf);
        let text = match &self.template {
            Some(t) => {
                tbuf.clear();
                t.render(
                    |i, buf| {
                        column_str(d, whole, rec, at.fields(Some(i)), delim, buf)
                            .map_err(|e| bad_encoding(&format!("column {}", i + 1), &e))
                    },
                    &mut self.scratch,
                    tbuf,
                )
                .map(|()| tbuf.as_str())
            }
            None => column_str(d, whole, rec, at.fields(layout.text), delim, tbuf)
                .map_err(|e| bad_encoding("text", &e)),
        };
        // Read only when configured: no cost per row otherwise.
        let deadline = match (&self.deadlines, layout.send_before) {
            (Some(_), Some(c)) => Some(column_str(d, whole, rec, at.fields(Some(c)), delim, dbuf)),
            _ => None,
        };
        let (raw_number, raw_id) = (
            number.as_ref().map_or("", |s| *s),
            id.as_ref().map_or("", |s| *s),
        );
        let used = |c: usize| {
            c == layout.number
                || Some(c) == layout.text
                || Some(c) == layout.correlation_id
                || Some(c) == layout.send_before
                || self
                    .template
                    .as_ref()
                    .is_some_and(|t| t.columns().any(|t| t == c))
        };
        let cell_error = self
            .cell_errors
            .iter()
            .find(|(c, _)| used(*c))
            .map(|(c, e)| {
                format!(
                    "the cell in column {} holds the error {e} (a formula that failed); fix the \
                 formula or the data it uses and save the workbook again",
                    c + 1
                )
            })
            .or_else(|| {
                // Only where the digits are the point: an amount keeps its 15 digits as shown.
                self.lost_digits.iter().find_map(|&c| {
                    let field = if c == layout.number {
                        "number"
                    } else if Some(c) == layout.correlation_id {
                        "correlation id"
                    } else {
                        return None;
                    };
                    Some(sheet::lost_digits(field, c))
                })
            });
        let checked = match (placed, number, text, id) {
            _ if cell_error.is_some() => Err(cell_error.unwrap_or_default()),
            (Err(why), ..) => Err(why),
            (_, Err(e), _, _) => Err(bad_encoding("number", &e)),
            (_, _, Err(why), _) => Err(why),
            (_, _, _, Err(e)) => Err(bad_encoding("correlation id", &e)),
            (Ok(_), Ok(n), Ok(t), Ok(i)) => self
                .check(rec, layout, &at, n, t, i)
                .and_then(|ok| self.check_deadline(deadline).map(|()| ok)),
        };
        let result = match checked {
            Ok((number, mut changed)) => {
                let note = (at.surplus > 0).then(|| {
                    let what = match (&self.report.header, layout.text == Some(at.column)) {
                        (_, true) => "text".to_owned(),
                        (Some(h), false) => format!("column {:?}", h[at.column]),
                        (None, false) => format!("column {}", at.column + 1),
                    };
                    changed.insert(0, "text");
                    changed.dedup();
                    format!(
                        "{what} contained {} unquoted '{}'; rebuilt",
                        at.surplus, self.report.delimiter
                    )
                });
                if self.template.is_some() && self.report.first_message.is_none() {
                    self.report.first_message = Some(self.text.clone());
                }
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
                            note,
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
        at: &Placement,
        raw_number: &str,
        raw_text: &str,
        raw_id: &str,
    ) -> Result<(String, Vec<&'static str>), String> {
        let needed = layout.number.max(layout.text.unwrap_or(0)) + 1;
        if rec.len() < needed {
            return Err(format!(
                "the row has {} field(s) but the {} is in column {needed}; check the delimiter \
                 (read as {:?}) and the column settings",
                rec.len(),
                if layout.text.is_some_and(|t| t >= layout.number) {
                    "text"
                } else {
                    "number"
                },
                self.report.delimiter
            ));
        }
        let number = rules::normalize_number(raw_number, self.number_rules()).map_err(|p| {
            if at.surplus == 0 {
                return say(p);
            }
            format!(
                "{p}: the row has {} unquoted {:?} more than the header, and rebuilding the text \
                 from them leaves this in the number column, so they are elsewhere; quote the \
                 fields (\"...\") in the export",
                at.surplus, self.report.delimiter
            )
        })?;
        if !self.repair.sheet {
            // A cell's line breaks are its own: no quote can have swallowed a row.
            self.check_swallowed_rows(raw_text, rec.line)?;
        }
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

    /// Rejects a row past its `send_before` cell (read only where the column is configured).
    fn check_deadline(
        &self,
        cell: Option<Result<&str, dialect::BadEncoding>>,
    ) -> Result<(), String> {
        match (&self.deadlines, cell) {
            (Some(deadlines), Some(cell)) => {
                deadlines.check(cell.map_err(|e| bad_encoding("send_before", &e))?)
            }
            _ => Ok(()),
        }
    }

    /// Refuses a text whose embedded lines look like rows of their own: an unclosed quote made
    /// the following rows part of this field, and sending it would mail other customers' messages
    /// to this row's number.
    fn check_swallowed_rows(&self, text: &str, line: u64) -> Result<(), String> {
        // Bytes, not chars: '\n' and '\r' never occur inside a UTF-8 sequence.
        if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_none() {
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
mod deadline_tests;
#[cfg(test)]
mod sheet_tests;
#[cfg(test)]
mod tests;
