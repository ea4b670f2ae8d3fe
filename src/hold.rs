//! Send windows applied to converted batches (`[schedule]`): which may go now, which wait
//! (`held`, with the opening in their reason), which are past `max_hold` and end `expired`.
//!
//! A job whose upload has begun finishes whatever the window does meanwhile; a job an operator
//! released (`smsdrop release`) goes at once. Names are given at upload, so a held batch carries
//! the day it is actually sent.

use crate::config::Config;
use crate::journal::{Batch, Job, JobState, Journal, JournalError};
use crate::schedule::{local_label, span_label, Schedule};
use crate::stage::{Ctx, StageError};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// What the window says about one job's batches now.
enum Verdict {
    Go,
    Wait { why: String },
    Expire { why: String },
}

/// The schedule a job follows, if any (none: always open).
fn schedule_of<'a>(cfg: &'a Config, job: &Job) -> Option<&'a Schedule> {
    cfg.schedule.for_subaccount(&job.subaccount)
}

/// True when no schedule is configured at all: the gate costs nothing then.
fn unscheduled(cfg: &Config) -> bool {
    cfg.schedule.global.is_none() && cfg.schedule.subaccounts.values().all(Option::is_none)
}

/// "waiting for the send window: opens Mon 08:00 (in 5h 12m)".
pub fn waiting_reason(cfg: &Config, schedule: &Schedule, now: DateTime<Utc>) -> String {
    let tz = cfg.batch.zone.tz();
    match schedule.next_open(tz, now) {
        Some(at) => format!(
            "waiting for the send window: opens {} (in {})",
            local_label(tz, at, now),
            span_label(now, at)
        ),
        None => "waiting for the send window: no window opens in the next years; check \
                 [schedule] windows and holidays, or `smsdrop release` it"
            .into(),
    }
}

fn verdict(cfg: &Config, job: &Job, now: DateTime<Utc>) -> Verdict {
    if job.state == JobState::Uploading || job.released_at.is_some() {
        return Verdict::Go;
    }
    let Some(schedule) = schedule_of(cfg, job) else {
        return Verdict::Go;
    };
    let tz = cfg.batch.zone.tz();
    if schedule.is_open(tz, now) {
        return Verdict::Go;
    }
    if let (Some(max), Some(since)) = (cfg.schedule.max_hold, job.held_since) {
        let max = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
        if now >= since + max {
            let closed = schedule
                .last_close(tz, now)
                .map(|t| format!(" (window closed since {})", local_label(tz, t, now)))
                .unwrap_or_default();
            return Verdict::Expire {
                why: format!(
                    "not sent: held past max_hold ({}){closed}; `smsdrop retry {}` sends it now",
                    cfg.schedule.max_hold_text, job.id
                ),
            };
        }
    }
    Verdict::Wait {
        why: waiting_reason(cfg, schedule, now),
    }
}

/// Splits converted batches into those that go now (returned, in their order) and those that
/// wait; records the waiting jobs as `held` (reason kept current) and ends those past
/// `max_hold` as `expired`.
///
/// # Errors
/// [`StageError::Journal`] when the journal fails.
pub fn gate(ctx: &mut Ctx<'_>, fresh: Vec<Batch>) -> Result<Vec<Batch>, StageError> {
    let held = ctx.journal.jobs_in(&[JobState::Held])?;
    if unscheduled(ctx.cfg) && held.is_empty() {
        return Ok(fresh);
    }
    let now = ctx.clock.now();
    let mut jobs: BTreeMap<i64, Job> = held.into_iter().map(|j| (j.id, j)).collect();
    for b in &fresh {
        if !jobs.contains_key(&b.job_id) {
            if let Some(j) = ctx.journal.job(b.job_id)? {
                jobs.insert(j.id, j);
            }
        }
    }
    let verdicts: BTreeMap<i64, Verdict> = jobs
        .values()
        .map(|j| (j.id, verdict(ctx.cfg, j, now)))
        .collect();
    let batches_of = |id: i64| fresh.iter().filter(move |b| b.job_id == id);
    let changes = verdicts.iter().any(|(id, v)| match v {
        Verdict::Go => false,
        Verdict::Wait { why } => {
            jobs[id].state == JobState::Converted || jobs[id].reason.as_deref() != Some(why)
        }
        Verdict::Expire { .. } => true,
    });
    if !changes {
        return Ok(fresh
            .into_iter()
            .filter(|b| matches!(verdicts.get(&b.job_id), Some(Verdict::Go) | None))
            .collect());
    }
    ctx.journal.transaction(|t| {
        for (id, v) in &verdicts {
            let job = &jobs[id];
            match v {
                Verdict::Go => {}
                Verdict::Wait { why } if job.state == JobState::Converted => {
                    t.hold(*id, why)?;
                    tracing::info!(job = id, reason = %why, "held");
                }
                Verdict::Wait { why } => {
                    if job.reason.as_deref() != Some(why.as_str()) {
                        t.set_reason(*id, Some(why))?;
                    }
                }
                Verdict::Expire { why } => {
                    for b in batches_of(*id) {
                        t.set_batch_state(b.id, JobState::Expired, Some("held past max_hold"))?;
                    }
                    t.set_job_state(*id, JobState::Expired, Some(why))?;
                    tracing::warn!(job = id, reason = %why, "expired while held");
                }
            }
        }
        Ok(())
    })?;
    Ok(fresh
        .into_iter()
        .filter(|b| matches!(verdicts.get(&b.job_id), Some(Verdict::Go) | None))
        .collect())
}

