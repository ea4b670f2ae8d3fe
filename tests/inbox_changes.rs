//! The inbox changes under us, against the real OpenSSH sshd and the gateway simulator: files
//! still being written (a real writer holding the file open), appended to, truncated and
//! rewritten, replaced or rewritten at their path during pickup. Every export's rows are counted
//! at the gateway: each exactly once, or reported and never resent.

mod support;

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::time::{Duration, Instant};
use support::setup::{stop, wait_for, Login, Setup};

/// `rows` lines with correlation ids `<tag><i>`, optionally after the header.
fn rows(tag: &str, from: usize, count: usize, header: bool) -> String {
    let mut s = String::new();
    if header {
        s.push_str("celular;mensagem;id\n");
    }
    for i in from..from + count {
        s.push_str(&format!("551198{:07};Cobranca {tag} {i};{tag}{i}\n", i));
    }
    s
}

fn setup(watch: &str, late: &str) -> Setup {
    let s = Setup::new(Login::Key);
    s.edit_config("stable_secs = 0", "stable_secs = 1");
    s.inbox_setting(&format!("watch = {watch:?}\n{late}"));
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    s
}

/// Every id `<tag>0..<tag>count` reached the gateway exactly once; returns how many ids of `tag`.
fn once(s: &Setup, tag: &str, count: usize) {
    let seen = s.gateway.messages();
    for i in 0..count {
        let n = seen.get(&format!("{tag}{i}")).copied().unwrap_or(0);
        assert_eq!(n, 1, "{tag}{i} reached the gateway {n} times\n{}", s.log());
    }
}

fn count(s: &Setup, tag: &str) -> usize {
    s.gateway
        .messages()
        .iter()
        .filter(|(k, _)| k.starts_with(tag) && k[tag.len()..].bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, n)| n)
        .sum()
}

fn jobs(s: &Setup) -> Vec<serde_json::Value> {
    s.status()["jobs"].as_array().unwrap().clone()
}

fn wait_jobs(s: &Setup, n: usize) {
    wait_for("jobs to be taken", Duration::from_secs(30), || {
        jobs(s).len() >= n
    });
}

/// An ERP writing 100 rows, pausing 4 s (a slow query) with the file open, then 100 more:
/// with file events smsdrop never takes it half-written.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_writer_pausing_mid_export_is_not_taken_half_written() {
    let s = setup("notify", "");
    let daemon = s.daemon();
    let mut f = File::create(s.path("inbox/sms.csv")).unwrap();
    f.write_all(rows("P", 0, 100, true).as_bytes()).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        jobs(&s).is_empty(),
        "taken while open for writing:\n{}",
        s.log()
    );
    f.write_all(rows("P", 100, 100, false).as_bytes()).unwrap();
    drop(f);
    let st = s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    assert_eq!(st["jobs"].as_array().unwrap().len(), 1);
    once(&s, "P", 200);
    println!("writer paused 4 s with stable_secs = 1 (notify): 1 job, 200 of 200 rows once");
}

/// `watch = "poll"` (a network share: no file events, no /proc view of the writer): the file is
/// taken during the pause, and the rows written after the pickup go out as a continuation job.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn with_poll_rows_written_after_the_pickup_are_sent_once_as_a_continuation() {
    let s = setup("poll", "late_write_secs = 60");
    let daemon = s.daemon();
    let mut f = File::create(s.path("inbox/sms.csv")).unwrap();
    f.write_all(rows("Q", 0, 100, true).as_bytes()).unwrap();
    wait_jobs(&s, 1);
    wait_for("the first part delivered", Duration::from_secs(30), || {
        count(&s, "Q") == 100
    });
    // The writer's handle followed the claimed file.
    f.write_all(rows("Q", 100, 100, false).as_bytes()).unwrap();
    drop(f);
    wait_for("the continuation", Duration::from_secs(30), || {
        jobs(&s).len() == 2
    });
    let st = s.wait_final(2, Duration::from_secs(30));
    assert!(stop(daemon).success());
    once(&s, "Q", 200);
    let list = st["jobs"].as_array().unwrap();
    let first = list.iter().find(|j| j["continues_job"].is_null()).unwrap();
    let cont = list.iter().find(|j| !j["continues_job"].is_null()).unwrap();
    assert_eq!(cont["continues_job"], first["id"]);
    assert_eq!(cont["rows"], 100);
    let late = first["late"].as_str().unwrap();
    assert!(
        late.contains("about 100 rows") && late.contains("sent as job"),
        "{late}"
    );
    assert!(s
        .log()
        .contains("rows were written to the input after it was taken"));
    println!("poll, writer appending after the pickup: 2 jobs (1 continuation), 200 of 200 rows once; late write logged and reported");
}

