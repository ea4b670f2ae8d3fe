//! The status poller (`[status] mode = "poll"` or `"both"`): a thread beside the engine, on its
//! own journal connection, that asks the gateway's API and records what it hears.
//!
//! - `poll`: `list` every `poll_secs` (it never returns a status twice, so what it returned is
//!   recorded before the next request);
//! - `poll` and `both`: `search`, in chunks, for sent messages still pending `search_after`
//!   after their upload, each asked again after as long (this also covers what `list` returned
//!   before a restart, and what the webhook missed).
//!
//! Errors never stop it: HTTP 429 and 5xx back off, refused credentials and a redirect are logged
//! once as an error (with what to check) and tried again every few minutes.
//!
//! Answers are recorded as they are read, a slice ([`super::SLICE`]) per transaction, so a long
//! `list` answer never sits whole in memory.

use super::api::{ApiError, StatusApi, SEARCH_CHUNK};
use crate::config::{StatusConfig, StatusMode};
use crate::journal::{Journal, StatusUpdate};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most `search` requests in one round (then `list` gets its turn again).
const SEARCHES_PER_ROUND: usize = 10;

/// The running poller; stops when dropped.
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the poller when `cfg` queries the API. A message whose first status is one of
/// `optout_codes` (`[optout] from_statuses`) puts its number on the opt-out list.
///
/// # Errors
/// When the token cannot be loaded or the journal opened.
pub fn start(
    cfg: &StatusConfig,
    zone: crate::config::Zone,
    state_dir: &Path,
    optout_codes: Vec<i64>,
    wake: std::sync::mpsc::SyncSender<()>,
    replies: Option<Replies>,
) -> Result<Option<Poller>, String> {
    if !cfg.mode.queries() && replies.is_none() {
        return Ok(None);
    }
    let api = StatusApi::new(cfg)?.in_zone(zone);
    let journal = Journal::open(state_dir).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let cfg = cfg.clone();
    let thread = std::thread::Builder::new()
        .name("smsdrop-status".into())
        .spawn(move || {
            Worker {
                api,
                rec: Recorder {
                    cfg,
                    optout_codes,
                    journal,
                    wake,
                },
                auth_logged: false,
                redirect_logged: false,
                replies,
                searched_to: None,
            }
            .run(&s)
        })
        .map_err(|e| format!("cannot start the status poller: {e}"))?;
    Ok(Some(Poller {
        stop,
        thread: Some(thread),
    }))
}

struct Worker {
    api: StatusApi,
    rec: Recorder,
    auth_logged: bool,
    redirect_logged: bool,
    replies: Option<Replies>,
    /// When the last successful replies `search` of this run ended (ms).
    searched_to: Option<i64>,
}

/// Customers' replies fetched on this thread (one request budget with the statuses): `list`
/// every `poll` (`[replies] mode = "poll"`), `search` at start and every `reconcile`.
pub struct Replies {
    pub cfg: crate::config::RepliesConfig,
    pub optout: crate::config::OptoutConfig,
    /// The subaccount of a reply that names none and answers no known row.
    pub default_subaccount: String,
    /// How rows' numbers are written (`[input]`), for a reply that answers no known row.
    pub country_code: String,
    pub national_lengths: Vec<usize>,
}

impl Replies {
    /// A reply's number as the rows write it (digits, the country code first).
    pub fn normalize(&self, number: &str) -> String {
        crate::replies::normalize_number(&self.country_code, &self.national_lengths, number)
    }
}

/// Whether a failed replies request makes the status requests wait too: the API asked to slow
/// down, had a problem or could not be reached. A replies endpoint that answers 404 or garbage
/// (MO reception not enabled for the account) must not stop the statuses.
fn shares_wait(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::RateLimited { .. } | ApiError::Server(..) | ApiError::Transport(_)
    )
}

/// The most replies one `list` answer holds (SPEC.md).
const LIST_MAX: usize = 1000;

