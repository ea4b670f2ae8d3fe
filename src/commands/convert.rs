//! `smsdrop convert`: a dry run that writes the batch files an upload would send into a local
//! folder and reports every input; it never connects anywhere. Rows to numbers on the
//! subaccount's opt-out list are left out as the daemon would, when `[state] dir` holds a
//! journal to read the list from.

use crate::batch::{BatchName, BatchWriter};
use crate::config::check_subaccount;
use crate::config::Config;
use crate::convert::{convert, ConvertError, ConvertReport, RowSink, SendAt};
use crate::journal::{Journal, JournalError};
use crate::optout::{Filter, OptoutList};
use crate::Outcome;
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What `convert` was asked to do, validated.
#[derive(Debug)]
pub struct ConvertArgs {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub subaccount: Option<String>,
    pub date: Option<NaiveDate>,
    pub json: bool,
}

/// One batch file written.
#[derive(Debug, Serialize)]
pub struct Output {
    pub name: String,
    #[serde(serialize_with = "lossy")]
    pub path: PathBuf,
    pub rows: u64,
}

/// One input's result.
#[derive(Debug, Serialize)]
pub struct InputResult {
    #[serde(serialize_with = "lossy")]
    pub input: PathBuf,
    pub outputs: Vec<Output>,
    #[serde(flatten)]
    pub report: ConvertReport,
    /// Rows not written because their number opted out (`[optout] apply`).
    pub rows_opted_out: u64,
    /// The first of them: line, number, reason.
    pub opted_out_rows: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    ok: bool,
    inputs: &'a [InputResult],
}

/// Paths as text for JSON; a name that is not UTF-8 shows with U+FFFD instead of failing.
fn lossy<S: serde::Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// Errors that stop `convert` as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ConvertCmdError {
    #[error("{0}")]
    Usage(String),
    #[error("output folder {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("reading the opt-out list: {0}")]
    Journal(#[from] JournalError),
}

/// The years a batch file name can carry: its date is exactly 8 digits (`YYYYMMDD`), and a
/// sending day before 2000 is a typo.
pub const YEARS: std::ops::RangeInclusive<i32> = 2000..=9999;

/// Parses `--date`: `YYYY-MM-DD` with a year from 2000 to 9999. The message says what is wrong
/// (the caller shows the value).
///
/// # Errors
/// Not `YYYY-MM-DD`, a year out of range, or a day the calendar does not have.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let not_a_date = || "not a date; use YYYY-MM-DD, e.g. 2026-11-25".to_owned();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(not_a_date());
    };
    if !digits(y) || !digits(m) || !digits(d) || m.len() != 2 || d.len() != 2 {
        return Err(not_a_date());
    }
    let year = if y.len() == 4 {
        y.parse::<i32>().ok()
    } else {
        None
    };
    let Some(year) = year.filter(|n| YEARS.contains(n)) else {
        return Err(year_out_of_range(y));
    };
    let (m, d) = (m.parse().expect("2 digits"), d.parse().expect("2 digits"));
    NaiveDate::from_ymd_opt(year, m, d).ok_or_else(|| format!("{s} is not a day of the calendar"))
}

fn year_out_of_range(year: &str) -> String {
    format!("year {year} is out of range; use a year from 2000 to 9999")
}

/// Runs `smsdrop convert`.
///
/// # Errors
/// [`ConvertCmdError::Usage`] for bad arguments; [`ConvertCmdError::Output`] when the output
/// folder cannot be written.
pub fn run(cfg: &Config, args: &ConvertArgs) -> Result<Outcome, ConvertCmdError> {
    let subaccount = args
        .subaccount
        .clone()
        .or_else(|| cfg.batch.subaccount.clone())
        .ok_or_else(|| {
            ConvertCmdError::Usage(
                "no subaccount: pass --subaccount NAME or set [batch] subaccount in the config"
                    .into(),
            )
        })?;
    check_subaccount(&subaccount).map_err(ConvertCmdError::Usage)?;
    if let Some(date) = args.date.filter(|d| !YEARS.contains(&d.year())) {
        let year = date.format("%Y").to_string();
        return Err(ConvertCmdError::Usage(format!(
            "--date {date}: {}",
            year_out_of_range(&year)
        )));
    }
    let out_err = |source| ConvertCmdError::Output {
        path: args.out.clone(),
        source,
    };
    std::fs::create_dir_all(&args.out).map_err(out_err)?;
    let mut namer = Namer {
        dir: &args.out,
        next: BatchName {
            subaccount,
            date: args
                .date
                .unwrap_or_else(|| cfg.batch.zone.day_of(chrono::Utc::now())),
            seq: 1,
        },
    };
    let optouts = optout_list(cfg, &namer.next.subaccount)?;
    let mut results = vec![];
    let mut stdout = io::stdout().lock();
    // A closed stdout (`| head`) must not stop the conversion: printing errors are ignored.
    let mut printing = true;
    for input in &args.inputs {
        let r = convert_one(cfg, input, &mut namer, optouts.as_ref()).map_err(out_err)?;
        if !args.json && printing {
            printing = print_human(&mut stdout, &r).is_ok();
        }
        results.push(r);
    }
    let ok = results
        .iter()
        .all(|r| r.report.input_rejected.is_none() && r.report.rows_rejected == 0);
    if args.json {
        let doc = serde_json::to_string_pretty(&Summary {
            ok,
            inputs: &results,
        })
        .expect("reports always serialise");
        let _ = writeln!(stdout, "{doc}");
    }
    Ok(if ok { Outcome::Ok } else { Outcome::Partial })
}

