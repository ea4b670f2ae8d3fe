//! Upload: puts every converted batch file on the server exactly once.
//!
//! Batches are marked `uploading` in one transaction before any byte is sent. Each file is
//! written to a temporary name, its size checked, then renamed to its final name (a rename onto an
//! existing file fails: nothing is overwritten). A batch found `uploading` after a restart is
//! first looked for under its final name in `upload`, `success` and `error`, and counts as
//! delivered only when the size there is the size we wrote; another size is another system's
//! file, and the batch takes the next free name. Successes are committed in groups (one fsync for
//! many files); a crash before the commit is covered by that same look-up.
//!
//! A name carries the sending day: a batch still waiting when the day turns (a backlog at
//! midnight) is renamed to the new day before it is marked `uploading`. A local problem with one
//! batch (its spool file gone) sets that batch aside; it never blocks the others.

use crate::batch::BatchName;
use crate::config::{Config, SftpConfig};
use crate::journal::{Batch, JobState};
use crate::remote::{join, Remote, RemoteError, Upload};
use crate::spool::spool_path;
use crate::stage::{Ctx, StageError};
use chrono::NaiveDate;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sequence numbers above this on the server are taken as strays, not as the day's count.
const MAX_PLAUSIBLE_SEQ: u32 = 1_000_000;

/// Uploads committed at once.
const COMMIT_EVERY: usize = 64;

/// The remote folders, from `[sftp]` or their defaults.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub upload: String,
    pub success: String,
    pub error: String,
    /// Where temporary files go (`None`: `upload/.NAME.part`).
    pub temp: Option<String>,
}

/// The remote folders of `cfg`.
pub fn dirs(cfg: &Config) -> Dirs {
    match &cfg.sftp {
        Some(SftpConfig {
            upload_dir,
            success_dir,
            error_dir,
            temp_dir,
            ..
        }) => Dirs {
            upload: upload_dir.clone(),
            success: success_dir.clone(),
            error: error_dir.clone(),
            temp: temp_dir.clone(),
        },
        None => Dirs {
            upload: "upload".into(),
            success: "success".into(),
            error: "error".into(),
            temp: None,
        },
    }
}

/// Primes the journal's sequence numbers for each (subaccount, day) never allocated before with
/// the highest number the server already holds in `upload`, `success` and `error`.
///
/// # Errors
/// [`StageError::Remote`] when a listing fails; [`StageError::Journal`].
pub fn probe_sequences(
    ctx: &mut Ctx<'_>,
    wanted: &[(String, NaiveDate)],
) -> Result<(), StageError> {
    let d = dirs(ctx.cfg);
    let remote = &mut *ctx.remote;
    ctx.journal.prime_sequences(wanted, |sub, day| {
        let highest = highest_on_server(remote, &d, sub, day)?;
        if highest > 0 {
            tracing::info!(subaccount = sub, %day, highest, "sequence numbers already used on the server; starting above");
        }
        Ok::<u32, StageError>(highest)
    })
}

fn highest_on_server(
    remote: &mut dyn Remote,
    d: &Dirs,
    subaccount: &str,
    day: NaiveDate,
) -> Result<u32, RemoteError> {
    let mut highest = 0;
    for dir in [&d.upload, &d.success, &d.error] {
        for name in remote.list(dir)? {
            let Some(b) = BatchName::parse(&name) else {
                continue;
            };
            if b.subaccount != subaccount || b.date != day {
                continue;
            }
            if b.seq > MAX_PLAUSIBLE_SEQ {
                // A stray name must not use up the day's numbers: starting above it would run
                // out (or wrap around). Its name is still never reused: every round checks the
                // names it renames into place against the server's listings.
                tracing::warn!(name = %name, "a sequence number far above any day's use is on the server; numbering does not start above it");
                continue;
            }
            highest = highest.max(b.seq);
        }
    }
    Ok(highest)
}

