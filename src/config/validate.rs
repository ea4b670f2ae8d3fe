//! Turns a [`RawConfig`] into a typed [`Config`], rejecting bad values with the key that holds them.

use super::delivery::{self, InboxConfig, ReportConfig, SftpConfig, StateConfig, TrackConfig};
use super::names::check_subaccount;
use super::raw::{RawColumn, RawConfig, RawHeader};
use super::template::Template;
use super::ConfigError;
use chrono::{NaiveDate, TimeZone, Utc};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where ERP files arrive (`[inbox]`).
    pub inbox: InboxConfig,
    /// How ERP exports are read (`[input]`).
    pub input: InputConfig,
    /// How batch files are named and cut (`[batch]`).
    pub batch: BatchConfig,
    /// The gateway's SFTP server (`[sftp]`); required to deliver, not to convert.
    pub sftp: Option<SftpConfig>,
    /// Learning outcomes (`[track]`).
    pub track: TrackConfig,
    /// Journal and archives (`[state]`).
    pub state: StateConfig,
    /// Reports, hook and logs (`[report]`).
    pub report: ReportConfig,
    /// Message-level statuses (`[status]`).
    pub status: super::StatusConfig,
    /// The operations endpoint (`[http]`).
    pub http: super::HttpConfig,
    /// Settings per subaccount folder (`[subaccounts.NAME]`).
    pub subaccounts: BTreeMap<String, SubaccountConfig>,
    /// When batches may go out (`[schedule]`, and per subaccount).
    pub schedule: super::ScheduleConfig,
    /// Customers' replies (`[replies]`).
    pub replies: super::RepliesConfig,
    /// The opt-out list's rules (`[optout]`).
    pub optout: super::OptoutConfig,
    /// Where this configuration came from, for messages.
    pub source: PathBuf,
}

/// `[subaccounts.NAME]`: what differs for the files of one subaccount.
#[derive(Debug, Clone, Default)]
pub struct SubaccountConfig {
    /// Overrides `[input] template` for this subaccount's files.
    pub template: Option<Template>,
}

impl Config {
    /// How the files of `subaccount` are read: `[input]` with that subaccount's overrides.
    pub fn input_for(&self, subaccount: Option<&str>) -> Cow<'_, InputConfig> {
        match subaccount
            .and_then(|s| self.subaccounts.get(s))
            .and_then(|s| s.template.clone())
        {
            Some(t) => {
                let mut input = self.input.clone();
                input.template = Some(t);
                Cow::Owned(input)
            }
            None => Cow::Borrowed(&self.input),
        }
    }
}

/// `[input]`: reading ERP exports.
#[derive(Debug, Clone)]
pub struct InputConfig {
    /// Field delimiter, or sniffed from the first lines.
    pub delimiter: Delimiter,
    /// Character encoding of the input.
    pub encoding: EncodingChoice,
    /// Whether the first row names the columns.
    pub header: HeaderChoice,
    /// Explicit column mapping; unset columns are found by header name or position.
    pub columns: Columns,
    /// Digits put in front of national numbers (e.g. `55`); empty turns prefixing off.
    pub default_country_code: String,
    /// Digit counts that mark a number as national (Brazil: 10 or 11).
    pub national_lengths: Vec<usize>,
    /// What to do with `;` and line breaks inside fields.
    pub sanitize: Sanitize,
    /// What a bad row does to the rest of its file.
    pub invalid_rows: InvalidRows,
    /// What a row with more fields than the header gets.
    pub extra_fields: ExtraFields,
    /// The one column that may hold unquoted delimiters (default: the text column, when every
    /// other column is the number or the correlation id).
    pub absorb_column: Option<ColumnRef>,
    /// Builds each row's text from its columns; the text column is then not needed.
    pub template: Option<Template>,
    /// The sheet of a workbook to read (default: the first).
    pub sheet: Option<String>,
    /// How date cells of a workbook are written (chrono `strftime`), for templates.
    pub date_format: String,
    /// Largest workbook read, in bytes; a workbook is read whole into memory.
    pub max_workbook_bytes: u64,
}

/// What a row with more fields than the header (an unquoted delimiter inside a field) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraFields {
    /// Joined back into the one free-text column when every other column is anchored to the
    /// left or the right of it; the row is reported as changed. Ambiguous rows are rejected.
    JoinText,
    /// Always rejected.
    Reject,
}

