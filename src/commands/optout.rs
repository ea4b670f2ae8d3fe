//! `smsdrop optout list|add|remove|import FILE|export`: an operator's view of the opt-out list of
//! a subaccount (`--subaccount`, default `[batch] subaccount`). Numbers are normalised by the
//! rules rows are (`[input] default_country_code`, `national_lengths`), so an entry matches the
//! rows it must stop. Each change is one journal transaction (SQLite in WAL mode), so this works
//! while the daemon runs: the next conversion reads the list as it is then. Nothing here talks to
//! the gateway.

use crate::config::{check_subaccount, Config};
use crate::convert::rules::{normalize_number, NumberRules};
use crate::journal::{Journal, JournalError, Optout};
use crate::Outcome;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What `smsdrop optout` was asked to do.
#[derive(Debug)]
pub enum OptoutCmd {
    /// Print the list (a table, or JSON).
    List { json: bool },
    /// Put numbers on the list.
    Add { numbers: Vec<String> },
    /// Take numbers off the list.
    Remove { numbers: Vec<String> },
    /// Put the numbers of a CSV file on the list.
    Import { file: PathBuf },
    /// Write the list as CSV (`subaccount;number;since;source;detail`), to stdout or `out`.
    Export { out: Option<PathBuf> },
}

/// Why the command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OptoutError {
    /// Bad usage: no subaccount, a number that does not normalise (exit 2).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
}

/// The header `export` writes and `import` reads back.
pub const EXPORT_HEADER: &str = "subaccount;number;since;source;detail";

/// Runs `smsdrop optout`.
///
/// # Errors
/// [`OptoutError`]; nothing is recorded then.
pub fn run(cfg: &Config, subaccount: Option<&str>, cmd: OptoutCmd) -> Result<Outcome, OptoutError> {
    let sub = subaccount
        .map(str::to_owned)
        .or_else(|| cfg.batch.subaccount.clone());
    if let Some(s) = &sub {
        check_subaccount(s).map_err(OptoutError::Refused)?;
    }
    let need = || {
        sub.clone().ok_or_else(|| {
            OptoutError::Refused(
                "no subaccount: pass --subaccount NAME or set [batch] subaccount in the config"
                    .into(),
            )
        })
    };
    let mut out = io::stdout().lock();
    let printed = |e: io::Error| OptoutError::File {
        path: "stdout".into(),
        source: e,
    };
    match cmd {
        OptoutCmd::List { json } => {
            let sub = need()?;
            let list = match open(cfg, false)? {
                Some(j) => j.optouts(Some(&sub))?,
                None => vec![],
            };
            print_list(cfg, &sub, &list, json, &mut out).map_err(printed)?;
            Ok(Outcome::Ok)
        }
        OptoutCmd::Add { numbers } => {
            let sub = need()?;
            let numbers = normalised(cfg, &numbers)?;
            let mut j = open(cfg, true)?.expect("created");
            let added = j.add_optouts(&sub, &numbers, "operator", None)?;
            let _ = writeln!(
                out,
                "{added} of {} numbers added to {sub}'s opt-out list ({} were on it already)",
                numbers.len(),
                numbers.len() - added
            );
            Ok(Outcome::Ok)
        }
        OptoutCmd::Remove { numbers } => {
            let sub = need()?;
            let numbers = normalised(cfg, &numbers)?;
            let removed = match open(cfg, false)? {
                Some(mut j) => j.remove_optouts(&sub, &numbers)?,
                None => 0,
            };
            let _ = writeln!(
                out,
                "{removed} of {} numbers taken off {sub}'s opt-out list ({} were not on it)",
                numbers.len(),
                numbers.len() - removed
            );
            Ok(Outcome::Ok)
        }
        OptoutCmd::Import { file } => import(cfg, sub.as_deref(), &file, &mut out),
        OptoutCmd::Export { out: to } => {
            let sub = need()?;
            let list = match open(cfg, false)? {
                Some(j) => j.optouts(Some(&sub))?,
                None => vec![],
            };
            let write = |w: &mut dyn Write| write_export(cfg, &list, w);
            match to {
                Some(path) => crate::fsutil::write_replacing(&path, |w| write(w), true)
                    .map_err(|e| OptoutError::File { path, source: e })?,
                None => write(&mut out).map_err(printed)?,
            }
            Ok(Outcome::Ok)
        }
    }
}

