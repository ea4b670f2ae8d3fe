//! Spreadsheet inputs (`.xlsx`, `.xls`, `.ods`, also `.xlsb`), read with `calamine`.
//!
//! A workbook is recognised by its first bytes (a ZIP or an OLE container), never by its name,
//! and read whole into memory up to `[input] max_workbook_mb`. Its cells become the same
//! [`RawRecord`]s a CSV row makes, so header detection, column mapping, templates and every row
//! rule apply unchanged. Cell values are written exactly: a whole number as its digits (a phone
//! stored as a number is never `5.5E+12`), a date in `[input] date_format`, a formula as its
//! cached value. A formula error is named on its row, as is a number stored with more than 15
//! digits (digits lost) where a number or correlation id is read. The sheet read is the one
//! `[input] sheet` names, or the first visible one: hidden sheets are what a person never sees,
//! so they are skipped and named in the report. `.xlsx` sheets are streamed cell by cell
//! (memory: the file, its shared strings and one row); `.xls`/`.ods`/`.xlsb` sheets are loaded
//! as one grid by calamine. It must never panic on a workbook, whatever it holds.

use super::reader::{RawRecord, MAX_FIELDS, MAX_RECORD_BYTES};
use calamine::{
    Data, DataRef, Ods, Reader, Sheet, SheetVisible, Xls, XlsError, Xlsb, Xlsx, XlsxError,
};
use std::io::Cursor;

/// The first bytes of a ZIP container (`.xlsx`, `.ods`, `.xlsb`).
const ZIP: &[u8] = b"PK\x03\x04";
/// The first bytes of an OLE compound file (`.xls`, and a password-protected `.xlsx`).
const OLE: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";
/// Bytes [`is_workbook`] needs.
pub const SIGNATURE_BYTES: usize = 8;

/// True when `head` starts like a workbook.
pub fn is_workbook(head: &[u8]) -> bool {
    head.starts_with(ZIP) || head.starts_with(OLE)
}

/// True when the file at `path` starts like a workbook (a daemon must then never cut it at a
/// line break, as it may a CSV still being written).
pub fn is_workbook_file(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; SIGNATURE_BYTES];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| is_workbook(&head))
}

/// How a workbook is read and its cells written as text.
pub struct CellFormat<'a> {
    /// chrono format for dates, e.g. `%d/%m/%Y`.
    pub date_format: &'a str,
    /// Most bytes a part that calamine holds in memory whole (`xl/sharedStrings.xml`, an
    /// `.ods`'s `content.xml`) may unpack to.
    pub max_held_bytes: u64,
}

/// The parts of a ZIP workbook that calamine unpacks whole into memory.
const HELD_PARTS: [&str; 2] = ["xl/sharedStrings.xml", "content.xml"];

/// What to do with each row: `Ok(true)` goes on, `Ok(false)` stops reading.
pub type OnRow<'f, E> = dyn FnMut(&RawRecord, RowNote<'_>) -> Result<bool, E> + 'f;

/// What a row carries besides its cells.
#[derive(Debug, Clone, Copy)]
pub enum RowNote<'a> {
    /// A normal row. `errors`: columns (0-based) holding formula errors, e.g. `#DIV/0!`.
    /// `lost_digits`: columns holding a number of [`LOST_DIGITS_FROM`] or more, stored with
    /// more than 15 significant digits, so its last digits are gone (see [`lost_digits`]).
    Cells {
        errors: &'a [(usize, String)],
        lost_digits: &'a [usize],
    },
    /// The row has more than [`MAX_FIELDS`] columns or [`MAX_RECORD_BYTES`] bytes; it is empty.
    TooLarge { bytes: u64, fields: u64 },
}

/// A spreadsheet keeps 15 significant digits of a number: a whole number from here up (16
/// digits or more) was stored with its last digits lost (`12345678901234567890` and
/// `12345678901234567891` both read `12345678901234567168`). A float cannot tell the digits
/// typed, so its size is the signal.
pub const LOST_DIGITS_FROM: f64 = 1e15;

/// Why a row whose `field` (`number`, `correlation id`) in column `col` (0-based) was stored as
/// a number of more than 15 digits is rejected, with what to do.
pub fn lost_digits(field: &str, col: usize) -> String {
    format!(
        "the {field} in column {} was stored as a number of more than 15 digits, digits lost (a \
         spreadsheet keeps 15): format the column as text in the spreadsheet and type the digits \
         again",
        col + 1
    )
}

