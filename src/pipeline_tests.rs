//! The stages (intake, upload, track, report) driven together over [`LocalRemote`] with a
//! settable clock: table-like tests of the state machine that end-to-end runs are too slow to
//! reach. The real-server proofs are in `tests/`.

use crate::archive::Origin;
use crate::config::Config;
use crate::intake::{self, Input};
use crate::journal::{Job, JobState, Journal, NowMs};
use crate::remote::local::LocalRemote;
use crate::remote::{Remote, RemoteError};
use crate::stage::{Clock, Ctx, StageError};
use crate::{report, spool, track, upload};
use chrono::{DateTime, TimeZone, Utc};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// A clock the test sets; the journal stamps its records by it too.
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    /// This clock in milliseconds, for the journal.
    fn in_ms(&self) -> NowMs {
        let t = Arc::clone(&self.0);
        Box::new(move || t.lock().unwrap().timestamp_millis())
    }
}

/// The journal in `cfg`'s state folder, stamping by `clock`.
fn open_journal(cfg: &Config, clock: &TestClock) -> Journal {
    let mut journal = Journal::open(&cfg.state.dir).unwrap();
    journal.set_clock(clock.in_ms());
    journal
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A local folder as the server, whose uploads of chosen names fail once like a dropped link.
struct Flaky {
    inner: LocalRemote,
    fail_once: Vec<String>,
    /// Names whose upload the server always refuses (an SFTP status, the session fine).
    refuse: Vec<String>,
    /// Names whose connection drops right after the rename (the journal never hears of it).
    drop_after_rename: Vec<String>,
}

impl Remote for Flaky {
    fn list(&mut self, dir: &str) -> Result<Vec<String>, RemoteError> {
        self.inner.list(dir)
    }
    fn size(&mut self, path: &str) -> Result<Option<u64>, RemoteError> {
        self.inner.size(path)
    }
    fn read_small(&mut self, path: &str, max: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        self.inner.read_small(path, max)
    }
    fn upload_with(
        &mut self,
        local: &Path,
        temp: &str,
        dest: &str,
        before_rename: &mut dyn FnMut() -> Result<(), RemoteError>,
    ) -> Result<u64, RemoteError> {
        if let Some(i) = self
            .fail_once
            .iter()
            .position(|n| dest.ends_with(n.as_str()))
        {
            self.fail_once.remove(i);
            return Err(RemoteError::Connect {
                target: "test".into(),
                message: "connection reset (injected)".into(),
            });
        }
        if self.refuse.iter().any(|n| dest.ends_with(n.as_str())) {
            return Err(RemoteError::Op {
                op: "rename",
                path: dest.to_owned(),
                message: "permission denied (injected)".into(),
            });
        }
        let sent = self.inner.upload_with(local, temp, dest, before_rename)?;
        if let Some(i) = self
            .drop_after_rename
            .iter()
            .position(|n| dest.ends_with(n.as_str()))
        {
            self.drop_after_rename.remove(i);
            return Err(RemoteError::Connect {
                target: "test".into(),
                message: "connection reset after the rename (injected)".into(),
            });
        }
        Ok(sent)
    }
    fn remove(&mut self, path: &str) -> Result<(), RemoteError> {
        self.inner.remove(path)
    }
}

struct World {
    dir: tempfile::TempDir,
    cfg: Config,
    journal: Journal,
    remote: Flaky,
    clock: TestClock,
}

impl World {
    fn new(extra: &str) -> World {
        World::with("", "", extra)
    }

    /// A world whose `[inbox]` and `[batch]` sections get `inbox` and `batch` added.
    fn with(inbox: &str, batch: &str, extra: &str) -> World {
        let rows = if batch.contains("max_rows_per_file") {
            ""
        } else {
            "max_rows_per_file = 2\n"
        };
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("smsdrop.toml");
        std::fs::write(
            &cfg_path,
            format!(
                "[inbox]\ndir = \"inbox\"\n{inbox}\n[batch]\nsubaccount = \"ACME\"\n\
                 timezone = \"America/Sao_Paulo\"\n{rows}{batch}\n\
                 [state]\ndir = \"state\"\n{extra}"
            ),
        )
        .unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        for d in ["inbox", "server/upload", "server/success", "server/error"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        spool::prepare_dirs(&cfg).unwrap();
        let remote = Flaky {
            inner: LocalRemote::new(&dir.path().join("server")),
            fail_once: vec![],
            refuse: vec![],
            drop_after_rename: vec![],
        };
        let noon = Utc.with_ymd_and_hms(2026, 12, 3, 15, 0, 0).unwrap();
        let clock = TestClock(Arc::new(Mutex::new(noon)));
        World {
            dir,
            journal: open_journal(&cfg, &clock),
            cfg,
            remote,
            clock,
        }
    }

    fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            cfg: &self.cfg,
            journal: &mut self.journal,
            remote: &mut self.remote,
            clock: &self.clock,
        }
    }

    fn set_clock(&self, t: DateTime<Utc>) {
        *self.clock.0.lock().unwrap() = t;
    }

    /// Drops an input of `rows` rows into the inbox and takes it; returns its job id.
    fn take(&mut self, name: &str, rows: usize) -> i64 {
        let mut s = String::from("celular;mensagem;id\n");
        for i in 0..rows {
            s.push_str(&format!(
                "55119{:08};{name} message {i};{name}-{i}\n",
                i + 1
            ));
        }
        self.take_group(&[(name, s)])[0]
    }

    /// Drops inputs (name, content) into the inbox and takes them as one group.
    fn take_group(&mut self, inputs: &[(&str, String)]) -> Vec<i64> {
        let inputs: Vec<Input> = inputs
            .iter()
            .map(|(name, text)| {
                let path = self.dir.path().join("inbox").join(name);
                std::fs::write(&path, text).unwrap();
                Input {
                    path,
                    subaccount: Ok(None),
                }
            })
            .collect();
        intake::take_all(&mut self.ctx(), &inputs, Origin::Inbox).unwrap()
    }

    /// Every row of the batch files on the server (any folder), header lines and EOF left out.
    fn rows_on_server(&self) -> Vec<String> {
        let mut rows = vec![];
        for d in ["upload", "success", "error"] {
            for n in self.server(d) {
                let text = std::fs::read_to_string(self.dir.path().join("server").join(d).join(n))
                    .unwrap();
                rows.extend(
                    text.lines()
                        .filter(|l| *l != "EOF" && !l.starts_with("number;"))
                        .map(str::to_owned),
                );
            }
        }
        rows.sort();
        rows
    }

    fn result_csv(&self, id: i64) -> String {
        let (_, csv) = report::report_paths(&self.cfg, &self.job(id));
        std::fs::read_to_string(csv).unwrap()
    }

    /// One upload round; a server error is what the engine would retry.
    fn upload(&mut self) -> Result<usize, StageError> {
        upload::upload_pending(&mut self.ctx(), &AtomicBool::new(false))
    }

    /// One poll and report round.
    fn track_and_report(&mut self) -> Vec<Job> {
        track::poll_listed(&mut self.ctx()).unwrap();
        report::report_finished(&mut self.ctx()).unwrap()
    }

    /// The gateway moves `name` from `upload/` to `to/`.
    fn gateway(&self, name: &str, to: &str) {
        let s = self.dir.path().join("server");
        std::fs::rename(s.join("upload").join(name), s.join(to).join(name)).unwrap();
    }

    fn server(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path().join("server").join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn job(&self, id: i64) -> Job {
        self.journal.job(id).unwrap().unwrap()
    }

    fn names(&self, id: i64) -> Vec<String> {
        self.journal
            .batches(id)
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect()
    }

    /// The notes in a job's history (what its report shows).
    fn notes(&self, id: i64) -> Vec<String> {
        self.journal
            .history(id)
            .unwrap()
            .into_iter()
            .filter_map(|h| h.note)
            .collect()
    }

    fn spool(&self, id: i64, part: u32) -> PathBuf {
        spool::spool_path(&self.cfg, id, part)
    }
}

/// An export of `rows` (the ERP's invoice rows, the same number and text for the same index
/// whatever the file's name); correlation ids name the file.
fn export(tag: &str, rows: std::ops::Range<usize>) -> String {
    let mut s = String::from("celular;mensagem;id\n");
    for i in rows {
        s.push_str(&format!("55119{:08};invoice {i} is due;{tag}-{i}\n", i + 1));
    }
    s
}

/// Part 2 of a 3-part job lands in `error/` while part 3 meets a transient upload error: the
/// job waits for part 3, part 3's spool file stays, later inputs still go through, and the job
/// then settles `failed` naming part 2 only.
#[test]
fn a_partial_failure_never_settles_early_nor_stalls_later_jobs() {
    let mut w = World::new("");
    let big = w.take("big.csv", 6);
    let names = w.names(big);
    assert_eq!(names.len(), 3);
    w.remote.fail_once.push(names[2].clone());
    assert!(w.upload().is_err(), "part 3's upload fails this round");
    assert_eq!(w.server("upload"), vec![names[0].clone(), names[1].clone()]);
    w.gateway(&names[0], "success");
    w.gateway(&names[1], "error");
    assert!(w.track_and_report().is_empty(), "nothing is final yet");
    assert!(!w.job(big).state.is_final(), "part 3 may still go out");
    assert!(w.spool(big, 2).exists(), "part 3's spool file is kept");

    let later = w.take("later.csv", 1);
    assert_eq!(w.upload().unwrap(), 2, "part 3 and the later input go up");
    let later_name = w.names(later).remove(0);
    w.gateway(&names[2], "success");
    w.gateway(&later_name, "success");
    let reported = w.track_and_report();
    assert_eq!(reported.len(), 2);
    let job = w.job(big);
    assert_eq!(job.state, JobState::Failed);
    let reason = job.reason.unwrap();
    assert!(
        reason.contains(&names[1]) && !reason.contains(&names[2]),
        "{reason}"
    );
    assert_eq!(w.job(later).state, JobState::Succeeded);
    // Succeeded parts' spool files go; the failed one's stays for `smsdrop retry`.
    assert!(!w.spool(big, 0).exists() && !w.spool(big, 2).exists());
    assert!(w.spool(big, 1).exists());
    let (_, csv) = report::report_paths(&w.cfg, &w.job(big));
    let csv = std::fs::read_to_string(csv).unwrap();
    assert_eq!(csv.matches(";failed;").count(), 2, "{csv}");
    assert_eq!(csv.matches(";succeeded;").count(), 4, "{csv}");
}

/// A batch whose spool file is gone is set aside with its reason; the jobs after it go on.
#[test]
fn a_missing_spool_file_sets_one_batch_aside_and_blocks_nothing() {
    let mut w = World::new("");
    let first = w.take("first.csv", 1);
    std::fs::remove_file(w.spool(first, 0)).unwrap();
    let second = w.take("second.csv", 2);
    assert_eq!(w.upload().unwrap(), 1);
    let second_name = w.names(second).remove(0);
    assert_eq!(w.server("upload"), vec![second_name.clone()]);
    w.gateway(&second_name, "success");
    w.track_and_report();
    let job = w.job(first);
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.reason
            .as_deref()
            .unwrap()
            .contains("could not be uploaded"),
        "{job:?}"
    );
    let b = w.journal.batches(first).unwrap().remove(0);
    assert!(b.last_error.unwrap().contains("is missing"));
    assert_eq!(w.job(second).state, JobState::Succeeded);
    // Nothing is retried forever: the next round has nothing to do.
    assert_eq!(w.upload().unwrap(), 0);
}