/// With `late_writes = "report"`, the late rows are reported (log error, job, status), not sent.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn late_rows_are_only_reported_when_asked() {
    let s = setup("poll", "late_write_secs = 60\nlate_writes = \"report\"");
    let daemon = s.daemon();
    let mut f = File::create(s.path("inbox/sms.csv")).unwrap();
    f.write_all(rows("R", 0, 50, true).as_bytes()).unwrap();
    wait_for("the first part delivered", Duration::from_secs(30), || {
        count(&s, "R") == 50
    });
    f.write_all(rows("R", 50, 20, false).as_bytes()).unwrap();
    drop(f);
    wait_for("the late write reported", Duration::from_secs(30), || {
        jobs(&s)[0]["late"]
            .as_str()
            .is_some_and(|l| l.contains("NOT sent"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(stop(daemon).success());
    assert_eq!(jobs(&s).len(), 1);
    assert_eq!(count(&s, "R"), 50, "the late rows are not sent");
    let reports = std::fs::read_dir(s.path("state/reports")).unwrap();
    let json = reports
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .unwrap();
    let report = std::fs::read_to_string(json.path()).unwrap();
    assert!(
        report.contains("NOT sent"),
        "the report is written again: {report}"
    );
}

/// A writer that truncates and rewrites the file after the pickup: reported, nothing resent.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_file_truncated_and_rewritten_after_the_pickup_is_reported_not_resent() {
    let s = setup("poll", "late_write_secs = 60");
    let daemon = s.daemon();
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(s.path("inbox/sms.csv"))
        .unwrap();
    f.write_all(rows("T", 0, 80, true).as_bytes()).unwrap();
    wait_for(
        "the first export delivered",
        Duration::from_secs(30),
        || count(&s, "T") == 80,
    );
    // Rewritten through the same handle: shorter, then longer than before.
    f.set_len(0).unwrap();
    f.rewind().unwrap();
    f.write_all(rows("W", 0, 150, true).as_bytes()).unwrap();
    drop(f);
    wait_for("the rewrite reported", Duration::from_secs(30), || {
        jobs(&s)[0]["late"]
            .as_str()
            .is_some_and(|l| l.contains("rewritten"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(stop(daemon).success());
    assert_eq!(jobs(&s).len(), 1, "nothing sent again");
    once(&s, "T", 80);
    assert_eq!(count(&s, "W"), 0);
    println!("truncated and rewritten after the pickup: reported on the job, 80 rows once, 0 of the rewrite sent");
}

/// The ERP replaces `sms.csv` (temp name, rename over it) while smsdrop converts the previous
/// one, then rewrites the path in place (`cat new > sms.csv`), then deletes what is there:
/// every export's rows exactly once, each its own job.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn replaced_rewritten_and_deleted_at_the_path_during_pickup() {
    let s = setup("notify", "");
    let daemon = s.daemon();
    // A large first export, so the replacement lands while it is being converted.
    s.drop_in("sms.csv", rows("A", 0, 60_000, true));
    wait_for("the first export claimed", Duration::from_secs(30), || {
        !s.path("inbox/sms.csv").exists()
    });
    let converting = jobs(&s).first().map(|j| j["state"].clone());
    s.drop_in("sms.csv", rows("B", 0, 300, true));
    wait_for("the replacement claimed", Duration::from_secs(30), || {
        !s.path("inbox/sms.csv").exists() && jobs(&s).len() == 2
    });
    // Rewritten in place at the path (no temp name): a new file, a job of its own.
    let mut f = File::create(s.path("inbox/sms.csv")).unwrap();
    f.write_all(rows("C", 0, 200, true).as_bytes()).unwrap();
    drop(f);
    wait_for("the rewrite claimed", Duration::from_secs(30), || {
        jobs(&s).len() == 3
    });
    // The ERP deletes what it finds at the path: nothing of ours is there; no error follows.
    let _ = std::fs::remove_file(s.path("inbox/sms.csv"));
    s.drop_in("sms.csv", rows("D", 0, 10, true));
    let st = s.wait_final(4, Duration::from_secs(120));
    assert!(stop(daemon).success());
    for j in st["jobs"].as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{st:#}");
    }
    once(&s, "A", 60_000);
    once(&s, "B", 300);
    once(&s, "C", 200);
    once(&s, "D", 10);
    assert!(!s.log().contains("could not move"), "{}", s.log());
    let archived = std::fs::read_dir(s.path("state/archive")).unwrap().count();
    assert_eq!(archived, 4, "each export archived under its own job");
    println!(
        "replaced while converting (first job {converting:?}), rewritten in place, deleted, \
         dropped again: 4 jobs, 60,510 rows each once"
    );
}

/// Files the inbox will never take are reported once, with why, in the log and `status`.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn files_never_taken_are_reported_once() {
    let s = setup("notify", "");
    std::fs::create_dir_all(s.path("inbox/ACME/deeper")).unwrap();
    std::fs::write(s.path("inbox/ACME/deeper/f.csv"), rows("X", 0, 1, true)).unwrap();
    std::fs::write(s.path("inbox/relatorio.pdf"), b"%PDF-1.4").unwrap();
    let daemon = s.daemon();
    let start = Instant::now();
    let mut st = s.status();
    while st["not_taken"].as_array().unwrap().len() < 2 && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(200));
        st = s.status();
    }
    std::thread::sleep(Duration::from_secs(3)); // several rescans
    assert!(stop(daemon).success());
    let not_taken = st["not_taken"].as_array().unwrap();
    assert_eq!(not_taken.len(), 2, "{st:#}");
    let text = serde_json::to_string(not_taken).unwrap();
    assert!(
        text.contains("too deep") && text.contains("matches none"),
        "{text}"
    );
    assert_eq!(
        s.log().matches("inbox file not taken").count(),
        2,
        "{}",
        s.log()
    );
    let table = s.run(&["status"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("will not take"));
}

/// Issue 12: a spreadsheet dropped into a polled inbox (a network share) is taken whole. A CSV
/// taken while its late-write watch runs is read up to its last line break; a workbook's bytes
/// are not lines, and cutting one there (before the fix) left calamine a truncated ZIP.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_workbook_in_a_polled_inbox_is_read_whole() {
    let s = setup("poll", "");
    let sample = std::fs::read(support::setup::root().join("samples/contatos.xlsx")).unwrap();
    let last_break = sample.iter().rposition(|&b| b == b'\n').unwrap();
    assert!(
        last_break + 1 < sample.len(),
        "the sample must not end on a line break"
    );
    std::fs::write(s.path("inbox/.contatos.xlsx.tmp"), &sample).unwrap();
    std::fs::rename(
        s.path("inbox/.contatos.xlsx.tmp"),
        s.path("inbox/contatos.xlsx"),
    )
    .unwrap();
    let daemon = s.daemon();
    let st = s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    let job = &st["jobs"][0];
    assert_eq!(job["state"], "succeeded", "{job:#}\n{}", s.log());
    assert_eq!(
        (job["rows"].as_u64(), job["rows_rejected"].as_u64()),
        (Some(3), Some(0))
    );
    for id in ["X-1", "X-2", "X-3"] {
        assert_eq!(s.gateway.messages().get(id).copied(), Some(1), "{id}");
    }
}

/// Issue 19, item 4: the ERP exports "every open invoice" again. It closed its export, then,
/// after the pickup, wrote the same path again with the same 5 rows plus 3 new ones: each row
/// reaches the gateway once (before the fix, 13 rows: 5 twice), and the 5 are reported as
/// already sent in the result CSV and the log.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn an_export_written_again_with_new_rows_sends_each_row_once() {
    let s = setup("notify", "");
    let daemon = s.daemon();
    let mut f = File::create(s.path("inbox/faturas.csv")).unwrap();
    f.write_all(rows("E", 0, 5, true).as_bytes()).unwrap();
    drop(f);
    wait_for("the first export claimed", Duration::from_secs(30), || {
        !s.path("inbox/faturas.csv").exists() && jobs(&s).len() == 1
    });
    // The next hour's export: the same open invoices and three new ones, same path.
    let mut f = File::create(s.path("inbox/faturas.csv")).unwrap();
    f.write_all(rows("E", 0, 8, true).as_bytes()).unwrap();
    drop(f);
    // Both jobs final: the second one's batch went through the gateway, so every row it sent
    // has been counted.
    let st = s.wait_final(2, Duration::from_secs(60));
    assert!(stop(daemon).success());
    once(&s, "E", 8);
    assert_eq!(count(&s, "E"), 8, "{}", s.log());
    let list = st["jobs"].as_array().unwrap();
    assert!(list.iter().all(|j| j["state"] == "succeeded"), "{st:#}");
    assert!(
        s.log().contains("rows already sent are not sent again"),
        "{}",
        s.log()
    );
    let second = list
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .max()
        .unwrap();
    let csv = std::fs::read_dir(s.path("state/reports"))
        .unwrap()
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&format!("{second}-")) && n.ends_with(".result.csv")
        })
        .unwrap();
    let csv = std::fs::read_to_string(csv.path()).unwrap();
    assert_eq!(
        csv.matches(";duplicate;already sent in job ").count(),
        5,
        "{csv}"
    );
    assert_eq!(csv.matches(";succeeded;").count(), 3, "{csv}");
    println!("re-export of 5 rows plus 3 new: 8 of 8 rows once, 5 reported as already sent");
}