/// Reads `sheet`, or else the first visible sheet, of the workbook in `data`, handing each
/// non-empty row to `on_row`. Hidden and very hidden sheets are read only when `sheet` names
/// them. Returns a description for the report: `xlsx workbook, sheet "Campanha"`, with
/// ` (skipped hidden sheets: "Plan1")` when hidden sheets came before it.
///
/// calamine can panic on a damaged file (the `reader` fuzz target found a truncated `.xls`
/// whose sector table slices out of bounds): a panic while reading is caught and the workbook
/// rejected as damaged, so no input can stop the daemon. Rows already handed on must then be
/// discarded, as for any rejected input.
///
/// # Errors
/// `Ok(Err(reason))` when the workbook cannot be used (corrupt, password-protected, no such
/// sheet, no visible sheet): the whole input is rejected with the reason. `Err` when `on_row`
/// fails.
pub fn read<E>(
    data: &[u8],
    sheet: Option<&str>,
    format: &CellFormat<'_>,
    on_row: &mut OnRow<'_, E>,
) -> Result<Result<String, String>, E> {
    let reading = std::panic::AssertUnwindSafe(|| read_unguarded(data, sheet, format, on_row));
    match std::panic::catch_unwind(reading) {
        Ok(read) => read,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Ok(Err(format!(
                "the workbook is damaged: the spreadsheet reader failed on it ({what}); open it \
                 in a spreadsheet, save it again and drop it again, or save it as CSV"
            )))
        }
    }
}

fn read_unguarded<E>(
    data: &[u8],
    sheet: Option<&str>,
    format: &CellFormat<'_>,
    on_row: &mut OnRow<'_, E>,
) -> Result<Result<String, String>, E> {
    let cursor = Cursor::new(data);
    let book = if data.starts_with(OLE) {
        // Sector chains proven finite and inside the file before calamine follows them.
        if let Err(e) = cfb::CompoundFile::open(cursor.clone()) {
            return Ok(Err(corrupt("an old Excel (.xls) workbook", &e)));
        }
        // calamine reads every sheet whole into a grid when it opens the file: refused here
        // when that grid would not fit the budget (a few stray cells far apart can ask for GBs).
        let Some(cells) = super::xls_size::grid_cells(data) else {
            let why = "its Workbook stream cannot be read, or it names thousands of sheets";
            return Ok(Err(corrupt("an old Excel (.xls) workbook", &why)));
        };
        let need = cells.saturating_mul(super::xls_size::BYTES_PER_CELL);
        if need > format.max_held_bytes {
            return Ok(Err(format!(
                "the old Excel (.xls) workbook's sheets span {cells} cells from their first to \
                 their last used row and column, about {} MB to read, over the {} MB allowed \
                 (twice [input] max_workbook_mb): cells far apart, or a damaged size record. \
                 Delete stray cells far from the list, or save the sheet as .xlsx or CSV, and \
                 drop it again",
                need / 1_000_000,
                format.max_held_bytes / 1_000_000
            )));
        }
        match Xls::new(cursor.clone()) {
            Ok(x) => Book::Xls(x),
            Err(XlsError::Password) => return Ok(Err(password())),
            Err(e) => {
                // An encrypted .xlsx is an OLE file too: calamine's xlsx reader recognises it.
                if let Err(XlsxError::Password) = Xlsx::new(cursor) {
                    return Ok(Err(password()));
                }
                return Ok(Err(corrupt("an old Excel (.xls) workbook", &e)));
            }
        }
    } else {
        if let Some(why) = oversized_part(data, format.max_held_bytes) {
            return Ok(Err(why));
        }
        match Xlsx::new(cursor.clone()) {
            Ok(x) => Book::Xlsx(x),
            Err(XlsxError::Password) => return Ok(Err(password())),
            Err(xlsx_err) => match Ods::new(cursor.clone()) {
                Ok(o) => Book::Ods(o),
                Err(calamine::OdsError::Password) => return Ok(Err(password())),
                Err(_) => match Xlsb::new(cursor) {
                    Ok(b) => Book::Xlsb(b),
                    Err(_) => {
                        return Ok(Err(corrupt("an Excel workbook or ZIP archive", &xlsx_err)))
                    }
                },
            },
        }
    };
    book.read(sheet, format, on_row)
}