/// A resumed batch whose final name is on the server with another size is another system's
/// file: ours takes the next free name, goes up, and the job's history says so.
#[test]
fn already_there_counts_only_when_the_size_is_ours() {
    let mut w = World::new("");
    let id = w.take("a.csv", 2);
    let name = w.names(id).remove(0);
    w.remote.fail_once.push(name.clone());
    assert!(w.upload().is_err());
    assert_eq!(w.journal.batches(id).unwrap()[0].state, JobState::Uploading);
    let foreign = w.dir.path().join("server/success").join(&name);
    std::fs::write(&foreign, "someone else's batch\nEOF\n").unwrap();
    assert_eq!(
        w.upload().unwrap(),
        1,
        "ours is uploaded, not taken as delivered"
    );
    let new_name = w.names(id).remove(0);
    assert_ne!(new_name, name);
    assert_eq!(w.server("upload"), vec![new_name.clone()]);
    assert_eq!(
        std::fs::read_to_string(&foreign).unwrap(),
        "someone else's batch\nEOF\n",
        "the foreign file is untouched"
    );
    let notes = w.notes(id);
    assert!(
        notes.iter().any(|n| n.contains("another system's file")),
        "{notes:?}"
    );
    // The same size is ours (a crash after the rename): found, not sent again.
    let id2 = w.take("b.csv", 1);
    let name2 = w.names(id2).remove(0);
    w.remote.fail_once.push(name2.clone());
    assert!(w.upload().is_err());
    std::fs::copy(
        w.spool(id2, 0),
        w.dir.path().join("server/upload").join(&name2),
    )
    .unwrap();
    assert_eq!(
        w.upload().unwrap(),
        0,
        "found on the server, not uploaded again"
    );
    assert_eq!(w.names(id2), vec![name2]);
}

/// A name taken on the server at upload time (another system's file appeared after our number
/// was allocated) is never overwritten: ours takes the next number.
#[test]
fn a_name_taken_at_upload_time_moves_to_the_next_number() {
    let mut w = World::new("");
    let id = w.take("a.csv", 1);
    let name = w.names(id).remove(0);
    std::fs::write(w.dir.path().join("server/upload").join(&name), "x").unwrap();
    assert_eq!(w.upload().unwrap(), 1);
    let new_name = w.names(id).remove(0);
    assert_ne!(new_name, name);
    assert_eq!(w.server("upload"), vec![name, new_name]);
}

/// The name carries the sending day: a batch converted at 23:59:30 in São Paulo and uploaded at
/// 00:00:30 goes out under the new day, numbered above what the server holds for that day.
#[test]
fn a_backlog_across_midnight_goes_out_under_the_sending_day() {
    let mut w = World::new("");
    // 23:59:30 on 3 December in America/Sao_Paulo (UTC-3) is 02:59:30 UTC on the 4th.
    let before = Utc.with_ymd_and_hms(2026, 12, 4, 2, 59, 30).unwrap();
    w.set_clock(before);
    let id = w.take("late.csv", 1);
    assert_eq!(w.names(id), vec!["ACME.20261203.01.txt"]);
    // Another system already sent number 05 of the new day.
    std::fs::write(
        w.dir.path().join("server/success/ACME.20261204.05.txt"),
        "x",
    )
    .unwrap();
    w.set_clock(before + chrono::Duration::seconds(60));
    assert_eq!(w.upload().unwrap(), 1);
    assert_eq!(w.server("upload"), vec!["ACME.20261204.06.txt"]);
    assert_eq!(w.names(id), vec!["ACME.20261204.06.txt"]);
    let notes = w.notes(id);
    assert!(
        notes.iter().any(|n| n.contains("sending day changed")),
        "{notes:?}"
    );
    // A new input after midnight numbers on from there.
    let next = w.take("next.csv", 1);
    assert_eq!(w.names(next), vec!["ACME.20261204.07.txt"]);
}

/// One second before and after midnight in São Paulo, in UTC terms, for the zone rule itself.
#[test]
fn the_sending_day_is_the_configured_zone_s_calendar_day() {
    let w = World::new("");
    let zone = w.cfg.batch.zone;
    let before = Utc.with_ymd_and_hms(2026, 12, 4, 2, 59, 59).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 12, 4, 3, 0, 0).unwrap();
    assert_eq!(zone.day_of(before).to_string(), "2026-12-03");
    assert_eq!(zone.day_of(after).to_string(), "2026-12-04");
}

/// A file the server always refuses (an SFTP status, the session fine) blocks nothing: the
/// others go up in the same round; after 10 refusals, not being on the server, it is set aside,
/// and the same input dropped again is not a duplicate (none of its rows went out).
#[test]
fn a_file_the_server_always_refuses_blocks_nothing_and_is_set_aside() {
    let mut w = World::new("");
    let bad = w.take("bad.csv", 1);
    let bad_name = w.names(bad).remove(0);
    w.remote.refuse.push(bad_name.clone());
    let good = w.take("good.csv", 1);
    assert!(
        w.upload().is_err(),
        "the round reports the refusal for the backoff"
    );
    assert_eq!(w.server("upload"), vec![w.names(good).remove(0)]);
    for _ in 1..10 {
        assert!(w.job(bad).state == JobState::Uploading);
        let _ = w.upload();
    }
    let b = w.journal.batches(bad).unwrap().remove(0);
    assert_eq!(b.state, JobState::Failed, "{b:?}");
    assert!(b.last_error.unwrap().contains("refused it 10 times"));
    w.track_and_report();
    assert_eq!(w.job(bad).state, JobState::Failed);
    // Dropped again once the server is fixed: taken, not refused as a duplicate.
    w.remote.refuse.clear();
    let again = w.take("bad.csv", 1);
    assert_eq!(
        w.job(again).state,
        JobState::Converted,
        "{:?}",
        w.job(again)
    );
}

/// An archived file is never replaced: a journal restored from a backup hands out job ids
/// again, and the new input is archived beside the old one.
#[test]
fn archiving_never_replaces_a_file() {
    let mut w = World::new("");
    let archive = w.cfg.state.archive_dir.clone();
    std::fs::write(archive.join("1-a.csv"), "an older input").unwrap();
    let id = w.take("a.csv", 1);
    assert_eq!(id, 1);
    assert_eq!(
        std::fs::read_to_string(archive.join("1-a.csv")).unwrap(),
        "an older input"
    );
    let stored = w.job(id).stored_path.unwrap();
    assert_eq!(stored, archive.join("1-a.csv.1"));
    assert!(std::fs::read_to_string(stored)
        .unwrap()
        .contains("a.csv message 0"));
}

