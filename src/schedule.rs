//! Send windows and holidays: whether uploads may run at an instant, and when that changes.
//!
//! An operator writes windows such as `mon-fri 08:00-20:00` or `daily 22:00-06:00` and lists
//! holidays; this module parses them and answers "open now?", "when does it open (or close)
//! next?" and "since when has it been closed?" for an instant and a time zone. Everything is
//! wall-clock local time, as a person reading a clock expects: the hour skipped in spring never
//! happens, and the hour repeated in autumn is open both times if a window covers it. It never
//! reads the clock, sleeps or logs: the caller passes the instant in.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const EVERY_DAY: u8 = 0x7f;
const MINUTES_PER_DAY: u16 = 24 * 60;
/// How far the searches look, before and after: about three years.
const HORIZON_DAYS: u32 = 3 * 366;
const EXPECTED_DAY: &str = "expected a day (mon, tue, wed, thu, fri, sat, sun or daily)";
const DAILY_ALONE: &str = "`daily` stands alone: write it without other days";
const EXPECTED_TIME: &str = "expected a time as HH:MM, like 08:00";

/// A weekly send window, e.g. `mon-fri 08:00-20:00`. A window whose end is not after its
/// start (`fri 22:00-06:00`) crosses midnight and belongs to the day it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Bit `i` set: the window starts on the `i`-th day counted from Monday.
    days: u8,
    /// Minutes after midnight, below 24:00.
    start: u16,
    /// Minutes after midnight, 00:01 to 24:00; below `start` when the window crosses midnight.
    end: u16,
}

impl Window {
    fn starts_on(&self, day: Weekday) -> bool {
        self.days & (1 << day.num_days_from_monday()) != 0
    }

    fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }

    /// Minutes from the midnight of the day it starts on to its end.
    fn end_offset(&self) -> u16 {
        if self.crosses_midnight() {
            self.end + MINUTES_PER_DAY
        } else {
            self.end
        }
    }
}

/// The normalised form: `daily`, or runs of days in week order (a run over the weekend such as
/// `fri-mon` comes first), then the times; a `00:00` end is written `24:00`.
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clock = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let days = day_list(self.days);
        write!(f, "{days} {}-{}", clock(self.start), clock(self.end))
    }
}

fn day_list(days: u8) -> String {
    if days == EVERY_DAY {
        return "daily".to_owned();
    }
    let has = |i: usize| days & (1 << (i % 7)) != 0;
    // Begin at the start of the run holding Monday, so `fri-mon` stays one run.
    let mut first = 0;
    if has(0) {
        while has(first + 6) {
            first = (first + 6) % 7;
        }
    }
    let mut runs = Vec::new();
    let mut k = 0;
    while k < 7 {
        if !has(first + k) {
            k += 1;
            continue;
        }
        let mut len = 1;
        while k + len < 7 && has(first + k + len) {
            len += 1;
        }
        let (a, b) = (
            DAY_NAMES[(first + k) % 7],
            DAY_NAMES[(first + k + len - 1) % 7],
        );
        runs.push(match len {
            1 => a.to_owned(),
            2 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        });
        k += len;
    }
    runs.join(",")
}

/// Parses the `windows` config entries.
///
/// # Errors
/// The first malformed entry, quoted, with the character (1-based) where it went wrong and what
/// was expected there.
pub fn parse_windows(entries: &[String]) -> Result<Vec<Window>, String> {
    entries.iter().map(|entry| parse_window(entry)).collect()
}

fn parse_window(entry: &str) -> Result<Window, String> {
    let mut parser = Parser {
        chars: entry.chars().collect(),
        pos: 0,
    };
    parser
        .window()
        .map_err(|(at, what)| format!("windows entry {entry:?}: at character {}: {what}", at + 1))
}

/// Where an entry went wrong (0-based character index) and what was expected there.
type Failure = (usize, String);