enum Book<'d> {
    Xlsx(Xlsx<Cursor<&'d [u8]>>),
    Xls(Xls<Cursor<&'d [u8]>>),
    Ods(Ods<Cursor<&'d [u8]>>),
    Xlsb(Xlsb<Cursor<&'d [u8]>>),
}

impl Book<'_> {
    fn read<E>(
        mut self,
        sheet: Option<&str>,
        format: &CellFormat<'_>,
        on_row: &mut OnRow<'_, E>,
    ) -> Result<Result<String, String>, E> {
        let (kind, sheets) = match &self {
            Book::Xlsx(b) => ("xlsx", b.sheets_metadata().to_vec()),
            Book::Xls(b) => ("xls", b.sheets_metadata().to_vec()),
            Book::Ods(b) => ("ods", b.sheets_metadata().to_vec()),
            Book::Xlsb(b) => ("xlsb", b.sheets_metadata().to_vec()),
        };
        let (name, skipped) = match choose(&sheets, sheet) {
            Ok(chosen) => chosen,
            Err(why) => return Ok(Err(why)),
        };
        if !skipped.is_empty() {
            let skipped: Vec<&str> = skipped.iter().map(|s| s.name.as_str()).collect();
            tracing::warn!(
                sheet = ?name,
                ?skipped,
                "hidden sheets skipped: read the first visible sheet"
            );
        }
        let described = describe(kind, name, skipped);
        let mut rows = Rows::new(format);
        let failed = |e: &dyn std::fmt::Display| {
            Ok(Err(format!(
                "sheet {name:?} of the {kind} workbook could not be read ({e}); open it in a \
                 spreadsheet, save it again and drop it again, or save it as CSV"
            )))
        };
        // .xlsx and .xlsb are read cell by cell as they are stored; calamine's other readers
        // only give a whole grid.
        macro_rules! stream {
            ($reader:expr) => {{
                let mut cells = match $reader {
                    Ok(c) => c,
                    Err(e) => return failed(&e),
                };
                loop {
                    match cells.next_cell() {
                        Ok(Some(cell)) => {
                            let (r, c) = cell.get_position();
                            if !rows.cell(r, c, value_ref(cell.get_value()), on_row)? {
                                return Ok(Ok(described));
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return failed(&e),
                    }
                }
            }};
        }
        if let Book::Xlsx(b) = &mut self {
            stream!(b.worksheet_cells_reader(name));
        } else if let Book::Xlsb(b) = &mut self {
            stream!(b.worksheet_cells_reader(name));
        } else {
            let range = match &mut self {
                Book::Xls(b) => b.worksheet_range(name).map_err(|e| e.to_string()),
                Book::Ods(b) => b.worksheet_range(name).map_err(|e| e.to_string()),
                Book::Xlsx(_) | Book::Xlsb(_) => unreachable!("streamed above"),
            };
            let range = match range {
                Ok(r) => r,
                Err(e) => return failed(&e),
            };
            let (r0, c0) = range.start().unwrap_or((0, 0));
            for (r, c, v) in range.used_cells() {
                let (r, c) = (r0 + r as u32, c0 + c as u32);
                if !rows.cell(r, c, value(v), on_row)? {
                    return Ok(Ok(described));
                }
            }
        }
        rows.flush(on_row)?;
        Ok(Ok(described))
    }
}

/// A part calamine would unpack whole whose declared size is over `max`, named with what to do.
fn oversized_part(data: &[u8], max: u64) -> Option<String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(data)).ok()?;
    HELD_PARTS.iter().find_map(|name| {
        let size = archive.by_name(name).ok()?.size();
        (size > max).then(|| {
            format!(
                "the workbook's {name} unpacks to {} MB, over the {} MB smsdrop holds in memory \
                 (twice [input] max_workbook_mb); split the sheet or save it as CSV",
                size / (1024 * 1024),
                max / (1024 * 1024)
            )
        })
    })
}

/// The sheet to read (named by `[input] sheet` as written, else case- and accent-insensitively;
/// or else the first visible one), and the hidden sheets passed over to reach it.
fn choose<'s>(sheets: &'s [Sheet], want: Option<&str>) -> Result<(&'s str, &'s [Sheet]), String> {
    let Some(want) = want else {
        if sheets.is_empty() {
            return Err("the workbook has no sheet".into());
        }
        return match sheets
            .iter()
            .position(|s| s.visible == SheetVisible::Visible)
        {
            Some(i) => Ok((&sheets[i].name, &sheets[..i])),
            None => Err(format!(
                "the workbook has no visible sheet (its sheets are {}), and a hidden sheet is \
                 read only when named; unhide the sheet to send and save the workbook again, or \
                 name it with [input] sheet",
                list(sheets)
            )),
        };
    };
    let folded = super::dialect::fold_name(want);
    match sheets.iter().find(|s| s.name == want).or_else(|| {
        sheets
            .iter()
            .find(|s| super::dialect::fold_name(&s.name) == folded)
    }) {
        Some(s) => Ok((&s.name, &[])),
        None => Err(format!(
            "the workbook has no sheet named {want:?} ([input] sheet); its sheets are {}",
            list(sheets)
        )),
    }
}

/// Sheet names as a person reads them: `"Campanha", "Plan1" (hidden)`.
fn list(sheets: &[Sheet]) -> String {
    let names: Vec<String> = sheets
        .iter()
        .map(|s| match s.visible {
            SheetVisible::Visible => format!("{:?}", s.name),
            SheetVisible::Hidden => format!("{:?} (hidden)", s.name),
            SheetVisible::VeryHidden => format!("{:?} (very hidden)", s.name),
        })
        .collect();
    names.join(", ")
}

fn describe(kind: &str, sheet: &str, skipped: &[Sheet]) -> String {
    if skipped.is_empty() {
        return format!("{kind} workbook, sheet {sheet:?}");
    }
    let skipped: Vec<String> = skipped.iter().map(|s| format!("{:?}", s.name)).collect();
    format!(
        "{kind} workbook, sheet {sheet:?} (skipped hidden sheets: {})",
        skipped.join(", ")
    )
}

fn password() -> String {
    "the workbook is password-protected; smsdrop cannot open it: save a copy without a \
     password (or as CSV) and drop that"
        .into()
}

fn corrupt(what: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "the file looks like {what} but cannot be read as a workbook ({e}); open it in a \
         spreadsheet and save it again as .xlsx, or save it as CSV, and drop it again"
    )
}