/// Another system's files appear mid-day: under our next number in `success/` (our batch takes
/// the next free name and is not taken as succeeded by the foreign file), and under the name of
/// a batch already uploaded, in `error/`, with our size but other bytes (not taken as failed). A
/// stray number near `u32::MAX` does not make numbering wrap.
#[test]
fn foreign_files_never_stand_for_ours() {
    let mut w = World::new("");
    std::fs::write(
        w.dir
            .path()
            .join("server/upload/ACME.20261203.4294967295.txt"),
        "stray",
    )
    .unwrap();
    let first = w.take("first.csv", 1);
    assert_eq!(
        w.names(first),
        vec!["ACME.20261203.01.txt"],
        "no wrap-around"
    );
    w.upload().unwrap();
    w.gateway("ACME.20261203.01.txt", "success");
    // Another system's 02 lands in success/ before our next batch goes.
    std::fs::write(
        w.dir.path().join("server/success/ACME.20261203.02.txt"),
        "foreign",
    )
    .unwrap();
    let second = w.take("second.csv", 2);
    assert_eq!(w.names(second), vec!["ACME.20261203.02.txt"]);
    w.upload().unwrap();
    assert_eq!(w.names(second), vec!["ACME.20261203.03.txt"]);
    w.track_and_report();
    assert_eq!(
        w.job(second).state,
        JobState::Uploaded,
        "not fooled by the foreign 02"
    );
    // A foreign file of our size but other bytes under our uploaded name, in error/.
    let ours = std::fs::read(w.dir.path().join("server/upload/ACME.20261203.03.txt")).unwrap();
    let mut theirs = ours.clone();
    theirs[0] ^= 1;
    std::fs::write(
        w.dir.path().join("server/error/ACME.20261203.03.txt"),
        &theirs,
    )
    .unwrap();
    w.track_and_report();
    assert_eq!(
        w.job(second).state,
        JobState::Uploaded,
        "not failed by a foreign file"
    );
    let b = w.journal.batches(second).unwrap().remove(0);
    assert!(b.note.unwrap().contains("not ours"));
    // The gateway then delivers ours (it writes success/; error/ keeps the foreign one).
    std::fs::rename(
        w.dir.path().join("server/upload/ACME.20261203.03.txt"),
        w.dir.path().join("server/success/ACME.20261203.03.txt"),
    )
    .unwrap();
    w.track_and_report();
    assert_eq!(w.job(second).state, JobState::Succeeded);
}

/// A crash between the rename and the journal write, and a gateway that cleans `success/`:
/// the batch is nowhere, its temp file gone: `unknown`, never uploaded again on its own; the
/// operator's `resolve --resend` sends it once under a new name.
#[test]
fn a_batch_renamed_then_cleaned_away_is_unknown_until_an_operator_decides() {
    let mut w = World::new("");
    let id = w.take("a.csv", 2);
    let name = w.names(id).remove(0);
    w.remote.drop_after_rename.push(name.clone());
    assert!(w.upload().is_err());
    let b = w.journal.batches(id).unwrap().remove(0);
    assert!(b.renaming && b.state == JobState::Uploading);
    // The gateway processes it and cleans it away before smsdrop looks again.
    std::fs::remove_file(w.dir.path().join("server/upload").join(&name)).unwrap();
    assert_eq!(w.upload().unwrap(), 0, "not sent again");
    assert!(w.server("upload").is_empty());
    let b = w.journal.batches(id).unwrap().remove(0);
    assert_eq!(b.state, JobState::Unknown);
    assert!(w.job(id).reason.unwrap().contains("smsdrop resolve"));
    w.track_and_report();
    assert!(!w.job(id).state.is_final(), "waits for a decision");
    crate::commands::decide::resolve(&w.cfg, id, false).unwrap();
    assert_eq!(w.upload().unwrap(), 1);
    let new = w.names(id).remove(0);
    assert_ne!(new, name);
    assert_eq!(w.server("upload"), vec![new.clone()]);
    w.gateway(&new, "success");
    w.track_and_report();
    assert_eq!(w.job(id).state, JobState::Succeeded);
}

/// A job the gateway failed can be retried by decision, and its input dropped again is not a
/// duplicate (nothing of it was delivered).
#[test]
fn a_failed_job_is_retried_by_decision_and_is_no_duplicate() {
    let mut w = World::new("");
    let id = w.take("a.csv", 2);
    w.upload().unwrap();
    let name = w.names(id).remove(0);
    w.gateway(&name, "error");
    w.track_and_report();
    let job = w.job(id);
    assert_eq!(job.state, JobState::Failed);
    assert!(job.reason.unwrap().contains(&format!("smsdrop retry {id}")));
    // The same input again: not refused as a duplicate.
    let again = w.take("a.csv", 2);
    assert_eq!(w.job(again).state, JobState::Converted);
    // Or the operator retries the first job.
    crate::commands::decide::retry(&w.cfg, id, true).unwrap();
    assert_eq!(w.job(id).state, JobState::Uploading);
    w.upload().unwrap();
    let new = w.names(id).remove(0);
    assert_ne!(new, name);
    w.gateway(&new, "success");
    w.track_and_report();
    assert_eq!(w.job(id).state, JobState::Succeeded);
    // A succeeded job is never retried.
    assert!(crate::commands::decide::retry(&w.cfg, id, true).is_err());
}

/// With the gateway stopped, a job expires saying its file is still in `upload/`; when the
/// gateway resumes and delivers it, the job becomes `succeeded` and its reports are written again.
#[test]
fn an_expired_job_takes_a_late_outcome() {
    let mut w = World::new("[track]\ngive_up_after = \"1h\"\n");
    let id = w.take("a.csv", 1);
    w.upload().unwrap();
    let name = w.names(id).remove(0);
    // The journal stamps the upload with the real time, so "two hours later" counts from now,
    // not from the test clock's fixed start (which made this test pass only before 15:00 UTC
    // on 2026-12-03).
    let t0 = Utc::now();
    w.set_clock(t0 + chrono::Duration::hours(2));
    w.track_and_report();
    let job = w.job(id);
    assert_eq!(job.state, JobState::Expired);
    assert!(job
        .reason
        .unwrap()
        .contains("still in upload/: the gateway never took it"));
    assert!(job.reported);
    w.gateway(&name, "success");
    let reported = w.track_and_report();
    assert_eq!(w.job(id).state, JobState::Succeeded);
    assert_eq!(reported.len(), 1, "the report is written again");
    let (json, csv) = report::report_paths(&w.cfg, &w.job(id));
    assert!(std::fs::read_to_string(csv)
        .unwrap()
        .contains(";succeeded;"));
    assert!(std::fs::read_to_string(json)
        .unwrap()
        .contains("late outcome"));
}

/// With `verify_max_bytes = 0` only sizes are compared: a same-size file under our name counts
/// as ours (the default reads small files back, see `foreign_files_never_stand_for_ours`).
#[test]
fn verification_by_size_only_when_asked() {
    let mut w = World::new("[track]\nverify_max_bytes = 0\n");
    let id = w.take("a.csv", 1);
    w.upload().unwrap();
    let name = w.names(id).remove(0);
    let ours = std::fs::read(w.dir.path().join("server/upload").join(&name)).unwrap();
    let mut theirs = ours.clone();
    theirs[0] ^= 1;
    std::fs::write(w.dir.path().join("server/success").join(&name), &theirs).unwrap();
    w.track_and_report();
    assert_eq!(w.job(id).state, JobState::Succeeded);
}

#[test]
fn message_tracking_counts_only_sent_files_and_gives_up_in_time() {
    let mut w = World::new(
        "[status]\nmode = \"webhook\"\nwebhook_listen = \"127.0.0.1:9\"\ngive_up_after = \"1h\"\n",
    );
    let id = w.take("three.csv", 3);
    let names = w.names(id);
    assert_eq!(names.len(), 2);
    w.upload().unwrap();
    // Statuses may come before the file outcome: they are kept.
    let no_dlr = |_: &str| false;
    let sent_at = Utc::now() + chrono::TimeDelta::seconds(5);
    let iso = sent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let sent = |cid: &str, code| crate::journal::StatusUpdate {
        correlation_id: cid.into(),
        sent_code: Some(code),
        sent_status: crate::status::code_name(code).map(str::to_owned),
        sent_at: Some(sent_at.timestamp_millis()),
        carrier: Some("VIVO".into()),
        ..Default::default()
    };
    let a = w
        .journal
        .apply_statuses(
            &[sent("three.csv-0", 202), sent("three.csv-1", 2)],
            &no_dlr,
            &[204],
        )
        .unwrap();
    assert_eq!(a.changed, 2);
    w.gateway(&names[0], "success");
    w.gateway(&names[1], "error");
    assert_eq!(w.track_and_report().len(), 1);
    assert_eq!(w.journal.tracking(id).unwrap().as_deref(), Some("open"));
    let c = w.journal.message_counts(id).unwrap().unwrap();
    assert_eq!(
        (c.sent, c.failed, c.pending),
        (2, 1, 1),
        "row 3's file went to error/"
    );
    // Row 2 waits for its delivery report: nothing ends before give_up_after.
    assert_eq!(crate::status::settle::settle(&mut w.ctx()).unwrap(), 0);
    let t = w.clock.now() + chrono::TimeDelta::minutes(61);
    w.set_clock(t);
    assert_eq!(crate::status::settle::settle(&mut w.ctx()).unwrap(), 1);
    assert_eq!(w.journal.tracking(id).unwrap().as_deref(), Some("done"));
    let csv = std::fs::read_to_string(report::delivery_path(&w.cfg, &w.job(id))).unwrap();
    assert_eq!(
        csv,
        format!(
            "line;number;correlation_id;sent_status;sent_at;delivered_status;delivered_at;carrier\n\
             2;5511900000001;three.csv-0;INVALID_DESTINATION_NUMBER;{iso};;;VIVO\n\
             3;5511900000002;three.csv-1;SENT_SUCCESS;{iso};;;VIVO\n"
        )
    );
    let (json, _) = report::report_paths(&w.cfg, &w.job(id));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(json["messages"]["pending"], 1, "{json:#}");
    assert_eq!(json["messages"]["tracking"], "done");
    assert_eq!(json["messages"]["failed_messages"][0]["line"], 2);
    // Nothing more to end.
    assert_eq!(crate::status::settle::settle(&mut w.ctx()).unwrap(), 0);
}