/// A cursor over one windows entry: `days WHITESPACE HH:MM-HH:MM`.
struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        self.pos += usize::from(found);
        found
    }

    /// Skips whitespace; true when there was some.
    fn skip_space(&mut self) -> bool {
        let from = self.pos;
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        self.pos > from
    }

    fn fail<T>(&self, what: &str) -> Result<T, Failure> {
        Err((self.pos, what.to_owned()))
    }

    fn window(&mut self) -> Result<Window, Failure> {
        self.skip_space();
        if self.at_end() {
            return Err((
                0,
                "empty: expected days and times, like mon-fri 08:00-20:00".into(),
            ));
        }
        let days = self.days()?;
        if !self.skip_space() {
            return self.fail(if self.at_end() {
                "expected a space and then the times, like 08:00-20:00"
            } else {
                "expected `,`, `-` or a space after a day"
            });
        }
        let start_at = self.pos;
        let start = self.time()?;
        if start == MINUTES_PER_DAY {
            return Err((
                start_at,
                "24:00 is allowed only as an end: start at 00:00".into(),
            ));
        }
        if !self.eat('-') {
            return self.fail("expected `-` right after the start time, like 08:00-20:00");
        }
        let end_at = self.pos;
        let end = self.time()?;
        self.skip_space();
        if !self.at_end() {
            return self.fail("unexpected text after the times");
        }
        if end == start {
            let what = "an empty window: it ends when it starts (a whole day is 00:00-24:00)";
            return Err((end_at, what.into()));
        }
        let end = if end == 0 { MINUTES_PER_DAY } else { end };
        Ok(Window { days, start, end })
    }

    /// `daily`, or a list of days and day ranges: `mon-wed,fri`, `fri-mon`.
    fn days(&mut self) -> Result<u8, Failure> {
        let at = self.pos;
        if self.word().eq_ignore_ascii_case("daily") {
            if matches!(self.peek(), Some(',' | '-')) {
                return self.fail(DAILY_ALONE);
            }
            return Ok(EVERY_DAY);
        }
        self.pos = at;
        let mut days = 0;
        loop {
            let first = self.day()?;
            let last = if self.eat('-') { self.day()? } else { first };
            // A range may wrap over the weekend: fri-mon is fri, sat, sun, mon.
            let mut day = first;
            days |= 1 << day;
            while day != last {
                day = (day + 1) % 7;
                days |= 1 << day;
            }
            if !self.eat(',') {
                return Ok(days);
            }
        }
    }

    /// One day name, as an index from Monday.
    fn day(&mut self) -> Result<usize, Failure> {
        let at = self.pos;
        let word = self.word().to_lowercase();
        if let Some(i) = DAY_NAMES.iter().position(|d| *d == word) {
            return Ok(i);
        }
        let full_name = DAY_NAMES
            .iter()
            .find(|d| word.len() > 3 && word.starts_with(**d));
        let what = if word == "daily" {
            DAILY_ALONE.to_owned()
        } else if let Some(d) = full_name {
            format!("{EXPECTED_DAY}: write `{d}`, not `{word}`")
        } else {
            EXPECTED_DAY.to_owned()
        };
        Err((at, what))
    }

    fn word(&mut self) -> String {
        let from = self.pos;
        while self.peek().is_some_and(char::is_alphabetic) {
            self.pos += 1;
        }
        self.chars[from..self.pos].iter().collect()
    }

    /// `HH:MM` as minutes after midnight; `24:00` is let through for the caller to judge.
    fn time(&mut self) -> Result<u16, Failure> {
        let at = self.pos;
        let hour = self.two_digits()?;
        if !self.eat(':') {
            return self.fail(EXPECTED_TIME);
        }
        let minute = self.two_digits()?;
        if hour > 24 {
            let what =
                format!("hour {hour} is out of range: expected 00 to 23, or 24:00 as an end");
            return Err((at, what));
        }
        if minute > 59 {
            return Err((
                at + 3,
                format!("minute {minute} is out of range: expected 00 to 59"),
            ));
        }
        if hour == 24 && minute != 0 {
            let what = format!("24:{minute:02} is past the end of the day: only 24:00 is allowed");
            return Err((at, what));
        }
        Ok(hour * 60 + minute)
    }

    fn two_digits(&mut self) -> Result<u16, Failure> {
        let mut n = 0;
        for _ in 0..2 {
            match self.peek().and_then(|c| c.to_digit(10)) {
                Some(digit) => n = n * 10 + digit as u16,
                None => return self.fail(EXPECTED_TIME),
            }
            self.pos += 1;
        }
        Ok(n)
    }
}

/// Parses the `holidays` config entries (`YYYY-MM-DD`).
///
/// # Errors
/// The first entry that is not a date, quoted.
pub fn parse_holidays(entries: &[String]) -> Result<BTreeSet<NaiveDate>, String> {
    entries
        .iter()
        .map(|entry| {
            parse_date(entry.trim()).map_err(|what| format!("holidays entry {entry:?}: {what}"))
        })
        .collect()
}

/// Reads a holidays file: one `YYYY-MM-DD` a line; `#` starts a comment (whole line or
/// trailing); blank lines and a leading byte-order mark are skipped.
///
/// # Errors
/// The file cannot be read, or a line is not a date: the message names the file and the line.
pub fn read_holidays_file(path: &Path) -> Result<BTreeSet<NaiveDate>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read holidays file {}: {e}", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut days = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if entry.is_empty() {
            continue;
        }
        let day = parse_date(entry).map_err(|what| {
            format!(
                "holidays file {}, line {}: {entry:?}: {what}",
                path.display(),
                i + 1
            )
        })?;
        days.insert(day);
    }
    Ok(days)
}

/// Exactly `YYYY-MM-DD` (chrono's `%m` would also take `2026-1-5`).
fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shaped {
        return Err("expected a date as YYYY-MM-DD, like 2026-12-25".to_owned());
    }
    let number = |digits: &[u8]| digits.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0'));
    i32::try_from(number(&b[0..4]))
        .ok()
        .and_then(|year| NaiveDate::from_ymd_opt(year, number(&b[5..7]), number(&b[8..10])))
        .ok_or_else(|| "there is no such day: the month is 01 to 12, the day within it".to_owned())
}