/// Uploads all pending batches; stops early when `shutdown` is set. Returns how many went up.
///
/// Batches found `uploading` after a restart go first (they may be on the server already). Fresh
/// ones are marked `uploading` a chunk at a time just before they go, so a batch held back by an
/// outage is still `converted` (and gets the sending day) when the server comes back. A failure
/// of one file (an SFTP operation refused) is counted and the others go on; a lost connection
/// ends the round.
///
/// # Errors
/// [`StageError::Remote`] when the server failed this round (the rest waits for the next one);
/// [`StageError::Journal`] when the journal fails.
pub fn upload_pending(ctx: &mut Ctx<'_>, shutdown: &AtomicBool) -> Result<usize, StageError> {
    let resumed = ctx.journal.batches_in(JobState::Uploading)?;
    let fresh = ctx.journal.batches_in(JobState::Converted)?;
    // Outside its send window a batch waits (`held`); past `max_hold` it expires.
    let fresh = crate::hold::gate(ctx, fresh)?;
    if resumed.is_empty() && fresh.is_empty() {
        return Ok(0);
    }
    let mut round = Round {
        dirs: dirs(ctx.cfg),
        done: vec![],
        sent: 0,
        failure: None,
        connection_lost: false,
        listing: None,
    };
    round.run(ctx, resumed, true, shutdown)?;
    for chunk in fresh.chunks(COMMIT_EVERY) {
        if round.connection_lost || shutdown.load(Ordering::Relaxed) {
            break;
        }
        let mut chunk = chunk.to_vec();
        redate(ctx, &mut chunk)?;
        ctx.journal.transaction(|t| {
            let mut jobs = BTreeSet::new();
            for b in &chunk {
                t.set_batch_state(b.id, JobState::Uploading, None)?;
                jobs.insert(b.job_id);
            }
            for j in jobs {
                t.set_job_state(j, JobState::Uploading, None)?;
            }
            Ok(())
        })?;
        crate::crash::point("uploading");
        round.run(ctx, chunk, false, shutdown)?;
    }
    commit(ctx, &mut round.done)?;
    match round.failure {
        Some(e) => {
            waiting_behind(ctx, &e)?;
            Err(e.into())
        }
        None => Ok(round.sent),
    }
}

