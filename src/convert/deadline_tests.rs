//! Rows with a deadline (`[input.columns] send_before`) through [`convert`]: which are sent,
//! which are rejected and why, against a fixed send time.

use super::*;
use crate::config::{ColumnRef, Config, Zone};
use chrono::{DateTime, Utc};

type Rows = Vec<(u64, String, String, String)>;

/// Monday 14/12/2026 08:00 in São Paulo (UTC-3).
fn send_at(later: bool) -> SendAt {
    SendAt {
        at: DateTime::parse_from_rfc3339("2026-12-14T11:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
        later,
        zone: Zone::Named(chrono_tz::America::Sao_Paulo),
    }
}

fn cfg_with(send_before: ColumnRef) -> InputConfig {
    let mut cfg = Config::defaults().input;
    cfg.columns.send_before = Some(send_before);
    cfg
}

fn run(input: &str, cfg: &InputConfig, later: bool) -> (Rows, ConvertReport) {
    let mut rows = Rows::new();
    let report = convert(
        std::io::Cursor::new(input.as_bytes().to_vec()),
        cfg,
        send_at(later),
        &mut rows,
    )
    .unwrap();
    (rows, report)
}

fn sent_lines(rows: &Rows) -> Vec<u64> {
    rows.iter().map(|r| r.0).collect()
}

fn rejected(report: &ConvertReport) -> Vec<(u64, &str, &str)> {
    report
        .rejected
        .iter()
        .map(|r| (r.line, r.number.as_str(), r.reason.as_str()))
        .collect()
}

#[test]
fn a_date_is_good_until_the_end_of_its_day() {
    let input = "telefone;mensagem;vencimento\n\
                 11999990001;hoje;14/12/2026\n\
                 11999990002;ontem;13/12/2026\n\
                 11999990003;iso hoje;2026-12-14\n\
                 11999990004;iso ontem;2026-12-13\n";
    let (rows, rep) = run(
        input,
        &cfg_with(ColumnRef::Name("Vencimento".into())),
        false,
    );
    assert_eq!(sent_lines(&rows), [2, 4]);
    assert_eq!(
        rejected(&rep),
        [
            (3, "11999990002", "past its send_before (13/12/2026)"),
            (5, "11999990004", "past its send_before (2026-12-13)"),
        ]
    );
    assert_eq!((rep.rows_sent, rep.rows_rejected), (2, 2));
}

#[test]
fn a_date_time_is_good_up_to_the_send_time() {
    let input = "telefone;mensagem;vencimento\n\
                 11999990001;igual;14/12/2026 08:00\n\
                 11999990002;depois;14/12/2026 08:01\n\
                 11999990003;antes;14/12/2026 07:59\n\
                 11999990004;um segundo antes;14/12/2026 07:59:59\n\
                 11999990005;com offset;2026-12-14T11:00:00Z\n\
                 11999990006;offset antes;2026-12-14T08:00:00-02:00\n";
    let (rows, rep) = run(input, &cfg_with(ColumnRef::Name("vencimento".into())), true);
    assert_eq!(sent_lines(&rows), [2, 3, 6]);
    let when = "it would be sent Mon 14/12/2026 08:00";
    assert_eq!(
        rejected(&rep),
        [
            (
                4,
                "11999990003",
                &*format!("past its send_before (14/12/2026 07:59): {when}")
            ),
            (
                5,
                "11999990004",
                &*format!("past its send_before (14/12/2026 07:59:59): {when}")
            ),
            (
                7,
                "11999990006",
                &*format!("past its send_before (2026-12-14T08:00:00-02:00): {when}")
            ),
        ]
    );
}

#[test]
fn a_cell_that_is_no_date_rejects_its_row_and_an_empty_one_is_no_deadline() {
    let input = "telefone;mensagem;vencimento\n\
                 11999990001;sem prazo;\n\
                 11999990002;data ruim;31/02/2026\n\
                 11999990003;so espacos;   \n\
                 11999990004;texto;amanhã\n\
                 11999990005;sem campo\n";
    let (rows, rep) = run(
        input,
        &cfg_with(ColumnRef::Name("vencimento".into())),
        false,
    );
    assert_eq!(sent_lines(&rows), [2, 4, 6]);
    assert_eq!(
        rejected(&rep),
        [
            (
                3,
                "11999990002",
                "send_before \"31/02/2026\" is not a date in %d/%m/%Y (or %d/%m/%Y %H:%M, or ISO \
                 8601)"
            ),
            (
                5,
                "11999990004",
                "send_before \"amanhã\" is not a date in %d/%m/%Y (or %d/%m/%Y %H:%M, or ISO 8601)"
            ),
        ]
    );
}

#[test]
fn a_positional_column_in_a_file_without_header() {
    let mut cfg = cfg_with(ColumnRef::Index(0));
    cfg.header = crate::config::HeaderChoice::No;
    let input = "15/12/2026;11999990001;amanha;A-1\n\
                 01/12/2026;11999990002;passou;A-2\n";
    let (rows, rep) = run(input, &cfg, false);
    // The deadline's column is skipped when number, text and id are taken by position.
    assert_eq!(
        rows,
        [(
            1,
            "5511999990001".to_owned(),
            "amanha".to_owned(),
            "A-1".to_owned()
        )]
    );
    assert_eq!(
        rejected(&rep),
        [(2, "11999990002", "past its send_before (01/12/2026)")]
    );
}

#[test]
fn a_workbook_s_date_cells_are_deadlines() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let mut book = Workbook::new();
    let date = Format::new().set_num_format("dd/mm/yyyy");
    let s = book.add_worksheet();
    for (c, h) in ["Celular", "Mensagem", "Vencimento"].iter().enumerate() {
        s.write_string(0, c as u16, *h).unwrap();
    }
    for (r, day) in [(1, 14), (2, 13)] {
        s.write_string(r, 0, format!("1199999000{r}")).unwrap();
        s.write_string(r, 1, "fatura").unwrap();
        let d = ExcelDateTime::from_ymd(2026, 12, day).unwrap();
        s.write_datetime_with_format(r, 2, &d, &date).unwrap();
    }
    let mut rows = Rows::new();
    let rep = convert(
        std::io::Cursor::new(book.save_to_buffer().unwrap()),
        &cfg_with(ColumnRef::Name("vencimento".into())),
        send_at(false),
        &mut rows,
    )
    .unwrap();
    assert_eq!(sent_lines(&rows), [2]);
    assert_eq!(
        rejected(&rep),
        [(3, "11999990002", "past its send_before (13/12/2026)")]
    );
}

