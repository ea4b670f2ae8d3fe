//! The engine: wiring of the stages (watch → intake → upload → track → report) on one thread
//! that owns the journal and the SFTP session, so ssh2's blocking calls never stall anything
//! else. No business rules here.
//!
//! Shutdown (SIGTERM/SIGINT) is a flag checked between units of work: a running upload finishes
//! (or is left resumable), then the loop exits.

use crate::archive::{self, Origin};
use crate::config::Config;
use crate::handoff;
use crate::intake;
use crate::journal::{Job, JobState, Journal, JournalError};
use crate::late::LateWatch;
use crate::lock::StateLock;
use crate::remote::Remote;
use crate::stage::{Clock, Ctx, StageError, SystemClock};
use crate::watch::Scanner;
use crate::writers::{open_for_writing, WriteTracker};
use crate::{report, track, upload};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inputs taken in one group (one journal transaction per step for the group).
const GROUP: usize = 256;
/// Longest wait between retries of a failing server.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Wait after a refusal only an operator can fix (host key, credentials).
const OPERATOR_BACKOFF: Duration = Duration::from_secs(300);

/// What stops the engine.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Setup(String),
    /// The server refused us in a way only an operator can fix (one-shot commands stop on it).
    #[error("{0}")]
    Refused(String),
}

/// Wakes the engine and asks it to stop; cheap to clone into signal handlers.
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    wake: SyncSender<()>,
}

impl Stopper {
    /// Asks the engine to stop at its next safe point.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
    }

    /// Stops the engine on SIGTERM or SIGINT.
    ///
    /// # Errors
    /// When the handlers cannot be installed.
    pub fn on_signals(&self) -> std::io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        let me = self.clone();
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(
                    signal = sig,
                    "stopping: no new files are taken; a running upload finishes"
                );
                me.stop();
            }
        });
        Ok(())
    }
}

/// The waits after a transient server failure: 1 s, doubling to [`MAX_BACKOFF`]; started afresh
/// after a success.
fn reconnect_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// The engine and everything it owns.
pub struct Engine {
    cfg: Config,
    journal: Journal,
    remote: Box<dyn Remote>,
    shutdown: Arc<AtomicBool>,
    hints: Receiver<()>,
    hint_tx: SyncSender<()>,
    /// When the server may be tried again, and the current wait.
    remote_at: Instant,
    backoff: backon::ExponentialBackoff,
    last_remote_use: Instant,
    /// Log in before there is anything to send (at start, and after a keepalive found the
    /// session gone), so a file dropped into an idle daemon does not wait for a login.
    warm_up_due: bool,
    /// Stop on a refusal (host key, credentials) instead of waiting for an operator.
    fail_fast: bool,
    clock: Box<dyn Clock>,
    /// The state folder's lock: only its owner builds an engine.
    _lock: StateLock,
    /// The send queue, resolved.
    queue: PathBuf,
    /// Inbox files being written, from file events.
    writes: WriteTracker,
    /// Taken inputs watched for late writes.
    late: LateWatch,
    /// Inbox files reported as never taken (loaded from the journal on the first scan).
    ignored: Option<HashSet<PathBuf>>,
    /// What `/healthz` reports.
    health: Arc<crate::ops::Health>,
    /// Runs the outcome hooks the stages queue, beside the engine (none without a hook).
    hooks: Option<crate::hooks::Runner>,
    /// When waiting replies may next be written to the outbox (`[replies] flush_secs`).
    next_flush: Option<Instant>,
}

