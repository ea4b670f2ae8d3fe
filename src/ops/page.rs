//! The status page: jobs newest first (filters by state and day), a page per job with its
//! remote files, rejected rows, failed messages and state history. Server-rendered HTML (maud),
//! no JavaScript, readable on a phone; it reloads itself every `[http] refresh_secs`. Phone
//! numbers are masked (`55119****4321`), also where a reason or note quotes one however it was
//! written (found as the input's parser reads numbers); message texts are shown only with `[http]
//! show_messages = true` (read again from the job's kept input; the journal holds no text).

use super::Ops;
use crate::convert::rules::{find_numbers, NumberRules};
use crate::journal::{Job, Stats, JOB_STATES};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use std::sync::Arc;

/// Most jobs listed on the index.
const MAX_JOBS: u32 = 500;
/// Most sent rows shown on a job's page (`[http] show_messages`).
const MAX_ROWS: usize = 500;

/// How many leading and trailing digits of an `n`-digit number stay shown: at most the first 5
/// and the last 4, at least 4 hidden.
fn shown(n: usize) -> (usize, usize) {
    match n {
        10.. => ((n - 8).min(5), 4),
        6..=9 => (n - 6, 2),
        _ => (0, 0),
    }
}

/// A phone number with its middle hidden (at least four characters): `5511987654321` →
/// `55119****4321`, `11987654325` → `119****4325`.
pub fn mask(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    let n = chars.len();
    let (head, tail) = shown(n);
    let mut s: String = chars[..head].iter().collect();
    s.push_str(&"*".repeat(n - head - tail));
    s.extend(&chars[n - tail..]);
    s
}

