//! Whole-input conversion tests: bytes in, rows and report out.

use super::*;
use crate::config::{Config, EncodingChoice, Sanitize};

type Rows = Vec<(u64, String, String, String)>;

fn run_with(input: &[u8], cfg: &InputConfig) -> (Rows, ConvertReport) {
    let mut rows = Rows::new();
    let report = convert(std::io::Cursor::new(input.to_vec()), cfg, &mut rows).unwrap();
    (rows, report)
}

fn run(input: &[u8]) -> (Rows, ConvertReport) {
    run_with(input, &Config::defaults().input)
}

fn row(line: u64, n: &str, t: &str, id: &str) -> (u64, String, String, String) {
    (line, n.into(), t.into(), id.into())
}

#[test]
fn windows_1252_semicolon_crlf_with_portuguese_header() {
    let input = b"Telefone;Mensagem;C\xf3digo\r\n(11) 99876-5432;Sua fatura de R$ 150,00 vence amanh\xe3;F-1\r\n";
    let (rows, rep) = run(input);
    assert_eq!(
        rows,
        vec![row(
            2,
            "5511998765432",
            "Sua fatura de R$ 150,00 vence amanhã",
            "F-1"
        )]
    );
    assert_eq!(rep.encoding, "windows-1252");
    assert_eq!(rep.delimiter, ";");
    assert_eq!(
        rep.header.as_deref(),
        Some(&["Telefone".to_string(), "Mensagem".into(), "Código".into()][..])
    );
}

#[test]
fn excel_utf8_bom_with_quoted_commas() {
    let input =
        "\u{feff}celular,mensagem,id\n\"+55 21 98888-7777\",\"Olá, João! Pague até 10/12\",A1\n"
            .as_bytes();
    let (rows, rep) = run(input);
    assert_eq!(
        rows,
        vec![row(2, "5521988887777", "Olá, João! Pague até 10/12", "A1")]
    );
    assert_eq!(
        (rep.encoding.as_str(), rep.delimiter.as_str()),
        ("utf-8", ",")
    );
}

#[test]
fn tab_separated_without_header() {
    let (rows, rep) = run(b"11987654321\tBom dia\tX9\n21987654321\tBoa tarde\n");
    assert_eq!(
        rows,
        vec![
            row(1, "5511987654321", "Bom dia", "X9"),
            row(2, "5521987654321", "Boa tarde", "")
        ]
    );
    assert_eq!(rep.header, None);
    assert_eq!(rep.delimiter, "tab");
}