/// The field delimiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    /// Picked among `;` `,` TAB `|` by consistency over the first lines.
    Auto,
    /// Always this byte.
    Fixed(u8),
}

/// The input's character encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingChoice {
    /// UTF-8 where valid (BOM stripped; UTF-16 when it has a BOM), otherwise Windows-1252.
    Auto,
    Utf8,
    Windows1252,
    Latin1,
}

/// Whether the first row is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChoice {
    Auto,
    Yes,
    No,
}

/// Where each field is found.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub number: Option<ColumnRef>,
    pub text: Option<ColumnRef>,
    pub correlation_id: Option<ColumnRef>,
    /// Each row's deadline (a date or date-time): a row that would be sent after it is rejected.
    /// Only ever set here: it is never found by header name or position.
    pub send_before: Option<ColumnRef>,
}

/// A column by header name or by 0-based position (written 1-based in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRef {
    Name(String),
    Index(usize),
}

/// What to do with characters the batch format cannot carry (`;`, line breaks, tabs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sanitize {
    /// `;` becomes `,`, each line break or tab one space; the row is reported as changed.
    Replace,
    /// The row is rejected.
    Reject,
}

/// What a bad row does to its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidRows {
    /// Good rows go, bad ones are reported.
    Skip,
    /// One bad row rejects the whole input.
    RejectFile,
}

/// `[batch]`: naming and cutting batch files.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The gateway subaccount used for files at the top of the inbox.
    pub subaccount: Option<String>,
    /// The zone whose calendar day goes into file names.
    pub zone: Zone,
    /// Most rows in one batch file; larger inputs are split.
    pub max_rows_per_file: usize,
    /// Whether each batch file starts with `number;text;correlationId;`.
    pub header_line: bool,
    /// What a row already sent (same subaccount, number and text, within `[inbox]
    /// duplicate_days`) gets.
    pub duplicate_rows: DuplicateRows,
}

/// `[batch] duplicate_rows`: a row whose number and text were already sent for its subaccount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicateRows {
    /// Not sent again; reported with where it went before (the ERP exporting "every open
    /// invoice" each hour sends each message once).
    Skip,
    /// Sent again (each export is a new send).
    Send,
}

/// A time zone: the machine's own or a named IANA zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// For `"local"`: the machine's zone by name (e.g. `Etc/UTC`), its current offset from UTC,
    /// and whether that is UTC (a server's default, rarely the sending day the gateway means).
    /// `None` for a named zone.
    pub fn local_resolution(&self) -> Option<(String, String, bool)> {
        if *self != Zone::Local {
            return None;
        }
        let name = iana_time_zone::get_timezone().unwrap_or_else(|_| "unknown".into());
        let offset = chrono::Local::now().offset().local_minus_utc();
        let utc = offset == 0;
        Some((name, chrono::Local::now().format("%:z").to_string(), utc))
    }

    /// This zone as an IANA zone: the machine's own by name for `"local"` (UTC when the machine
    /// cannot name it).
    pub fn tz(&self) -> chrono_tz::Tz {
        match self {
            Zone::Named(tz) => *tz,
            Zone::Local => iana_time_zone::get_timezone()
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(chrono_tz::UTC),
        }
    }

    /// The calendar day of `now` in this zone.
    pub fn day_of(&self, now: chrono::DateTime<Utc>) -> NaiveDate {
        match self {
            Zone::Local => now.with_timezone(&chrono::Local).date_naive(),
            Zone::Named(tz) => tz.from_utc_datetime(&now.naive_utc()).date_naive(),
        }
    }
}

/// The delimiters `auto` chooses from, in order of preference on a tie.
pub const DELIMITERS: [u8; 4] = [b';', b',', b'\t', b'|'];