/// How far before the last reply recorded `search` starts: the gateway may read a time without
/// an offset in its own zone (Brazil, up to 5 hours behind UTC), and replies are kept once by
/// their id, so asking for more costs nothing.
const SEARCH_MARGIN_MS: i64 = 6 * 3_600_000;
/// `search` reaches back at most this far (the gateway keeps replies 5 days).
const SEARCH_REACH_MS: i64 = 5 * 86_400_000 - 3_600_000;

/// Records statuses as an answer is read.
struct Recorder {
    cfg: StatusConfig,
    /// `[optout] from_statuses`.
    optout_codes: Vec<i64>,
    journal: Journal,
    wake: std::sync::mpsc::SyncSender<()>,
}

/// What one answer did, over its slices.
#[derive(Default)]
struct Totals {
    statuses: usize,
    matched: usize,
    changed: usize,
    not_ours: usize,
    conflicts: usize,
}

impl Recorder {
    /// Records a slice of statuses (one transaction); the error is logged here.
    fn apply(
        &mut self,
        updates: &[StatusUpdate],
        from: &str,
        t: &mut Totals,
    ) -> Result<(), String> {
        let cfg = &self.cfg;
        let no_dlr = |c: &str| cfg.no_dlr(c);
        match self
            .journal
            .apply_statuses(updates, &no_dlr, &self.optout_codes)
        {
            Ok(a) => {
                super::log_optouts(&a);
                if a.changed > 0 {
                    let _ = self.wake.try_send(());
                }
                t.statuses += updates.len();
                t.matched += a.matched;
                t.changed += a.changed;
                t.not_ours += a.unknown.len();
                t.conflicts += a.conflicts;
                Ok(())
            }
            Err(e) => {
                // `list` will not return these again; `search` asks for them later.
                tracing::error!(error = %e, from, "status poller: cannot record statuses; they are searched for again later");
                Err(e.to_string())
            }
        }
    }

    fn log(t: &Totals, from: &str) {
        if t.statuses > 0 {
            tracing::info!(
                from,
                statuses = t.statuses,
                matched = t.matched,
                changed = t.changed,
                not_ours = t.not_ours,
                conflicts = t.conflicts,
                "message statuses recorded"
            );
        }
    }
}

