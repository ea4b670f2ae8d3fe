//! The config file as written: serde structs with defaults, no validation yet.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub inbox: super::delivery::RawInbox,
    pub input: RawInput,
    pub batch: RawBatch,
    pub sftp: Option<super::delivery::RawSftp>,
    pub track: super::delivery::RawTrack,
    pub state: super::delivery::RawState,
    pub report: super::delivery::RawReport,
    pub status: super::status::RawStatus,
    pub http: super::http::RawHttp,
    pub subaccounts: BTreeMap<String, RawSubaccount>,
    pub schedule: super::schedule::RawSchedule,
    pub replies: super::replies::RawReplies,
    pub optout: super::replies::RawOptout,
}

/// `[subaccounts.NAME]`: settings for the files in `inbox/NAME/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSubaccount {
    pub template: Option<String>,
    /// Replace `[schedule] windows` for this subaccount.
    pub windows: Option<Vec<String>>,
    /// Replace `[schedule] holidays` and `holidays_file` for this subaccount (either or both).
    pub holidays: Option<Vec<String>>,
    pub holidays_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInput {
    pub delimiter: String,
    pub encoding: String,
    pub header: RawHeader,
    pub columns: BTreeMap<String, RawColumn>,
    pub default_country_code: String,
    pub national_lengths: Vec<i64>,
    pub sanitize: String,
    pub invalid_rows: String,
    pub extra_fields: String,
    pub absorb_column: Option<RawColumn>,
    pub template: Option<String>,
    pub sheet: Option<String>,
    pub date_format: String,
    pub max_workbook_mb: i64,
}

impl Default for RawInput {
    fn default() -> Self {
        RawInput {
            delimiter: "auto".into(),
            encoding: "auto".into(),
            header: RawHeader::Word("auto".into()),
            columns: BTreeMap::new(),
            default_country_code: "55".into(),
            national_lengths: vec![10, 11],
            sanitize: "replace".into(),
            invalid_rows: "skip".into(),
            extra_fields: "join-text".into(),
            absorb_column: None,
            template: None,
            sheet: None,
            date_format: "%d/%m/%Y".into(),
            max_workbook_mb: 50,
        }
    }
}

/// `header = "auto"`, `header = true` or `header = false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHeader {
    Flag(bool),
    Word(String),
}

/// A column given by header name or by 1-based index.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawColumn {
    Index(i64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBatch {
    pub subaccount: Option<String>,
    pub timezone: String,
    pub max_rows_per_file: i64,
    pub header_line: bool,
    pub duplicate_rows: String,
}

impl Default for RawBatch {
    fn default() -> Self {
        RawBatch {
            subaccount: None,
            timezone: "local".into(),
            max_rows_per_file: 50_000,
            header_line: true,
            duplicate_rows: "skip".into(),
        }
    }
}