/// Says on every job still waiting to go out why it waits (`status` shows it).
fn waiting_behind(ctx: &mut Ctx<'_>, e: &RemoteError) -> Result<(), StageError> {
    let mut jobs: BTreeSet<i64> = BTreeSet::new();
    for b in ctx.journal.batches_in(JobState::Converted)? {
        jobs.insert(b.job_id);
    }
    // A held job keeps its reason (when its window opens), not the server's.
    for j in ctx.journal.jobs_in(&[JobState::Held])? {
        jobs.remove(&j.id);
    }
    for b in ctx.journal.batches_in(JobState::Uploading)? {
        if b.attempts == 0 {
            jobs.insert(b.job_id);
        }
    }
    if jobs.is_empty() {
        return Ok(());
    }
    let why = format!("waiting: uploads are paused after a server error, retried soon ({e})");
    ctx.journal.transaction(|t| {
        for j in &jobs {
            t.set_reason(*j, Some(&why))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Failed SFTP operations on one batch (the connection fine) before it is set aside, when it is
/// not on the server: a file the server always refuses must not hold its job open forever.
const MAX_ATTEMPTS: u32 = 10;

/// One upload round's progress.
struct Round {
    dirs: Dirs,
    done: Vec<(Batch, Option<&'static str>)>,
    sent: usize,
    /// The last server failure, for the engine's backoff.
    failure: Option<RemoteError>,
    /// The session is gone: nothing more this round.
    connection_lost: bool,
    /// The server's folders, listed at the round's first upload.
    listing: Option<Listing>,
}

impl Round {
    fn run(
        &mut self,
        ctx: &mut Ctx<'_>,
        batches: Vec<Batch>,
        resumed: bool,
        shutdown: &AtomicBool,
    ) -> Result<(), StageError> {
        for group in batches.chunks(COMMIT_EVERY) {
            if self.connection_lost || shutdown.load(Ordering::Relaxed) {
                break;
            }
            self.run_group(ctx, group.to_vec(), resumed, shutdown)?;
        }
        Ok(())
    }

    /// One group: each batch checked against the server's listing (found there, renamed past a
    /// taken name), then the ready ones uploaded together ([`Remote::upload_many`]: in flight
    /// at once on the SFTP client), their renames recorded in the journal in one write first.
    fn run_group(
        &mut self,
        ctx: &mut Ctx<'_>,
        batches: Vec<Batch>,
        resumed: bool,
        shutdown: &AtomicBool,
    ) -> Result<(), StageError> {
        let mut ready: Vec<(Batch, Upload)> = vec![];
        for mut batch in batches {
            if self.connection_lost || shutdown.load(Ordering::Relaxed) {
                break;
            }
            let span = tracing::info_span!("job", id = batch.job_id, remote = %batch.name);
            let _g = span.enter();
            if self.listing.is_none() {
                match Listing::load(ctx.remote, &self.dirs) {
                    Ok(l) => self.listing = Some(l),
                    Err(e) => {
                        self.failed(ctx, &batch, e)?;
                        continue;
                    }
                }
            }
            let listing = self.listing.as_mut().expect("listed above");
            match prepare(ctx, &mut batch, resumed, &self.dirs, listing) {
                Ok(Prepared::Ready(u)) => ready.push((batch, u)),
                Ok(Prepared::Done(sent)) => self.settled(ctx, batch, Ok(sent))?,
                Err(e) => self.settled(ctx, batch, Err(e))?,
            }
        }
        // A session lost while looking (a resumed batch's temp file) ends the round here, as
        // a stop does: the ready batches stay as they are for the next round.
        if ready.is_empty() || self.connection_lost || shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        let uploads: Vec<Upload> = ready.iter().map(|(_, u)| u.clone()).collect();
        let ids: Vec<i64> = ready.iter().map(|(b, _)| b.id).collect();
        let journal = &mut *ctx.journal;
        let mut journal_error = None;
        let mut intent = |which: &[usize]| {
            let chosen: Vec<i64> = which.iter().map(|&i| ids[i]).collect();
            journal.mark_renaming(&chosen).map_err(|e| {
                journal_error = Some(e);
                RemoteError::Op {
                    op: "rename",
                    path: String::new(),
                    message: "the journal could not record the rename".into(),
                }
            })
        };
        let started = std::time::Instant::now();
        let results = ctx.remote.upload_many(&uploads, &mut intent);
        if let Some(e) = journal_error {
            return Err(e.into());
        }
        let took = started.elapsed().as_secs_f64();
        // The metric counts files: each file of a group gets its share of the group's time.
        let share = took / uploads.len() as f64;
        for ((mut batch, _), result) in ready.into_iter().zip(results) {
            let span = tracing::info_span!("job", id = batch.job_id, remote = %batch.name);
            let _g = span.enter();
            let listing = self.listing.as_mut().expect("listed above");
            if self.connection_lost && result.is_err() {
                // Counted once, on the first file that met the lost connection.
                continue;
            }
            let outcome = finish(ctx, &mut batch, &self.dirs, listing, result, took, share);
            self.settled(ctx, batch, outcome)?;
        }
        Ok(())
    }

    /// Records how one batch's upload ended.
    fn settled(
        &mut self,
        ctx: &mut Ctx<'_>,
        batch: Batch,
        outcome: Result<Sent, StageError>,
    ) -> Result<(), StageError> {
        match outcome {
            Ok(Sent::Unknown) => {}
            Ok(sent) => {
                let note = match sent {
                    Sent::Found(note) => Some(note),
                    _ => None,
                };
                self.sent += usize::from(note.is_none());
                self.done.push((batch, note));
                if self.done.len() >= COMMIT_EVERY {
                    commit(ctx, &mut self.done)?;
                }
            }
            Err(StageError::Local { context, source }) => {
                set_aside(ctx, &batch, &format!("{context}: {source}"))?;
            }
            Err(StageError::Remote(e)) => self.failed(ctx, &batch, e)?,
            Err(e @ StageError::Journal(_)) => return Err(e),
        }
        Ok(())
    }

    /// Counts a failed attempt; a lost connection ends the round, a refused operation only
    /// this batch (set aside after [`MAX_ATTEMPTS`] when it is not on the server).
    fn failed(
        &mut self,
        ctx: &mut Ctx<'_>,
        batch: &Batch,
        e: RemoteError,
    ) -> Result<(), StageError> {
        let msg = e.to_string();
        let why = format!("upload of {} failed, retrying: {msg}", batch.name);
        ctx.journal.transaction(|t| {
            t.batch_attempt_failed(batch.id, &msg)?;
            t.set_reason(batch.job_id, Some(&why))
        })?;
        tracing::warn!(error = %msg, attempts = batch.attempts + 1, "upload failed; will retry");
        let per_file = matches!(e, RemoteError::Op { .. } | RemoteError::Exists { .. });
        self.connection_lost |= !per_file;
        if per_file && batch.attempts + 1 >= MAX_ATTEMPTS {
            let fresh = Listing::load(ctx.remote, &self.dirs);
            if let Ok(Found::Nothing) = fresh.as_ref().map(|l| find_ours(l, batch, &self.dirs)) {
                let why = format!(
                    "the server refused it {MAX_ATTEMPTS} times (last: {msg}) and it is not on \
                     the server"
                );
                set_aside(ctx, batch, &why)?;
            }
        }
        self.failure = Some(e);
        Ok(())
    }
}

/// Sets one batch aside (`failed`, never uploaded) with its reason; the others go on.
fn set_aside(ctx: &mut Ctx<'_>, batch: &Batch, why: &str) -> Result<(), StageError> {
    ctx.journal.transaction(|t| {
        t.set_batch_state(batch.id, JobState::Failed, Some(why))?;
        t.note_job(batch.job_id, &format!("{} set aside: {why}", batch.name))
    })?;
    tracing::error!(error = %why, "batch set aside; its rows are not sent");
    Ok(())
}

/// Renames waiting batches whose name carries another day than the sending day (the day turned
/// while they waited). Nothing was sent under the old name: it was never `uploading`.
fn redate(ctx: &mut Ctx<'_>, fresh: &mut [Batch]) -> Result<(), StageError> {
    let today = ctx.today();
    let stale: Vec<usize> = (0..fresh.len())
        .filter(|&i| BatchName::parse(&fresh[i].name).is_some_and(|n| n.date != today))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut subs: Vec<(String, NaiveDate)> = vec![];
    for &i in &stale {
        if let Some(n) = BatchName::parse(&fresh[i].name) {
            if !subs.iter().any(|(s, _)| *s == n.subaccount) {
                subs.push((n.subaccount, today));
            }
        }
    }
    probe_sequences(ctx, &subs)?;
    let renamed = ctx.journal.transaction(|t| {
        let mut renamed = vec![];
        for &i in &stale {
            let b = &fresh[i];
            let sub = BatchName::parse(&b.name)
                .map(|n| n.subaccount)
                .unwrap_or_default();
            let new = t.rename_batch(b.id, &sub, today)?;
            t.note_job(
                b.job_id,
                &format!(
                    "{} renamed {new}: the sending day changed before it went out",
                    b.name
                ),
            )?;
            renamed.push((i, new));
        }
        Ok(renamed)
    })?;
    for (i, new) in renamed {
        tracing::info!(job = fresh[i].job_id, old = %fresh[i].name, new = %new, "batch renamed to the sending day");
        fresh[i].name = new;
    }
    Ok(())
}

/// What the server holds this round: the names and sizes in `upload/`, `success/` and `error/`,
/// listed once per round (not per file), kept current as the round renames files into place.
#[derive(Debug, Default)]
pub struct Listing {
    dirs: [std::collections::HashMap<String, Option<u64>>; 3],
}

impl Listing {
    /// Lists the three folders.
    ///
    /// # Errors
    /// [`RemoteError`] when a listing fails.
    pub fn load(remote: &mut dyn Remote, d: &Dirs) -> Result<Listing, RemoteError> {
        let mut l = Listing::default();
        for (i, dir) in [&d.upload, &d.success, &d.error].into_iter().enumerate() {
            l.dirs[i] = remote.list_sized(dir)?.into_iter().collect();
        }
        Ok(l)
    }

    /// True when `name` exists in any of the three folders.
    pub fn taken(&self, name: &str) -> bool {
        self.dirs.iter().any(|m| m.contains_key(name))
    }

    /// Where `name` is: the folder's index (0 upload, 1 success, 2 error) and its size.
    fn find(&self, name: &str) -> Vec<(usize, Option<u64>)> {
        (0..3)
            .filter_map(|i| self.dirs[i].get(name).map(|s| (i, *s)))
            .collect()
    }

    fn put(&mut self, name: &str, size: u64) {
        self.dirs[0].insert(name.to_owned(), Some(size));
    }
}

/// What [`prepare`] found.
enum Prepared {
    /// To be uploaded: its local file, temporary and final names.
    Ready(Upload),
    /// Nothing to send (already on the server, or `unknown`).
    Done(Sent),
}

/// Checks one batch before its upload: a resumed batch is looked for on the server first
/// (`Done` when it is there, or `unknown`: see [`JobState::Unknown`]); a name taken on the
/// server renames `batch`; a spool file gone is a local error (the batch is set aside).
fn prepare(
    ctx: &mut Ctx<'_>,
    batch: &mut Batch,
    resumed: bool,
    d: &Dirs,
    listing: &mut Listing,
) -> Result<Prepared, StageError> {
    if resumed {
        match find_ours(listing, batch, d) {
            Found::Ours(dir) => {
                tracing::info!(found_in = %dir, "batch already on the server (upload finished before a restart)");
                return Ok(Prepared::Done(Sent::Found(
                    "found on the server after a restart",
                )));
            }
            Found::Foreign(path, size) => rename_taken(
                ctx,
                batch,
                listing,
                &format!(
                    "{path} on the server holds {size} bytes where ours has {}: another \
                     system's file",
                    batch.bytes
                ),
            )?,
            Found::Nothing if batch.renaming => {
                // The rename had begun: if the temp file is gone too, the batch may have gone
                // out and been processed and cleaned away. Never guess by sending again.
                let temp = temp_path(d, &batch.name);
                if ctx.remote.size(&temp)? != Some(batch.bytes) {
                    return unknown(ctx, batch, d).map(|()| Prepared::Done(Sent::Unknown));
                }
            }
            Found::Nothing => {}
        }
    }
    if listing.taken(&batch.name) {
        rename_taken(
            ctx,
            batch,
            listing,
            "the name appeared on the server (another system's file)",
        )?;
    }
    let local = spool_path(ctx.cfg, batch.job_id, batch.part);
    // Only "not found" sets the batch aside; any other answer (a share's hiccup) is retried.
    let present = local.try_exists().map_err(|e| RemoteError::Op {
        op: "read",
        path: local.display().to_string(),
        message: e.to_string(),
    })?;
    if !present {
        return Err(StageError::local(
            format!("spool file {} is missing", local.display()),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the input is in the archive and can be sent again",
            ),
        ));
    }
    Ok(Prepared::Ready(Upload {
        local,
        temp: temp_path(d, &batch.name),
        dest: join(&d.upload, &batch.name),
    }))
}

/// Takes one batch's upload result; a name found taken at the rename renames the batch and
/// uploads it alone under the next free name.
fn finish(
    ctx: &mut Ctx<'_>,
    batch: &mut Batch,
    d: &Dirs,
    listing: &mut Listing,
    mut result: Result<u64, RemoteError>,
    mut took: f64,
    mut share: f64,
) -> Result<Sent, StageError> {
    loop {
        match result {
            Ok(bytes) => {
                crate::ops::metrics::upload_took(share);
                // group_secs: from the first request of its group to the last rename.
                tracing::info!(bytes, remote = %batch.name, group_secs = format_args!("{took:.4}"), "uploaded");
                listing.put(&batch.name, bytes);
                return Ok(Sent::Now);
            }
            Err(RemoteError::Exists { path }) => {
                // A rename reported failed may still have happened: our size means ours.
                let dest = join(&d.upload, &batch.name);
                if ctx.remote.size(&dest)? == Some(batch.bytes) {
                    tracing::info!(
                        "batch found under its name after the rename was reported failed"
                    );
                    return Ok(Sent::Found(
                        "found under its name after the rename was reported failed",
                    ));
                }
                listing.put(&batch.name, 0);
                rename_taken(
                    ctx,
                    batch,
                    listing,
                    &format!("{path} already exists: another system's file"),
                )?;
            }
            Err(e) => return Err(e.into()),
        }
        let local = spool_path(ctx.cfg, batch.job_id, batch.part);
        let temp = temp_path(d, &batch.name);
        let dest = join(&d.upload, &batch.name);
        let journal = &mut *ctx.journal;
        let mut journal_error = None;
        let id = batch.id;
        let mut intent = || match journal.mark_renaming(&[id]) {
            Ok(()) => Ok(()),
            Err(e) => {
                journal_error = Some(e);
                Err(RemoteError::Op {
                    op: "rename",
                    path: String::new(),
                    message: "the journal could not record the rename".into(),
                })
            }
        };
        let started = std::time::Instant::now();
        result = ctx.remote.upload_with(&local, &temp, &dest, &mut intent);
        if let Some(e) = journal_error {
            return Err(e.into());
        }
        took = started.elapsed().as_secs_f64();
        share = took;
    }
}

/// How one batch's upload ended.
enum Sent {
    /// Uploaded now.
    Now,
    /// Already on the server.
    Found(&'static str),
    /// Set to `unknown`, for an operator.
    Unknown,
}

fn temp_path(d: &Dirs, name: &str) -> String {
    match &d.temp {
        Some(t) => join(t, &format!("{name}.part")),
        None => join(&d.upload, &format!(".{name}.part")),
    }
}

/// A resumed batch whose rename had begun, found nowhere: `unknown`, with the facts.
fn unknown(ctx: &mut Ctx<'_>, batch: &Batch, d: &Dirs) -> Result<(), StageError> {
    let why = format!(
        "{name} may have gone out: smsdrop had begun renaming it into {up}/ when it stopped, and \
         now it is in none of {up}/, {ok}/, {err}/ (the gateway may have processed it and \
         cleaned it away) and its temporary file is gone. Check with the gateway whether its \
         messages were sent, then run `smsdrop resolve {job} --sent` or `--resend`",
        name = batch.name,
        up = d.upload,
        ok = d.success,
        err = d.error,
        job = batch.job_id
    );
    ctx.journal.transaction(|t| {
        t.set_batch_state(batch.id, JobState::Unknown, Some(&why))?;
        t.set_reason(batch.job_id, Some(&why))?;
        t.note_job(batch.job_id, &why)
    })?;
    tracing::error!(reason = %why, "batch outcome unknown; waiting for a decision");
    Ok(())
}

/// Where a resumed batch's final name was found.
enum Found {
    /// In this folder, with our size.
    Ours(String),
    /// Someone else's file: its path and size.
    Foreign(String, u64),
    Nothing,
}

fn find_ours(listing: &Listing, batch: &Batch, d: &Dirs) -> Found {
    let names = [&d.upload, &d.success, &d.error];
    let found = listing.find(&batch.name);
    if let Some((i, _)) = found.iter().find(|(_, s)| *s == Some(batch.bytes)) {
        return Found::Ours(names[*i].clone());
    }
    match found.first() {
        Some((i, size)) => Found::Foreign(join(names[*i], &batch.name), size.unwrap_or(0)),
        None => Found::Nothing,
    }
}

/// Gives `batch` the next name free on the server because its name is taken there, and says so
/// in the job's history (its report shows it).
fn rename_taken(
    ctx: &mut Ctx<'_>,
    batch: &mut Batch,
    listing: &Listing,
    why: &str,
) -> Result<(), StageError> {
    let (sub, day) = BatchName::parse(&batch.name)
        .map(|n| (n.subaccount, n.date))
        .unwrap_or_default();
    let old = batch.name.clone();
    let new = ctx.journal.transaction(|t| {
        let mut new = t.rename_batch(batch.id, &sub, day)?;
        while listing.taken(&new) {
            new = t.rename_batch(batch.id, &sub, day)?;
        }
        t.note_job(batch.job_id, &format!("{old} renamed {new}: {why}"))?;
        Ok(new)
    })?;
    tracing::warn!(taken = %old, new_name = %new, reason = why, "remote name taken by another file; renamed");
    batch.name = new;
    batch.renaming = false;
    Ok(())
}

/// Records uploaded batches, and jobs whose batches are now all past uploading, in one
/// transaction.
fn commit(
    ctx: &mut Ctx<'_>,
    done: &mut Vec<(Batch, Option<&'static str>)>,
) -> Result<(), StageError> {
    if done.is_empty() {
        return Ok(());
    }
    let jobs: BTreeSet<i64> = done.iter().map(|(b, _)| b.job_id).collect();
    let mut finished = vec![];
    for &job in &jobs {
        let uploaded_now: BTreeSet<i64> = done
            .iter()
            .filter(|(b, _)| b.job_id == job)
            .map(|(b, _)| b.id)
            .collect();
        let all_up = ctx.journal.batches(job)?.iter().all(|b| {
            uploaded_now.contains(&b.id)
                || !matches!(b.state, JobState::Uploading | JobState::Converted)
        });
        if all_up
            && ctx
                .journal
                .job(job)?
                .is_some_and(|j| j.state == JobState::Uploading)
        {
            finished.push(job);
        }
    }
    ctx.journal.transaction(|t| {
        for (b, note) in done.iter() {
            t.set_batch_state(b.id, JobState::Uploaded, *note)?;
        }
        for &job in &finished {
            t.set_reason(job, None)?;
            t.set_job_state(job, JobState::Uploaded, None)?;
        }
        Ok(())
    })?;
    done.clear();
    crate::crash::point("uploaded");
    Ok(())
}