/// When uploads may run: weekly windows minus holidays. No windows means "always, except on
/// holidays"; a caller with no schedule at all is always open.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    windows: Vec<Window>,
    holidays: BTreeSet<NaiveDate>,
}

impl Schedule {
    /// A schedule from parsed windows and holidays; no windows means open on every non-holiday.
    pub fn new(windows: Vec<Window>, holidays: BTreeSet<NaiveDate>) -> Schedule {
        Schedule { windows, holidays }
    }

    /// Open iff the local time at `t` lies in a window started on a day that is not a holiday,
    /// and the local date of `t` is not a holiday.
    pub fn is_open(&self, tz: Tz, t: DateTime<Utc>) -> bool {
        self.open_at(t.with_timezone(&tz).naive_local())
    }

    /// `t` itself when open; else the first instant after `t` when it is open; `None` if it does
    /// not open within about three years.
    pub fn next_open(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(tz, t) {
            return Some(t);
        }
        self.next_change(tz, t, true)
    }

    /// `t` itself when closed; else the first instant after `t` when it is closed; `None` if it
    /// is always open (or does not close within about three years).
    pub fn next_close(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.is_open(tz, t) {
            return Some(t);
        }
        if self.always_open() {
            return None;
        }
        self.next_change(tz, t, false)
    }

    /// When closed at `t`: the instant it last closed (the end of the last open period, `t`
    /// itself if that is `t`), looking back about three years; `None` when open at `t`.
    pub fn last_close(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(tz, t) {
            return None;
        }
        self.last_closing(tz, t)
    }

    fn open_at(&self, local: NaiveDateTime) -> bool {
        let date = local.date();
        if self.holidays.contains(&date) {
            return false;
        }
        if self.windows.is_empty() {
            return true;
        }
        // Boundaries are whole minutes, so the minute is enough.
        let minute = local.time().num_seconds_from_midnight() / 60;
        let yesterday = date.pred_opt().filter(|d| !self.holidays.contains(d));
        self.windows.iter().any(|w| {
            let today = w.starts_on(date.weekday())
                && u32::from(w.start) <= minute
                && minute < u32::from(w.end_offset());
            let from_yesterday = w.crosses_midnight()
                && minute < u32::from(w.end)
                && yesterday.is_some_and(|y| w.starts_on(y.weekday()));
            today || from_yesterday
        })
    }

    /// No holidays and every minute of the week in some window.
    fn always_open(&self) -> bool {
        const WEEK: usize = 7 * MINUTES_PER_DAY as usize;
        if !self.holidays.is_empty() {
            return false;
        }
        let mut covered = [false; WEEK];
        for w in &self.windows {
            for day in (0..7).filter(|day| w.days & (1 << day) != 0) {
                let base = day * usize::from(MINUTES_PER_DAY);
                for minute in usize::from(w.start)..usize::from(w.end_offset()) {
                    covered[(base + minute) % WEEK] = true;
                }
            }
        }
        self.windows.is_empty() || covered.iter().all(|c| *c)
    }

    /// The first boundary after `t` at which the schedule is open (`open`) or closed.
    fn next_change(&self, tz: Tz, t: DateTime<Utc>, open: bool) -> Option<DateTime<Utc>> {
        let today = t.with_timezone(&tz).date_naive();
        let mut day = today.pred_opt().unwrap_or(today);
        let mut best: Option<DateTime<Utc>> = None;
        let mut found = false;
        let mut boundaries = Vec::new();
        for _ in 0..HORIZON_DAYS {
            boundaries.clear();
            self.push_boundaries(tz, day, &mut boundaries);
            for &b in &boundaries {
                if b > t && best.is_none_or(|x| b < x) && self.is_open(tz, b) == open {
                    best = Some(b);
                }
            }
            // A day's boundaries end before the next day does: one day more settles it.
            if found {
                break;
            }
            found = best.is_some();
            match day.succ_opt() {
                Some(next) => day = next,
                None => break,
            }
        }
        best
    }

    /// The last boundary at or before `t` where an open period ended.
    fn last_closing(&self, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let today = t.with_timezone(&tz).date_naive();
        let mut day = today.succ_opt().unwrap_or(today);
        let mut best: Option<DateTime<Utc>> = None;
        let mut found = false;
        let mut boundaries = Vec::new();
        for _ in 0..HORIZON_DAYS {
            boundaries.clear();
            self.push_boundaries(tz, day, &mut boundaries);
            for &b in &boundaries {
                if b <= t
                    && best.is_none_or(|x| b > x)
                    && !self.is_open(tz, b)
                    && b.checked_sub_signed(TimeDelta::nanoseconds(1))
                        .is_some_and(|before| self.is_open(tz, before))
                {
                    best = Some(b);
                }
            }
            if found {
                break;
            }
            found = best.is_some();
            match day.pred_opt() {
                Some(previous) => day = previous,
                None => break,
            }
        }
        best
    }

