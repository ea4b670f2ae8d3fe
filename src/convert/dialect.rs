//! Working out how an export is laid out: the delimiter, whether line 1 is a header, which
//! column holds what, and how each field's bytes become text.

use super::reader::{Next, RawRecord, RecordReader};
pub use crate::config::fold_name;
use crate::config::{ColumnRef, Columns, EncodingChoice, DELIMITERS};
use encoding_rs::WINDOWS_1252;

/// Header names recognised for each column, already folded (lower case, no accents, letters/digits).
const NUMBER_NAMES: &[&str] = &[
    "telefone",
    "celular",
    "fone",
    "phone",
    "mobile",
    "number",
    "numero",
    "destination",
    "destino",
    "msisdn",
];
const TEXT_NAMES: &[&str] = &["mensagem", "texto", "text", "message", "messagetext", "sms"];
const ID_NAMES: &[&str] = &["id", "codigo", "correlationid", "ref", "referencia"];
/// Records looked at to pick a delimiter.
const SNIFF_RECORDS: usize = 50;

/// Picks the delimiter whose field count is most consistent over the first records of `head`;
/// on a tie, the one giving more fields, then the earlier in [`DELIMITERS`]. A `fixed` delimiter is
/// taken as it is. Also returns the usual field count of a row with that delimiter.
pub fn sniff(head: &[u8], head_is_whole_file: bool, fixed: Option<u8>) -> (u8, usize) {
    let candidates = match &fixed {
        Some(d) => std::slice::from_ref(d),
        None => &DELIMITERS[..],
    };
    let mut best = (-1.0f64, 0usize, candidates[0]);
    for &d in candidates {
        let mut counts = field_counts(head, d);
        if !head_is_whole_file && counts.len() > 1 {
            counts.pop(); // the last record may be cut short by the head's end
        }
        let mode = mode(&counts);
        if mode < 2 && fixed.is_none() {
            continue;
        }
        let share =
            counts.iter().filter(|&&c| c == mode).count() as f64 / counts.len().max(1) as f64;
        if share > best.0 || (share == best.0 && mode > best.1) {
            best = (share, mode, d);
        }
    }
    (best.2, best.1)
}

fn field_counts(head: &[u8], delimiter: u8) -> Vec<usize> {
    let mut reader = RecordReader::new(head, delimiter);
    let mut rec = RawRecord::default();
    let mut counts = vec![];
    while counts.len() < SNIFF_RECORDS {
        match reader.read(&mut rec) {
            Ok(Next::Record) if rec.is_blank() => {}
            Ok(Next::Record) => counts.push(rec.len()),
            Ok(Next::TooLarge { .. }) => counts.push(0),
            Ok(Next::End) | Err(_) => break,
        }
    }
    counts
}

fn mode(counts: &[usize]) -> usize {
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let (mut best, mut best_n, mut i) = (0, 0, 0);
    while i < sorted.len() {
        let j = sorted[i..].iter().take_while(|&&c| c == sorted[i]).count();
        if j > best_n {
            (best, best_n) = (sorted[i], j);
        }
        i += j;
    }
    best
}

/// The columns an input's rows are read from (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub number: usize,
    /// `None` with a template: the text is built from other columns.
    pub text: Option<usize>,
    pub correlation_id: Option<usize>,
    /// Each row's deadline (`[input.columns] send_before`); only where configured.
    pub send_before: Option<usize>,
    /// Notes for the report, e.g. a header whose names were not recognised.
    pub warnings: Vec<String>,
}

/// Which role a folded header name plays, exactly or loosely.
fn role_of(folded: &str, exact: bool) -> Option<usize> {
    let lists = [NUMBER_NAMES, TEXT_NAMES, ID_NAMES];
    if exact {
        return lists.iter().position(|l| l.contains(&folded));
    }
    if ["id", "cod", "ref"].iter().any(|p| folded.starts_with(p)) {
        return Some(2);
    }
    lists
        .iter()
        .position(|l| l.iter().any(|n| n.len() >= 4 && folded.contains(n)))
}

/// True when a header row names any known column.
pub fn names_a_column(header: &[String]) -> bool {
    header.iter().any(|h| {
        let f = fold_name(h);
        role_of(&f, true).is_some() || role_of(&f, false).is_some()
    })
}