impl Worker {
    fn run(mut self, stop: &AtomicBool) {
        tracing::info!(api = %self.rec.cfg.api_url, mode = ?self.rec.cfg.mode, replies = ?self.replies.as_ref().map(|r| r.cfg.mode), "status poller started");
        let mut next_list = Instant::now();
        let mut next_search = Instant::now();
        let mut next_replies = Instant::now();
        let mut next_reconcile = Instant::now();
        let statuses = self.rec.cfg.mode.queries();
        while !stop.load(Ordering::SeqCst) {
            let mut wait = None;
            if let Some(w) = self.replies_round(stop, &mut next_replies, &mut next_reconcile) {
                wait = Some(w);
            }
            if wait.is_none()
                && self.rec.cfg.mode == StatusMode::Poll
                && Instant::now() >= next_list
            {
                next_list = Instant::now() + self.rec.cfg.poll;
                let mut t = Totals::default();
                let rec = &mut self.rec;
                let got = self.api.list(stop, &mut |u| rec.apply(&u, "list", &mut t));
                Recorder::log(&t, "list");
                match got {
                    Ok(()) => self.ok(),
                    Err(ApiError::NotRecorded(_)) => {
                        next_list = Instant::now() + Duration::from_secs(5)
                    }
                    Err(e) => wait = self.failed(&e),
                }
            }
            if wait.is_none() && statuses && Instant::now() >= next_search {
                next_search = Instant::now() + self.rec.cfg.poll;
                if let Some(w) = self.search_round(stop) {
                    wait = Some(w);
                }
            }
            let replies_due = match &self.replies {
                Some(r) if r.cfg.mode == crate::config::RepliesMode::Poll => {
                    Some(next_replies.min(next_reconcile))
                }
                Some(_) => Some(next_reconcile),
                None => None,
            };
            let until = match wait {
                Some(w) => {
                    next_list = next_list.max(Instant::now() + w);
                    next_search = next_search.max(Instant::now() + w);
                    next_replies = next_replies.max(Instant::now() + w);
                    next_reconcile = next_reconcile.max(Instant::now() + w);
                    Instant::now() + w
                }
                None if self.rec.cfg.mode == StatusMode::Poll => next_list.min(next_search),
                None if statuses => next_search,
                None => Instant::now() + Duration::from_secs(3600),
            };
            let until = replies_due.map_or(until, |r| until.min(r));
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(
                    until
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(200)),
                );
            }
        }
        tracing::debug!(requests = self.api.requests, "status poller stopped");
    }

    /// Replies: `list` when due (poll mode), `search` at start and every `reconcile`; each
    /// answer recorded before the next request. The wait when the API failed.
    fn replies_round(
        &mut self,
        stop: &AtomicBool,
        next_list: &mut Instant,
        next_reconcile: &mut Instant,
    ) -> Option<Duration> {
        let r = self.replies.as_ref()?;
        let (poll, reconcile, mode) = (r.cfg.poll, r.cfg.reconcile, r.cfg.mode);
        if Instant::now() >= *next_reconcile {
            *next_reconcile = Instant::now() + reconcile;
            let now = chrono::Utc::now().timestamp_millis();
            let start = match self.rec.journal.last_reply_at() {
                // A reply dated in the future (a skewed clock) must not move the start past now;
                // pushes lost since the last search (mode "both") are after that search's end.
                Ok(Some(t)) => {
                    t.min(now).min(self.searched_to.unwrap_or(i64::MAX)) - SEARCH_MARGIN_MS
                }
                Ok(None) => match self.rec.journal.first_job_at() {
                    Ok(Some(t)) => t - SEARCH_MARGIN_MS,
                    Ok(None) => now - SEARCH_MARGIN_MS,
                    Err(e) => {
                        tracing::error!(error = %e, "replies: cannot read the journal");
                        return Some(Duration::from_secs(10));
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "replies: cannot read the journal");
                    return Some(Duration::from_secs(10));
                }
            }
            .max(now - SEARCH_REACH_MS);
            let iso = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .unwrap_or_default()
                    .format("%Y-%m-%dT%H:%M:%S")
                    .to_string()
            };
            let got = self
                .api
                .replies_search(&iso(start), &iso(now + 60_000), stop);
            match got {
                Ok(v) => {
                    self.searched_to = Some(now);
                    if self.record_replies(&v, "search").is_err() {
                        *next_reconcile = Instant::now() + Duration::from_secs(10);
                        return Some(Duration::from_secs(10));
                    }
                    self.ok();
                }
                Err(e) => {
                    // Asked again after the wait (what `list` returned before a crash is found
                    // then); the statuses go on meanwhile unless the API itself asks to wait.
                    let wait = self.failed(&e);
                    *next_reconcile = Instant::now() + wait.unwrap_or(poll);
                    if shares_wait(&e) {
                        return wait;
                    }
                }
            }
        }
        if mode == crate::config::RepliesMode::Poll && Instant::now() >= *next_list {
            *next_list = Instant::now() + poll;
            match self.api.replies_list(stop) {
                Ok(v) => {
                    // A full answer (the gateway hands out at most 1,000): more wait; ask again
                    // at the next turn instead of after poll_secs.
                    let full = v
                        .get("messages")
                        .or(Some(&v))
                        .and_then(serde_json::Value::as_array)
                        .is_some_and(|a| a.len() >= LIST_MAX);
                    if full {
                        *next_list = Instant::now();
                    }
                    if self.record_replies(&v, "list").is_err() {
                        // `list` will not return these again: `search` finds them.
                        *next_reconcile = Instant::now() + Duration::from_secs(10);
                        return Some(Duration::from_secs(10));
                    }
                    self.ok();
                }
                Err(e) => {
                    let wait = self.failed(&e);
                    *next_list = Instant::now() + wait.unwrap_or(poll);
                    if shares_wait(&e) {
                        return wait;
                    }
                }
            }
        }
        None
    }

    /// Records an answer's replies (one transaction); logs what it did.
    fn record_replies(&mut self, answer: &serde_json::Value, from: &str) -> Result<(), ()> {
        let Some(r) = &self.replies else {
            return Ok(());
        };
        let (replies, skipped) = match crate::replies::parse_replies(answer) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(from, error = %e, "replies: the answer is not usable; ignored");
                return Ok(());
            }
        };
        if skipped > 0 {
            tracing::warn!(
                from,
                skipped,
                "replies without an id or a number were ignored"
            );
        }
        if replies.is_empty() {
            return Ok(());
        }
        if from == "list" {
            // A crash here: `list` will not hand these out again; `search` must find them.
            crate::crash::point("replies-listed");
        }
        let optout = &r.optout;
        match self.rec.journal.record_replies(
            &replies,
            &r.default_subaccount,
            &|t| optout.is_opt_out(t),
            &|n| r.normalize(n),
        ) {
            Ok(done) => {
                crate::crash::point("replies-recorded");
                if done.new > 0 {
                    let _ = self.rec.wake.try_send(());
                    tracing::info!(
                        from,
                        replies = replies.len(),
                        new = done.new,
                        matched = done.matched,
                        opted_out = done.opted_out.len(),
                        "replies recorded"
                    );
                }
                for (sub, number) in &done.opted_out {
                    tracing::info!(subaccount = %sub, number = %crate::ops::page::mask(number), "opted out by reply");
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, from, "replies: cannot record them; they are searched for again");
                Err(())
            }
        }
    }

    /// Asks `search` about messages pending too long; the wait when the API failed.
    fn search_round(&mut self, stop: &AtomicBool) -> Option<Duration> {
        let now = chrono::Utc::now().timestamp_millis();
        let after = self.rec.cfg.search_after.as_millis() as i64;
        for _ in 0..SEARCHES_PER_ROUND {
            let ids = match self.rec.journal.ids_to_search(
                now - after,
                now - after.max(1000),
                SEARCH_CHUNK as u32,
            ) {
                Ok(ids) if ids.is_empty() => return None,
                Ok(ids) => ids,
                Err(e) => {
                    tracing::error!(error = %e, "status poller: cannot read the journal");
                    return Some(Duration::from_secs(10));
                }
            };
            let mut t = Totals::default();
            let rec = &mut self.rec;
            let got = self
                .api
                .search_each(&ids, stop, &mut |u| rec.apply(&u, "search", &mut t));
            Recorder::log(&t, "search");
            match got {
                Ok(()) => {
                    self.ok();
                    if let Err(e) = self.rec.journal.mark_searched(&ids) {
                        tracing::error!(error = %e, "status poller: cannot write the journal");
                        return Some(Duration::from_secs(10));
                    }
                }
                Err(ApiError::NotRecorded(_)) => return Some(Duration::from_secs(10)),
                Err(e) => return self.failed(&e),
            }
        }
        None
    }

    fn ok(&mut self) {
        if self.auth_logged {
            tracing::info!("the status API accepts the credentials again");
            self.auth_logged = false;
        }
        if self.redirect_logged {
            tracing::info!("the status API answers without a redirect again");
            self.redirect_logged = false;
        }
    }

    fn failed(&mut self, e: &ApiError) -> Option<Duration> {
        if matches!(e, ApiError::Stopped) {
            return None;
        }
        let wait = if e.backs_off() {
            self.api.backoff(e)
        } else {
            self.rec.cfg.poll
        };
        match e {
            ApiError::Unauthorized(..) if !self.auth_logged => {
                self.auth_logged = true;
                tracing::error!(error = %e, retry_in_secs = wait.as_secs(), "status API refused smsdrop");
            }
            ApiError::Unauthorized(..) => {}
            ApiError::Redirect { .. } if !self.redirect_logged => {
                self.redirect_logged = true;
                tracing::error!(error = %e, retry_in_secs = wait.as_secs(), "status API redirected smsdrop elsewhere; not followed");
            }
            ApiError::Redirect { .. } => {}
            _ => {
                tracing::warn!(error = %e, retry_in_secs = wait.as_secs(), "status API request failed")
            }
        }
        Some(wait)
    }
}
