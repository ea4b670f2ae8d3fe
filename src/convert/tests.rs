//! Whole-input conversion tests: bytes in, rows and report out.

use super::*;
use crate::config::{Config, EncodingChoice, Sanitize, Zone};

type Rows = Vec<(u64, String, String, String)>;

fn run_with(input: &[u8], cfg: &InputConfig) -> (Rows, ConvertReport) {
    let mut rows = Rows::new();
    let report = convert(
        std::io::Cursor::new(input.to_vec()),
        cfg,
        SendAt::now(Zone::Local),
        &mut rows,
    )
    .unwrap();
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
            fields: vec!["text"],
            note: None,
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

/// 30,000 rows (about 900 KB, far past the 64 KiB head, so read ahead on a second thread) with
/// bad rows at lines 2, 15,001 and 30,001 and a quoted two-line text in between.
fn large_input() -> Vec<u8> {
    let mut input = b"telefone;mensagem;id\n".to_vec();
    for i in 1..=30_000u64 {
        let line = match i {
            1 | 15_000 | 30_000 => format!("abc;bad {i};B{i}\n"),
            20_000 => format!("1199{i:07};\"two\nlines\";Q{i}\n"),
            _ => format!("1199{i:07};Olá {i};R{i}\n"),
        };
        input.extend_from_slice(line.as_bytes());
    }
    input
}

#[test]
fn a_large_input_keeps_every_row_and_line_number() {
    let (rows, rep) = run(&large_input());
    assert_eq!(
        (rep.rows_read, rep.rows_sent, rep.rows_rejected),
        (30_000, 29_997, 3)
    );
    let lines: Vec<u64> = rep.rejected.iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        [2, 15_001, 30_002],
        "the quoted line break on line 20,001 counts"
    );
    assert_eq!(rows[0], row(3, "5511990000002", "Olá 2", "R2"));
    assert_eq!(
        rows[19_997],
        row(20_001, "5511990020000", "two lines", "Q20000")
    );
    assert_eq!(
        rows[29_996],
        row(30_001, "5511990029999", "Olá 29999", "R29999")
    );
}