/// Resolves where number, text and correlation id are, from config and the header (if any), and
/// the deadline column (`send_before`, only where configured).
/// With a `template` no text column is needed, and only the number is found by position.
///
/// # Errors
/// A reason the whole input is rejected: a configured column is missing, or the header names
/// some columns but not the number or the text.
pub fn resolve_layout(
    columns: &Columns,
    header: Option<&[String]>,
    template: bool,
) -> Result<Layout, String> {
    const KEYS: [&str; 4] = ["number", "text", "correlation_id", "send_before"];
    // Roles 0 to 2 are also found by header name or position; 3 (send_before) only by config,
    // but the columns it takes are not given to the others.
    let mut found: [Option<usize>; 4] = [None; 4];
    let mut warnings = vec![];
    let configured = [
        &columns.number,
        &columns.text,
        &columns.correlation_id,
        &columns.send_before,
    ];
    for (role, cfg) in configured.iter().enumerate() {
        found[role] = match cfg {
            None => None,
            Some(ColumnRef::Index(i)) => Some(*i),
            Some(ColumnRef::Name(name)) => {
                let Some(header) = header else {
                    return Err(format!(
                        "[input] columns.{} names the column {name:?}, but this file has no header \
                         row; give the column's position (1, 2, ...) instead",
                        KEYS[role]
                    ));
                };
                let want = fold_name(name);
                let pos = header.iter().position(|h| fold_name(h) == want).ok_or_else(|| {
                    format!(
                        "[input] columns.{} names the column {name:?}, which is not in the header ({})",
                        KEYS[role],
                        header.join(", ")
                    )
                })?;
                Some(pos)
            }
        };
    }
    let any_configured = found[..3].iter().any(Option::is_some);
    let mut named_any = false;
    if let Some(header) = header {
        let folded: Vec<String> = header.iter().map(|h| fold_name(h)).collect();
        for exact in [true, false] {
            for (i, f) in folded.iter().enumerate() {
                if let Some(role) = role_of(f, exact) {
                    named_any = true;
                    if found[role].is_none() && !found.contains(&Some(i)) {
                        found[role] = Some(i);
                    }
                }
            }
        }
        if !named_any && !any_configured {
            warnings.push(format!(
                "line 1 was read as a header but names no known column ({}); columns are taken \
                 in order (number, text, correlation id). If line 1 is data, set [input] header = false",
                header.join(", ")
            ));
        }
    }
    if !named_any {
        // Position order: number, text, correlation id, skipping columns configured elsewhere.
        let roles = if any_configured || template { 2 } else { 3 };
        let limit = header.map_or(usize::MAX, <[String]>::len);
        for role in 0..roles {
            if found[role].is_none() {
                found[role] = (0..limit).find(|i| !found.contains(&Some(*i)));
            }
        }
    }
    let missing = |role: usize, what: &str| {
        format!(
            "the header ({}) has no {what} column; name it one of {} or set [input] columns.{}",
            header.map(|h| h.join(", ")).unwrap_or_default(),
            [NUMBER_NAMES, TEXT_NAMES][role].join(", "),
            KEYS[role]
        )
    };
    let number = found[0].ok_or_else(|| missing(0, "phone number"))?;
    let text = if template {
        None
    } else {
        Some(found[1].ok_or_else(|| missing(1, "message text"))?)
    };
    let read = [Some(number), text, found[2], found[3]];
    for (k, col) in read.iter().enumerate() {
        if let Some(col) = col.filter(|c| read[k + 1..].contains(&Some(*c))) {
            return Err(format!(
                "two fields are read from the same column ({}); fix [input] columns",
                col + 1
            ));
        }
    }
    Ok(Layout {
        number,
        text,
        correlation_id: found[2],
        send_before: found[3],
        warnings,
    })
}

/// Column `col` of the input (0-based), found by name in the header or by position; `key` names
/// the setting for messages.
///
/// # Errors
/// The name is not in the header, or there is no header.
pub fn column_index(
    col: &ColumnRef,
    header: Option<&[String]>,
    key: &str,
) -> Result<usize, String> {
    match col {
        ColumnRef::Index(i) => Ok(*i),
        ColumnRef::Name(name) => {
            let want = fold_name(name);
            header
                .and_then(|h| h.iter().position(|n| fold_name(n) == want))
                .ok_or_else(|| match header {
                    Some(h) => format!(
                        "[input] {key} names the column {name:?}, which is not in the header ({})",
                        h.join(", ")
                    ),
                    None => format!(
                        "[input] {key} names the column {name:?}, but this file has no header \
                         row; give the column's position (1, 2, ...) instead"
                    ),
                })
        }
    }
}