    /// Every instant from local `day` on at which the schedule may open or close: its midnight
    /// (a holiday begins or ends), its windows' starts and ends (an end may fall on the next
    /// day), and a change of UTC offset that day (the clock going back can reopen a window).
    fn push_boundaries(&self, tz: Tz, day: NaiveDate, out: &mut Vec<DateTime<Utc>>) {
        let midnight = day.and_time(NaiveTime::MIN);
        push_instants(tz, midnight, out);
        if !self.holidays.contains(&day) {
            for w in self.windows.iter().filter(|w| w.starts_on(day.weekday())) {
                for minutes in [w.start, w.end_offset()] {
                    let local = midnight.checked_add_signed(TimeDelta::minutes(minutes.into()));
                    if let Some(local) = local {
                        push_instants(tz, local, out);
                    }
                }
            }
        }
        let next_midnight = day.succ_opt().map(|next| next.and_time(NaiveTime::MIN));
        if let (Some(from), Some(to)) = (
            first_instant(tz, midnight),
            next_midnight.and_then(|n| first_instant(tz, n)),
        ) {
            out.extend(offset_change(tz, from, to));
        }
    }
}

/// Every instant showing `local` on the clock: two in the repeated hour, and for a time the
/// clock skips, the instant it jumps to.
fn push_instants(tz: Tz, local: NaiveDateTime, out: &mut Vec<DateTime<Utc>>) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(x) => out.push(x.to_utc()),
        LocalResult::Ambiguous(a, b) => out.extend([a.to_utc(), b.to_utc()]),
        LocalResult::None => out.extend(gap_end(tz, local)),
    }
}

/// `local` as one instant: the earliest if repeated, the end of the gap if skipped.
fn first_instant(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(x) => Some(x.to_utc()),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).to_utc()),
        LocalResult::None => gap_end(tz, local),
    }
}