/// The subaccount's opt-out list, when `[optout] apply` and `[state] dir` holds a journal (read
/// while the daemon runs). Without one (a dry run on another machine, or before the daemon first
/// ran) nothing is kept back: every valid row is written.
fn optout_list(cfg: &Config, subaccount: &str) -> Result<Option<OptoutList>, JournalError> {
    if !cfg.optout.apply {
        return Ok(None);
    }
    match Journal::open_read_only(&cfg.state.dir)? {
        Some(j) => Ok(Some(crate::optout::load(&j, subaccount)?)),
        None => Ok(None),
    }
}

/// Hands out `01`, `02`, ... skipping names already in the folder.
struct Namer<'a> {
    dir: &'a Path,
    next: BatchName,
}

fn convert_one(
    cfg: &Config,
    input: &Path,
    namer: &mut Namer<'_>,
    optouts: Option<&OptoutList>,
) -> io::Result<InputResult> {
    let mut result = InputResult {
        input: input.to_owned(),
        outputs: vec![],
        report: ConvertReport::default(),
        rows_opted_out: 0,
        opted_out_rows: vec![],
    };
    let file = match File::open(input) {
        Ok(f) => f,
        Err(e) => {
            result.report.input_rejected = Some(format!("cannot open the file: {e}"));
            return Ok(result);
        }
    };
    let mut writer = BatchWriter::new(
        namer.dir,
        cfg.batch.max_rows_per_file,
        cfg.batch.header_line,
    );
    let input_cfg = cfg.input_for(Some(&namer.next.subaccount));
    let mut filter = None;
    let sink: &mut dyn RowSink = match optouts {
        Some(list) => filter.insert(Filter::new(&mut writer, list)),
        None => &mut writer,
    };
    // A dry run sends now: rows past their send_before now are rejected.
    let converted = convert(file, &input_cfg, SendAt::now(cfg.batch.zone), sink);
    let kept_back = filter.map(|f| (f.skipped, f.billing));
    match converted {
        Ok(mut report) => {
            if let Some((skipped, billing)) = kept_back {
                report.not_sent(skipped.len() as u64, &billing);
                result.rows_opted_out = skipped.len() as u64;
                result.opted_out_rows = crate::optout::listed(&skipped, &cfg.batch.zone);
            }
            result.report = report;
        }
        Err(ConvertError::Read(e)) => {
            result.report.input_rejected = Some(format!("reading the file failed: {e}"));
            return Ok(result);
        }
        Err(ConvertError::Write(e)) => return Err(e),
    }
    let pending = writer.finish()?;
    if result.report.input_rejected.is_some() {
        return Ok(result); // dropping `pending` removes the temporary files
    }
    for mut batch in pending {
        let rows = batch.rows;
        loop {
            let name = namer.next.to_string();
            let path = namer.dir.join(&name);
            namer.next.seq += 1;
            match batch.commit(&path) {
                Ok(()) => {
                    result.outputs.push(Output { name, path, rows });
                    break;
                }
                Err((back, e)) if e.kind() == io::ErrorKind::AlreadyExists => batch = back,
                Err((_, e)) => return Err(e),
            }
        }
    }
    Ok(result)
}

fn print_human(out: &mut impl Write, r: &InputResult) -> io::Result<()> {
    let rep = &r.report;
    writeln!(out, "{}:", r.input.display())?;
    if let Some(why) = &rep.input_rejected {
        writeln!(out, "  REJECTED: {why}")?;
    }
    writeln!(
        out,
        "  {} rows read, {} to send, {} rejected, {} changed (sanitised or rebuilt)",
        rep.rows_read, rep.rows_sent, rep.rows_rejected, rep.rows_changed
    )?;
    if !rep.encoding.is_empty() {
        let header = match &rep.header {
            Some(h) => format!("header: {}", h.join(", ")),
            None => "no header".into(),
        };
        if rep.delimiter.is_empty() {
            writeln!(out, "  read as {}, {header}", rep.encoding)?;
        } else {
            writeln!(
                out,
                "  read as {}, delimiter {:?}, {header}",
                rep.encoding, rep.delimiter
            )?;
        }
    }
    if rep.rows_sent > 0 {
        let b = &rep.billing;
        writeln!(
            out,
            "  billing: {} SMS parts ({} GSM-7 messages, {} UCS-2, {} concatenated)",
            b.parts, b.gsm7_messages, b.ucs2_messages, b.concatenated_messages
        )?;
    }
    if r.rows_opted_out > 0 {
        writeln!(
            out,
            "  {} rows to numbers that opted out, not written (smsdrop optout list)",
            r.rows_opted_out
        )?;
    }
    if let Some(m) = &rep.first_message {
        writeln!(out, "  first message: {m}")?;
    }
    for o in &r.outputs {
        writeln!(out, "  wrote {} ({} rows)", o.path.display(), o.rows)?;
    }
    for w in &rep.warnings {
        writeln!(out, "  warning: {w}")?;
    }
    const SHOWN: usize = 20;
    for row in rep.rejected.iter().take(SHOWN) {
        writeln!(out, "  line {}: rejected: {}", row.line, row.reason)?;
    }
    if rep.rows_rejected > SHOWN as u64 {
        writeln!(
            out,
            "  ... and {} more rejected rows (--json lists up to 1000)",
            rep.rows_rejected - SHOWN as u64
        )?;
    }
    for row in rep.changed.iter().take(SHOWN) {
        let note = row
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  line {}: changed: {}{note}",
            row.line,
            row.fields.join(", ")
        )?;
    }
    for o in r.opted_out_rows.iter().take(SHOWN) {
        writeln!(
            out,
            "  line {}: {}",
            o["line"],
            o["reason"].as_str().unwrap_or_default()
        )?;
    }
    if rep.rows_changed > SHOWN as u64 {
        writeln!(
            out,
            "  ... and {} more changed rows",
            rep.rows_changed - SHOWN as u64
        )?;
    }
    Ok(())
}