/// How each field's bytes become text; tracks what an `auto` input turned out to be.
#[derive(Debug, Clone)]
pub struct FieldDecoder {
    choice: EncodingChoice,
    pub saw_utf8: bool,
    pub saw_1252: bool,
}

/// A field whose bytes are not valid in the configured encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEncoding {
    pub offset: usize,
}

impl FieldDecoder {
    pub fn new(choice: EncodingChoice) -> Self {
        FieldDecoder {
            choice,
            saw_utf8: false,
            saw_1252: false,
        }
    }

    /// Appends `bytes` decoded to `out`.
    ///
    /// In `auto` mode a field that is valid UTF-8 is read as UTF-8 and any other as Windows-1252,
    /// so an export that mixes both (a common result of concatenated files) still reads right.
    ///
    /// # Errors
    /// Only with a fixed `utf-8` encoding, when the bytes are not valid UTF-8.
    pub fn decode_into(&mut self, bytes: &[u8], out: &mut String) -> Result<(), BadEncoding> {
        match self.choice {
            EncodingChoice::Auto | EncodingChoice::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => {
                    self.saw_utf8 |= !s.is_ascii();
                    out.push_str(s);
                }
                Err(e) if self.choice == EncodingChoice::Utf8 => {
                    return Err(BadEncoding {
                        offset: e.valid_up_to(),
                    })
                }
                Err(_) => {
                    self.saw_1252 = true;
                    out.push_str(&WINDOWS_1252.decode_without_bom_handling(bytes).0);
                }
            },
            EncodingChoice::Windows1252 => {
                out.push_str(&WINDOWS_1252.decode_without_bom_handling(bytes).0)
            }
            EncodingChoice::Latin1 => out.extend(bytes.iter().map(|&b| b as char)),
        }
        Ok(())
    }

    /// Like [`FieldDecoder::decode_into`], but borrows `bytes` when they are already UTF-8 text,
    /// using `buf` only when they must be converted.
    ///
    /// # Errors
    /// As [`FieldDecoder::decode_into`].
    pub fn decode<'a>(
        &mut self,
        bytes: &'a [u8],
        buf: &'a mut String,
    ) -> Result<&'a str, BadEncoding> {
        if matches!(self.choice, EncodingChoice::Auto | EncodingChoice::Utf8) {
            if let Ok(s) = std::str::from_utf8(bytes) {
                self.saw_utf8 |= !s.is_ascii();
                return Ok(s);
            }
        }
        buf.clear();
        self.decode_into(bytes, buf)?;
        Ok(buf.as_str())
    }

    /// The whole record as text when it is valid UTF-8 (`text`, checked by the reader) and UTF-8
    /// is allowed: one check per row instead of one per field. A field boundary may still fall
    /// inside a character (the record holds no delimiters), so slice it with `str::get`.
    pub fn whole<'a>(&mut self, text: Option<&'a str>) -> Option<&'a str> {
        if !matches!(self.choice, EncodingChoice::Auto | EncodingChoice::Utf8) {
            return None;
        }
        let s = text?;
        // Known once: no second scan of every later row.
        self.saw_utf8 = self.saw_utf8 || !s.is_ascii();
        Some(s)
    }

    /// The encoding the input was read in, for the report.
    pub fn describe(&self, utf16: Option<&str>) -> String {
        if let Some(u) = utf16 {
            return u.to_owned();
        }
        match self.choice {
            EncodingChoice::Utf8 => "utf-8".into(),
            EncodingChoice::Windows1252 => "windows-1252".into(),
            EncodingChoice::Latin1 => "iso-8859-1".into(),
            EncodingChoice::Auto => match (self.saw_utf8, self.saw_1252) {
                (true, true) => "mixed utf-8 and windows-1252".into(),
                (false, true) => "windows-1252".into(),
                _ => "utf-8".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_sniffing_table() {
        let cases: [(&str, u8); 7] = [
            (
                "telefone;mensagem\n11999999999;R$ 150,00 vence hoje\n11988888888;ok, pago\n",
                b';',
            ),
            (
                "phone,text\n11999999999,hello\n11988888888,\"a, b\"\n",
                b',',
            ),
            ("11999999999\thello; there\n11988888888\tbye\n", b'\t'),
            ("a|b|c\n1|2|3\n", b'|'),
            ("11999999999;R$ 150,00\n11988888888;R$ 20,00\n", b';'),
            ("a;b,c\n", b';'),
            ("justone\n", b';'),
        ];
        for (text, want) in cases {
            assert_eq!(
                sniff(text.as_bytes(), true, None).0 as char,
                want as char,
                "{text}"
            );
        }
    }

    #[test]
    fn folding_drops_case_accents_and_punctuation() {
        assert_eq!(fold_name("Número do Celular"), "numerodocelular");
        assert_eq!(fold_name("CÓDIGO"), "codigo");
        assert_eq!(fold_name("correlation_id"), "correlationid");
    }

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn layout_from_header_names() {
        let none = Columns::default();
        type Case<'a> = (&'a [&'a str], (usize, usize, Option<usize>));
        let cases: [Case; 5] = [
            (&["Telefone", "Mensagem", "ID"], (0, 1, Some(2))),
            (&["Código", "Nome", "Celular", "Texto SMS"], (2, 3, Some(0))),
            (&["MENSAGEM", "FONE"], (1, 0, None)),
            (
                &["id_cliente", "numero_celular", "mensagem"],
                (1, 2, Some(0)),
            ),
            (&["Número", "Message Text", "Referência"], (0, 1, Some(2))),
        ];
        for (names, (n, t, id)) in cases {
            let l = resolve_layout(&none, Some(&header(names)), false).unwrap();
            assert_eq!(
                (l.number, l.text, l.correlation_id),
                (n, Some(t), id),
                "{names:?}"
            );
        }
    }

    #[test]
    fn layout_errors_and_fallbacks() {
        let none = Columns::default();
        let err = resolve_layout(&none, Some(&header(&["Telefone", "Nome"])), false).unwrap_err();
        assert!(err.contains("no message text column"), "{err}");
        // With a template the text column is not needed, and no id is taken by position.
        let l = resolve_layout(&none, Some(&header(&["Telefone", "Nome"])), true).unwrap();
        assert_eq!((l.number, l.text, l.correlation_id), (0, None, None));
        let l = resolve_layout(&none, None, true).unwrap();
        assert_eq!((l.number, l.text, l.correlation_id), (0, None, None));
        let l = resolve_layout(&none, Some(&header(&["a", "b"])), false).unwrap();
        assert_eq!((l.number, l.text, l.correlation_id), (0, Some(1), None));
        assert!(l.warnings[0].contains("header = false"));

        let by_name = Columns {
            number: Some(ColumnRef::Name("cel".into())),
            ..Columns::default()
        };
        let err = resolve_layout(&by_name, None, false).unwrap_err();
        assert!(err.contains("no header"), "{err}");
        let err =
            resolve_layout(&by_name, Some(&header(&["Telefone", "Mensagem"])), false).unwrap_err();
        assert!(err.contains("not in the header"), "{err}");
        let l = resolve_layout(&by_name, Some(&header(&["Msg", "CEL"])), false).unwrap();
        assert_eq!((l.number, l.text), (1, Some(0)));
    }

    #[test]
    fn auto_decoding_reads_each_field_as_utf8_or_1252() {
        let mut d = FieldDecoder::new(EncodingChoice::Auto);
        let mut s = String::new();
        d.decode_into("ação".as_bytes(), &mut s).unwrap();
        d.decode_into(b" a\xe7\xe3o", &mut s).unwrap();
        assert_eq!(s, "ação ação");
        assert_eq!(d.describe(None), "mixed utf-8 and windows-1252");
        let mut strict = FieldDecoder::new(EncodingChoice::Utf8);
        assert_eq!(
            strict.decode_into(b"ab\xe7", &mut s),
            Err(BadEncoding { offset: 2 })
        );
        let mut latin = FieldDecoder::new(EncodingChoice::Latin1);
        let mut s = String::new();
        latin.decode_into(b"\xe9", &mut s).unwrap();
        assert_eq!(s, "é");
    }
}