/// For a local time the clock skips: the first instant whose local time is not before it, i.e.
/// the moment the clock jumps. UTC offsets lie within ±15 h, which bounds the search.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let guess = local.and_utc().timestamp();
    let shows_at_least = |s: i64| {
        DateTime::from_timestamp(s, 0).map(|u| u.with_timezone(&tz).naive_local() >= local)
    };
    let (mut lo, mut hi) = (guess - 15 * 3600, guess + 15 * 3600);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shows_at_least(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// The instant in `(from, to]` where the UTC offset changes, if it differs at the two ends.
/// Offsets change on whole seconds.
fn offset_change(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let offset = |s: i64| {
        DateTime::from_timestamp(s, 0).map(|u| tz.offset_from_utc_datetime(&u.naive_utc()).fix())
    };
    let (mut lo, mut hi) = (from.timestamp(), to.timestamp());
    let before = offset(lo)?;
    if offset(hi)? == before {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset(mid)? == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// `at` on the clock in `tz`: "Mon 08:00", or "Mon 2026-12-14 08:00" when its date is more
/// than 6 calendar days from `now`'s (a bare weekday would then be ambiguous).
pub fn local_label(tz: Tz, at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let local = at.with_timezone(&tz);
    let days_away = (local.date_naive() - now.with_timezone(&tz).date_naive()).num_days();
    let format = if days_away.abs() <= 6 {
        "%a %H:%M"
    } else {
        "%a %Y-%m-%d %H:%M"
    };
    local.format(format).to_string()
}

/// The span from `now` to `at`, rounded up so the wait is never longer than it says: "3m",
/// "5h 12m", and from a day on days and hours ("2d 4h"); "less than a minute" below a minute.
pub fn span_label(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let span = at - now;
    if span < TimeDelta::minutes(1) {
        return "less than a minute".to_owned();
    }
    let whole = span.num_minutes();
    let minutes = whole + i64::from(span > TimeDelta::minutes(whole));
    let (days, rest) = (minutes / 1440, minutes % 1440);
    if days > 0 {
        let hours = (rest + 59) / 60;
        let (days, hours) = if hours == 24 {
            (days + 1, 0)
        } else {
            (days, hours)
        };
        return match hours {
            0 => format!("{days}d"),
            _ => format!("{days}d {hours}h"),
        };
    }
    match (rest / 60, rest % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe};

    type Entries = &'static [&'static str];
    type Answer = Option<&'static str>;

    const SAO_PAULO: Tz = America::Sao_Paulo;
    const NEW_YORK: Tz = America::New_York;
    const BERLIN: Tz = Europe::Berlin;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("test instant")
            .to_utc()
    }

    fn schedule(windows: &[&str], holidays: &[&str]) -> Schedule {
        Schedule::new(
            parse_windows(&strings(windows)).expect("test windows"),
            parse_holidays(&strings(holidays)).expect("test holidays"),
        )
    }

    #[test]
    fn good_windows_and_their_normalised_form() {
        #[rustfmt::skip]
        let cases = [
            ("mon-fri 08:00-20:00", "mon-fri 08:00-20:00"),
            ("  SAT   09:00-14:00 ", "sat 09:00-14:00"),
            ("daily 22:00-06:00", "daily 22:00-06:00"),
            ("DAILY 08:00-09:00", "daily 08:00-09:00"),
            ("mon,wed,fri 10:00-12:00", "mon,wed,fri 10:00-12:00"),
            ("mon-wed,fri 10:00-12:00", "mon-wed,fri 10:00-12:00"),
            ("wed,mon 08:00-09:00", "mon,wed 08:00-09:00"),
            ("fri-mon 10:00-12:00", "fri-mon 10:00-12:00"),
            ("Fri-Mon,wed 10:00-12:00", "fri-mon,wed 10:00-12:00"),
            ("sat,sun 10:00-12:00", "sat,sun 10:00-12:00"),
            ("sat-sun 10:00-12:00", "sat,sun 10:00-12:00"),
            ("tue,sat-sun 10:00-12:00", "tue,sat,sun 10:00-12:00"),
            ("mon-sun 00:00-24:00", "daily 00:00-24:00"),
            ("sun-sat 08:00-09:00", "daily 08:00-09:00"),
            ("mon-mon 08:00-09:00", "mon 08:00-09:00"),
            ("mon,mon 08:00-09:00", "mon 08:00-09:00"),
            ("mon\t08:00-20:00", "mon 08:00-20:00"),
            ("tue 22:00-00:00", "tue 22:00-24:00"),
            ("thu 18:00-24:00", "thu 18:00-24:00"),
            ("sun 23:59-00:01", "sun 23:59-00:01"),
        ];
        for (entry, normalised) in cases {
            let windows = parse_windows(&strings(&[entry]))
                .unwrap_or_else(|e| panic!("{entry:?} should parse: {e}"));
            assert_eq!(windows[0].to_string(), normalised, "{entry:?}");
            let again = parse_windows(&strings(&[normalised])).expect("normalised form parses");
            assert_eq!(again, windows, "{entry:?} round trip");
        }
    }

    #[test]
    fn bad_windows_name_the_entry_and_character() {
        #[rustfmt::skip]
        let cases = [
            ("mon-fry 08:00-20:00", 5, "expected a day (mon, tue, wed, thu, fri, sat, sun or daily)"),
            ("", 1, "empty"),
            ("   ", 1, "empty"),
            ("08:00-20:00", 1, "expected a day"),
            ("monday 08:00-20:00", 1, "write `mon`, not `monday`"),
            ("mon, wed 08:00-09:00", 5, "expected a day"),
            ("mon;fri 08:00-09:00", 4, "expected `,`, `-` or a space"),
            ("mon-fri", 8, "expected a space and then the times"),
            ("daily,mon 08:00-09:00", 6, "`daily` stands alone"),
            ("mon,daily 08:00-09:00", 5, "`daily` stands alone"),
            ("mon 8:00-20:00", 6, "expected a time as HH:MM"),
            ("mon 08:00", 10, "expected `-`"),
            ("mon 08:00 - 20:00", 10, "expected `-`"),
            ("mon 08:00-", 11, "expected a time as HH:MM"),
            ("mon 08:00-20:00x", 16, "unexpected text"),
            ("mon-fri 08:00-20:00 sat", 21, "unexpected text"),
            ("mon 24:00-20:00", 5, "24:00 is allowed only as an end"),
            ("mon 08:00-24:30", 11, "only 24:00 is allowed"),
            ("mon 25:00-26:00", 5, "hour 25 is out of range"),
            ("mon 08:60-09:00", 8, "minute 60 is out of range"),
            ("mon 10:00-10:00", 11, "an empty window"),
            ("mon 00:00-00:00", 11, "an empty window"),
            ("  tue 10:00-10:00", 13, "an empty window"),
        ];
        for (entry, column, expected) in cases {
            let err = parse_windows(&strings(&["mon 08:00-09:00", entry])).expect_err(entry);
            let prefix = format!("windows entry {entry:?}: at character {column}: ");
            assert!(err.starts_with(&prefix), "{entry:?}: {err}");
            assert!(err.contains(expected), "{entry:?}: {err}");
        }
    }

    #[test]
    fn the_documented_example_message() {
        let err = parse_windows(&strings(&["mon-fry 08:00-20:00"])).expect_err("bad day");
        assert_eq!(
            err,
            "windows entry \"mon-fry 08:00-20:00\": at character 5: \
             expected a day (mon, tue, wed, thu, fri, sat, sun or daily)"
        );
    }

    #[test]
    fn holidays_entries_and_file() {
        let days = parse_holidays(&strings(&["2026-12-25", " 2027-01-01 "])).expect("dates");
        let expected: BTreeSet<NaiveDate> = [(2026, 12, 25), (2027, 1, 1)]
            .iter()
            .map(|&(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).expect("date"))
            .collect();
        assert_eq!(days, expected);
        for (entry, expected) in [
            ("2026-02-30", "no such day"),
            ("2026-2-03", "YYYY-MM-DD"),
            ("25.12.2026", "YYYY-MM-DD"),
            ("2026-12-25x", "YYYY-MM-DD"),
        ] {
            let err = parse_holidays(&strings(&[entry])).expect_err(entry);
            assert!(
                err.starts_with(&format!("holidays entry {entry:?}: ")),
                "{err}"
            );
            assert!(err.contains(expected), "{err}");
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("holidays.txt");
        let text =
            "\u{feff}# public holidays\n2026-12-25\n\n  2027-01-01  # new year\r\n#2027-05-01\n";
        std::fs::write(&path, text).expect("write");
        assert_eq!(read_holidays_file(&path).expect("file"), expected);

        std::fs::write(&path, "2026-12-25\n# fine\n2026-13-01 # bad month\n").expect("write");
        let err = read_holidays_file(&path).expect_err("bad line");
        let want = format!("holidays file {}, line 3: \"2026-13-01\": ", path.display());
        assert!(err.starts_with(&want), "{err}");

        let err = read_holidays_file(&dir.path().join("missing")).expect_err("missing");
        assert!(err.starts_with("cannot read holidays file "), "{err}");
    }

    #[rustfmt::skip]
const HOLIDAY_BLOCK: &[&str] = &[
        "2026-12-24", "2026-12-25", "2026-12-26", "2026-12-27", "2026-12-28", "2026-12-29",
        "2026-12-30", "2026-12-31", "2027-01-01",
    ];

    /// (what, zone, windows, holidays, t, next close); `t` must be open.
    type OpenCase = (&'static str, Tz, Entries, Entries, &'static str, Answer);

    #[test]
    fn open_instants_and_when_they_close() {
        #[rustfmt::skip]
        let cases: &[OpenCase] = &[
            ("daily crossing, early morning", SAO_PAULO, &["daily 22:00-06:00"], &[],
             "2026-12-05T05:00:00-03:00", Some("2026-12-05T06:00:00-03:00")),
            ("daily crossing, late evening", SAO_PAULO, &["daily 22:00-06:00"], &[],
             "2026-12-05T23:00:00-03:00", Some("2026-12-06T06:00:00-03:00")),
            ("fri 22:00-06:00 seen saturday 05:00", SAO_PAULO, &["fri 22:00-06:00"], &[],
             "2026-12-05T05:00:00-03:00", Some("2026-12-05T06:00:00-03:00")),
            ("fri 22:00-06:00 at its start", SAO_PAULO, &["fri 22:00-06:00"], &[],
             "2026-12-04T22:00:00-03:00", Some("2026-12-05T06:00:00-03:00")),
            ("weekday morning", SAO_PAULO, &["mon-fri 08:00-20:00"], &[],
             "2026-12-07T09:00:00-03:00", Some("2026-12-07T20:00:00-03:00")),
            ("crossing window the evening before a holiday", SAO_PAULO, &["daily 22:00-06:00"],
             &["2026-12-25"], "2026-12-24T23:00:00-03:00", Some("2026-12-25T00:00:00-03:00")),
            ("24:00 end runs into a 00:00 start", SAO_PAULO, &["sat 20:00-24:00", "sun 00:00-02:00"],
             &[], "2026-12-05T23:59:00-03:00", Some("2026-12-06T02:00:00-03:00")),
            ("00:00-24:00 is the whole day", SAO_PAULO, &["mon 00:00-24:00"], &[],
             "2026-12-07T10:00:00-03:00", Some("2026-12-08T00:00:00-03:00")),
            ("only holidays: closes at the holiday's midnight", SAO_PAULO, &[], &["2026-12-25"],
             "2026-12-24T15:00:00-03:00", Some("2026-12-25T00:00:00-03:00")),
            ("no windows, no holidays", SAO_PAULO, &[], &[], "2026-12-24T15:00:00-03:00", None),
            ("daily 00:00-24:00", NEW_YORK, &["daily 00:00-24:00"], &[], "2026-03-08T01:30:00-05:00", None),
            ("two windows cover the week", BERLIN, &["daily 06:00-18:00", "daily 18:00-06:00"], &[],
             "2026-10-25T02:30:00+01:00", None),
            ("new york spring forward: 01:00-04:00 is two real hours", NEW_YORK, &["sun 01:00-04:00"],
             &[], "2026-03-08T01:30:00-05:00", Some("2026-03-08T04:00:00-04:00")),
            ("new york: a window ending in the skipped hour closes at the jump", NEW_YORK,
             &["sat 23:00-02:30"], &[], "2026-03-08T01:30:00-05:00", Some("2026-03-08T03:00:00-04:00")),
            ("new york fall back: 01:00-02:00 is two real hours", NEW_YORK, &["sun 01:00-02:00"], &[],
             "2026-11-01T01:30:00-04:00", Some("2026-11-01T02:00:00-05:00")),
            ("new york fall back, first pass of the repeated hour", NEW_YORK, &["sun 00:30-01:30"],
             &[], "2026-11-01T01:10:00-04:00", Some("2026-11-01T01:30:00-04:00")),
            ("new york fall back, second pass of the repeated hour", NEW_YORK, &["sun 00:30-01:30"],
             &[], "2026-11-01T01:10:00-05:00", Some("2026-11-01T01:30:00-05:00")),
            ("berlin spring forward: a night of seven real hours", BERLIN, &["daily 22:00-06:00"], &[],
             "2026-03-28T23:00:00+01:00", Some("2026-03-29T06:00:00+02:00")),
            ("berlin fall back: a night of nine real hours", BERLIN, &["daily 22:00-06:00"], &[],
             "2026-10-24T23:00:00+02:00", Some("2026-10-25T06:00:00+01:00")),
            ("sao paulo in november, no DST", SAO_PAULO, &["mon-fri 08:00-20:00"], &[],
             "2026-11-02T11:00:00Z", Some("2026-11-02T20:00:00-03:00")),
            ("sao paulo in january, no DST", SAO_PAULO, &["mon-fri 08:00-20:00"], &[],
             "2027-01-04T22:59:00Z", Some("2027-01-04T23:00:00Z")),
        ];
        for &(what, tz, windows, holidays, t, close) in cases {
            let s = schedule(windows, holidays);
            let t = at(t);
            assert!(s.is_open(tz, t), "{what}: open");
            assert_eq!(s.next_open(tz, t), Some(t), "{what}: next_open");
            assert_eq!(s.last_close(tz, t), None, "{what}: last_close");
            assert_eq!(s.next_close(tz, t), close.map(at), "{what}: next_close");
            if let Some(close) = close.map(at) {
                assert!(!s.is_open(tz, close), "{what}: closed at its close");
            }
        }
    }

    /// (what, zone, windows, holidays, t, next open, last close); `t` must be closed.
    type ClosedCase = (
        &'static str,
        Tz,
        Entries,
        Entries,
        &'static str,
        Answer,
        Answer,
    );

    #[test]
    fn closed_instants_and_when_they_open() {
        #[rustfmt::skip]
        let cases: &[ClosedCase] = &[
            ("friday 23:50: monday 08:00", SAO_PAULO, &["mon-fri 08:00-20:00"], &[],
             "2026-12-04T23:50:00-03:00", Some("2026-12-07T08:00:00-03:00"), Some("2026-12-04T20:00:00-03:00")),
            ("a window's end is closed", SAO_PAULO, &["daily 22:00-06:00"], &[],
             "2026-12-05T06:00:00-03:00", Some("2026-12-05T22:00:00-03:00"), Some("2026-12-05T06:00:00-03:00")),
            ("fri 22:00-06:00 seen saturday 06:30", SAO_PAULO, &["fri 22:00-06:00"], &[],
             "2026-12-05T06:30:00-03:00", Some("2026-12-11T22:00:00-03:00"), Some("2026-12-05T06:00:00-03:00")),
            ("fri 22:00-06:00 seen thursday 05:00", SAO_PAULO, &["fri 22:00-06:00"], &[],
             "2026-12-03T05:00:00-03:00", Some("2026-12-04T22:00:00-03:00"), Some("2026-11-28T06:00:00-03:00")),
            ("the evening before a holiday block", SAO_PAULO, &["mon-fri 08:00-20:00"], HOLIDAY_BLOCK,
             "2026-12-23T21:00:00-03:00", Some("2027-01-04T08:00:00-03:00"), Some("2026-12-23T20:00:00-03:00")),
            ("inside a holiday block", SAO_PAULO, &["mon-fri 08:00-20:00"], HOLIDAY_BLOCK,
             "2026-12-30T12:00:00-03:00", Some("2027-01-04T08:00:00-03:00"), Some("2026-12-23T20:00:00-03:00")),
            ("a crossing window starting on a holiday never opens", SAO_PAULO, &["daily 22:00-06:00"],
             &["2026-12-25"], "2026-12-25T03:00:00-03:00", Some("2026-12-26T22:00:00-03:00"),
             Some("2026-12-25T00:00:00-03:00")),
            ("a holiday is closed all day", SAO_PAULO, &["daily 00:00-24:00"], &["2026-12-25"],
             "2026-12-25T12:00:00-03:00", Some("2026-12-26T00:00:00-03:00"), Some("2026-12-25T00:00:00-03:00")),
            ("only holidays", SAO_PAULO, &[], &["2026-12-25"], "2026-12-25T12:00:00-03:00",
             Some("2026-12-26T00:00:00-03:00"), Some("2026-12-25T00:00:00-03:00")),
            ("new york: 02:00-03:00 never happens on spring-forward day", NEW_YORK, &["sun 02:00-03:00"],
             &[], "2026-03-08T01:30:00-05:00", Some("2026-03-15T02:00:00-04:00"), Some("2026-03-01T03:00:00-05:00")),
            ("new york: a window starting in the skipped hour opens at the jump", NEW_YORK,
             &["sun 02:30-05:00"], &[], "2026-03-08T01:00:00-05:00", Some("2026-03-08T03:00:00-04:00"),
             Some("2026-03-01T05:00:00-05:00")),
            ("new york: before a window over the skipped hour", NEW_YORK, &["sun 01:00-04:00"], &[],
             "2026-03-08T00:30:00-05:00", Some("2026-03-08T01:00:00-05:00"), Some("2026-03-01T04:00:00-05:00")),
            ("new york: reopens when the clock goes back", NEW_YORK, &["sun 00:30-01:30"], &[],
             "2026-11-01T01:45:00-04:00", Some("2026-11-01T01:00:00-05:00"), Some("2026-11-01T01:30:00-04:00")),
            ("new york: after the repeated hour", NEW_YORK, &["sun 00:30-01:30"], &[],
             "2026-11-01T01:45:00-05:00", Some("2026-11-08T00:30:00-05:00"), Some("2026-11-01T01:30:00-05:00")),
            ("new york: a start in the repeated hour opens twice", NEW_YORK, &["sun 01:15-01:45"], &[],
             "2026-11-01T01:50:00-04:00", Some("2026-11-01T01:15:00-05:00"), Some("2026-11-01T01:45:00-04:00")),
            ("berlin: a start in the repeated hour opens twice", BERLIN, &["sun 02:00-02:30"], &[],
             "2026-10-25T02:45:00+02:00", Some("2026-10-25T02:00:00+01:00"), Some("2026-10-25T02:30:00+02:00")),
            ("berlin: a window in the skipped hour", BERLIN, &["sun 02:00-02:30"], &[],
             "2026-03-29T01:00:00+01:00", Some("2026-04-05T02:00:00+02:00"), Some("2026-03-22T02:30:00+01:00")),
            ("sao paulo: the old DST start is an ordinary night", SAO_PAULO, &["daily 00:00-01:00"], &[],
             "2026-11-01T02:00:00-03:00", Some("2026-11-02T00:00:00-03:00"), Some("2026-11-01T01:00:00-03:00")),
        ];
        for &(what, tz, windows, holidays, t, open, closed) in cases {
            let s = schedule(windows, holidays);
            let t = at(t);
            assert!(!s.is_open(tz, t), "{what}: closed");
            assert_eq!(s.next_close(tz, t), Some(t), "{what}: next_close");
            assert_eq!(s.next_open(tz, t), open.map(at), "{what}: next_open");
            assert_eq!(s.last_close(tz, t), closed.map(at), "{what}: last_close");
            if let Some(open) = open.map(at) {
                assert!(s.is_open(tz, open), "{what}: open at its opening");
            }
        }
    }

    #[test]
    fn never_opens_within_the_horizon() {
        let mut mondays = Vec::new();
        let mut day = NaiveDate::from_ymd_opt(2022, 1, 3).expect("a monday");
        while day.year() < 2031 {
            mondays.push(day.to_string());
            day += TimeDelta::days(7);
        }
        let s = Schedule::new(
            parse_windows(&strings(&["mon 08:00-09:00"])).expect("windows"),
            parse_holidays(&mondays).expect("holidays"),
        );
        let t = at("2026-12-07T12:00:00-03:00");
        assert!(!s.is_open(SAO_PAULO, t));
        assert_eq!(s.next_open(SAO_PAULO, t), None);
        assert_eq!(s.last_close(SAO_PAULO, t), None);
        assert_eq!(s.next_close(SAO_PAULO, t), Some(t));
    }

    #[test]
    fn labels() {
        let now = at("2026-12-10T12:00:00Z");
        assert_eq!(
            local_label(NEW_YORK, at("2026-12-14T13:00:00Z"), now),
            "Mon 08:00"
        );
        assert_eq!(
            local_label(NEW_YORK, at("2026-12-16T23:30:00Z"), now),
            "Wed 18:30"
        );
        assert_eq!(
            local_label(NEW_YORK, at("2026-12-17T13:00:00Z"), now),
            "Thu 2026-12-17 08:00"
        );
        assert_eq!(
            local_label(NEW_YORK, at("2026-12-05T01:00:00Z"), now),
            "Fri 20:00"
        );
        assert_eq!(
            local_label(NEW_YORK, at("2026-12-02T13:00:00Z"), now),
            "Wed 2026-12-02 08:00"
        );
        assert_eq!(
            local_label(NEW_YORK, at("2026-12-04T01:00:00Z"), now),
            "Thu 2026-12-03 20:00"
        );

        let cases = [
            (0, "less than a minute"),
            (-600, "less than a minute"),
            (30, "less than a minute"),
            (60, "1m"),
            (61, "2m"),
            (150, "3m"),
            (3600, "1h"),
            (5 * 3600 + 12 * 60, "5h 12m"),
            (5 * 3600 + 11 * 60 + 1, "5h 12m"),
            (86400, "1d"),
            (2 * 86400 + 4 * 3600, "2d 4h"),
            (2 * 86400 + 3 * 3600 + 600, "2d 4h"),
            (2 * 86400 + 23 * 3600 + 1800, "3d"),
        ];
        for (seconds, label) in cases {
            assert_eq!(
                span_label(now, now + TimeDelta::seconds(seconds)),
                label,
                "{seconds}s"
            );
        }
    }
}