impl Engine {
    /// Opens the journal and prepares the state folders.
    ///
    /// # Errors
    /// [`DaemonError`] when the state folder or journal cannot be used.
    pub fn new(
        cfg: Config,
        remote: Box<dyn Remote>,
        lock: StateLock,
    ) -> Result<Engine, DaemonError> {
        crate::spool::prepare_dirs(&cfg).map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create the state folders under {}: {e}",
                cfg.state.dir.display()
            ))
        })?;
        let left = crate::spool::leftovers(&cfg);
        if !left.is_empty() {
            return Err(DaemonError::Setup(format!(
                "the journal {} is missing, but the state folder holds {}: starting afresh would \
                 reuse their job numbers and never send what was pending. Run `smsdrop recover` \
                 to list them, and `smsdrop recover --yes` to set them aside and queue the \
                 pending batch files again as new jobs",
                journal_path(&cfg.state.dir).display(),
                left.describe()
            )));
        }
        let journal = Journal::open(&cfg.state.dir)?;
        let queue = handoff::queue(&cfg).map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create the send queue under {}: {e}",
                cfg.state.dir.display()
            ))
        })?;
        let (hint_tx, hints) = std::sync::mpsc::sync_channel(16);
        let now = Instant::now();
        let hooks = crate::hooks::Runner::start(&cfg);
        Ok(Engine {
            cfg,
            journal,
            remote,
            shutdown: Arc::new(AtomicBool::new(false)),
            hints,
            hint_tx,
            remote_at: now,
            backoff: reconnect_backoff(),
            last_remote_use: now,
            warm_up_due: true,
            fail_fast: false,
            clock: Box::new(SystemClock),
            _lock: lock,
            queue,
            writes: WriteTracker::default(),
            late: LateWatch::default(),
            ignored: None,
            health: Arc::default(),
            hooks,
            next_flush: None,
        })
    }

    /// A handle to stop the engine from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: self.shutdown.clone(),
            wake: self.hint_tx.clone(),
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            journal: &mut self.journal,
            remote: self.remote.as_mut(),
            clock: self.clock.as_ref(),
        }
    }

    fn origin(&self, job: &Job) -> Origin {
        if job.input_path.starts_with(&self.cfg.inbox.dir)
            || job.input_path.starts_with(&self.queue)
        {
            Origin::Inbox
        } else {
            Origin::Named
        }
    }

    /// Finishes what a crash or a failure interrupted: jobs still `detected`, and inputs not yet
    /// moved to the archive.
    fn resume(&mut self) -> Result<(), DaemonError> {
        // Every `detected` job (a continuation of late writes may already count as stored),
        // and every other job whose input is not archived yet.
        let detected_jobs = self.journal.jobs_in(&[JobState::Detected])?;
        let unstored: Vec<Job> = self
            .journal
            .unstored()?
            .into_iter()
            .filter(|j| j.state != JobState::Detected)
            .collect();
        if (unstored.is_empty() && detected_jobs.is_empty()) || self.stopping() {
            return Ok(());
        }
        for origin in [Origin::Inbox, Origin::Named] {
            let detected: Vec<i64> = detected_jobs
                .iter()
                .filter(|j| self.origin(j) == origin)
                .map(|j| j.id)
                .collect();
            let other: Vec<i64> = unstored
                .iter()
                .filter(|j| self.origin(j) == origin)
                .map(|j| j.id)
                .collect();
            for chunk in detected.chunks(GROUP) {
                let r = intake::process_all(&mut self.ctx(), chunk, origin);
                self.absorb(r)?;
            }
            let r = archive::store_inputs(&mut self.ctx(), &other, origin);
            self.absorb(r)?;
        }
        Ok(())
    }

    /// Turns a stage result into a retry plan; only journal failures stop the engine.
    fn absorb(&mut self, result: Result<(), StageError>) -> Result<(), DaemonError> {
        match result {
            Ok(()) => Ok(()),
            Err(StageError::Journal(e)) if e.is_disk_problem() => {
                self.health.journal_failed(&e.to_string());
                tracing::error!(error = %e, "the journal's disk is full or failing; retrying in 10s (free space under the state folder)");
                self.remote_at = Instant::now() + Duration::from_secs(10);
                Ok(())
            }
            Err(StageError::Journal(e)) if e.is_busy() => {
                tracing::warn!(error = %e, "the journal was busy (another of smsdrop's connections held it); retrying in 1s");
                self.remote_at = Instant::now() + Duration::from_secs(1);
                Ok(())
            }
            Err(StageError::Journal(e)) => Err(e.into()),
            Err(StageError::Remote(e)) if self.fail_fast && !e.is_transient() => {
                Err(DaemonError::Refused(e.to_string()))
            }
            Err(StageError::Remote(e)) => {
                crate::ops::metrics::sftp_connected(false);
                let wait = if e.is_transient() {
                    self.backoff.next().unwrap_or(MAX_BACKOFF)
                } else {
                    OPERATOR_BACKOFF
                };
                self.remote_at = Instant::now() + wait;
                if e.is_transient() {
                    tracing::warn!(error = %e, retry_in_secs = wait.as_secs(), "server unavailable");
                } else {
                    tracing::error!(error = %e, retry_in_secs = wait.as_secs(), "server refused us; an operator must act");
                }
                Ok(())
            }
            Err(e @ StageError::Local { .. }) => {
                tracing::error!(error = %e, "local file problem; retrying later");
                self.remote_at = Instant::now() + Duration::from_secs(5);
                Ok(())
            }
        }
    }

    /// Looks at taken inputs for late writes; converts the continuations it records.
    fn late_writes(&mut self) -> Result<(), DaemonError> {
        let writes = self.writes.clone();
        let local = self.cfg.inbox.use_events;
        let writing = move |p: &std::path::Path| {
            writes.writing(p) || (local && !open_for_writing(&[p.to_owned()]).is_empty())
        };
        let mut late = std::mem::take(&mut self.late);
        let r = late.check(&mut self.ctx(), &writing);
        self.late = late;
        match r {
            Ok(ids) if !ids.is_empty() => {
                let r = intake::process_all(&mut self.ctx(), &ids, Origin::Inbox);
                self.absorb(r)
            }
            Ok(_) => Ok(()),
            Err(e) => self.absorb(Err(e)),
        }
    }

    fn remote_ready(&self) -> bool {
        Instant::now() >= self.remote_at
    }

    /// One round of the remote stages: resume, late writes, upload, track (when due), report.
    fn deliver(&mut self, track_due: bool) -> Result<(), DaemonError> {
        if self.remote_ready() {
            self.resume()?;
        }
        self.late_writes()?;
        if self.remote_ready() && !self.stopping() {
            let stop = self.shutdown.clone();
            let r = upload::upload_pending(&mut self.ctx(), &stop);
            if matches!(r, Ok(n) if n > 0) {
                self.backoff = reconnect_backoff();
                self.last_remote_use = Instant::now();
                crate::ops::metrics::sftp_connected(true);
            }
            self.absorb(r.map(drop))?;
        }
        if track_due && self.remote_ready() && !self.stopping() {
            let r = track::poll_listed(&mut self.ctx());
            if let Ok((_, listed)) = r {
                self.backoff = reconnect_backoff();
                self.last_remote_use = Instant::now();
                if listed {
                    crate::ops::metrics::sftp_connected(true);
                }
                crate::ops::metrics::polled(self.clock.now().timestamp_millis());
            }
            let r = r.map(|(n, _)| n);
            self.absorb(r.map(drop))?;
        }
        let r = report::report_finished(&mut self.ctx());
        self.absorb(r.map(drop))?;
        self.flush_replies()?;
        let r = crate::status::settle::settle(&mut self.ctx());
        self.absorb(r.map(drop))
    }

    /// Writes waiting replies to the outbox, at most every `[replies] flush_secs` (and any file
    /// a crash left unwritten at once).
    fn flush_replies(&mut self) -> Result<(), DaemonError> {
        if self.cfg.replies.mode == crate::config::RepliesMode::Off {
            return Ok(());
        }
        let due = self.next_flush.is_none_or(|t| Instant::now() >= t);
        let left = !self.journal.outbox_unwritten()?.is_empty();
        if !(left || due && self.journal.replies_waiting()? > 0) {
            return Ok(());
        }
        match crate::replies::outbox::flush(&self.cfg, &mut self.journal, self.clock.now()) {
            Ok(f) => {
                if !f.written.is_empty() {
                    self.next_flush = Some(Instant::now() + self.cfg.replies.flush);
                }
                Ok(())
            }
            Err(crate::replies::outbox::OutboxError::Journal(e)) => {
                self.absorb(Err(StageError::Journal(e)))
            }
            Err(e) => {
                tracing::error!(error = %e, "replies outbox");
                self.next_flush = Some(Instant::now() + Duration::from_secs(10));
                Ok(())
            }
        }
    }

    /// When waiting replies are due for the outbox, if any wait.
    fn replies_wake(&self) -> Result<Option<Instant>, DaemonError> {
        if self.cfg.replies.mode == crate::config::RepliesMode::Off
            || self.journal.replies_waiting()? == 0
        {
            return Ok(None);
        }
        Ok(Some(self.next_flush.unwrap_or_else(Instant::now)))
    }

    fn keepalive(&mut self) {
        let every = self
            .cfg
            .sftp
            .as_ref()
            .map_or(Duration::ZERO, |s| s.keepalive);
        if !every.is_zero() && self.last_remote_use.elapsed() >= every && self.remote_ready() {
            self.last_remote_use = Instant::now();
            if let Err(e) = self.remote.keepalive() {
                tracing::debug!(error = %e, "keepalive failed; logging in again");
                self.warm_up_due = true;
            }
        }
    }

    /// Waits for a hint or until `until`; true when hinted.
    fn wait(&self, until: Instant) -> bool {
        let timeout = until.saturating_duration_since(Instant::now());
        match self.hints.recv_timeout(timeout) {
            Ok(()) => {
                while self.hints.try_recv().is_ok() {}
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                false
            }
        }
    }

    /// The daemon: watches the inbox and delivers until stopped.
    ///
    /// # Errors
    /// [`DaemonError`] when the journal fails or the inbox cannot be set up.
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let inbox = self.cfg.inbox.clone();
        std::fs::create_dir_all(&inbox.dir).map_err(|e| {
            DaemonError::Setup(format!(
                "cannot create the inbox {}: {e}",
                inbox.dir.display()
            ))
        })?;
        let _watcher = if inbox.use_events {
            match crate::watch::watch_events(
                &inbox.dir,
                self.hint_tx.clone(),
                Some(self.writes.clone()),
            ) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "file events unavailable; relying on rescans every {}s", inbox.rescan.as_secs());
                    None
                }
            }
        } else {
            None
        };
        // `smsdrop send` hands files over through the queue: wake up as soon as one arrives.
        let _queue_watcher =
            crate::watch::watch_events(&self.queue, self.hint_tx.clone(), None).ok();
        // Message statuses (the webhook, the API poller) and the operations endpoint, on one
        // HTTP stack, while the daemon runs.
        let statuses =
            crate::status::start(&self.cfg, self.hint_tx.clone()).map_err(DaemonError::Setup)?;
        let mut routes = vec![];
        if let Some(webhook) = statuses.webhook {
            routes.push(webhook);
        }
        if let Some(addr) = self.cfg.http.listen {
            let ops =
                crate::ops::router(&self.cfg, self.health.clone()).map_err(DaemonError::Setup)?;
            routes.push((addr, ops));
        }
        let _http = if routes.is_empty() {
            None
        } else {
            let limits = crate::http::Limits {
                max_connections: self.cfg.http.max_connections,
                ..crate::http::Limits::default()
            };
            Some(crate::http::HttpServer::start(routes, limits).map_err(|e| {
                DaemonError::Setup(format!(
                    "{e}; choose a free address and port ([http] listen, [status] webhook_listen)"
                ))
            })?)
        };
        let _poller = statuses.poller;
        let watchdog = crate::liveness::watchdog_every();
        if let (Some(every), Some(sftp)) = (watchdog, &self.cfg.sftp) {
            if sftp.timeout >= every * 2 {
                tracing::warn!(
                    "[sftp] timeout_secs ({}s) is not below systemd's WatchdogSec ({}s): a stalled \
                     transfer may get the daemon restarted before it times out",
                    sftp.timeout.as_secs(),
                    (every * 2).as_secs()
                );
            }
        }
        let mut ready = false;
        let mut next_summary = Instant::now();
        let mut scanner = Scanner::new(inbox.clone());
        if _watcher.is_some() {
            scanner = scanner.with_writes(self.writes.clone());
        }
        let track_every = self.cfg.track.poll;
        let mut next_scan = Instant::now();
        let mut next_track = Instant::now();
        let mut hinted = true;
        tracing::info!(inbox = %inbox.dir.display(), state = %self.cfg.state.dir.display(), "smsdrop running");
        while !self.stopping() {
            self.health.round_starts();
            let now = Instant::now();
            if hinted || now >= next_scan {
                next_scan = now + inbox.rescan;
                self.take_queue()?;
                if let Some(recheck) = self.scan_and_take(&mut scanner)? {
                    next_scan = next_scan.min(recheck);
                }
            }
            if !ready {
                // Ready once the journal is open and the first scan is done, before the
                // backlog is delivered (a long first round must not fail the start).
                crate::liveness::ready(&self.summary_for_systemd().unwrap_or_default());
                ready = true;
            }
            let track_due = Instant::now() >= next_track;
            if track_due {
                next_track = Instant::now() + track_every;
            }
            self.deliver(track_due)?;
            self.keepalive();
            self.health.round_done();
            if self.warm_up_due && self.remote_ready() && !self.stopping() {
                self.warm_up_due = false;
                self.last_remote_use = Instant::now();
                let r = self.remote.warm_up().map_err(StageError::Remote);
                self.absorb(r)?;
            }
            // systemd's STATUS= line at most once a minute (it reads the journal's totals).
            let line = (Instant::now() >= next_summary)
                .then(|| self.summary_for_systemd())
                .flatten();
            match line {
                Some(line) => {
                    next_summary = Instant::now() + Duration::from_secs(60);
                    crate::liveness::alive(&line);
                }
                None => crate::liveness::alive_quiet(),
            }
            let mut until = next_scan.min(next_track);
            if let Some(every) = watchdog {
                until = until.min(Instant::now() + every);
            }
            // /healthz wants a round at least every health_round: an idle daemon still turns.
            if self.cfg.http.listen.is_some() {
                until = until.min(Instant::now() + self.cfg.http.health_round / 2);
            }
            if self.has_pending_uploads()? {
                until = until.min(self.remote_at.max(Instant::now()));
            }
            if let Some(at) = self.schedule_wake()? {
                until = until.min(at);
            }
            if let Some(at) = self.replies_wake()? {
                until = until.min(at.max(Instant::now() + Duration::from_millis(50)));
            }
            if !self.stopping() {
                hinted = self.wait(until);
                crate::liveness::alive_quiet();
            }
        }
        crate::liveness::stopping();
        tracing::info!("smsdrop stopped");
        Ok(())
    }

    /// The one-line summary (`12 pending, 0 failed today, ...`) for systemd, when it listens.
    fn summary_for_systemd(&self) -> Option<String> {
        if !crate::liveness::enabled() {
            return None;
        }
        let now = self.clock.now();
        let today = crate::ops::today_start_ms(&self.cfg.batch.zone, now);
        Some(match self.journal.stats(today) {
            Ok(s) => crate::ops::page::summary_line(&s, now.timestamp_millis()),
            Err(e) => format!("journal unreadable: {e}"),
        })
    }

    /// Work for the server now: batches to upload (not those waiting for their send window),
    /// or inputs to convert.
    fn has_pending_uploads(&self) -> Result<bool, DaemonError> {
        let held: HashSet<i64> = self
            .journal
            .jobs_in(&[JobState::Held])?
            .into_iter()
            .map(|j| j.id)
            .collect();
        Ok(self
            .journal
            .batches_in(JobState::Converted)?
            .iter()
            .any(|b| !held.contains(&b.job_id))
            || !self.journal.batches_in(JobState::Uploading)?.is_empty()
            || !self.journal.jobs_in(&[JobState::Detected])?.is_empty())
    }

    /// When a send window opens (or `max_hold` runs out) for a held job, as an instant.
    fn schedule_wake(&self) -> Result<Option<Instant>, DaemonError> {
        let now = self.clock.now();
        Ok(
            crate::hold::next_event(&self.cfg, &self.journal, now)?.map(|t| {
                // A little after the minute turns, so the window is open when the round looks.
                let wait = (t - now).to_std().unwrap_or_default() + Duration::from_millis(20);
                // Not before the server may be used again: the gate runs with the upload.
                (Instant::now() + wait).max(self.remote_at)
            }),
        )
    }

    /// Takes the files `smsdrop send` left in the queue (complete by construction).
    fn take_queue(&mut self) -> Result<(), DaemonError> {
        let files = match handoff::pending(&self.cfg) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(queue = %self.queue.display(), error = %e, "cannot read the send queue");
                return Ok(());
            }
        };
        if files.is_empty() {
            return Ok(());
        }
        let busy = self.busy_inputs()?;
        let inputs: Vec<intake::Input> = files
            .into_iter()
            .filter(|f| !busy.contains(f))
            .map(|path| intake::Input {
                path,
                subaccount: Ok(None),
            })
            .collect();
        self.take_groups(&inputs)
    }

    /// Inputs whose job is recorded but that are still at their inbox path (not yet claimed):
    /// never taken twice. Once claimed, a file at that path is a new one.
    fn busy_inputs(&self) -> Result<HashSet<PathBuf>, DaemonError> {
        Ok(self
            .journal
            .unstored()?
            .into_iter()
            .filter(|j| j.claimed_path.is_none())
            .map(|j| j.input_path)
            .collect())
    }

    /// Says once (log and `status`) which inbox files smsdrop will never take, and why.
    fn report_ignored(&mut self, ignored: &[(PathBuf, String)]) -> Result<(), DaemonError> {
        if self.ignored.is_none() {
            let known = self
                .journal
                .ignored()?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            self.ignored = Some(known);
        }
        let known = self.ignored.as_mut().expect("loaded above");
        let added: Vec<(PathBuf, String)> = ignored
            .iter()
            .filter(|(p, _)| !known.contains(p))
            .cloned()
            .collect();
        let now: HashSet<&PathBuf> = ignored.iter().map(|(p, _)| p).collect();
        let gone: Vec<PathBuf> = known.iter().filter(|p| !now.contains(p)).cloned().collect();
        if added.is_empty() && gone.is_empty() {
            return Ok(());
        }
        for (path, why) in &added {
            tracing::warn!(file = %path.display(), reason = %why, "inbox file not taken");
        }
        self.journal.update_ignored(&added, &gone)?;
        known.extend(added.into_iter().map(|(p, _)| p));
        for p in gone {
            known.remove(&p);
        }
        Ok(())
    }

    /// Takes inbox (or queued) inputs group by group; a backlog moves through all stages group
    /// by group, not one stage at a time.
    fn take_groups(&mut self, inputs: &[intake::Input]) -> Result<(), DaemonError> {
        for group in inputs.chunks(GROUP) {
            if self.stopping() {
                break;
            }
            let r = intake::take_all(&mut self.ctx(), group, Origin::Inbox);
            self.absorb(r.map(drop))?;
            crate::liveness::progress();
            if inputs.len() > GROUP {
                self.deliver(false)?;
            }
        }
        Ok(())
    }

    /// Scans the inbox and takes every ready file; returns when to look again for settling files.
    fn scan_and_take(&mut self, scanner: &mut Scanner) -> Result<Option<Instant>, DaemonError> {
        let busy = self.busy_inputs()?;
        let scan = match scanner.scan(Instant::now(), &busy) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(inbox = %self.cfg.inbox.dir.display(), error = %e, "cannot read the inbox; check that it exists and smsdrop may read it");
                return Ok(None);
            }
        };
        self.report_ignored(&scan.ignored)?;
        // With file events (a local file system), also ask /proc who holds a file open for
        // writing; with `watch = "poll"` (network shares, whose writers are elsewhere) the
        // stability window alone applies.
        let paths: Vec<PathBuf> = scan.ready.iter().map(|r| r.path.clone()).collect();
        let open = if self.cfg.inbox.use_events {
            open_for_writing(&paths)
        } else {
            HashSet::new()
        };
        let now = Instant::now();
        let mut recheck = scan.recheck_at;
        for p in &open {
            tracing::info!(input = %p.display(), "another process has the file open for writing; waiting");
            scanner.unsettle(p, now);
            let at = now + self.cfg.inbox.stable.max(Duration::from_secs(1));
            recheck = Some(recheck.map_or(at, |t| t.min(at)));
        }
        for ready in &scan.ready {
            if !open.contains(&ready.path) {
                scanner.forget(&ready.path);
            }
        }
        let inputs: Vec<intake::Input> = scan
            .ready
            .into_iter()
            .filter(|r| !open.contains(&r.path))
            .map(|r| intake::Input {
                path: r.path,
                subaccount: r.subaccount,
            })
            .collect();
        self.take_groups(&inputs)?;
        Ok(recheck)
    }

    /// `smsdrop send`: takes the named files, then delivers until each has an outcome (or, with
    /// `wait = false`, is uploaded). `progress` hears the job states after each round.
    ///
    /// # Errors
    /// [`DaemonError`] when the journal fails.
    pub fn send(
        &mut self,
        files: &[PathBuf],
        wait: bool,
        progress: &mut dyn FnMut(&[Job]),
    ) -> Result<Vec<Job>, DaemonError> {
        self.fail_fast = true;
        let inputs: Vec<intake::Input> = files
            .iter()
            .map(|f| intake::Input {
                path: std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()),
                subaccount: Ok(None),
            })
            .collect();
        for f in &inputs {
            if !f.path.exists() {
                tracing::error!(input = %f.path.display(), "file not found");
            }
        }
        let mut ids = vec![];
        for group in inputs.chunks(GROUP) {
            let before = self.journal.recent_jobs(1)?.pop().map_or(0, |j| j.id);
            let r = intake::take_all(&mut self.ctx(), group, Origin::Named);
            match r {
                Ok(new) => ids.extend(new),
                Err(StageError::Journal(e)) => return Err(e.into()),
                Err(e) => {
                    // The jobs stay `detected` and are resumed by the delivery rounds.
                    let after = self.journal.recent_jobs(GROUP as u32)?;
                    ids.extend(after.iter().rev().map(|j| j.id).filter(|&id| id > before));
                    self.absorb(Err(e))?;
                }
            }
        }
        let jobs = self.wait_for(&ids, wait, progress);
        self.drain_hooks();
        jobs
    }

    /// A one-shot command ends with the hooks its jobs queued run (each within its timeout).
    fn drain_hooks(&self) {
        if let Some(h) = &self.hooks {
            h.drain();
        }
    }

    /// `smsdrop send` after the daemon it handed `queued` files to went away: takes the queue
    /// (and resumes what the daemon left), then delivers like [`Engine::send`].
    ///
    /// # Errors
    /// [`DaemonError`] when the journal fails.
    pub fn send_queued(
        &mut self,
        queued: &[PathBuf],
        wait: bool,
        progress: &mut dyn FnMut(&[Job]),
    ) -> Result<Vec<Job>, DaemonError> {
        self.fail_fast = true;
        self.take_queue()?;
        let mut ids = vec![];
        for q in queued {
            if let Some(j) = self.journal.jobs_with_input(q)?.pop() {
                ids.push(j.id);
            }
        }
        let jobs = self.wait_for(&ids, wait, progress);
        self.drain_hooks();
        jobs
    }

    /// Delivers until every job of `ids` is done (see [`job_done`]) or the engine is stopped.
    fn wait_for(
        &mut self,
        ids: &[i64],
        wait: bool,
        progress: &mut dyn FnMut(&[Job]),
    ) -> Result<Vec<Job>, DaemonError> {
        let poll = self.cfg.track.poll;
        let mut next_track = Instant::now();
        let _queue_watcher =
            crate::watch::watch_events(&self.queue, self.hint_tx.clone(), None).ok();
        loop {
            // Another `send` may hand files over while this one owns the state folder.
            self.take_queue()?;
            let track_due = Instant::now() >= next_track;
            if track_due {
                next_track = Instant::now() + poll;
            }
            self.deliver(track_due)?;
            let jobs: Vec<Job> = ids
                .iter()
                .filter_map(|&id| self.journal.job(id).ok().flatten())
                .collect();
            progress(&jobs);
            if jobs.iter().all(|j| job_done(j, wait)) || self.stopping() {
                return Ok(jobs);
            }
            let mut until = next_track;
            if self.has_pending_uploads()? {
                until = until.min(self.remote_at.max(Instant::now()));
            }
            self.wait(until);
        }
    }
}