#[test]
fn the_send_time_is_recorded_only_when_deadlines_are_checked() {
    let input = "telefone;mensagem;vencimento\n11999990001;oi;01/01/2020\n";
    // Not configured: the column is just a column, and nothing is recorded.
    let (rows, rep) = run(input, &Config::defaults().input, false);
    assert_eq!(sent_lines(&rows), [2]);
    assert_eq!(rep.send_at, None);
    assert!(serde_json::to_value(&rep).unwrap().get("send_at").is_none());
    let (rows, rep) = run(input, &cfg_with(ColumnRef::Index(2)), true);
    assert_eq!(sent_lines(&rows), Vec::<u64>::new());
    assert_eq!(rep.send_at, Some(send_at(true)));
    assert_eq!(
        serde_json::to_value(&rep).unwrap()["send_at"],
        serde_json::json!({"at": "2026-12-14T11:00:00Z", "later": true})
    );
}

#[test]
fn a_deadline_column_missing_or_shared_rejects_the_input() {
    let input = "telefone;mensagem\n11999990001;oi\n";
    let (rows, rep) = run(input, &cfg_with(ColumnRef::Name("prazo".into())), false);
    assert!(rows.is_empty());
    assert_eq!(
        rep.input_rejected.as_deref(),
        Some(
            "[input] columns.send_before names the column \"prazo\", which is not in the header \
             (telefone, mensagem)"
        )
    );
    // Configured for the same column as the number.
    let mut cfg = cfg_with(ColumnRef::Name("telefone".into()));
    cfg.columns.number = Some(ColumnRef::Index(0));
    let (_, rep) = run(input, &cfg, false);
    assert_eq!(
        rep.input_rejected.as_deref(),
        Some("two fields are read from the same column (1); fix [input] columns")
    );
}