#[test]
fn reject_file_mode_stops_a_large_input_at_its_first_bad_row() {
    let mut cfg = Config::defaults().input;
    cfg.invalid_rows = InvalidRows::RejectFile;
    let mut input = large_input();
    // The first bad row far into the file: line 15,001.
    input.splice(
        21..21 + "abc;bad 1;B1".len(),
        b"11990000001;x;B1".iter().copied(),
    );
    let (rows, rep) = run_with(&input, &cfg);
    let why = rep.input_rejected.unwrap();
    assert!(why.contains("line 15001"), "{why}");
    assert_eq!((rows.len(), rep.rows_read), (14_999, 15_000));
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
fn unquoted_delimiters_are_joined_back_into_the_text_when_unambiguous() {
    // (input, extra_fields = "reject"?, rows sent, note of the first changed row or reason of the
    // first rejected row)
    type Case<'a> = (&'a str, bool, Vec<(u64, String, String, String)>, &'a str);
    let cases: Vec<Case> =
        vec![
        (
            "celular,texto,correlationId\n5521980000001,Campanha Natal, cupom 00001,camp-00001\n",
            false,
            vec![row(2, "5521980000001", "Campanha Natal, cupom 00001", "camp-00001")],
            "text contained 1 unquoted ','; rebuilt",
        ),
        (
            "celular,texto,id\n5521980000001,a, b, c,X\n5521980000002,ok,Y\n",
            false,
            vec![
                row(2, "5521980000001", "a, b, c", "X"),
                row(3, "5521980000002", "ok", "Y"),
            ],
            "text contained 2 unquoted ','; rebuilt",
        ),
        // `;` inside the text: rebuilt, then sanitised for the gateway.
        (
            "telefone;mensagem;id\n11999999999;pedido saiu; acompanhe;P1\n",
            false,
            vec![row(2, "5511999999999", "pedido saiu, acompanhe", "P1")],
            "text contained 1 unquoted ';'; rebuilt",
        ),
        // The text is the last column, or the first: the others are anchored at the other end.
        (
            "celular,texto\n5521980000001,a,,b\n",
            false,
            vec![row(2, "5521980000001", "a,,b", "")],
            "text contained 2 unquoted ','; rebuilt",
        ),
        (
            "texto,celular,id\nOi, João,5521980000001,X\n",
            false,
            vec![row(2, "5521980000001", "Oi, João", "X")],
            "text contained 1 unquoted ','; rebuilt",
        ),
        // Headerless: measured against the usual width.
        (
            "11999999999;a;1\n11988888888;b;2\n11977777777;c;x;3\n",
            false,
            vec![
                row(1, "5511999999999", "a", "1"),
                row(2, "5511988888888", "b", "2"),
                row(3, "5511977777777", "c,x", "3"),
            ],
            "text contained 1 unquoted ';'; rebuilt",
        ),
        // Only delimiters: an empty text, not a message of commas.
        (
            "celular,texto,id\n5521980000001, , ,X\n",
            false,
            vec![],
            "text is empty",
        ),
        // Empty fields past the header are trailing delimiters: nothing to rebuild.
        (
            "telefone;mensagem;id\n11988888888;ok;P2;;\n",
            false,
            vec![row(2, "5511988888888", "ok", "P2")],
            "",
        ),
        // Today's behaviour on request.
        (
            "celular,texto,id\n5521980000001,a, b,X\n",
            true,
            vec![],
            "4 fields where the header has 3",
        ),
        // Another free column could hold the comma: ambiguous.
        (
            "nome,celular,texto,id\nSilva, Ana,5521980000001,Oi,X\n",
            false,
            vec![],
            "besides the text, \"nome\" could hold it",
        ),
        // The surplus is not in the text: rebuilding it leaves garbage in the number column.
        (
            "id,celular,texto\nA,1,5521980000001,Oi\n",
            false,
            vec![],
            "leaves this in the number column",
        ),
    ];
    for (input, reject, want, says) in cases {
        let mut cfg = Config::defaults().input;
        if reject {
            cfg.extra_fields = crate::config::ExtraFields::Reject;
        }
        let (rows, rep) = run_with(input.as_bytes(), &cfg);
        assert_eq!(rows, want, "{input}");
        let said = match (rep.changed.first(), rep.rejected.first()) {
            (_, Some(r)) => r.reason.clone(),
            (Some(c), None) => c.note.clone().unwrap_or_default(),
            (None, None) => String::new(),
        };
        assert!(said.contains(says), "{input}: {said:?}");
        if let Some(c) = rep.changed.first() {
            assert!(c.fields.contains(&"text"), "{input}");
        }
    }
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

#[test]
fn templates_build_the_text_from_data_columns() {
    let mut cfg = Config::defaults().input;
    cfg.template = Some(
        template::Template::parse("Olá {nome}, sua fatura de {valor} vence em {vencimento}.")
            .unwrap(),
    );
    let input = "Nome;Valor;Vencimento;Celular;Código\n\
                 Ana;R$ 10,00;05/01/2027;11999999999;F1\n\
                 Bruno;;06/01/2027;11988888888;F2\n\
                 Carla; R$ 5; ;11977777777;F3\n";
    let (rows, rep) = run_with(input.as_bytes(), &cfg);
    assert_eq!(
        rows,
        vec![row(
            2,
            "5511999999999",
            "Olá Ana, sua fatura de R$ 10,00 vence em 05/01/2027.",
            "F1"
        )]
    );
    assert_eq!(
        rep.first_message.as_deref(),
        Some("Olá Ana, sua fatura de R$ 10,00 vence em 05/01/2027.")
    );
    let reasons: Vec<&str> = rep.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons[0].contains("{valor} is empty"), "{reasons:?}");
    assert!(reasons[1].contains("{vencimento} is empty"), "{reasons:?}");

    // A missing column rejects the input as a whole, naming what it has.
    let (rows, rep) = run_with(b"Nome;Celular\nAna;11999999999\n", &cfg);
    assert!(rows.is_empty());
    let why = rep.input_rejected.unwrap();
    assert!(
        why.contains("{valor}, {vencimento}") && why.contains("Nome, Celular"),
        "{why}"
    );

    // The rendered text follows the text rules: `;` sanitised, length checked.
    cfg.template = Some(template::Template::parse("{2}").unwrap());
    cfg.header = crate::config::HeaderChoice::No;
    let long = "x".repeat(1300);
    let input = format!("11999999999\ta;b\n11988888888\t{long}\n");
    let (rows, rep) = run_with(input.as_bytes(), &cfg);
    assert_eq!(rows, vec![row(1, "5511999999999", "a,b", "")]);
    assert_eq!(rep.rows_changed, 1);
    assert!(rep.rejected[0].reason.contains("at most 1280"));
}

#[test]
fn with_a_template_a_surplus_needs_absorb_column() {
    let mut cfg = Config::defaults().input;
    cfg.template = Some(template::Template::parse("Olá {nome}, pague {valor}").unwrap());
    let input = "nome,valor,celular\nSilva, Ana,10,21999999999\nBia,20,21988888888\n";
    let (rows, rep) = run_with(input.as_bytes(), &cfg);
    assert_eq!(rows, vec![row(3, "5521988888888", "Olá Bia, pague 20", "")]);
    assert!(
        rep.rejected[0].reason.contains("absorb_column"),
        "{:?}",
        rep.rejected
    );

    cfg.absorb_column = Some(crate::config::ColumnRef::Name("Nome".into()));
    let (rows, rep) = run_with(input.as_bytes(), &cfg);
    assert_eq!(
        rows,
        vec![
            row(2, "5521999999999", "Olá Silva, Ana, pague 10", ""),
            row(3, "5521988888888", "Olá Bia, pague 20", "")
        ]
    );
    assert_eq!(
        rep.changed[0].note.as_deref(),
        Some("column \"nome\" contained 1 unquoted ','; rebuilt")
    );
    // absorb_column naming a column the input lacks rejects the input.
    cfg.absorb_column = Some(crate::config::ColumnRef::Name("cliente".into()));
    let (_, rep) = run_with(input.as_bytes(), &cfg);
    assert!(rep
        .input_rejected
        .unwrap()
        .contains("absorb_column names the column \"cliente\""));
}

#[test]
fn a_subaccount_template_overrides_the_global_one() {
    let cfg = Config::parse(
        "[input]\ntemplate = \"global {nome}\"\n[subaccounts.COBRANCA]\ntemplate = \"cobrança {nome}\"\n",
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let input = b"nome;celular\nAna;11999999999\n";
    for (sub, want) in [
        (Some("COBRANCA"), "cobrança Ana"),
        (Some("OTHER"), "global Ana"),
        (None, "global Ana"),
    ] {
        let (rows, _) = run_with(input, &cfg.input_for(sub));
        assert_eq!(rows[0].2, want, "{sub:?}");
    }
}