/// When the engine must look again at held jobs: the soonest opening of a window one waits for,
/// or `max_hold` running out; `None` when nothing is held.
///
/// # Errors
/// When the journal cannot be read.
pub fn next_event(
    cfg: &Config,
    journal: &Journal,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, JournalError> {
    let held = journal.jobs_in(&[JobState::Held])?;
    let tz = cfg.batch.zone.tz();
    let mut soonest: Option<DateTime<Utc>> = None;
    let mut consider = |t: DateTime<Utc>| {
        soonest = Some(soonest.map_or(t, |s| s.min(t)));
    };
    for job in &held {
        match schedule_of(cfg, job) {
            // Its schedule was removed (a new config): it goes at the next round.
            None => consider(now),
            Some(s) => {
                if let Some(t) = s.next_open(tz, now) {
                    consider(t);
                }
            }
        }
        if job.released_at.is_some() {
            consider(now);
        }
        if let (Some(max), Some(since)) = (cfg.schedule.max_hold, job.held_since) {
            if let Ok(max) = chrono::Duration::from_std(max) {
                consider(since + max);
            }
        }
    }
    Ok(soonest)
}

/// One schedule's state now, for `status`, the status page, `/metrics` and `check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowState {
    /// `[schedule]` or `[subaccounts.NAME]`.
    pub schedule: String,
    /// The subaccounts that follow it (known from the config; `*` for any other).
    pub subaccounts: Vec<String>,
    pub open: bool,
    /// When it opens next (now when open), if ever.
    pub next_open: Option<DateTime<Utc>>,
    /// When it closes next, if ever.
    pub next_close: Option<DateTime<Utc>>,
    /// "open until Fri 20:00 (in 3h 2m)" or "closed, opens Mon 08:00 (in 2d 10h)".
    pub summary: String,
}

/// Every configured schedule's state at `now`; empty when none is configured.
pub fn windows_now(cfg: &Config, now: DateTime<Utc>) -> Vec<WindowState> {
    if unscheduled(cfg) {
        return vec![];
    }
    let tz = cfg.batch.zone.tz();
    let mut out = vec![];
    for (who, schedule) in cfg.schedule.all() {
        let subaccounts: Vec<String> = if who == "[schedule]" {
            vec!["*".into()]
        } else {
            vec![who
                .trim_start_matches("[subaccounts.")
                .trim_end_matches(']')
                .to_owned()]
        };
        let Some(s) = schedule else {
            out.push(WindowState {
                schedule: who,
                subaccounts,
                open: true,
                next_open: Some(now),
                next_close: None,
                summary: "always open".into(),
            });
            continue;
        };
        let open = s.is_open(tz, now);
        let next_open = s.next_open(tz, now);
        let next_close = s.next_close(tz, now);
        let at =
            |t: DateTime<Utc>| format!("{} (in {})", local_label(tz, t, now), span_label(now, t));
        let summary = match (open, next_open, next_close) {
            (true, _, Some(c)) => format!("open until {}", at(c)),
            (true, _, None) => "open".into(),
            (false, Some(o), _) => format!("closed, opens {}", at(o)),
            (false, None, _) => "closed, no window opens in the next years".into(),
        };
        out.push(WindowState {
            schedule: who,
            subaccounts,
            open,
            next_open,
            next_close,
            summary,
        });
    }
    out
}

/// Whether `subaccount`'s window is open now (always, with no schedule).
pub fn open_for(cfg: &Config, subaccount: &str, now: DateTime<Utc>) -> bool {
    cfg.schedule
        .for_subaccount(subaccount)
        .is_none_or(|s| s.is_open(cfg.batch.zone.tz(), now))
}

/// When a batch of `subaccount` converted at `now` would go out: now when its window is open
/// (or it has none), else when the window next opens (`now` if it never does: `max_hold` or an
/// operator decides then).
pub fn send_time(cfg: &Config, subaccount: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    cfg.schedule
        .for_subaccount(subaccount)
        .and_then(|s| s.next_open(cfg.batch.zone.tz(), now))
        .unwrap_or(now)
}