/// The journal in `[state] dir`; `None` when there is none and `create` is false.
fn open(cfg: &Config, create: bool) -> Result<Option<Journal>, OptoutError> {
    let dir = &cfg.state.dir;
    if !create && !dir.join("journal.db").exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(|e| OptoutError::File {
        path: dir.clone(),
        source: e,
    })?;
    Ok(Some(Journal::open(dir)?))
}

fn rules(cfg: &Config) -> NumberRules<'_> {
    NumberRules {
        country_code: &cfg.input.default_country_code,
        national_lengths: &cfg.input.national_lengths,
    }
}

/// Every number normalised, or an error naming the first that is not a phone number.
fn normalised(cfg: &Config, numbers: &[String]) -> Result<Vec<String>, OptoutError> {
    numbers
        .iter()
        .map(|n| {
            normalize_number(n, rules(cfg)).map_err(|e| {
                OptoutError::Refused(format!(
                    "{n:?} is not a phone number ({e}); nothing was changed"
                ))
            })
        })
        .collect()
}

/// When, in `[batch] timezone`, with `fmt`.
fn since(cfg: &Config, o: &Optout, fmt: &str) -> String {
    chrono::DateTime::from_timestamp_millis(o.at_ms)
        .unwrap_or_default()
        .with_timezone(&cfg.batch.zone.tz())
        .format(fmt)
        .to_string()
}

fn print_list(
    cfg: &Config,
    sub: &str,
    list: &[Optout],
    json: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    if json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|o| {
                serde_json::json!({
                    "subaccount": o.subaccount, "number": o.number,
                    "since": since(cfg, o, "%Y-%m-%dT%H:%M:%S%:z"),
                    "source": o.source, "detail": o.detail,
                })
            })
            .collect();
        return writeln!(out, "{}", serde_json::Value::from(v));
    }
    let width = list
        .iter()
        .map(|o| o.subaccount.len())
        .max()
        .unwrap_or(0)
        .max("SUBACCOUNT".len());
    writeln!(
        out,
        "{:width$}  {:15}  {:16}  {:8}  DETAIL",
        "SUBACCOUNT", "NUMBER", "SINCE", "SOURCE"
    )?;
    for o in list {
        writeln!(
            out,
            "{:width$}  {:15}  {:16}  {:8}  {}",
            o.subaccount,
            o.number,
            since(cfg, o, "%Y-%m-%d %H:%M"),
            o.source,
            o.detail.as_deref().unwrap_or_default()
        )?;
    }
    writeln!(out, "{} numbers on {sub}'s opt-out list", list.len())
}

fn write_export(cfg: &Config, list: &[Optout], out: &mut dyn Write) -> io::Result<()> {
    use crate::report::csv_field;
    writeln!(out, "{EXPORT_HEADER}")?;
    for o in list {
        writeln!(
            out,
            "{};{};{};{};{}",
            o.subaccount,
            o.number,
            since(cfg, o, "%Y-%m-%dT%H:%M:%S%:z"),
            csv_field(&o.source),
            csv_field(o.detail.as_deref().unwrap_or_default())
        )?;
    }
    out.flush()
}

/// What reading an import file found.
#[derive(Debug, Default, PartialEq, Eq)]
struct ImportFile {
    /// (subaccount from the file, when it has that column; number), in file order.
    numbers: Vec<(Option<String>, String)>,
    /// (line, why) of lines without a number.
    bad: Vec<(usize, String)>,
}