/// Issue 19, item 4: the ERP closed its export, then rewrote the same path with the same 5 rows
/// plus 3 new ones. Only the 3 new rows go out; the 5 are reported as already sent, in the
/// result CSV, the JSON report and the totals; an export of rows all sent before sends nothing.
#[test]
fn a_reexport_sends_only_the_new_rows() {
    let mut w = World::new("");
    let first = w.take_group(&[("open.csv", export("h1", 0..5))])[0];
    w.upload().unwrap();
    for n in w.names(first) {
        w.gateway(&n, "success");
    }
    w.track_and_report();
    let again = w.take_group(&[("open.csv", export("h2", 0..8))])[0];
    let job = w.job(again);
    assert_eq!(job.state, JobState::Converted, "{job:?}");
    assert_eq!(job.rows_sent, 3);
    w.upload().unwrap();
    let rows = w.rows_on_server();
    assert_eq!(rows.len(), 8, "5 + 3 rows, none twice: {rows:#?}");
    for n in w.names(again) {
        w.gateway(&n, "success");
    }
    w.track_and_report();
    let csv = w.result_csv(again);
    assert!(
        csv.contains(
            "2;5511900000001;h2-0;duplicate;already sent in job 1, line 2, on 2026-12-03;\n"
        ),
        "{csv}"
    );
    assert_eq!(csv.matches(";duplicate;").count(), 5, "{csv}");
    assert_eq!(csv.matches(";succeeded;").count(), 3, "{csv}");
    let (json, _) = report::report_paths(&w.cfg, &w.job(again));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(json["rows_duplicate"], 5, "{json:#}");
    assert_eq!(json["rows_sent"], 3);
    assert_eq!(
        json["conversion"]["duplicate_rows"][4]["reason"],
        "already sent in job 1, line 6, on 2026-12-03"
    );
    assert_eq!(w.journal.stats(0).unwrap().rows_duplicate, 5);
    // Rows all sent before (in another order, so not the same file): nothing to send.
    let mut text = export("h3", 6..8);
    text.push_str(&export("h3", 0..2)["celular;mensagem;id\n".len()..]);
    let third = w.take_group(&[("open.csv", text)])[0];
    let job = w.job(third);
    assert_eq!(job.state, JobState::Rejected);
    assert!(
        job.reason
            .as_deref()
            .unwrap()
            .contains("every row (4) was already sent, the first already sent in job 2, line 8"),
        "{job:?}"
    );
    w.track_and_report();
    assert_eq!(w.result_csv(third).matches(";duplicate;").count(), 4);
    assert_eq!(w.rows_on_server().len(), 8);
}

/// Two inputs with rows in common taken in one round: each row goes out once. The same export
/// again after a restart (the journal opened anew) between conversion and upload: its rows are
/// recorded for upload, so they count, and nothing is lost.
#[test]
fn rows_in_one_round_and_across_a_restart_go_out_once() {
    let mut w = World::new("");
    let ids = w.take_group(&[("a.csv", export("a", 0..4)), ("b.csv", export("b", 2..6))]);
    assert_eq!(w.job(ids[0]).rows_sent, 4);
    assert_eq!(w.job(ids[1]).rows_sent, 2, "rows 2 and 3 go with a.csv");
    // A restart before anything was uploaded.
    w.journal = open_journal(&w.cfg, &w.clock);
    let c = w.take_group(&[("c.csv", export("c", 0..7))])[0];
    assert_eq!(w.job(c).rows_sent, 1, "only row 6 is new");
    w.upload().unwrap();
    let rows = w.rows_on_server();
    let numbers: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.split(';').next().unwrap()).collect();
    assert_eq!((rows.len(), numbers.len()), (7, 7), "{rows:#?}");
}

/// `duplicate_rows = "send"` keeps sending every row; rows of a batch the gateway failed are
/// not duplicates; rows older than `duplicate_days` are forgotten (and pruned).
#[test]
fn the_guard_can_be_off_skips_failed_rows_and_forgets_old_ones() {
    let mut w = World::with("", "duplicate_rows = \"send\"", "");
    w.take("a.csv", 2);
    let again = w.take_group(&[("b.csv", export("b", 0..2)), ("c.csv", export("c", 0..2))]);
    assert_eq!(w.job(again[1]).rows_sent, 2, "sent again");

    let mut w = World::with("duplicate_days = 2", "", "");
    let failed = w.take_group(&[("a.csv", export("a", 0..2))])[0];
    w.upload().unwrap();
    w.gateway(&w.names(failed)[0], "error");
    w.track_and_report();
    let after = w.take_group(&[("b.csv", export("b", 0..2))])[0];
    assert_eq!(
        w.job(after).rows_sent,
        2,
        "the failed rows were not delivered"
    );
    let later = w.clock.now() + chrono::TimeDelta::days(3);
    w.set_clock(later);
    assert_eq!(w.journal.remembered_size().unwrap().0, 4);
    let old = w.take_group(&[("c.csv", export("c", 0..3))])[0];
    assert_eq!(w.job(old).rows_sent, 3, "older than duplicate_days");
    assert_eq!(w.journal.remembered_size().unwrap().0, 3, "pruned");
}

/// Issue 19, item 4: an input rejected whole (`invalid_rows = "reject-file"`) stays rejected:
/// rows appended to it later are reported, never sent as a continuation.
#[test]
fn rows_appended_to_an_input_rejected_whole_are_reported_not_sent() {
    let mut w = World::with(
        "stable_secs = 0",
        "",
        "[input]\ninvalid_rows = \"reject-file\"\n",
    );
    let mut text = export("r", 0..2);
    text.push_str("not a number;bad row;r-x\n");
    let id = w.take_group(&[("r.csv", text)])[0];
    let job = w.job(id);
    assert_eq!(job.state, JobState::Rejected, "{job:?}");
    assert!(job.watch_until.is_some(), "watched for late writes");
    let claimed = job.claimed_path.clone().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&claimed)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        &export("r", 5..7).as_bytes()["celular;mensagem;id\n".len()..],
    )
    .unwrap();
    drop(f);
    let mut watch = crate::late::LateWatch::default();
    let continued = watch.check(&mut w.ctx(), &|_| false).unwrap();
    assert_eq!(continued, Vec::<i64>::new(), "no continuation");
    let job = w.job(id);
    assert_eq!(job.state, JobState::Rejected);
    let late = job.late.unwrap_or_default();
    assert!(
        late.contains("were NOT sent: the input was rejected whole"),
        "{late}"
    );
    assert!(job.watch_until.is_none(), "the watch ends");
    assert!(w.rows_on_server().is_empty());
}

/// Issue 19, item 4: a rewrite in place of the same size after the pickup is seen (the read
/// bytes hashed again) and reported on the job; nothing is sent again.
#[test]
fn a_same_size_rewrite_in_place_is_reported() {
    let mut w = World::with("stable_secs = 0", "", "");
    let id = w.take_group(&[("s.csv", export("s", 0..3))])[0];
    let mut watch = crate::late::LateWatch::default();
    assert!(watch.check(&mut w.ctx(), &|_| false).unwrap().is_empty());
    assert_eq!(w.job(id).late, None, "unchanged: nothing to say");
    let claimed = w.job(id).claimed_path.unwrap();
    let before = std::fs::read(&claimed).unwrap();
    let after = String::from_utf8(before.clone())
        .unwrap()
        .replace("invoice 1 is due", "invoice 1 is DUE");
    assert_eq!(after.len(), before.len());
    // A writer still holding the file rewrites it in place (same inode, same size).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&claimed)
        .unwrap();
    std::io::Write::write_all(&mut f, after.as_bytes()).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(1))
        .unwrap();
    drop(f);
    assert!(watch.check(&mut w.ctx(), &|_| false).unwrap().is_empty());
    let job = w.job(id);
    let late = job.late.unwrap_or_default();
    assert!(late.contains("rewritten in place"), "{late:?}");
    assert!(job.watch_until.is_none(), "the watch ends");
    assert!(!job.reported, "its report is written again");
}

