//! `[schedule]` and the schedule keys of `[subaccounts.NAME]`: when batches may go out.

use super::delivery::{parse_duration, BadDuration};
use super::ConfigError;
use crate::schedule::{parse_holidays, parse_windows, read_holidays_file, Schedule, Window};
use chrono::NaiveDate;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// `[schedule]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSchedule {
    pub windows: Option<Vec<String>>,
    pub holidays: Option<Vec<String>>,
    pub holidays_file: Option<String>,
    pub max_hold: Option<String>,
}

/// When batches may go out: the global schedule and each subaccount's own.
#[derive(Debug, Clone, Default)]
pub struct ScheduleConfig {
    /// `[schedule]`: `None` when neither windows nor holidays are set (always open).
    pub global: Option<Schedule>,
    /// Subaccounts whose `[subaccounts.NAME]` replaces windows or holidays.
    pub subaccounts: BTreeMap<String, Option<Schedule>>,
    /// A batch held longer than this is not sent (`[schedule] max_hold`).
    pub max_hold: Option<Duration>,
    /// `max_hold` as the operator wrote it, for messages.
    pub max_hold_text: String,
    /// Where the holiday files were read from, for `check`.
    pub holiday_files: Vec<PathBuf>,
}

impl ScheduleConfig {
    /// The schedule the batches of `subaccount` follow; `None` is always open.
    pub fn for_subaccount(&self, subaccount: &str) -> Option<&Schedule> {
        match self.subaccounts.get(subaccount) {
            Some(own) => own.as_ref(),
            None => self.global.as_ref(),
        }
    }

    /// Every schedule by who follows it: `("[schedule]", ..)`, then each subaccount's own.
    pub fn all(&self) -> Vec<(String, Option<&Schedule>)> {
        let mut v = vec![("[schedule]".to_owned(), self.global.as_ref())];
        for (name, s) in &self.subaccounts {
            v.push((format!("[subaccounts.{name}]"), s.as_ref()));
        }
        v
    }
}

/// One part of a schedule as written: windows and holidays (inline and from a file).
pub struct Part<'a> {
    /// `schedule` or `subaccounts.NAME`, for messages.
    pub key: String,
    pub windows: Option<&'a [String]>,
    pub holidays: Option<&'a [String]>,
    pub holidays_file: Option<&'a str>,
}

type Bad<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn windows_of(part: &Part<'_>, bad: &Bad<'_>) -> Result<Option<Vec<Window>>, ConfigError> {
    let Some(w) = part.windows else {
        return Ok(None);
    };
    if w.is_empty() {
        return Err(bad(
            &format!("{}.windows", part.key),
            "an empty list would never send; leave the key out to send at any time".into(),
        ));
    }
    parse_windows(w)
        .map(Some)
        .map_err(|m| bad(&format!("{}.windows", part.key), m))
}

fn holidays_of(
    part: &Part<'_>,
    bad: &Bad<'_>,
    resolve: &dyn Fn(&str) -> PathBuf,
    files: &mut Vec<PathBuf>,
) -> Result<Option<BTreeSet<NaiveDate>>, ConfigError> {
    if part.holidays.is_none() && part.holidays_file.is_none() {
        return Ok(None);
    }
    let mut days = match part.holidays {
        Some(h) => parse_holidays(h).map_err(|m| bad(&format!("{}.holidays", part.key), m))?,
        None => BTreeSet::new(),
    };
    if let Some(f) = part.holidays_file {
        let path = resolve(f);
        let more = read_holidays_file(&path)
            .map_err(|m| bad(&format!("{}.holidays_file", part.key), m))?;
        days.extend(more);
        files.push(path);
    }
    Ok(Some(days))
}

/// Validates `[schedule]` and the subaccounts' schedule keys.
pub(super) fn validate(
    raw: &RawSchedule,
    subaccounts: &[Part<'_>],
    bad: &Bad<'_>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<ScheduleConfig, ConfigError> {
    let mut holiday_files = vec![];
    let global_part = Part {
        key: "schedule".into(),
        windows: raw.windows.as_deref(),
        holidays: raw.holidays.as_deref(),
        holidays_file: raw.holidays_file.as_deref(),
    };
    let g_windows = windows_of(&global_part, bad)?;
    let g_holidays = holidays_of(&global_part, bad, resolve, &mut holiday_files)?;
    let build = |w: &Option<Vec<Window>>, h: &Option<BTreeSet<NaiveDate>>| {
        (w.is_some() || h.is_some())
            .then(|| Schedule::new(w.clone().unwrap_or_default(), h.clone().unwrap_or_default()))
    };
    let global = build(&g_windows, &g_holidays);
    let mut own = BTreeMap::new();
    for part in subaccounts {
        let w = windows_of(part, bad)?;
        let h = holidays_of(part, bad, resolve, &mut holiday_files)?;
        if w.is_none() && h.is_none() {
            continue;
        }
        let name = part.key.trim_start_matches("subaccounts.").to_owned();
        // Each key set here replaces the global one; the others are inherited.
        let w = w.or_else(|| g_windows.clone());
        let h = h.or_else(|| g_holidays.clone());
        own.insert(name, build(&w, &h));
    }
    let max_hold = match &raw.max_hold {
        None => None,
        Some(text) => {
            let key = "schedule.max_hold";
            match parse_duration(text) {
                Ok(d) if (60..=90 * 86_400).contains(&d.as_secs()) => Some(d),
                Ok(_) | Err(BadDuration::TooLong) => {
                    return Err(bad(key, format!("{text:?} is out of range; use 1m to 90d")))
                }
                Err(BadDuration::Syntax) => {
                    return Err(bad(
                        key,
                        format!("{text:?} is not a duration; use e.g. \"36h\" or \"2d\""),
                    ))
                }
            }
        }
    };
    Ok(ScheduleConfig {
        global,
        subaccounts: own,
        max_hold,
        max_hold_text: raw.max_hold.as_deref().unwrap_or("").trim().to_owned(),
        holiday_files,
    })
}
