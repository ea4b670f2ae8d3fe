//! `smsdrop status`: the jobs in the journal and their states, as a table or JSON.

use crate::config::Config;
use crate::journal::{Journal, JournalError};
use serde_json::json;
use std::io::Write;

/// Prints the newest `limit` jobs.
///
/// # Errors
/// [`JournalError`] when there is no journal or it cannot be read.
pub fn run(cfg: &Config, json_out: bool, limit: u32) -> Result<(), JournalError> {
    let mut out = std::io::stdout().lock();
    print(cfg, json_out, limit, &mut out)
}

/// Prints the table again every `every` until interrupted: in place on a terminal (the screen
/// is cleared first), one after the other otherwise. A journal that cannot be read is said on
/// screen and read again next time.
///
/// # Errors
/// None so far: the signature leaves room for one.
pub fn watch(cfg: &Config, limit: u32, every: std::time::Duration) -> Result<(), JournalError> {
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let mut buf = Vec::new();
        // A journal busy or briefly unreadable is shown, and tried again next time.
        if let Err(e) = print(cfg, false, limit, &mut buf) {
            buf.clear();
            let _ = writeln!(buf, "cannot read the journal now: {e}");
        }
        let mut out = std::io::stdout().lock();
        let _ = if terminal {
            write!(out, "\x1b[H\x1b[2J")
        } else {
            writeln!(out, "---")
        };
        let _ = writeln!(
            out,
            "{} (every {}s; Ctrl-C to stop)",
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
            every.as_secs()
        );
        let _ = out.write_all(&buf);
        let _ = out.flush();
        drop(out);
        std::thread::sleep(every);
    }
}