/// The figures in the README ("Duplicate rows: cost"): a 100,000-row export taken and uploaded
/// (to the local stand-in server) with `duplicate_rows = "send"`, with the guard and nothing
/// remembered, and with the guard and 1,000,000 rows remembered; the median of 5 runs each, and
/// what remembering costs in the journal and in memory. Not a timed assertion: run it with
/// `cargo test --release --lib remembered_rows_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn remembered_rows_cost() {
    use std::time::Instant;
    const ROWS: usize = 100_000;
    let run = |batch: &str, remembered: u64| -> (Vec<f64>, String) {
        let mut times = vec![];
        let mut note = String::new();
        for round in 0..5 {
            let mut w = World::with("", &format!("max_rows_per_file = 50000\n{batch}"), "");
            if remembered > 0 {
                let now = w.clock.now();
                let (before, after) = w
                    .journal
                    .remember_made_up(remembered / 50_000, 50_000, now)
                    .unwrap();
                let t = Instant::now();
                w.journal
                    .prepare_remembered(w.cfg.inbox.duplicate_since(now))
                    .unwrap();
                let load = t.elapsed();
                let (n, heap) = w.journal.remembered_size().unwrap();
                if round == 0 {
                    note = format!(
                        "journal +{:.1} bytes per remembered row ({} rows, {:.1} MB); index in \
                         memory {:.1} bytes per row ({:.1} MB), loaded in {:.0} ms",
                        (after - before) as f64 / n as f64,
                        n,
                        (after - before) as f64 / 1e6,
                        heap as f64 / n as f64,
                        heap as f64 / 1e6,
                        load.as_secs_f64() * 1000.0
                    );
                }
            }
            let text = export(&format!("x{round}"), 0..ROWS);
            let t = Instant::now();
            let id = w.take_group(&[("big.csv", text)])[0];
            w.upload().unwrap();
            times.push(t.elapsed().as_secs_f64());
            assert_eq!(w.job(id).rows_sent, ROWS as u64);
        }
        times.sort_by(f64::total_cmp);
        (times, note)
    };
    let (send, _) = run("duplicate_rows = \"send\"", 0);
    let (empty, _) = run("", 0);
    let (full, note) = run("", 1_000_000);
    let med = |v: &[f64]| v[v.len() / 2];
    println!("100,000-row export, taken and uploaded (median of 5, seconds):");
    println!(
        "  duplicate_rows = \"send\":              {:.3}  {send:.3?}",
        med(&send)
    );
    println!(
        "  \"skip\", nothing remembered:           {:.3}  {empty:.3?}",
        med(&empty)
    );
    println!(
        "  \"skip\", 1,000,000 rows remembered:    {:.3}  {full:.3?}",
        med(&full)
    );
    println!(
        "  1M remembered vs none: {:+.1}%; guard vs send: {:+.1}%",
        (med(&full) / med(&empty) - 1.0) * 100.0,
        (med(&empty) / med(&send) - 1.0) * 100.0
    );
    println!("  {note}");
}

/// The journal stamps the engine's time, not the machine's: a job taken at the test clock's
/// time is created then, and its batches are uploaded at the time the clock was set to next.
#[test]
fn the_journal_stamps_the_time_of_the_engines_clock() {
    let mut w = World::new("");
    let t0 = w.clock.now();
    let id = w.take("a.csv", 3);
    let job = w.job(id);
    assert_eq!((job.created_at, job.updated_at), (t0, t0));
    let later = t0 + chrono::TimeDelta::minutes(5);
    w.set_clock(later);
    w.upload().unwrap();
    let batches = w.journal.batches(id).unwrap();
    assert_eq!(batches.len(), 2, "{batches:#?}");
    assert!(
        batches.iter().all(|b| b.uploaded_at == Some(later)),
        "{batches:#?}"
    );
    let history = w.journal.history(id).unwrap();
    assert_eq!(history.first().map(|h| h.at), Some(t0), "{history:#?}");
    assert_eq!(history.last().map(|h| h.at), Some(later), "{history:#?}");
}

/// Issue 19 item 6: the rows of an `inbox/NAME/` input are read again (status page, result CSV)
/// with that subaccount's template, as intake read them, not with `[input]`'s.
#[test]
fn a_subaccount_s_input_is_read_again_with_its_template() {
    let mut w = World::new("[subaccounts.COBRA]\ntemplate = \"Aviso: {mensagem}!\"\n");
    let dir = w.dir.path().join("inbox/COBRA");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.csv");
    std::fs::write(&path, "celular;mensagem;id\n5511900000001;ola;a-1\n").unwrap();
    let input = Input {
        path,
        subaccount: Ok(Some("COBRA".into())),
    };
    let id = intake::take_all(&mut w.ctx(), &[input], Origin::Inbox).unwrap()[0];
    w.upload().unwrap();
    assert_eq!(w.rows_on_server(), ["5511900000001;Aviso: ola!;a-1;"]);
    let job = w.job(id);
    let how = crate::job_input::AsConverted::of(&w.journal, &job, &w.cfg).unwrap();
    let rows = report::sent_rows(&w.cfg, &job, &how, 10).unwrap();
    assert_eq!(
        rows,
        [(2, "5511900000001".to_owned(), "Aviso: ola!".to_owned())]
    );
}

/// A row rejected for its send_before at intake stays rejected when its input is read again
/// for the result CSV and the status page, after every deadline in it has passed; the rows sent
/// keep their places in the batch files.
#[test]
fn rows_past_their_send_before_read_again_as_intake_read_them() {
    let mut w = World::new("[input.columns]\nsend_before = \"vence\"\n");
    // The clock: 03/12/2026 12:00 in São Paulo.
    let input = "celular;mensagem;id;vence\n\
                 5511900000001;a;a-1;03/12/2026 12:30\n\
                 5511900000002;b;b-2;03/12/2026 11:00\n\
                 5511900000003;c;c-3;\n\
                 5511900000004;d;d-4;03/12/2026\n";
    let id = w.take_group(&[("f.csv", input.to_owned())])[0];
    w.upload().unwrap();
    assert_eq!(
        w.rows_on_server(),
        [
            "5511900000001;a;a-1;",
            "5511900000003;c;c-3;",
            "5511900000004;d;d-4;"
        ]
    );
    w.set_clock(w.clock.now() + chrono::TimeDelta::days(2));
    for n in w.names(id) {
        w.gateway(&n, "success");
    }
    assert_eq!(w.track_and_report().len(), 1);
    assert_eq!(
        w.result_csv(id),
        "line;number;correlation_id;status;reason;remote_file\n\
         2;5511900000001;a-1;succeeded;;ACME.20261203.01.txt\n\
         3;5511900000002;b-2;rejected;past its send_before (03/12/2026 11:00);\n\
         4;5511900000003;c-3;succeeded;;ACME.20261203.01.txt\n\
         5;5511900000004;d-4;succeeded;;ACME.20261203.02.txt\n"
    );
    let job = w.job(id);
    let how = crate::job_input::AsConverted::of(&w.journal, &job, &w.cfg).unwrap();
    let lines: Vec<u64> = report::sent_rows(&w.cfg, &job, &how, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(lines, [2, 4, 5]);
}

/// A job converted while no send_before was configured is read again without one, whatever the
/// configuration says now: its rows all went out.
#[test]
fn a_job_converted_without_send_before_is_read_again_without_it() {
    let mut w = World::new("");
    let input = "celular;mensagem;vence\n5511900000001;a;01/01/2020\n";
    let id = w.take_group(&[("f.csv", input.to_owned())])[0];
    w.upload().unwrap();
    w.cfg.input.columns.send_before = Some(crate::config::ColumnRef::Name("vence".into()));
    let job = w.job(id);
    let how = crate::job_input::AsConverted::of(&w.journal, &job, &w.cfg).unwrap();
    assert_eq!(how.send_at, None);
    assert_eq!(
        report::sent_rows(&w.cfg, &job, &how, 10).unwrap(),
        [(2, "5511900000001".to_owned(), "a".to_owned())]
    );
}

/// Issue 19 item 6: what came from outside (the ERP's ids, the gateway's status names and
/// carrier) cannot start a spreadsheet formula in the result or delivery CSV; numbers smsdrop
/// normalised stay as they are.
#[test]
fn csv_fields_from_outside_never_start_a_formula() {
    let mut w = World::new(
        "[status]\nmode = \"webhook\"\nwebhook_listen = \"127.0.0.1:9\"\ngive_up_after = \"1h\"\n",
    );
    let input = "celular;mensagem;id\n5511900000001;a;@SUM(1)\n5511900000002;b;-2+3\n";
    let id = w.take_group(&[("f.csv", input.to_owned())])[0];
    w.upload().unwrap();
    let sent_at = Utc::now() + chrono::TimeDelta::seconds(5);
    let iso = sent_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = |cid: &str, name: &str, carrier: &str| crate::journal::StatusUpdate {
        correlation_id: cid.into(),
        sent_code: Some(2),
        sent_status: Some(name.into()),
        sent_at: Some(sent_at.timestamp_millis()),
        carrier: Some(carrier.into()),
        ..Default::default()
    };
    let updates = [
        status(
            "@SUM(1)",
            "SENT_SUCCESS",
            "=HYPERLINK(\"http://evil.example\";\"x\")",
        ),
        status("-2+3", "\t=1+1", "+VIVO"),
    ];
    w.journal
        .apply_statuses(&updates, &|_| true, &[204])
        .unwrap();
    for n in w.names(id) {
        w.gateway(&n, "success");
    }
    assert_eq!(w.track_and_report().len(), 1);
    assert_eq!(
        w.result_csv(id),
        "line;number;correlation_id;status;reason;remote_file\n\
         2;5511900000001;'@SUM(1);succeeded;;ACME.20261203.01.txt\n\
         3;5511900000002;'-2+3;succeeded;;ACME.20261203.01.txt\n"
    );
    assert_eq!(crate::status::settle::settle(&mut w.ctx()).unwrap(), 1);
    let csv = std::fs::read_to_string(report::delivery_path(&w.cfg, &w.job(id))).unwrap();
    assert_eq!(
        csv,
        format!(
            "line;number;correlation_id;sent_status;sent_at;delivered_status;delivered_at;carrier\n\
             2;5511900000001;'@SUM(1);SENT_SUCCESS;{iso};;;\"'=HYPERLINK(\"\"http://evil.example\"\";\"\"x\"\")\"\n\
             3;5511900000002;'-2+3;'\t=1+1;{iso};;;'+VIVO\n"
        )
    );
}

/// An owner killed between renaming a handed-over input into the archive and recording it: the
/// next owner, who finds the emptied queue folder tidied away, still knows the archived file as
/// that input (it once looked for it beside the gone folder and reported it vanished).
#[test]
fn a_claim_a_kill_interrupted_is_found_after_its_folder_is_gone() {
    use std::os::unix::fs::MetadataExt;
    let mut w = World::new("");
    let folder = w.cfg.state.dir.join("queue").join("1-2-0");
    std::fs::create_dir_all(&folder).unwrap();
    let input = folder.join("late.csv");
    std::fs::write(&input, export("late", 0..2)).unwrap();
    let m = std::fs::metadata(&input).unwrap();
    let id = w
        .journal
        .transaction(|t| {
            t.insert_job(&crate::journal::NewJob {
                input_name: "late.csv",
                input_path: &input,
                subaccount: "ACME",
                hash: "",
                size: m.len(),
                dev_ino: Some((m.dev(), m.ino())),
            })
        })
        .unwrap();
    let archived = w.cfg.state.archive_dir.join(format!("{id}-late.csv"));
    std::fs::rename(&input, &archived).unwrap();
    std::fs::remove_dir(&folder).unwrap();
    intake::process_all(&mut w.ctx(), &[id], Origin::Inbox).unwrap();
    let job = w.job(id);
    assert_eq!(job.claimed_path.as_deref(), Some(archived.as_path()));
    assert_ne!(job.state, JobState::Rejected, "{:?}", job.reason);
    assert_eq!(w.names(id).len(), 1);
}

/// Local time in America/Sao_Paulo (UTC-3, the worlds' zone) as UTC.
fn sp(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, d, h, m, 0).unwrap() + chrono::Duration::hours(3)
}