pub(super) fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        key: key.to_owned(),
        message,
    };
    let d = delivery::validate(
        delivery::Raw {
            inbox: raw.inbox,
            sftp: raw.sftp,
            track: raw.track,
            state: raw.state,
            report: raw.report,
        },
        path,
    )?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && path.exists());
    let resolve = |p: &str| -> std::path::PathBuf {
        let p = std::path::PathBuf::from(p);
        match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p,
        }
    };
    let replies = super::replies::validate_replies(raw.replies, path, &resolve)?;
    let optout = super::replies::validate_optout(raw.optout, path)?;
    let mut status = super::status::validate(raw.status, path, &resolve)?;
    if replies.mode != super::RepliesMode::Off {
        // A reply names the message it answers by its correlation id: every row gets one and
        // is recorded, as with message statuses.
        if !status.tracks() && !status.correlation_ids_set {
            status.correlation_ids = super::IdMode::GenerateMissing;
        }
        status.record_messages = true;
        if replies.mode.queries() && (status.username.is_none() || status.token.is_none()) {
            return Err(bad(
                "replies.mode",
                "replies are fetched from the gateway's API with [status]'s credentials: set \
                 [status] username and token_env or token_file"
                    .into(),
            ));
        }
        if replies.mode.listens() && status.webhook_listen.is_none() {
            return Err(bad(
                "replies.mode",
                "replies are pushed to the status webhook's listener: set [status] \
                 webhook_listen, e.g. \"127.0.0.1:8089\""
                    .into(),
            ));
        }
        let reserved = ["/", "/metrics", "/healthz"];
        if replies.mode.listens()
            && (reserved.contains(&replies.webhook_path.as_str())
                || replies.webhook_path.starts_with("/jobs"))
        {
            return Err(bad(
                "replies.webhook_path",
                format!(
                    "{:?} is a path of the operations endpoint; use e.g. \"/sms-reply\"",
                    replies.webhook_path
                ),
            ));
        }
        if replies.mode.listens() && replies.webhook_path == status.webhook_path {
            return Err(bad(
                "replies.webhook_path",
                format!(
                    "{:?} is [status] webhook_path too; give replies their own path",
                    replies.webhook_path
                ),
            ));
        }
    }
    let http = super::http::validate(raw.http, path)?;
    let i = raw.input;
    let delimiter = match i.delimiter.as_str() {
        "auto" => Delimiter::Auto,
        ";" => Delimiter::Fixed(b';'),
        "," => Delimiter::Fixed(b','),
        "\t" | "tab" | "\\t" => Delimiter::Fixed(b'\t'),
        "|" => Delimiter::Fixed(b'|'),
        other => {
            return Err(bad(
                "input.delimiter",
                format!("{other:?} is not allowed; use \"auto\", \";\", \",\", \"tab\" or \"|\""),
            ))
        }
    };
    let encoding = match i.encoding.to_ascii_lowercase().as_str() {
        "auto" => EncodingChoice::Auto,
        "utf-8" | "utf8" => EncodingChoice::Utf8,
        "windows-1252" | "cp1252" => EncodingChoice::Windows1252,
        "iso-8859-1" | "latin1" | "latin-1" => EncodingChoice::Latin1,
        _ => {
            return Err(bad(
                "input.encoding",
                format!(
                "{:?} is not allowed; use \"auto\", \"utf-8\", \"windows-1252\" or \"iso-8859-1\"",
                i.encoding
            ),
            ))
        }
    };
    let header = match i.header {
        RawHeader::Flag(true) => HeaderChoice::Yes,
        RawHeader::Flag(false) => HeaderChoice::No,
        RawHeader::Word(w) if w == "auto" => HeaderChoice::Auto,
        RawHeader::Word(w) => {
            return Err(bad(
                "input.header",
                format!("{w:?} is not allowed; use \"auto\", true or false"),
            ))
        }
    };
    let column = |key: &str, col: RawColumn| -> Result<ColumnRef, ConfigError> {
        Ok(match col {
            RawColumn::Index(n) => {
                let n = delivery::ranged(
                    &bad,
                    key,
                    n,
                    1..=10_000,
                    "a position from 1 to 10000 (columns count from 1) or a header name",
                )?;
                ColumnRef::Index(n as usize - 1)
            }
            RawColumn::Name(s) if s.trim().is_empty() => {
                return Err(bad(key, "a column name cannot be empty".into()))
            }
            RawColumn::Name(s) => ColumnRef::Name(s),
        })
    };
    let mut columns = Columns::default();
    for (name, col) in i.columns {
        let key = format!("input.columns.{name}");
        let col = column(&key, col)?;
        let slot = match name.as_str() {
            "number" => &mut columns.number,
            "text" => &mut columns.text,
            "correlation_id" => &mut columns.correlation_id,
            "send_before" => &mut columns.send_before,
            _ => {
                return Err(bad(
                    &key,
                    "unknown column; use number, text, correlation_id or send_before".into(),
                ))
            }
        };
        *slot = Some(col);
    }
    let cc = i.default_country_code.trim_start_matches('+');
    if cc.len() > 3 || !cc.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "input.default_country_code",
            format!(
                "{cc:?} is not a country code; use 1 to 3 digits such as \"55\", or \"\" for none"
            ),
        ));
    }
    let mut national_lengths = Vec::with_capacity(i.national_lengths.len());
    for &n in &i.national_lengths {
        let n = delivery::ranged(
            &bad,
            "input.national_lengths",
            n,
            4..=14,
            "lengths from 4 to 14 digits",
        )?;
        national_lengths.push(n as usize);
    }
    let sanitize = match i.sanitize.as_str() {
        "replace" => Sanitize::Replace,
        "reject" => Sanitize::Reject,
        other => {
            return Err(bad(
                "input.sanitize",
                format!("{other:?} is not allowed; use \"replace\" or \"reject\""),
            ))
        }
    };
    let invalid_rows = match i.invalid_rows.as_str() {
        "skip" => InvalidRows::Skip,
        "reject-file" => InvalidRows::RejectFile,
        other => {
            return Err(bad(
                "input.invalid_rows",
                format!("{other:?} is not allowed; use \"skip\" or \"reject-file\""),
            ))
        }
    };

    let extra_fields = match i.extra_fields.as_str() {
        "join-text" => ExtraFields::JoinText,
        "reject" => ExtraFields::Reject,
        other => {
            return Err(bad(
                "input.extra_fields",
                format!("{other:?} is not allowed; use \"join-text\" or \"reject\""),
            ))
        }
    };

    let absorb_column = i
        .absorb_column
        .map(|c| column("input.absorb_column", c))
        .transpose()?;
    let template = i
        .template
        .as_deref()
        .map(|t| Template::parse(t).map_err(|m| bad("input.template", m)))
        .transpose()?;
    if chrono::format::StrftimeItems::new(&i.date_format)
        .any(|item| matches!(item, chrono::format::Item::Error))
        || i.date_format.is_empty()
    {
        return Err(bad(
            "input.date_format",
            format!(
                "{:?} is not a date format; use strftime fields such as \"%d/%m/%Y\"",
                i.date_format
            ),
        ));
    }
    let max_workbook_mb = delivery::ranged(
        &bad,
        "input.max_workbook_mb",
        i.max_workbook_mb,
        1..=1024,
        "1 to 1024 MB",
    )?;
    if i.sheet.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return Err(bad(
            "input.sheet",
            "a sheet name cannot be empty; leave the key out to read the first sheet".into(),
        ));
    }
    let schedule_parts: Vec<super::schedule::Part<'_>> = raw
        .subaccounts
        .iter()
        .map(|(name, sub)| super::schedule::Part {
            key: format!("subaccounts.{name}"),
            windows: sub.windows.as_deref(),
            holidays: sub.holidays.as_deref(),
            holidays_file: sub.holidays_file.as_deref(),
        })
        .collect();
    let resolve_str = |p: &str| resolve(p);
    let schedule = super::schedule::validate(&raw.schedule, &schedule_parts, &bad, &resolve_str)?;
    drop(schedule_parts);
    let mut subaccounts = BTreeMap::new();
    for (name, sub) in raw.subaccounts {
        check_subaccount(&name).map_err(|m| bad(&format!("subaccounts.{name}"), m))?;
        let template = sub
            .template
            .as_deref()
            .map(|t| {
                Template::parse(t).map_err(|m| bad(&format!("subaccounts.{name}.template"), m))
            })
            .transpose()?;
        subaccounts.insert(name, SubaccountConfig { template });
    }

    let b = raw.batch;
    if let Some(s) = &b.subaccount {
        check_subaccount(s).map_err(|m| bad("batch.subaccount", m))?;
    }
    let zone = match b.timezone.as_str() {
        "local" | "" => Zone::Local,
        name => Zone::Named(name.parse().map_err(|_| {
            bad(
                "batch.timezone",
                format!("{name:?} is not an IANA time zone; use e.g. \"America/Sao_Paulo\" or \"local\""),
            )
        })?),
    };
    let max_rows_per_file = delivery::ranged(
        &bad,
        "batch.max_rows_per_file",
        b.max_rows_per_file,
        1..=1_000_000,
        "1 to 1000000 rows",
    )?;
    let duplicate_rows = match b.duplicate_rows.as_str() {
        "skip" => DuplicateRows::Skip,
        "send" => DuplicateRows::Send,
        other => {
            return Err(bad(
                "batch.duplicate_rows",
                format!("{other:?} is not allowed; use \"skip\" or \"send\""),
            ))
        }
    };
    Ok(Config {
        inbox: d.inbox,
        sftp: d.sftp,
        track: d.track,
        state: d.state,
        report: d.report,
        status,
        http,
        input: InputConfig {
            delimiter,
            encoding,
            header,
            columns,
            default_country_code: cc.to_owned(),
            national_lengths,
            sanitize,
            invalid_rows,
            extra_fields,
            absorb_column,
            template,
            sheet: i.sheet,
            date_format: i.date_format,
            max_workbook_bytes: max_workbook_mb * 1024 * 1024,
        },
        batch: BatchConfig {
            subaccount: b.subaccount,
            zone,
            max_rows_per_file: max_rows_per_file as usize,
            header_line: b.header_line,
            duplicate_rows,
        },
        subaccounts,
        schedule,
        replies,
        optout,
        source: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse("").unwrap();
        assert_eq!(c.input.delimiter, Delimiter::Auto);
        assert_eq!(c.input.encoding, EncodingChoice::Auto);
        assert_eq!(c.input.header, HeaderChoice::Auto);
        assert_eq!(c.input.default_country_code, "55");
        assert_eq!(c.input.national_lengths, vec![10, 11]);
        assert_eq!(c.input.sanitize, Sanitize::Replace);
        assert_eq!(c.input.invalid_rows, InvalidRows::Skip);
        assert_eq!(c.batch.max_rows_per_file, 50_000);
        assert!(c.batch.header_line);
        assert_eq!(c.batch.zone, Zone::Local);
        assert_eq!(c.batch.duplicate_rows, DuplicateRows::Skip);
        let c = parse("[batch]\nduplicate_rows = \"send\"").unwrap();
        assert_eq!(c.batch.duplicate_rows, DuplicateRows::Send);
    }

    #[test]
    fn good_values_are_typed() {
        let c = parse(
            "[input]\ndelimiter = \"tab\"\nencoding = \"windows-1252\"\nheader = false\n\
             columns = { number = \"Celular\", text = 2 }\n\
             [batch]\nsubaccount = \"ACME_1\"\ntimezone = \"America/Sao_Paulo\"\n",
        )
        .unwrap();
        assert_eq!(c.input.delimiter, Delimiter::Fixed(b'\t'));
        assert_eq!(c.input.encoding, EncodingChoice::Windows1252);
        assert_eq!(c.input.header, HeaderChoice::No);
        assert_eq!(
            c.input.columns.number,
            Some(ColumnRef::Name("Celular".into()))
        );
        assert_eq!(c.input.columns.text, Some(ColumnRef::Index(1)));
        assert_eq!(c.input.columns.send_before, None);
        assert_eq!(c.batch.subaccount.as_deref(), Some("ACME_1"));
    }

    #[test]
    fn send_before_is_a_column_by_name_or_position() {
        let c = parse("[input.columns]\nsend_before = \"vencimento\"\n").unwrap();
        assert_eq!(
            c.input.columns.send_before,
            Some(ColumnRef::Name("vencimento".into()))
        );
        let c = parse("[input.columns]\nsend_before = 4\n").unwrap();
        assert_eq!(c.input.columns.send_before, Some(ColumnRef::Index(3)));
        let err = parse("[input.columns]\nsend_before = 0\n").unwrap_err();
        assert!(err.contains("input.columns.send_before"), "{err}");
    }

    #[test]
    fn an_unknown_column_lists_every_column_key() {
        let err = parse("[input.columns]\nvencimento = 3\n").unwrap_err();
        assert_eq!(
            err,
            "config file t.toml: key `input.columns.vencimento`: unknown column; use number, \
             text, correlation_id or send_before"
        );
    }

    #[test]
    fn bad_values_name_file_key_and_choices() {
        let cases = [
            ("[input]\ndelimiter = \"#\"", "input.delimiter"),
            ("[input]\nencoding = \"ebcdic\"", "input.encoding"),
            ("[input]\nheader = \"maybe\"", "input.header"),
            ("[input]\ncolumns = { number = 0 }", "input.columns.number"),
            ("[input]\ncolumns = { phone = 1 }", "input.columns.phone"),
            (
                "[input]\ndefault_country_code = \"5a\"",
                "input.default_country_code",
            ),
            ("[input]\nsanitize = \"drop\"", "input.sanitize"),
            ("[input]\ninvalid_rows = \"ignore\"", "input.invalid_rows"),
            ("[input]\nextra_fields = \"guess\"", "input.extra_fields"),
            ("[input]\ntemplate = \"Olá {nome\"", "input.template"),
            ("[input]\nabsorb_column = 0", "input.absorb_column"),
            ("[input]\ndate_format = \"%Q\"", "input.date_format"),
            ("[input]\nmax_workbook_mb = 0", "input.max_workbook_mb"),
            ("[input]\nsheet = \"\"", "input.sheet"),
            (
                "[subaccounts.ACME]\ntemplate = \"}\"",
                "subaccounts.ACME.template",
            ),
            ("[subaccounts.\"a b\"]\ntemplate = \"x\"", "subaccounts.a b"),
            ("[batch]\nsubaccount = \"../etc\"", "batch.subaccount"),
            ("[batch]\ntimezone = \"Mars/Base\"", "batch.timezone"),
            ("[batch]\nmax_rows_per_file = 0", "batch.max_rows_per_file"),
            ("[batch]\nduplicate_rows = \"drop\"", "batch.duplicate_rows"),
            (
                "[schedule]\nwindows = [\"mon-fry 08:00-20:00\"]",
                "schedule.windows",
            ),
            ("[schedule]\nwindows = []", "schedule.windows"),
            (
                "[schedule]\nholidays = [\"2026-13-01\"]",
                "schedule.holidays",
            ),
            (
                "[schedule]\nholidays_file = \"/nonexistent/holidays.txt\"",
                "schedule.holidays_file",
            ),
            ("[schedule]\nmax_hold = \"10s\"", "schedule.max_hold"),
            ("[schedule]\nmax_hold = \"soon\"", "schedule.max_hold"),
            (
                "[subaccounts.ACME]\nwindows = [\"mon 8-9\"]",
                "subaccounts.ACME.windows",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains("t.toml") && err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn schedules_name_the_entry_and_the_character_and_subaccounts_inherit() {
        let err = parse("[schedule]\nwindows = [\"mon-fry 08:00-20:00\"]").unwrap_err();
        assert!(
            err.contains("\"mon-fry 08:00-20:00\"") && err.contains("at character 5"),
            "{err}"
        );
        let cfg = parse(
            "[schedule]\nwindows = [\"mon-fri 08:00-20:00\"]\nholidays = [\"2026-12-25\"]\n\
             max_hold = \"36h\"\n[subaccounts.COBRANCA]\nwindows = [\"mon-fri 09:00-18:00\"]\n\
             [subaccounts.OTHER]\ntemplate = \"x {1}\"\n",
        )
        .unwrap();
        let s = &cfg.schedule;
        assert_eq!(s.max_hold, Some(std::time::Duration::from_secs(36 * 3600)));
        let tz = chrono_tz::America::Sao_Paulo;
        // Christmas 10:00 local: a holiday for both (COBRANCA inherits the holidays).
        let christmas = Utc.with_ymd_and_hms(2026, 12, 25, 13, 0, 0).unwrap();
        let monday_0830 = Utc.with_ymd_and_hms(2026, 12, 7, 11, 30, 0).unwrap();
        let global = s.for_subaccount("ACME").unwrap();
        let own = s.for_subaccount("COBRANCA").unwrap();
        assert!(global.is_open(tz, monday_0830) && !own.is_open(tz, monday_0830));
        assert!(!global.is_open(tz, christmas) && !own.is_open(tz, christmas));
        assert_eq!(
            s.for_subaccount("OTHER"),
            Some(global),
            "no schedule keys: the global one"
        );
        assert!(parse("").unwrap().schedule.for_subaccount("ACME").is_none());
    }

    #[test]
    fn unknown_keys_and_sections_are_errors() {
        for text in [
            "[input]\ndelimeter = \";\"",
            "[inputs]\n",
            "[batch]\nheader_line = \"yes\"",
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("t.toml"), "{err}");
        }
        assert!(parse("[input]\ndelimeter = \";\"")
            .unwrap_err()
            .contains("delimeter"));
    }
}