/// True when `smsdrop send` is done with a job: final and reported, or (not waiting for
/// outcomes) uploaded with its input archived.
pub fn job_done(j: &Job, wait: bool) -> bool {
    // Held for its send window: `send` says so and returns; a daemon (or a later `send`)
    // sends it when the window opens.
    (j.state == JobState::Held && j.released_at.is_none())
        || (j.state.is_final() && j.reported)
        || (!wait && j.state == JobState::Uploaded && j.stored_path.is_some())
}

/// `[batch] timezone = "local"` names files by the machine's calendar day: say which zone that
/// resolved to, and warn when it is UTC (a server default; the gateway's sending day is local).
pub fn warn_local_zone(cfg: &Config) {
    if let Some((name, offset, utc)) = cfg.batch.zone.local_resolution() {
        if utc {
            tracing::warn!(zone = %name, offset = %offset, "[batch] timezone = \"local\" resolved to {name} (UTC): file names carry the day in UTC, which turns at 21:00 in Brazil; set [batch] timezone to your zone, e.g. \"America/Sao_Paulo\"");
        } else {
            tracing::info!(zone = %name, offset = %offset, "[batch] timezone = \"local\": file names carry the day in {name}");
        }
    }
}

/// The path of the journal, for messages.
pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.db")
}