const WEEKDAYS: &str = "[schedule]\nwindows = [\"mon-fri 08:00-20:00\"]\n";

/// Friday 4 December 2026, 23:50: an export is converted and held; Monday 07:59 it still waits;
/// at 08:00 it goes, named with Monday's date.
#[test]
fn an_export_after_hours_is_held_until_monday_and_named_that_day() {
    let mut w = World::new(WEEKDAYS);
    w.set_clock(sp(4, 23, 50));
    let id = w.take("friday.csv", 2);
    assert_eq!(w.upload().unwrap(), 0);
    assert!(w.server("upload").is_empty());
    let job = w.job(id);
    assert_eq!(job.state, JobState::Held);
    assert_eq!(job.held_since, Some(sp(4, 23, 50)));
    let why = job.reason.unwrap();
    assert!(why.contains("opens Mon 08:00 (in 2d 9h)"), "{why}");
    w.set_clock(sp(7, 7, 59));
    assert_eq!(w.upload().unwrap(), 0, "a minute early");
    assert!(w.job(id).reason.unwrap().contains("(in 1m)"));
    w.set_clock(sp(7, 8, 0));
    assert_eq!(w.upload().unwrap(), 1);
    assert_eq!(w.server("upload"), vec!["ACME.20261207.01.txt"]);
    assert_eq!(w.job(id).state, JobState::Uploaded);
    let history: Vec<String> = w
        .journal
        .history(id)
        .unwrap()
        .into_iter()
        .map(|h| h.state)
        .collect();
    assert!(history.contains(&"held".to_owned()), "{history:?}");
}

/// Held in the order they arrived, sent in that order when the window opens.
#[test]
fn held_exports_go_in_the_order_they_arrived() {
    let mut w = World::new(WEEKDAYS);
    w.set_clock(sp(5, 10, 0));
    let a = w.take("a.csv", 1);
    w.set_clock(sp(5, 11, 0));
    let b = w.take("b.csv", 1);
    assert_eq!(w.upload().unwrap(), 0);
    w.set_clock(sp(7, 8, 1));
    assert_eq!(w.upload().unwrap(), 2);
    assert_eq!(w.names(a), vec!["ACME.20261207.01.txt"]);
    assert_eq!(w.names(b), vec!["ACME.20261207.02.txt"]);
}

/// Held past `max_hold`: not sent, the job ends `expired` with the reason and is reported.
#[test]
fn a_batch_held_past_max_hold_expires_unsent_and_is_reported() {
    let mut w = World::new(&format!("{WEEKDAYS}max_hold = \"36h\"\n"));
    w.set_clock(sp(4, 23, 50));
    let id = w.take("friday.csv", 3);
    assert_eq!(w.upload().unwrap(), 0);
    w.set_clock(sp(6, 11, 49));
    assert_eq!(w.upload().unwrap(), 0);
    assert_eq!(w.job(id).state, JobState::Held, "35h59m: still waiting");
    w.set_clock(sp(6, 11, 50));
    assert_eq!(w.upload().unwrap(), 0);
    let job = w.job(id);
    assert_eq!(job.state, JobState::Expired);
    let why = job.reason.unwrap();
    assert!(
        why.contains("not sent: held past max_hold (36h) (window closed since Fri 20:00)"),
        "{why}"
    );
    assert!(w.server("upload").is_empty());
    let reported = w.track_and_report();
    assert_eq!(reported.len(), 1);
    let csv = w.result_csv(id);
    assert_eq!(csv.matches(";expired;").count(), 3, "{csv}");
    // Monday's window sends nothing of it.
    w.set_clock(sp(7, 9, 0));
    assert_eq!(w.upload().unwrap(), 0);
    assert!(w.server("upload").is_empty());
}

/// `smsdrop release` sends a held job at once, and says so in its history.
#[test]
fn a_released_job_goes_outside_its_window() {
    let mut w = World::new(WEEKDAYS);
    w.set_clock(sp(5, 10, 0));
    let id = w.take("saturday.csv", 1);
    let other = w.take("other.csv", 1);
    assert_eq!(w.upload().unwrap(), 0);
    crate::commands::decide::release(&w.cfg, id, true).unwrap();
    assert!(
        crate::commands::decide::release(&w.cfg, id, true).is_err(),
        "released once"
    );
    assert_eq!(w.upload().unwrap(), 1);
    assert_eq!(w.job(id).state, JobState::Uploaded);
    assert_eq!(w.job(other).state, JobState::Held);
    assert!(w
        .notes(id)
        .iter()
        .any(|n| n.contains("released by an operator")));
    assert!(
        crate::commands::decide::release(&w.cfg, id, true).is_err(),
        "an uploaded job is not held"
    );
}

/// `[subaccounts.NAME] windows` replace the global ones for that subaccount only.
#[test]
fn a_subaccount_s_own_window_holds_only_its_files() {
    let mut w = World::new(
        "[schedule]\nwindows = [\"daily 07:00-22:00\"]\n\
         [subaccounts.COBRANCA]\nwindows = [\"mon-fri 09:00-18:00\"]\n",
    );
    w.set_clock(sp(7, 8, 30));
    std::fs::create_dir_all(w.dir.path().join("inbox/COBRANCA")).unwrap();
    let path = w.dir.path().join("inbox/COBRANCA/due.csv");
    std::fs::write(&path, export("due", 0..1)).unwrap();
    let input = Input {
        path,
        subaccount: Ok(Some("COBRANCA".into())),
    };
    let due = intake::take_all(&mut w.ctx(), &[input], Origin::Inbox).unwrap()[0];
    let service = w.take("service.csv", 1);
    assert_eq!(w.upload().unwrap(), 1);
    assert_eq!(w.job(service).state, JobState::Uploaded);
    assert_eq!(w.job(due).state, JobState::Held);
    assert!(w.job(due).reason.unwrap().contains("opens Mon 09:00"));
    w.set_clock(sp(7, 9, 0));
    assert_eq!(w.upload().unwrap(), 1);
    assert_eq!(w.names(due), vec!["COBRANCA.20261207.01.txt"]);
}