/// One cell's value, whatever the format.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(Option<chrono::NaiveDateTime>),
    /// A time of day alone (a date cell below 1: `10:30`).
    Time(Option<chrono::NaiveDateTime>),
    Iso(&'a str),
    Error(String),
    Empty,
}

fn value_ref<'a>(v: &'a DataRef<'_>) -> Value<'a> {
    match v {
        DataRef::String(s) => Value::Text(s),
        DataRef::SharedString(s) => Value::Text(s),
        DataRef::Int(i) => Value::Int(*i),
        DataRef::Float(f) => Value::Float(*f),
        DataRef::Bool(b) => Value::Bool(*b),
        DataRef::DateTime(d) if d.is_duration() => Value::Float(d.as_f64()),
        DataRef::DateTime(d) if (0.0..1.0).contains(&d.as_f64()) => Value::Time(d.as_datetime()),
        DataRef::DateTime(d) => Value::Date(d.as_datetime()),
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Value::Iso(s),
        DataRef::Error(e) => Value::Error(e.to_string()),
        DataRef::Empty => Value::Empty,
    }
}

fn value(v: &Data) -> Value<'_> {
    match v {
        Data::String(s) => Value::Text(s),
        Data::Int(i) => Value::Int(*i),
        Data::Float(f) => Value::Float(*f),
        Data::Bool(b) => Value::Bool(*b),
        Data::DateTime(d) if d.is_duration() => Value::Float(d.as_f64()),
        Data::DateTime(d) if (0.0..1.0).contains(&d.as_f64()) => Value::Time(d.as_datetime()),
        Data::DateTime(d) => Value::Date(d.as_datetime()),
        Data::DateTimeIso(s) | Data::DurationIso(s) => Value::Iso(s),
        Data::Error(e) => Value::Error(e.to_string()),
        Data::Empty => Value::Empty,
    }
}

/// Writes a whole number without a fraction or exponent (`5511999999999`, never `5.5E+12`),
/// and any other to 15 significant digits as a spreadsheet shows it, without trailing zeros
/// (`=1.1*100` is `110`, not `110.00000000000001`).
fn write_number(f: f64, out: &mut String) {
    use std::fmt::Write;
    if !f.is_finite() {
        let _ = write!(out, "{f}");
    } else if f == 0.0 {
        out.push('0'); // also -0.0
    } else if f.fract() == 0.0 && f.abs() < 1e17 {
        let _ = write!(out, "{f:.0}");
    } else {
        let magnitude = f.abs().log10().floor() as i32;
        let decimals = (14 - magnitude).clamp(0, 30) as usize;
        let start = out.len();
        let _ = write!(out, "{f:.decimals$}");
        if out[start..].contains('.') {
            let kept = out.trim_end_matches('0').trim_end_matches('.').len();
            out.truncate(kept);
        }
        if &out[start..] == "-0" {
            out.truncate(start);
            out.push('0'); // a tiny negative rounded away
        }
    }
}

/// Builds records from cells arriving row by row, left to right.
struct Rows<'f> {
    format: &'f CellFormat<'f>,
    rec: RawRecord,
    row: Option<u32>,
    errors: Vec<(usize, String)>,
    /// Columns holding a number stored with digits lost ([`LOST_DIGITS_FROM`]).
    lost_digits: Vec<usize>,
    too_large: bool,
    bytes: u64,
    cell: String,
}

