//! Any bytes as an ERP export: `convert` never panics, and every row it hands on makes a batch
//! line the gateway reads as intended.
//!
//! Each input is converted twice: with `Config::defaults()`, and with a variant of the `[input]`
//! settings picked by its first two bytes (delimiter, encoding, header, sanitize, invalid_rows,
//! columns, country code, extra_fields, template, absorb_column). The whole input is the file
//! both times, so plain CSV seeds work; workbook seeds (`PK..`, OLE) go through calamine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsdrop::batch::{check_batch, check_line, BatchCheck, HEADER_LINE, TRAILER};
use smsdrop::config::{
    ColumnRef, Config, Delimiter, EncodingChoice, ExtraFields, HeaderChoice, InputConfig,
    InvalidRows, Sanitize, Zone,
};
use smsdrop::convert::template::Template;
use smsdrop::convert::{convert, RejectedRow, Row, RowSink, SendAt};
use std::io::{self, Cursor};
use std::sync::OnceLock;

/// Formats rows exactly as `BatchWriter` writes them, in memory.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    rejected: u64,
}

impl RowSink for Lines {
    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        let line = format!("{};{};{};", row.number, row.text, row.correlation_id);
        if let Err(e) = check_line(&line) {
            panic!("line {}: the gateway would refuse {line:?}: {e}", row.line);
        }
        for (name, field) in [("text", row.text), ("correlation id", row.correlation_id)] {
            // A line break splits the batch line; other controls are refused by the rules.
            if let Some(c) = field
                .chars()
                .find(|&c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
            {
                panic!(
                    "line {}: {name} {field:?} holds U+{:04X}",
                    row.line, c as u32
                );
            }
            assert_eq!(field.trim(), field, "line {}: {name} not trimmed", row.line);
        }
        self.lines.push(line);
        Ok(())
    }

    fn rejected(&mut self, _row: &RejectedRow) -> io::Result<()> {
        self.rejected += 1;
        Ok(())
    }
}

fn defaults() -> &'static InputConfig {
    static CFG: OnceLock<InputConfig> = OnceLock::new();
    CFG.get_or_init(|| Config::defaults().input)
}

/// A variant of the defaults chosen by two bytes.
fn variant(a: u8, b: u8) -> InputConfig {
    let mut cfg = defaults().clone();
    cfg.delimiter = match a & 0b111 {
        1 => Delimiter::Fixed(b';'),
        2 => Delimiter::Fixed(b','),
        3 => Delimiter::Fixed(b'\t'),
        4 => Delimiter::Fixed(b'|'),
        _ => Delimiter::Auto,
    };
    cfg.encoding = match (a >> 3) & 0b11 {
        1 => EncodingChoice::Utf8,
        2 => EncodingChoice::Windows1252,
        3 => EncodingChoice::Latin1,
        _ => EncodingChoice::Auto,
    };
    cfg.header = match (a >> 5) & 0b11 {
        1 => HeaderChoice::Yes,
        2 => HeaderChoice::No,
        _ => HeaderChoice::Auto,
    };
    if a & 0x80 != 0 {
        cfg.sanitize = Sanitize::Reject;
    }
    if b & 1 != 0 {
        cfg.invalid_rows = InvalidRows::RejectFile;
    }
    match (b >> 1) & 0b11 {
        1 => {
            cfg.columns.number = Some(ColumnRef::Index(1));
            cfg.columns.text = Some(ColumnRef::Index(0));
        }
        2 => {
            cfg.columns.number = Some(ColumnRef::Name("celular".into()));
            cfg.columns.correlation_id = Some(ColumnRef::Index(2));
        }
        3 => cfg.columns.text = Some(ColumnRef::Name("Mensagem".into())),
        _ => {}
    }
    match (b >> 3) & 0b11 {
        1 => cfg.default_country_code = String::new(),
        2 => {
            cfg.default_country_code = "1".into();
            cfg.national_lengths = vec![4, 14];
        }
        3 => cfg.national_lengths = vec![],
        _ => {}
    }
    // The repair of unquoted delimiters, templates and the column that may absorb a surplus.
    let template = |t: &str| Some(Template::parse(t).expect("a valid template"));
    match b >> 5 {
        1 => cfg.extra_fields = ExtraFields::Reject,
        2 => cfg.template = template("Olá {1}, {3}!"),
        3 => {
            cfg.template = template("{nome} deve {valor} {{ok}}");
            cfg.absorb_column = Some(ColumnRef::Name("nome".into()));
        }
        4 => cfg.absorb_column = Some(ColumnRef::Index(1)),
        5 => {
            cfg.template = template("{2}{2}{2}");
            cfg.absorb_column = Some(ColumnRef::Index(1));
        }
        6 => cfg.max_workbook_bytes = 4096,
        7 => {
            cfg.sheet = Some("Plan2".into());
            cfg.date_format = "%Y-%m-%d %H:%M".into();
            cfg.columns.send_before = Some(ColumnRef::Index(2));
        }
        _ => {}
    }
    cfg
}

fn check(data: &[u8], cfg: &InputConfig) {
    let mut sink = Lines::default();
    // The clock only decides which rows are past their send_before: no check depends on it.
    let now = SendAt::now(Zone::Local);
    let report = match convert(Cursor::new(data.to_vec()), cfg, now, &mut sink) {
        Ok(r) => r,
        // Reading a Cursor and writing to `Lines` cannot fail.
        Err(e) => panic!("convert failed on in-memory input: {e}"),
    };
    assert_eq!(report.rows_sent, sink.lines.len() as u64, "rows_sent");
    assert_eq!(report.rows_rejected, sink.rejected, "rows_rejected");
    assert_eq!(
        report.rows_read,
        report.rows_sent + report.rows_rejected,
        "rows_read != sent + rejected"
    );
    if report.input_rejected.is_some() {
        return;
    }
    assert!(report.rows_sent > 0, "an accepted input sent no row");
    assert!(report.billing.parts >= report.rows_sent, "billing parts");
    // The batch file these rows make is one the gateway accepts whole.
    let mut file = String::from(HEADER_LINE);
    file.push('\n');
    for line in &sink.lines {
        file.push_str(line);
        file.push('\n');
    }
    file.push_str(TRAILER);
    file.push('\n');
    assert_eq!(
        check_batch(file.as_bytes()),
        BatchCheck::Valid {
            messages: sink.lines.len()
        },
        "batch {file:?}"
    );
}

/// calamine can panic on damaged workbooks; `convert` catches that and rejects the workbook.
/// libFuzzer's panic hook aborts at once, before the catch: let panics raised inside calamine
/// unwind to it (a rejection the target then checks), and abort on any other.
fn let_calamine_panics_unwind() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_calamine = info
                .location()
                .is_some_and(|l| l.file().contains("/calamine-"));
            if !in_calamine {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_calamine_panics_unwind();
    check(data, defaults());
    if let [a, rest @ ..] = data {
        check(data, &variant(*a, rest.first().copied().unwrap_or(0)));
    }
});