/// A job whose upload began inside the window finishes after it closes.
#[test]
fn an_upload_begun_inside_the_window_finishes_after_it_closes() {
    let mut w = World::new(WEEKDAYS);
    w.set_clock(sp(7, 19, 59));
    let id = w.take("big.csv", 6);
    let names = w.names(id);
    assert_eq!(names.len(), 3);
    w.remote.fail_once.push(names[2].clone());
    assert!(w.upload().is_err());
    w.set_clock(sp(7, 20, 5));
    assert_eq!(
        w.upload().unwrap(),
        1,
        "part 3 goes though the window closed"
    );
    assert_eq!(w.job(id).state, JobState::Uploaded);
}

/// Held for its window, a row whose `send_before` comes before the window opens is not sent
/// (the reason says when it would have gone); a row due later goes when the window opens.
#[test]
fn a_row_due_before_the_window_opens_is_not_sent() {
    let mut w = World::new(&format!(
        "{WEEKDAYS}[input.columns]\nsend_before = \"vence\"\n"
    ));
    w.set_clock(sp(4, 23, 50));
    let input = "celular;mensagem;id;vence\n\
                 5511900000001;a;a-1;05/12/2026\n\
                 5511900000002;b;b-2;07/12/2026 09:00\n\
                 5511900000003;c;c-3;07/12/2026 07:30\n";
    let id = w.take_group(&[("f.csv", input.to_owned())])[0];
    assert_eq!(w.upload().unwrap(), 0);
    assert_eq!(w.job(id).state, JobState::Held);
    w.set_clock(sp(7, 8, 0));
    assert_eq!(w.upload().unwrap(), 1);
    assert_eq!(w.rows_on_server(), ["5511900000002;b;b-2;"]);
    let report = w.journal.convert_report(id).unwrap().unwrap();
    assert!(
        report.contains("past its send_before (05/12/2026): it would be sent Mon 07/12/2026 08:00"),
        "{report}"
    );
}

fn reply(
    id: &str,
    at_ms: i64,
    number: &str,
    text: &str,
    correlation: &str,
) -> crate::journal::NewReply {
    crate::journal::NewReply {
        id: id.into(),
        received_at_ms: at_ms,
        number: number.into(),
        text: text.into(),
        subaccount: String::new(),
        correlation_id: correlation.into(),
        carrier: Some("VIVO".into()),
        short_code: Some("28128".into()),
    }
}

/// Replies matched to the rows they answer, written once each to the outbox: a second flush
/// writes nothing, a file named but not written before a crash is written from the journal, one
/// written but not recorded is left as it is; opt-out words with punctuation and accents count.
#[test]
fn replies_go_to_the_outbox_once_each_across_crashes() {
    let mut w = World::new(
        "[status]\nwebhook_listen = \"127.0.0.1:9\"\n\
         [replies]\nmode = \"webhook\"\noutbox = \"outbox\"\nencoding = \"windows-1252\"\n",
    );
    w.set_clock(Utc.with_ymd_and_hms(2026, 12, 7, 18, 30, 5).unwrap());
    let id = w.take("campaign.csv", 3);
    let sent = w.journal.messages(id).unwrap();
    assert_eq!(sent.len(), 3, "rows are recorded to match replies");
    let optout = w.cfg.optout.clone();
    let is_out = |t: &str| optout.is_opt_out(t);
    let norm = |n: &str| crate::replies::normalize_number("55", &[10, 11], n);
    let t0 = Utc
        .with_ymd_and_hms(2026, 12, 7, 18, 0, 0)
        .unwrap()
        .timestamp_millis();
    let first = [
        reply(
            "mo-1",
            t0,
            &sent[0].number,
            " Sáir! ",
            &sent[0].correlation_id,
        ),
        reply(
            "mo-2",
            t0 + 1000,
            &sent[1].number,
            "=SIM 👍",
            &sent[1].correlation_id,
        ),
        reply("mo-3", t0 + 2000, "5511911112222", "quem é?", "unknown-id"),
    ];
    let done = w
        .journal
        .record_replies(&first, "ACME", &is_out, &norm)
        .unwrap();
    assert_eq!((done.new, done.matched), (3, 2));
    assert_eq!(
        done.opted_out,
        vec![("ACME".to_owned(), sent[0].number.clone())]
    );
    // Pushed again, out of order: nothing new.
    let again = [first[2].clone(), first[0].clone()];
    assert_eq!(
        w.journal
            .record_replies(&again, "ACME", &is_out, &norm)
            .unwrap()
            .new,
        0
    );

    let now = w.clock.now();
    let f = crate::replies::outbox::flush(&w.cfg, &mut w.journal, now).unwrap();
    assert_eq!(f.written.len(), 1);
    assert_eq!(f.replaced, 1, "the emoji is not in Windows-1252");
    let path = &f.written[0];
    assert_eq!(
        path.file_name().unwrap(),
        "ACME.replies.20261207T153005.csv"
    );
    let bytes = std::fs::read(path).unwrap();
    let (text, _, bad) = encoding_rs::WINDOWS_1252.decode(&bytes);
    assert!(!bad);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], crate::replies::outbox::HEADER);
    assert_eq!(
        lines[1],
        format!(
            "2026-12-07T15:00:00-03:00;{}; Sáir! ;{};;{id};campaign.csv;2;mo-1;VIVO;28128;yes",
            sent[0].number, sent[0].correlation_id
        ),
        "the ERP's id is the one sent: no second id"
    );
    assert!(lines[2].contains(";'=SIM ?;"), "{}", lines[2]);
    assert!(lines[3].ends_with(";;;;mo-3;VIVO;28128;no"), "{}", lines[3]);
    assert_eq!(lines.len(), 4);
    // Nothing waits: nothing written.
    assert!(crate::replies::outbox::flush(&w.cfg, &mut w.journal, now)
        .unwrap()
        .written
        .is_empty());

    // A crash after the name was recorded, before the file was written: written next time.
    w.journal
        .record_replies(
            &[reply(
                "mo-4",
                t0 + 3000,
                &sent[2].number,
                "2",
                &sent[2].correlation_id,
            )],
            "ACME",
            &is_out,
            &norm,
        )
        .unwrap();
    let named = w
        .journal
        .assign_outbox(&|sub, _| format!("{sub}.replies.crash.csv"))
        .unwrap();
    assert_eq!(named.len(), 1);
    let f = crate::replies::outbox::flush(&w.cfg, &mut w.journal, now).unwrap();
    assert_eq!(f.written.len(), 1);
    let crashed = w.cfg.replies.outbox.join("ACME.replies.crash.csv");
    assert!(std::fs::read_to_string(&crashed)
        .unwrap()
        .contains(";mo-4;"));
    // Written but not recorded as written (a crash after the rename): left as it is.
    w.journal
        .record_replies(
            &[reply(
                "mo-5",
                t0 + 4000,
                &sent[2].number,
                "3",
                &sent[2].correlation_id,
            )],
            "ACME",
            &is_out,
            &norm,
        )
        .unwrap();
    let named = w
        .journal
        .assign_outbox(&|sub, _| format!("{sub}.replies.renamed.csv"))
        .unwrap();
    let renamed = w.cfg.replies.outbox.join(&named[0].name);
    std::fs::write(&renamed, "as the crash left it").unwrap();
    crate::replies::outbox::flush(&w.cfg, &mut w.journal, now).unwrap();
    assert_eq!(
        std::fs::read_to_string(&renamed).unwrap(),
        "as the crash left it"
    );
    assert!(w.journal.outbox_unwritten().unwrap().is_empty());
    // Every reply id in exactly one file.
    let mut ids = vec![];
    for e in std::fs::read_dir(&w.cfg.replies.outbox).unwrap() {
        let t = std::fs::read(e.unwrap().path()).unwrap();
        let t = String::from_utf8_lossy(&t).into_owned();
        ids.extend(
            t.lines()
                .skip(1)
                .filter_map(|l| l.split(';').nth(8).map(str::to_owned)),
        );
    }
    ids.sort();
    assert_eq!(
        ids,
        ["mo-1", "mo-2", "mo-3", "mo-4"],
        "mo-5's file is the crash's stand-in"
    );
}