/// Reads a CSV of numbers as ERPs and the gateway's portal export them: fields split by `;`,
/// `,` or TAB (the one the first line uses most), optionally quoted; the first line is a header
/// when its first field has no digit (a `subaccount` column there, as `export` writes, names
/// each line's subaccount); a line's number is its first field that normalises.
fn read_import(text: &str, rules: NumberRules<'_>) -> ImportFile {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let delim = [';', ',', '\t']
        .into_iter()
        .max_by_key(|d| (first.matches(*d).count(), *d == ';'))
        .filter(|d| first.contains(*d))
        .unwrap_or(';');
    let mut found = ImportFile::default();
    let mut sub_col = None;
    let mut header_seen = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = split(line, delim);
        if !header_seen {
            header_seen = true;
            if !fields[0].chars().any(|c| c.is_ascii_digit()) {
                sub_col = fields
                    .iter()
                    .position(|f| f.trim().eq_ignore_ascii_case("subaccount"));
                continue;
            }
        }
        let number = fields
            .iter()
            .enumerate()
            .filter(|(c, _)| Some(*c) != sub_col)
            .find_map(|(_, f)| normalize_number(f, rules).ok());
        match number {
            Some(n) => {
                let sub = sub_col
                    .and_then(|c| fields.get(c))
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty());
                found.numbers.push((sub, n));
            }
            None => found.bad.push((
                i + 1,
                format!(
                    "no phone number in {:?}",
                    line.chars().take(80).collect::<String>()
                ),
            )),
        }
    }
    found
}

/// A line's fields, a quoted field unquoted (`""` inside is one `"`).
fn split(line: &str, delim: char) -> Vec<String> {
    let mut fields = vec![];
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            c if c == delim && !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn import(
    cfg: &Config,
    sub: Option<&str>,
    file: &Path,
    out: &mut dyn Write,
) -> Result<Outcome, OptoutError> {
    let bytes = std::fs::read(file).map_err(|e| OptoutError::File {
        path: file.to_owned(),
        source: e,
    })?;
    let found = read_import(&String::from_utf8_lossy(&bytes), rules(cfg));
    // Per subaccount: the file's column, else --subaccount / [batch] subaccount.
    let mut by_sub: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (from_file, number) in found.numbers {
        let Some(s) = from_file.or_else(|| sub.map(str::to_owned)) else {
            return Err(OptoutError::Refused(
                "no subaccount: pass --subaccount NAME or set [batch] subaccount in the config"
                    .into(),
            ));
        };
        check_subaccount(&s).map_err(OptoutError::Refused)?;
        by_sub.entry(s).or_default().push(number);
    }
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let detail = format!("imported from {name}");
    let mut j = open(cfg, true)?.expect("created");
    for (s, numbers) in &by_sub {
        let added = j.add_optouts(s, numbers, "import", Some(&detail))?;
        let _ = writeln!(
            out,
            "{s}: {added} numbers added from {name} ({} were on the list already)",
            numbers.len() - added
        );
    }
    if by_sub.is_empty() {
        let _ = writeln!(out, "no numbers found in {name}");
    }
    for (line, why) in &found.bad {
        let _ = writeln!(out, "line {line}: not imported: {why}");
    }
    Ok(if found.bad.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Partial
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR: NumberRules<'static> = NumberRules {
        country_code: "55",
        national_lengths: &[10, 11],
    };

    #[test]
    fn imports_read_what_erps_portals_and_export_write() {
        let portal =
            "Telefone,Nome\n\"(11) 98765-4321\",Ana\n+55 21 99876-5432,Bia\nsem numero,x\n";
        let f = read_import(portal, BR);
        assert_eq!(
            f.numbers,
            [
                (None, "5511987654321".into()),
                (None, "5521998765432".into())
            ]
        );
        assert_eq!(f.bad.len(), 1);
        assert_eq!(f.bad[0].0, 4);
        // No header (its first field has digits), TAB, the number not first.
        assert_eq!(read_import("12;x\n", BR).bad[0].0, 1);
        let tabs = "1\t11987654321\n\n2\t011987654322\n";
        let f = read_import(tabs, BR);
        assert_eq!(f.numbers.len(), 2, "{f:?}");
        assert_eq!(f.numbers[1].1, "5511987654322");
        // What export writes: the subaccount column names each line's subaccount.
        let export = format!(
            "{EXPORT_HEADER}\nACME;5511987654321;2026-12-07T14:03:00-03:00;reply;\"replied \"\"SAIR\"\"\"\n"
        );
        let f = read_import(&export, BR);
        assert_eq!(f.numbers, [(Some("ACME".into()), "5511987654321".into())]);
        assert!(f.bad.is_empty());
    }

    #[test]
    fn fields_split_outside_quotes() {
        assert_eq!(split("a;\"b;c\";\"d\"\"e\"", ';'), ["a", "b;c", "d\"e"]);
    }
}