fn print(
    cfg: &Config,
    json_out: bool,
    limit: u32,
    out: &mut dyn Write,
) -> Result<(), JournalError> {
    upgrade_if_idle(cfg)?;
    let journal = Journal::open_read_only(&cfg.state.dir)?;
    let left = crate::spool::leftovers(cfg);
    if !left.is_empty() {
        return Err(JournalError::missing(
            &cfg.state.dir.join("journal.db"),
            &format!(
                "the journal is missing but the state folder holds {}; run `smsdrop recover`",
                left.describe()
            ),
        ));
    }
    let Some(journal) = journal else {
        // Nothing has run yet: an empty list, not an error.
        let _ = if json_out {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&json!({
                    "send_windows": crate::hold::windows_now(cfg, chrono::Utc::now()),
                    "held": [],
                    "jobs": [],
                    "waiting_for_decision": [],
                    "not_taken": [],
                }))
                .expect("serialisable")
            )
        } else {
            writeln!(
                out,
                "no jobs yet (no journal in {})",
                cfg.state.dir.display()
            )
        };
        return Ok(());
    };
    let jobs = journal.recent_jobs(limit)?;
    if json_out {
        let mut list = vec![];
        for j in &jobs {
            let files: Vec<_> = journal
                .batches(j.id)?
                .iter()
                .map(|b| json!({"name": b.name, "rows": b.rows, "state": b.state, "note": b.note}))
                .collect();
            list.push(json!({
                "id": j.id,
                "input": j.input_path.to_string_lossy(),
                "subaccount": j.subaccount,
                "state": j.state,
                "rows": j.rows_read,
                "rows_rejected": j.rows_rejected,
                "reason": j.reason,
                "late": j.late,
                "continues_job": j.parent_job,
                "remote_files": files,
                "messages": journal.message_counts(j.id)?.map(|c| json!({
                    "tracking": journal.tracking(j.id).ok().flatten().unwrap_or_else(|| "waiting for the file outcome".into()),
                    "sent": c.sent, "delivered": c.delivered, "failed": c.failed,
                    "pending": c.pending, "untracked": c.untracked,
                })),
                "created_at": j.created_at,
                "updated_at": j.updated_at,
            }));
        }
        let ignored: Vec<_> = journal
            .ignored()?
            .into_iter()
            .map(|(p, r)| json!({"path": p.to_string_lossy(), "reason": r}))
            .collect();
        let decisions: Vec<_> = journal
            .batches_in(crate::journal::JobState::Unknown)?
            .into_iter()
            .map(|b| json!({"job": b.job_id, "remote_file": b.name, "reason": b.last_error}))
            .collect();
        let held: Vec<_> = journal
            .jobs_in(&[crate::journal::JobState::Held])?
            .into_iter()
            .map(|j| {
                let opens = cfg
                    .schedule
                    .for_subaccount(&j.subaccount)
                    .and_then(|s| s.next_open(cfg.batch.zone.tz(), chrono::Utc::now()));
                json!({"job": j.id, "input": j.input_path.to_string_lossy(),
                       "subaccount": j.subaccount, "held_since": j.held_since,
                       "released": j.released_at.is_some(), "opens_at": opens,
                       "reason": j.reason})
            })
            .collect();
        let today = crate::ops::today_start_ms(&cfg.batch.zone, chrono::Utc::now());
        let doc = serde_json::to_string_pretty(&json!({
            "replies": {
                "today": journal.replies_since(today)?,
                "waiting": journal.replies_waiting()?,
                "optouts": journal.optout_count()?,
            },
            "send_windows": crate::hold::windows_now(cfg, chrono::Utc::now()),
            "held": held,
            "jobs": list,
            "waiting_for_decision": decisions,
            "not_taken": ignored,
        }))
        .expect("serialisable");
        let _ = writeln!(out, "{doc}");
        return Ok(());
    }
    let now = chrono::Utc::now();
    let stats = journal.stats(crate::ops::today_start_ms(&cfg.batch.zone, now))?;
    let _ = writeln!(
        out,
        "summary: {}",
        crate::ops::page::summary_line(&stats, now.timestamp_millis())
    );
    let _ = writeln!(
        out,
        "jobs:    {}",
        stats
            .jobs
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for w in crate::hold::windows_now(cfg, now) {
        let _ = writeln!(
            out,
            "send window {} ({}): {}",
            w.schedule,
            w.subaccounts.join(", "),
            w.summary
        );
    }
    if cfg.replies.mode != crate::config::RepliesMode::Off {
        let today = crate::ops::today_start_ms(&cfg.batch.zone, now);
        let _ = writeln!(
            out,
            "replies: {} today, {} waiting for the outbox ({}); opt-out list: {} number(s)",
            journal.replies_since(today)?,
            journal.replies_waiting()?,
            cfg.replies.outbox.display(),
            journal.optout_count()?
        );
    }
    let held = journal.jobs_in(&[crate::journal::JobState::Held])?;
    if !held.is_empty() {
        let ids: Vec<String> = held.iter().map(|j| j.id.to_string()).collect();
        let _ = writeln!(
            out,
            "held:    {} job(s) waiting for the send window: {} (`smsdrop release JOB` sends one now)",
            held.len(),
            ids.join(", ")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>5}  {:<10}  {:>6}  {:>8}  {:<19}  {:<28}  INPUT",
        "JOB", "STATE", "ROWS", "REJECTED", "UPDATED (UTC)", "REMOTE FILES"
    );
    for j in &jobs {
        let names: Vec<String> = journal.batches(j.id)?.into_iter().map(|b| b.name).collect();
        let _ = writeln!(
            out,
            "{:>5}  {:<10}  {:>6}  {:>8}  {:<19}  {:<28}  {}",
            j.id,
            j.state.as_str(),
            j.rows_read,
            j.rows_rejected,
            j.updated_at.format("%Y-%m-%d %H:%M:%S"),
            if names.is_empty() {
                "-".into()
            } else {
                names.join(",")
            },
            j.input_name
        );
        if let Some(r) = &j.reason {
            let _ = writeln!(out, "       reason: {r}");
        }
        if let Some(l) = &j.late {
            let _ = writeln!(out, "       LATE WRITE: {l}");
        }
        if let Some(c) = journal.message_counts(j.id)? {
            let tracking = match journal.tracking(j.id)?.as_deref() {
                Some("done") => "tracking ended",
                Some(_) => "tracking",
                None => "awaiting the file outcome",
            };
            let untracked = if c.untracked > 0 {
                format!(", {} untracked", c.untracked)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "       messages: {} delivered, {} failed, {} pending{untracked} ({tracking})",
                c.delivered, c.failed, c.pending
            );
        }
    }
    let unknown = journal.batches_in(crate::journal::JobState::Unknown)?;
    if !unknown.is_empty() {
        let _ = writeln!(
            out,
            "\nwaiting for your decision (`smsdrop resolve JOB --sent | --resend`):"
        );
        for b in unknown {
            let _ = writeln!(
                out,
                "  job {} {}: {}",
                b.job_id,
                b.name,
                b.last_error.unwrap_or_default()
            );
        }
    }
    let ignored = journal.ignored()?;
    if !ignored.is_empty() {
        let _ = writeln!(out, "\nfiles in the inbox smsdrop will not take:");
        for (p, r) in ignored {
            let _ = writeln!(out, "  {}: {r}", p.display());
        }
    }
    if jobs.is_empty() {
        let _ = writeln!(
            out,
            "no jobs yet (journal {})",
            cfg.state.dir.join("journal.db").display()
        );
    }
    Ok(())
}

/// A journal an older smsdrop wrote is upgraded first when no daemon owns the state folder (a
/// running daemon has upgraded it already); reading it as it is would miss columns.
fn upgrade_if_idle(cfg: &Config) -> Result<(), JournalError> {
    if !cfg.state.dir.join("journal.db").exists() {
        return Ok(());
    }
    match Journal::stored_version(&cfg.state.dir)? {
        Some(v) if v < crate::journal::SCHEMA_VERSION => {}
        _ => return Ok(()),
    }
    if let Ok(_lock) = crate::lock::StateLock::acquire(&cfg.state.dir) {
        Journal::open(&cfg.state.dir)?;
    }
    Ok(())
}