/// The JSON report of a job, parsed.
fn json_report(w: &World, id: i64) -> serde_json::Value {
    let (json, _) = report::report_paths(&w.cfg, &w.job(id));
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

/// Sends a job's files to success/ and reports it.
fn succeed(w: &mut World, id: i64) {
    w.upload().unwrap();
    for n in w.names(id) {
        w.gateway(&n, "success");
    }
    w.track_and_report();
}

/// Like [`export`], with other texts (so no row is a duplicate of an `export` row).
fn reminders(tag: &str, rows: std::ops::Range<usize>) -> String {
    export(tag, rows).replace("invoice", "reminder: invoice")
}

/// Status tracking on (the webhook, never reached here), for statuses applied by hand.
const TRACKED: &str =
    "[status]\nmode = \"webhook\"\nwebhook_listen = \"127.0.0.1:9\"\ngive_up_after = \"1h\"\n";

/// A first status for `cid`, as the gateway reports it.
fn first_status(cid: &str, code: i64) -> crate::journal::StatusUpdate {
    crate::journal::StatusUpdate {
        correlation_id: cid.into(),
        sent_code: Some(code),
        sent_status: crate::status::code_name(code).map(str::to_owned),
        ..Default::default()
    }
}

/// Issue 21: a number blocked by the gateway's opt-out (first status 204, with `[optout]
/// from_statuses` as configured) and a number that replied "SAIR" are not sent in the next
/// export: their rows are `opted_out` in the result CSV with when and why, and in the JSON
/// report and the totals; the others go out; nothing counts as rejected. Another subaccount's
/// list does not apply.
#[test]
fn an_opted_out_number_in_the_next_export_is_skipped_and_reported() {
    let mut w = World::new(TRACKED);
    let first = w.take_group(&[("first.csv", export("f", 0..2))])[0];
    w.upload().unwrap();
    let codes = w.cfg.optout.from_statuses.clone();
    let no_dlr = |_: &str| false;
    let a = w
        .journal
        .apply_statuses(&[first_status("f-0", 204)], &no_dlr, &codes)
        .unwrap();
    assert_eq!(a.opted_out.len(), 1, "{a:?}");
    for n in w.names(first) {
        w.gateway(&n, "success");
    }
    w.track_and_report();
    w.journal
        .add_optouts(
            "ACME",
            &["5511900000003".into()],
            "reply",
            Some("replied \"SAIR\""),
        )
        .unwrap();
    w.journal
        .add_optouts("OTHER", &["5511900000004".into()], "operator", None)
        .unwrap();

    let next = w.take_group(&[("next.csv", reminders("n", 0..4))])[0];
    let job = w.job(next);
    assert_eq!(job.state, JobState::Converted, "{job:?}");
    assert_eq!((job.rows_read, job.rows_sent, job.rows_rejected), (4, 2, 0));
    succeed(&mut w, next);
    let rows = w.rows_on_server();
    assert_eq!(rows.len(), 4, "2 + 2: {rows:#?}");
    assert!(!rows.iter().any(|r| r.contains("n-0") || r.contains("n-2")));
    let csv = w.result_csv(next);
    // The clock is 2026-12-03 15:00 UTC: 12:00 in São Paulo.
    assert!(
        csv.contains(
            "2;5511900000001;n-0;opted_out;\
             opted out 2026-12-03 12:00 (status 204 DESTINATION_BLOCKED_BY_OPTOUT);\n"
        ),
        "{csv}"
    );
    assert!(
        csv.contains(
            "4;5511900000003;n-2;opted_out;\
             \"opted out 2026-12-03 12:00 (replied \"\"SAIR\"\")\";\n"
        ),
        "{csv}"
    );
    assert!(csv.contains("5;5511900000004;n-3;succeeded;"), "{csv}");
    assert_eq!(csv.matches(";succeeded;").count(), 2, "{csv}");
    let json = json_report(&w, next);
    assert_eq!(json["rows_opted_out"], 2, "{json:#}");
    assert_eq!(json["rows_rejected"], 0);
    assert_eq!(json["conversion"]["opted_out_rows"][1]["line"], 4);
    assert_eq!(
        json["conversion"]["opted_out_rows"][1]["reason"],
        "opted out 2026-12-03 12:00 (replied \"SAIR\")"
    );
    let s = w.journal.stats(0).unwrap();
    assert_eq!((s.rows_opted_out, s.rows_rejected), (2, 0));
}

/// `[optout] apply = false`: a first status 204 still records the number, but the next export
/// sends to it.
#[test]
fn with_apply_off_opt_outs_are_recorded_but_sent() {
    let mut w = World::new(&format!("{TRACKED}[optout]\napply = false\n"));
    let first = w.take_group(&[("first.csv", export("f", 0..2))])[0];
    w.upload().unwrap();
    let codes = w.cfg.optout.from_statuses.clone();
    w.journal
        .apply_statuses(&[first_status("f-1", 204)], &|_: &str| false, &codes)
        .unwrap();
    assert!(w.journal.optout("ACME", "5511900000002").unwrap().is_some());
    for n in w.names(first) {
        w.gateway(&n, "success");
    }
    w.track_and_report();
    let next = w.take_group(&[("next.csv", reminders("n", 0..3))])[0];
    assert_eq!(w.job(next).rows_sent, 3);
    succeed(&mut w, next);
    let csv = w.result_csv(next);
    assert_eq!(csv.matches(";succeeded;").count(), 3, "{csv}");
    assert!(!csv.contains("opted_out"), "{csv}");
    assert_eq!(w.journal.stats(0).unwrap().rows_opted_out, 0);
}

/// An export whose every row is to a number that opted out sends nothing: rejected, saying
/// why, each row `opted_out` in the result CSV, nothing on the server.
#[test]
fn an_export_of_opted_out_numbers_only_is_rejected() {
    let mut w = World::new("");
    let numbers: Vec<String> = (1..=3).map(|i| format!("55119{i:08}")).collect();
    w.journal
        .add_optouts("ACME", &numbers, "operator", None)
        .unwrap();
    let id = w.take_group(&[("stop.csv", export("s", 0..3))])[0];
    let job = w.job(id);
    assert_eq!(job.state, JobState::Rejected);
    let why = job.reason.unwrap();
    assert!(
        why.starts_with(
            "nothing to send: every row (3) is to a number that opted out of ACME, the first \
             opted out 2026-12-03 12:00 (added by an operator)"
        ),
        "{why}"
    );
    assert_eq!(job.rows_rejected, 0);
    w.track_and_report();
    let csv = w.result_csv(id);
    assert_eq!(csv.matches(";opted_out;").count(), 3, "{csv}");
    assert!(w.rows_on_server().is_empty());
    assert_eq!(json_report(&w, id)["rows_opted_out"], 3);
}

/// The opt-out filter and the duplicate guard together: a row both sent before and opted out
/// since is reported as opted out; rows sent before are duplicates; new rows go out once.
#[test]
fn the_duplicate_guard_works_alongside_opt_outs() {
    let mut w = World::new("");
    let first = w.take_group(&[("open.csv", export("a", 0..3))])[0];
    succeed(&mut w, first);
    w.journal
        .add_optouts("ACME", &["5511900000002".into()], "operator", None)
        .unwrap();
    let again = w.take_group(&[("open.csv", export("b", 0..5))])[0];
    let job = w.job(again);
    assert_eq!((job.state, job.rows_sent), (JobState::Converted, 2));
    succeed(&mut w, again);
    let csv = w.result_csv(again);
    assert!(csv.contains("3;5511900000002;b-1;opted_out;"), "{csv}");
    assert!(
        csv.contains("2;5511900000001;b-0;duplicate;already sent in job 1, line 2"),
        "{csv}"
    );
    assert_eq!(csv.matches(";duplicate;").count(), 2, "{csv}");
    assert_eq!(csv.matches(";succeeded;").count(), 2, "{csv}");
    let json = json_report(&w, again);
    assert_eq!(
        (
            json["rows_duplicate"].clone(),
            json["rows_opted_out"].clone()
        ),
        (2.into(), 1.into())
    );
    let rows = w.rows_on_server();
    assert_eq!(rows.len(), 5, "3 + 2, none twice: {rows:#?}");
}

/// A reply's opt-out joins the list the next export is checked against: the answered job's
/// subaccount and number, whatever subaccount the gateway names; an unmatched reply's number
/// as rows write it.
#[test]
fn a_reply_s_opt_out_is_filed_where_the_next_export_looks() {
    let mut w = World::new(
        "[status]\nwebhook_listen = \"127.0.0.1:9\"\n\
         [replies]\nmode = \"webhook\"\noutbox = \"outbox\"\n",
    );
    let id = w.take("first.csv", 2);
    let sent = w.journal.messages(id).unwrap();
    let optout = w.cfg.optout.clone();
    let is_out = |t: &str| optout.is_opt_out(t);
    let norm = |n: &str| crate::replies::normalize_number("55", &[10, 11], n);
    let mut r = reply("mo-a", 1, &sent[0].number, "PARE", &sent[0].correlation_id);
    r.subaccount = "acme".into();
    let unmatched = reply("mo-b", 2, "11977776666", "Stop!", "");
    let done = w
        .journal
        .record_replies(&[r, unmatched], "ACME", &is_out, &norm)
        .unwrap();
    assert_eq!(
        done.opted_out,
        vec![
            ("ACME".to_owned(), sent[0].number.clone()),
            ("ACME".to_owned(), "5511977776666".to_owned())
        ]
    );
    // The next export skips both.
    let next = format!(
        "celular;mensagem;id\n{};again;x-1\n11977776666;again;x-2\n5511900000777;again;x-3\n",
        sent[0].number
    );
    let id2 = w.take_group(&[("next.csv", next)])[0];
    w.upload().unwrap();
    assert_eq!(
        w.rows_on_server()
            .iter()
            .filter(|r| r.contains(";again;"))
            .count(),
        1
    );
    assert_eq!(w.job(id2).rows_rejected, 0);
}