#[test]
fn bad_rows_are_reported_with_line_and_reason() {
    let input =
        b"telefone;mensagem\n5.51199E+12;oi\n11999999999;\n119;oi\n11999999999\n11988888888;ok\n";
    let (rows, rep) = run(input);
    assert_eq!(rows, vec![row(6, "5511988888888", "ok", "")]);
    let reasons: Vec<(u64, &str)> = rep
        .rejected
        .iter()
        .map(|r| (r.line, r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4);
    assert!(
        reasons[0].0 == 2 && reasons[0].1.contains("scientific"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == 3 && reasons[1].1.contains("text is empty"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].0 == 4 && reasons[2].1.contains("3 digits"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].0 == 5 && reasons[3].1.contains("1 field"),
        "{reasons:?}"
    );
    assert_eq!((rep.rows_read, rep.rows_sent, rep.rows_rejected), (5, 1, 4));
    assert!(rep.input_rejected.is_none());
}

#[test]
fn sanitising_replaces_or_rejects_and_counts() {
    let input = b"fone;texto;id\n11999999999;\"a;b\r\nc\";x\n11988888888;plain;y\n";
    let (rows, rep) = run(input);
    assert_eq!(rows[0], row(2, "5511999999999", "a,b c", "x"));
    assert_eq!(rep.rows_changed, 1);
    assert_eq!(
        rep.changed[0],
        ChangedRow {
            line: 2,
            fields: vec!["text"]
        }
    );

    let mut cfg = Config::defaults().input;
    cfg.sanitize = Sanitize::Reject;
    let (rows, rep) = run_with(input, &cfg);
    assert_eq!(rows, vec![row(4, "5511988888888", "plain", "y")]);
    assert!(rep.rejected[0].reason.contains("';'"));
}

#[test]
fn reject_file_mode_rejects_the_whole_input() {
    let mut cfg = Config::defaults().input;
    cfg.invalid_rows = InvalidRows::RejectFile;
    let (_, rep) = run_with(b"11999999999;ok\nabc;bad\n", &cfg);
    let why = rep.input_rejected.unwrap();
    assert!(
        why.contains("line 2") && why.contains("reject-file"),
        "{why}"
    );
}

#[test]
fn inputs_without_sendable_rows_are_rejected_with_a_reason() {
    let cases: [(&[u8], &str); 6] = [
        (b"", "no data rows"),
        (b"telefone;mensagem\r\n", "no data rows"),
        (b"\n\n;;\n", "no data rows"),
        (b"abc;def\n1;2\n", "none of its"),
        (b"PK\x03\x04\x14\x00", "Excel"),
        (b"\x00\x01\x02\x03", "NUL"),
    ];
    for (input, want) in cases {
        let (rows, rep) = run(input);
        assert!(rows.is_empty());
        let why = rep.input_rejected.unwrap_or_default();
        assert!(why.contains(want), "{input:?}: {why}");
    }
}

#[test]
fn header_detection() {
    let cfg = Config::defaults().input;
    // A first row whose number column is a phone is data.
    let (rows, rep) = run(b"11999999999;oi\n");
    assert_eq!((rows.len(), rep.header), (1, None));
    // Forced header / no header.
    let mut forced = cfg.clone();
    forced.header = HeaderChoice::Yes;
    assert_eq!(
        run_with(b"11999999999;oi\n11988888888;b\n", &forced)
            .0
            .len(),
        1
    );
    let mut none = cfg.clone();
    none.header = HeaderChoice::No;
    let (_, rep) = run_with(b"telefone;mensagem\n11999999999;oi\n", &none);
    assert_eq!(rep.rows_rejected, 1);
    // Columns mapped by index.
    let mut mapped = cfg;
    mapped.columns.number = Some(crate::config::ColumnRef::Index(2));
    mapped.columns.text = Some(crate::config::ColumnRef::Index(0));
    let (rows, _) = run_with(b"hello;x;11999999999\n", &mapped);
    assert_eq!(rows, vec![row(1, "5511999999999", "hello", "")]);
}

#[test]
fn strict_utf8_rejects_rows_with_advice() {
    let mut cfg = Config::defaults().input;
    cfg.encoding = EncodingChoice::Utf8;
    let (_, rep) = run_with(b"11999999999;amanh\xe3\n11988888888;ok\n", &cfg);
    assert!(
        rep.rejected[0].reason.contains("windows-1252"),
        "{:?}",
        rep.rejected
    );
    assert_eq!(rep.rows_sent, 1);
}

#[test]
fn utf16_exports_are_read() {
    let text = "telefone\tmensagem\r\n11999999999\tOlá\r\n";
    let bytes: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let (rows, rep) = run(&bytes);
    assert_eq!(rows, vec![row(2, "5511999999999", "Olá", "")]);
    assert_eq!(rep.encoding, "utf-16le");
}

#[test]
fn billing_is_counted_for_sent_rows() {
    let long = "a".repeat(200);
    let input = format!("11999999999;oi\n11999999999;{long}\n11999999999;ação\n");
    let (_, rep) = run(input.as_bytes());
    assert_eq!(rep.billing.parts, 4);
    assert_eq!(
        (rep.billing.gsm7_messages, rep.billing.ucs2_messages),
        (2, 1)
    );
}

#[test]
fn an_unquoted_delimiter_inside_a_field_rejects_the_row() {
    let input =
        b"telefone;mensagem;id\n11999999999;pedido saiu; acompanhe;P1\n11988888888;ok;P2;;\n";
    let (rows, rep) = run(input);
    assert_eq!(rows, vec![row(3, "5511988888888", "ok", "P2")]);
    assert!(
        rep.rejected[0]
            .reason
            .contains("4 fields where the header has 3"),
        "{:?}",
        rep.rejected
    );
    // Headerless: measured against the usual width.
    let (rows, rep) = run(b"11999999999;a;1\n11988888888;b;2\n11977777777;c;x;3\n");
    assert_eq!(rows.len(), 2);
    assert!(
        rep.rejected[0].reason.contains("file usually has 3"),
        "{:?}",
        rep.rejected
    );
}

#[test]
fn an_unclosed_quote_never_mails_other_rows_to_one_number() {
    let input = b"telefone;mensagem;id\n11999999999;\"Oferta especial;A1\n11988888888;Sua fatura;A2\n11977777777;Outra;A3\n";
    let (rows, rep) = run(input);
    assert!(rows.is_empty(), "{rows:?}");
    assert!(
        rep.rejected[0].reason.contains("unclosed quote"),
        "{:?}",
        rep.rejected
    );
    // A genuine multi-line text is still fine.
    let (rows, _) = run(b"11999999999;\"linha um\nlinha dois\";A1\n");
    assert_eq!(
        rows,
        vec![row(1, "5511999999999", "linha um linha dois", "A1")]
    );
}