impl<'f> Rows<'f> {
    fn new(format: &'f CellFormat<'f>) -> Self {
        Rows {
            format,
            rec: RawRecord::default(),
            row: None,
            errors: vec![],
            lost_digits: vec![],
            too_large: false,
            bytes: 0,
            cell: String::new(),
        }
    }

    fn cell<E>(
        &mut self,
        row: u32,
        col: u32,
        v: Value<'_>,
        on_row: &mut OnRow<'_, E>,
    ) -> Result<bool, E> {
        if matches!(v, Value::Empty) {
            return Ok(true);
        }
        if self.row != Some(row) {
            if !self.flush(on_row)? {
                return Ok(false);
            }
            self.row = Some(row);
            self.rec.start(u64::from(row) + 1);
        }
        self.cell.clear();
        match v {
            Value::Text(s) => self.cell.push_str(s),
            Value::Iso(s) => match iso_date(s) {
                Some(d) => self.push_date(d),
                None => self.cell.push_str(s),
            },
            Value::Int(i) => self.cell.push_str(&i.to_string()),
            Value::Float(f) => {
                if f.abs() >= LOST_DIGITS_FROM && f.is_finite() {
                    self.lost_digits.push(col as usize);
                }
                write_number(f, &mut self.cell);
            }
            Value::Bool(b) => self.cell.push_str(if b { "TRUE" } else { "FALSE" }),
            Value::Date(Some(d)) => self.push_date(d),
            Value::Time(Some(t)) => {
                use std::fmt::Write;
                let _ = write!(self.cell, "{}", t.format("%H:%M"));
            }
            Value::Date(None) | Value::Time(None) => {
                let e = "#DATE! (a date out of range)";
                self.errors.push((col as usize, e.into()));
                self.cell.push_str(e);
            }
            Value::Error(e) => {
                self.errors.push((col as usize, e.clone()));
                self.cell.push_str(&e);
            }
            Value::Empty => {}
        }
        self.bytes += self.cell.len() as u64;
        let col = col as usize;
        if col >= MAX_FIELDS || self.bytes > MAX_RECORD_BYTES as u64 {
            self.too_large = true;
            return Ok(true);
        }
        while self.rec.len() < col {
            self.rec.push_field(b"");
        }
        self.rec.push_field(self.cell.as_bytes());
        Ok(true)
    }

    fn push_date(&mut self, d: chrono::NaiveDateTime) {
        use std::fmt::Write;
        if write!(self.cell, "{}", d.format(self.format.date_format)).is_err() {
            self.cell.clear();
            self.cell.push_str(&d.format("%d/%m/%Y").to_string());
        }
    }

    /// Hands on the row being built, if any.
    fn flush<E>(&mut self, on_row: &mut OnRow<'_, E>) -> Result<bool, E> {
        if self.row.take().is_none() {
            return Ok(true);
        }
        let note = if self.too_large {
            RowNote::TooLarge {
                bytes: self.bytes,
                fields: self.rec.len().max(MAX_FIELDS + 1) as u64,
            }
        } else {
            RowNote::Cells {
                errors: &self.errors,
                lost_digits: &self.lost_digits,
            }
        };
        let go = on_row(&self.rec, note)?;
        self.errors.clear();
        self.lost_digits.clear();
        self.too_large = false;
        self.bytes = 0;
        Ok(go)
    }
}

/// `2027-01-05` or `2027-01-05T10:00:00` (what `.ods` files hold).
fn iso_date(s: &str) -> Option<chrono::NaiveDateTime> {
    let date = chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
    let time = s
        .get(11..19)
        .and_then(|t| chrono::NaiveTime::parse_from_str(t, "%H:%M:%S").ok())
        .unwrap_or_default();
    Some(date.and_time(time))
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_as_a_spreadsheet_shows_them() {
        let cases: [(f64, &str); 12] = [
            (5511999999999.0, "5511999999999"),
            (150.5, "150.5"),
            (1.1 * 100.0, "110"),
            (0.1 + 0.2, "0.3"),
            (-2.5, "-2.5"),
            (1e-7, "0.0000001"),
            (-1e-20, "-0.00000000000000000001"),
            (-0.0, "0"),
            (-1e-40, "0"),
            (123_456_789.123_456_7, "123456789.123457"),
            (1e20, "100000000000000000000"),
            (f64::NAN, "NaN"),
        ];
        for (f, want) in cases {
            let mut s = String::new();
            super::write_number(f, &mut s);
            assert_eq!(s, want, "{f:?}");
        }
    }
}