/// A number written with separators, its digits hidden as [`mask`] hides them and its
/// separators kept: `(11) 98765-4321` → `(11) 9****-4321`.
fn mask_digits(written: &str) -> String {
    let digits = written.chars().filter(char::is_ascii_digit).count();
    let (head, tail) = shown(digits);
    let mut seen = 0;
    written
        .chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen <= head || seen > digits - tail {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// Free text (reasons, notes, errors) with every phone number in it masked as [`mask`] does:
/// numbers are found as the input's parser reads them ([`find_numbers`] under `rules`: digits
/// with spaces, dots, dashes, parentheses, a leading `+`). Dates and batch names' date and
/// sequence ([`readable_end`]) stay readable.
pub fn mask_text(text: &str, rules: NumberRules<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut segment = 0;
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        match readable_end(text, i) {
            Some(end) => {
                mask_segment(&text[segment..i], rules, &mut out);
                out.push_str(&text[i..end]);
                segment = end;
                i = end;
            }
            None => i += c.len_utf8(),
        }
    }
    mask_segment(&text[segment..], rules, &mut out);
    out
}

fn mask_segment(text: &str, rules: NumberRules<'_>, out: &mut String) {
    let mut from = 0;
    for r in find_numbers(text, rules) {
        out.push_str(&text[from..r.start]);
        out.push_str(&mask_digits(&text[r.clone()]));
        from = r.end;
    }
    out.push_str(&text[from..]);
}

/// Where a span that starts at byte `i` and must stay readable ends, though its digits could
/// read as a number: a date (`2026-12-07`) or a batch name's date and sequence (the
/// `20261203.01` of `ACME.20261203.01.txt`).
fn readable_end(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| {
        b.get(from..from + n)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    if !digits(i, 4) || (i > 0 && b[i - 1].is_ascii_digit()) {
        return None;
    }
    let date = !b.get(i + 10).is_some_and(u8::is_ascii_digit)
        && text
            .get(i..i + 10)
            .is_some_and(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok());
    if date {
        return Some(i + 10);
    }
    if i > 0 && b[i - 1] == b'.' && digits(i, 8) && b.get(i + 8) == Some(&b'.') {
        let seq = b[i + 9..].iter().take_while(|c| c.is_ascii_digit()).count();
        let end = i + 9 + seq;
        if seq >= 2 && text[end..].starts_with(".txt") {
            return Some(end);
        }
    }
    None
}

/// The one-line summary (page, `status`, systemd's `STATUS=`): jobs pending, failed today, the
/// oldest pending job's age, and messages awaited.
pub fn summary_line(s: &Stats, now_ms: i64) -> String {
    let finals = ["succeeded", "failed", "expired", "rejected"];
    let pending: u64 = s
        .jobs
        .iter()
        .filter(|(k, _)| !finals.contains(k))
        .map(|(_, v)| v)
        .sum();
    let failed_today = s.failed_today;
    let mut line = format!("{pending} pending, {failed_today} failed today");
    if let Some(t) = s.oldest_pending_ms {
        line.push_str(&format!(
            ", oldest pending {}",
            age((now_ms - t).max(0) / 1000)
        ));
    }
    let awaited = s.messages.get("pending").copied().unwrap_or(0);
    if awaited > 0 {
        line.push_str(&format!(", {awaited} messages awaiting a status"));
    }
    line
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct Filter {
    state: Option<String>,
    day: Option<String>,
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn layout(ops: &Ops, title: &str, body: Markup) -> Markup {
    let refresh = ops.cfg.http.refresh.as_secs();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh > 0 { meta http-equiv="refresh" content=(refresh); }
                title { (title) " - smsdrop" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header { a href="/" { "smsdrop" } " " span.v { "v" (env!("CARGO_PKG_VERSION")) } }
                main { (body) }
            }
        }
    }
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
header{background:#1d3557;color:#fff;padding:.6em 1em;font-weight:600}header a{color:#fff;text-decoration:none}\
.v{font-weight:400;opacity:.7;font-size:.85em}main{padding:.8em}\
.summary{font-size:1.1em;margin:.3em 0 .8em}.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:.9em;background:#fff}\
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}\
th{background:#eef}td.n{text-align:right}form{margin:.5em 0;display:flex;flex-wrap:wrap;gap:.5em}\
.state{padding:.1em .4em;border-radius:.3em;font-size:.85em;white-space:nowrap}\
.succeeded{background:#d8f3dc}.failed,.expired{background:#ffd6d6}.rejected{background:#ffe5b4}\
.unknown{background:#ffd6d6}.pending{background:#e0e7ff}h2{font-size:1.05em;margin-top:1.2em}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{font-weight:600}dd{margin:0;word-break:break-all}";

fn state_badge(state: &str) -> Markup {
    let class = match state {
        "succeeded" | "failed" | "expired" | "rejected" | "unknown" => state,
        _ => "pending",
    };
    html! { span class={ "state " (class) } { (state) } }
}

/// The part of a job's conversion report the page shows.
#[derive(Deserialize)]
struct Rejected {
    rows_rejected: u64,
    rejected: Vec<RejectedRow>,
    /// Rows not sent because they were already sent (`[batch] duplicate_rows`).
    #[serde(default)]
    rows_duplicate: u64,
    #[serde(default)]
    duplicate_rows: Vec<DuplicateRow>,
    /// Rows not sent because their number opted out (`[optout] apply`).
    #[serde(default)]
    rows_opted_out: u64,
    #[serde(default)]
    opted_out_rows: Vec<OptedOutRow>,
}

#[derive(Deserialize)]
struct OptedOutRow {
    line: u64,
    number: String,
    reason: String,
}

#[derive(Deserialize)]
struct DuplicateRow {
    line: u64,
    reason: String,
}

#[derive(Deserialize)]
struct RejectedRow {
    line: u64,
    number: String,
    reason: String,
}

struct Row {
    job: Job,
    files: Vec<String>,
    messages: Option<crate::journal::MessageCounts>,
}

fn internal(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the journal cannot be read: {e}\n"),
    )
        .into_response()
}

/// `GET /`: the jobs, newest first.
pub(crate) async fn index(
    State(ops): State<Arc<Ops>>,
    f: Result<Query<Filter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // A filter that cannot be read is no filter (never a 400 for a person's typo).
    let f = f.map(|Query(f)| f).unwrap_or_default();
    let o = ops.clone();
    let r = tokio::task::spawn_blocking(move || {
        let now = Utc::now();
        let today = super::today_start_ms(&o.cfg.batch.zone, now);
        let day: Option<NaiveDate> = f
            .day
            .as_deref()
            .filter(|d| !d.is_empty())
            .and_then(|d| d.parse().ok());
        let state = f
            .state
            .clone()
            .filter(|s| JOB_STATES.iter().any(|j| j.as_str() == s));
        // A day in the batch timezone (the day in file names), not UTC.
        let range = day.map(|d| {
            let zone = &o.cfg.batch.zone;
            let at = |d: NaiveDate| {
                let noon = d.and_hms_opt(12, 0, 0).expect("noon exists").and_utc();
                super::today_start_ms(zone, noon)
            };
            (at(d), at(d.succ_opt().unwrap_or(d)))
        });
        o.with_journal(|j| {
            let stats = j.stats(today)?;
            let mut rows = vec![];
            for job in j.jobs_filtered(state.as_deref(), range, MAX_JOBS)? {
                let files = j.batches(job.id)?.into_iter().map(|b| b.name).collect();
                let messages = j.message_counts(job.id)?;
                rows.push(Row {
                    job,
                    files,
                    messages,
                });
            }
            Ok((stats, rows, state, day, now))
        })
    })
    .await;
    let (stats, rows, state, day, now) = match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let tracked = rows.iter().any(|r| r.messages.is_some());
    let windows = crate::hold::windows_now(&ops.cfg, now);
    let held = stats.jobs.get("held").copied().unwrap_or(0);
    let body = html! {
        p.summary { (summary_line(&stats, now.timestamp_millis())) }
        @for w in &windows {
            p.window { "Send window " (w.schedule) " (" (w.subaccounts.join(", ")) "): " (w.summary) }
        }
        @if held > 0 {
            p.held { (held) " job(s) held for their send window; "
                a href="/?state=held" { "show them" } }
        }
        p { @for (s, n) in &stats.jobs { (state_badge(s)) " " (n) "  " } }
        form method="get" action="/" {
            label { "State " select name="state" {
                option value="" { "all" }
                @for s in JOB_STATES {
                    option value=(s.as_str()) selected[state.as_deref() == Some(s.as_str())] { (s.as_str()) }
                }
            } }
                        label { "Day " input type="date" name="day" value=(day.map(|d| d.to_string()).unwrap_or_default()); }
            button type="submit" { "Filter" }
            a href="/" { "clear" }
        }
        div.scroll { table id="jobs" {
            thead { tr {
                th { "Job" } th { "Input" } th { "Subaccount" } th { "State" } th { "Rows" }
                th { "Rejected" } th { "Remote files" }
                @if tracked { th { "Messages (delivered / failed / pending)" } }
                th { "Created (UTC)" } th { "Updated (UTC)" }
            } }
            tbody {
                @for r in &rows {
                    tr id={ "job-" (r.job.id) } {
                        td.n { a href={ "/jobs/" (r.job.id) } { (r.job.id) } }
                        td { a href={ "/jobs/" (r.job.id) } { (r.job.input_name) } }
                        td { (r.job.subaccount) }
                        td { (state_badge(r.job.state.as_str())) }
                        td.n { (r.job.rows_read) }
                        td.n { (r.job.rows_rejected) }
                        td { (r.files.join(", ")) }
                        @if tracked { td { @if let Some(m) = &r.messages { (m.delivered) " / " (m.failed) " / " (m.pending) } } }
                        td { (time(r.job.created_at)) }
                        td { (time(r.job.updated_at)) }
                    }
                }
            }
        } }
        @if rows.is_empty() { p { "No jobs" @if state.is_some() || day.is_some() { " match the filter" } "." } }
    };
    layout(&ops, "jobs", body).into_response()
}

/// `GET /jobs/{id}`: one job in full.
pub(crate) async fn job(State(ops): State<Arc<Ops>>, Path(id): Path<i64>) -> Response {
    let o = ops.clone();
    let r = tokio::task::spawn_blocking(move || {
        o.with_journal(|j| {
            let Some(job) = j.job(id)? else {
                return Ok(None);
            };
            let batches = j.batches(id)?;
            let history = j.history(id)?;
            let conversion: Option<Rejected> = j
                .convert_report(id)?
                .and_then(|s| serde_json::from_str(&s).ok());
            let counts = j.message_counts(id)?;
            let failed = j.failed_messages(id, 1000)?;
            // Message texts only when the operator asked for them (read again from the input).
            let rows =
                if o.cfg.http.show_messages && job.state != crate::journal::JobState::Rejected {
                    let how = crate::job_input::AsConverted::of(j, &job, &o.cfg)?;
                    Some(
                        crate::report::sent_rows(&o.cfg, &job, &how, MAX_ROWS)
                            .map_err(|e| e.to_string()),
                    )
                } else {
                    None
                };
            Ok(Some((
                job, batches, history, conversion, counts, failed, rows,
            )))
        })
    })
    .await;
    let (job, batches, history, conversion, counts, failed, rows) = match r {
        Ok(Ok(Some(v))) => v,
        Ok(Ok(None)) => {
            return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
        }
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    let input = &ops.cfg.input;
    let rules = NumberRules {
        country_code: &input.default_country_code,
        national_lengths: &input.national_lengths,
    };
    let masked = |text: &str| mask_text(text, rules);
    let body = html! {
        p { a href="/" { "← all jobs" } }
        h1 { "Job " (job.id) ": " (job.input_name) }
        dl {
            dt { "State" } dd { (state_badge(job.state.as_str())) }
                        @if let Some(r) = &job.reason { dt { "Reason" } dd { (masked(r)) } }
            dt { "Input" } dd { (job.input_path.display()) }
            dt { "Subaccount" } dd { (job.subaccount) }
            dt { "Rows" } dd { (job.rows_read) " read, " (job.rows_sent) " sent, " (job.rows_rejected) " rejected"
                @if let Some(c) = conversion.as_ref().filter(|c| c.rows_duplicate > 0) { ", " (c.rows_duplicate) " already sent (not sent again)" }
                @if let Some(c) = conversion.as_ref().filter(|c| c.rows_opted_out > 0) { ", " (c.rows_opted_out) " opted out (not sent)" } }
            dt { "SHA-256" } dd { code { (job.hash) } }
            dt { "Created (UTC)" } dd { (time(job.created_at)) }
            dt { "Updated (UTC)" } dd { (time(job.updated_at)) }
                        @if let Some(l) = &job.late { dt { "Late write" } dd { (masked(l)) } }
            @if let Some(p) = job.parent_job { dt { "Continues" } dd { a href={ "/jobs/" (p) } { "job " (p) } } }
            @if let Some(c) = &counts {
                dt { "Messages" } dd { (c.delivered) " delivered, " (c.failed) " failed, " (c.pending) " pending, " (c.untracked) " untracked" }
            }
        }
        h2 { "Remote files" }
        @if batches.is_empty() { p { "None." } } @else {
            div.scroll { table id="files" {
                thead { tr { th { "Name" } th { "Rows" } th { "Bytes" } th { "State" } th { "Uploaded (UTC)" } th { "Failed attempts" } th { "Last error / note" } } }
                tbody { @for b in &batches { tr {
                    td { (b.name) } td.n { (b.rows) } td.n { (b.bytes) } td { (state_badge(b.state.as_str())) }
                    td { (b.uploaded_at.map(time).unwrap_or_default()) } td.n { (b.attempts) }
                    td { (masked(b.last_error.as_deref().unwrap_or_default())) @if let Some(n) = &b.note { " " (masked(n)) } }
                } } }
            } }
        }
        h2 { "Rejected rows" }
        @match &conversion {
            Some(c) if !c.rejected.is_empty() => {
                div.scroll { table id="rejected" {
                    thead { tr { th { "Line" } th { "Number" } th { "Reason" } } }
                    tbody { @for r in &c.rejected { tr {
                        td.n { (r.line) } td { (mask(&r.number)) } td { (masked(&r.reason)) }
                    } } }
                } }
                @if (c.rejected.len() as u64) < c.rows_rejected { p { "(the first " (c.rejected.len()) " of " (c.rows_rejected) "; the JSON report has the result CSV with all)" } }
            }
            _ => { p { "None." } }
        }
        @if let Some(c) = conversion.as_ref().filter(|c| !c.opted_out_rows.is_empty()) {
            h2 { "Rows to numbers that opted out" }
            div.scroll { table id="opted-out" {
                thead { tr { th { "Line" } th { "Number" } th { "Not sent: why" } } }
                tbody { @for o in &c.opted_out_rows { tr { td.n { (o.line) } td { (mask(&o.number)) } td { (masked(&o.reason)) } } } }
            } }
            @if (c.opted_out_rows.len() as u64) < c.rows_opted_out { p { "(the first " (c.opted_out_rows.len()) " of " (c.rows_opted_out) "; the result CSV lists all)" } }
        }
        @if let Some(c) = conversion.as_ref().filter(|c| !c.duplicate_rows.is_empty()) {
            h2 { "Rows already sent" }
            div.scroll { table id="duplicates" {
                thead { tr { th { "Line" } th { "Not sent again: why" } } }
                tbody { @for d in &c.duplicate_rows { tr { td.n { (d.line) } td { (masked(&d.reason)) } } } }
            } }
            @if (c.duplicate_rows.len() as u64) < c.rows_duplicate { p { "(the first " (c.duplicate_rows.len()) " of " (c.rows_duplicate) "; the result CSV lists all)" } }
        }
        @if !failed.is_empty() {
            h2 { "Failed messages" }
            div.scroll { table id="failed" {
                thead { tr { th { "Line" } th { "Number" } th { "Status" } th { "Carrier" } } }
                tbody { @for m in &failed { tr {
                    td.n { (m.line) } td { (mask(&m.number)) }
                    td { (m.delivered_status.clone().filter(|_| m.delivered_code.is_some_and(|c| c != 4)).or(m.sent_status.clone()).unwrap_or_default()) }
                    td { (m.carrier.clone().unwrap_or_default()) }
                } } }
            } }
        }
        @if let Some(rows) = &rows {
            h2 { "Messages sent" }
            @match rows {
                Ok(rows) => {
                    div.scroll { table id="messages" {
                        thead { tr { th { "Line" } th { "Number" } th { "Text" } } }
                        tbody { @for (line, number, text) in rows { tr {
                            td.n { (line) } td { (mask(number)) } td { (text) }
                        } } }
                    } }
                    @if rows.len() == MAX_ROWS { p { "(the first " (MAX_ROWS) ")" } }
                }
                Err(e) => { p { "The input cannot be read again: " (e) } }
            }
        }
        h2 { "History" }
        div.scroll { table id="history" {
            thead { tr { th { "When (UTC)" } th { "State" } th { "Note" } } }
            tbody { @for h in &history { tr {
                td { (time(h.at)) } td { (state_badge(&h.state)) } td { (masked(h.note.as_deref().unwrap_or_default())) }
            } } }
        } }
    };
    layout(&ops, &format!("job {}", job.id), body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BR: NumberRules<'static> = NumberRules {
        country_code: "55",
        national_lengths: &[10, 11],
    };

    #[test]
    fn numbers_are_masked() {
        assert_eq!(mask("5511987654321"), "55119****4321");
        assert_eq!(mask("551198765432"), "5511****5432");
        assert_eq!(mask("11987654325"), "119****4325");
        assert_eq!(mask("1198765432"), "11****5432");
        assert_eq!(mask("12345678"), "12****78");
        assert_eq!(mask("123"), "***");
        assert_eq!(
            mask_text(
                "number \"(11) 98765-4321\" has 11 digits; in ACME.20261203.01.txt",
                BR
            ),
            "number \"(11) 9****-4321\" has 11 digits; in ACME.20261203.01.txt"
        );
        assert_eq!(mask_text("5511987654321x", BR), "55119****4321x");
        assert_eq!(mask_text("line 12: 3 rows", BR), "line 12: 3 rows");
        assert_eq!(mask(""), "");
    }

    /// Issue 19 item 6: a number quoted in a reason is masked however it is written, as long as
    /// the parser would read it as a number (dots, spaces, dashes, parentheses, a leading `+`).
    #[test]
    fn numbers_in_reasons_are_masked_as_the_parser_reads_them() {
        let cases = [
            (
                "number \"+55 (11) 98765.0006 x\" contains 'x'",
                "number \"+55 (11) 9****.0006 x\" contains 'x'",
            ),
            ("11.98765.4321 called", "11.9****.4321 called"),
            ("a 0055 11 98765 4321.", "a 0055 1* ***** 4321."),
            ("tel.11\u{a0}98765-4321", "tel.11\u{a0}9****-4321"),
            // Batch names, dates, times and counts stay readable.
            (
                "renamed to ACME.20261203.01.txt on 2026-12-07 15:00:01, 12345 bytes",
                "renamed to ACME.20261203.01.txt on 2026-12-07 15:00:01, 12345 bytes",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(mask_text(text, BR), want, "{text}");
        }
    }
}
