//! Fields into columns, and the repair of unquoted delimiters.
//!
//! A row with more fields than the header had a delimiter inside a field without quotes. When
//! one column is the only one that can hold it (the text, when every other column is the number
//! or the correlation id; or `[input] absorb_column`), the columns before it are placed from the
//! left and those after it from the right, and its fields are joined back with the delimiter.
//! Anything else is ambiguous and the row is rejected with the reason: this must never guess.

use super::dialect::{self, FieldDecoder, Layout};
use super::reader::RawRecord;

/// Which column takes a row's surplus fields, decided once per input.
#[derive(Debug, Clone)]
pub(super) struct Repair {
    /// The absorbing column, or why none can (empty: `[input] extra_fields = "reject"`).
    pub absorb: Result<usize, String>,
    /// Reading a workbook: cells are exact, no delimiter can shift them.
    pub sheet: bool,
}

impl Default for Repair {
    fn default() -> Self {
        Repair {
            absorb: Err(String::new()),
            sheet: false,
        }
    }
}

/// The column that may hold unquoted delimiters: the text, when every other of the `width`
/// columns is the number, the correlation id or the deadline (each anchored by position to the
/// left or the right of it; a deadline that took a surplus field would not read as a date, and
/// its row would be rejected). Another column could hold them as well, and then nothing says
/// which did.
pub(super) fn absorbing_column(
    layout: &Layout,
    header: Option<&[String]>,
    width: usize,
) -> Result<usize, String> {
    let Some(text) = layout.text else {
        return Err(
            "with a template there is no text column to take them; if one column may hold the \
             delimiter (e.g. a name written \"Surname, Name\"), name it in [input] absorb_column"
                .into(),
        );
    };
    let mapped = |i: usize| {
        i == layout.number
            || i == text
            || layout.correlation_id == Some(i)
            || layout.send_before == Some(i)
    };
    let others: Vec<String> = (0..width)
        .filter(|&i| !mapped(i))
        .map(|i| match header.and_then(|h| h.get(i)) {
            Some(name) if !name.is_empty() => format!("{name:?}"),
            _ => format!("column {}", i + 1),
        })
        .collect();
    if others.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "besides the text, {} could hold it, so the columns are ambiguous",
            others.join(", ")
        ))
    }
}

impl Repair {
    /// Where a row's columns lie when rows should have `width` fields: with more, the surplus
    /// joins the absorbing column. Empty fields past `width` are trailing delimiters, ignored.
    ///
    /// # Errors
    /// Why the row cannot be placed, for its rejection.
    pub fn place(
        &self,
        rec: &RawRecord,
        width: usize,
        has_header: bool,
        delimiter: &str,
    ) -> Result<Placement, String> {
        let Some(last) = (width..rec.len())
            .rev()
            .find(|&i| !rec.get(i).unwrap_or_default().is_empty())
        else {
            return Ok(Placement::default());
        };
        if self.sheet {
            return Ok(Placement::default()); // cells past the header are separate: ignored
        }
        let surplus = last + 1 - width;
        let why = match &self.absorb {
            Ok(column) => {
                return Ok(Placement {
                    column: *column,
                    surplus,
                })
            }
            Err(why) => why,
        };
        let base = format!(
            "the row has {} fields where the {} has {width}: a {delimiter:?} inside a field \
             without quotes shifts the columns",
            last + 1,
            if has_header { "header" } else { "file usually" },
        );
        let fix = "quote the field (\"...\") or remove the character in the export";
        Err(if why.is_empty() {
            format!("{base}; {fix}")
        } else {
            format!("{base} and cannot be rebuilt ({why}); {fix}")
        })
    }
}

/// Which fields of a row make up each column (see [`Repair::place`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Placement {
    /// The column that takes the surplus.
    pub column: usize,
    /// Fields more than the header has (unquoted delimiters inside `column`).
    pub surplus: usize,
}

impl Placement {
    /// The fields column `col` spans.
    pub fn fields(&self, col: Option<usize>) -> Option<std::ops::Range<usize>> {
        let col = col?;
        Some(if self.surplus == 0 || col < self.column {
            col..col + 1
        } else if col == self.column {
            col..col + 1 + self.surplus
        } else {
            col + self.surplus..col + self.surplus + 1
        })
    }
}

/// A column as text: one field as [`field_str`] reads it, or several joined back with the
/// delimiter they were split at.
pub(super) fn column_str<'a>(
    decoder: &mut FieldDecoder,
    whole: Option<&'a str>,
    rec: &'a RawRecord,
    fields: Option<std::ops::Range<usize>>,
    delimiter: char,
    buf: &'a mut String,
) -> Result<&'a str, dialect::BadEncoding> {
    let Some(fields) = fields else {
        return Ok("");
    };
    if fields.len() == 1 {
        return field_str(decoder, whole, rec, Some(fields.start), buf);
    }
    buf.clear();
    let mut blank = true;
    for (k, i) in fields.enumerate() {
        if k > 0 {
            buf.push(delimiter);
        }
        let at = buf.len();
        decoder.decode_into(rec.get(i).unwrap_or_default(), buf)?;
        blank &= buf[at..].trim().is_empty();
    }
    // Only delimiters and blanks: the column is empty, not a message of commas.
    if blank {
        buf.clear();
    }
    Ok(buf.as_str())
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
