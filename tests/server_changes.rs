//! The server and the journal change behind smsdrop, against the real OpenSSH sshd and the
//! gateway simulator: foreign names, a crash after the rename with a gateway that cleans
//! `success/`, retries by decision, late outcomes after expiry, a lost or damaged journal, a
//! full remote disk. Rows are counted at the gateway.

mod support;

use std::time::Duration;
use support::gateway::Gateway;
use support::setup::{show, stop, wait_for, Login, Setup};

fn rows(tag: &str, count: usize) -> String {
    let mut s = String::from("celular;mensagem;id\n");
    for i in 0..count {
        s.push_str(&format!("551197{:07};Aviso {tag} {i};{tag}{i}\n", i));
    }
    s
}

fn jobs(s: &Setup) -> Vec<serde_json::Value> {
    s.status()["jobs"].as_array().unwrap().clone()
}

fn job(s: &Setup, input_suffix: &str) -> serde_json::Value {
    jobs(s)
        .into_iter()
        .find(|j| j["input"].as_str().unwrap().ends_with(input_suffix))
        .unwrap_or_else(|| panic!("no job for {input_suffix}"))
}

fn once(s: &Setup, tag: &str, count: usize) {
    let seen = s.gateway.messages();
    for i in 0..count {
        let n = seen.get(&format!("{tag}{i}")).copied().unwrap_or(0);
        assert_eq!(n, 1, "{tag}{i} reached the gateway {n} times\n{}", s.log());
    }
}

fn gateway(
    s: &Setup,
    b: impl FnOnce(support::gateway::GatewayBuilder) -> support::gateway::GatewayBuilder,
) -> Gateway {
    b(Gateway::builder(s.sshd.home()).poll_interval(Duration::from_millis(100))).start()
}

/// Case 1: another system's files appear mid-day. A foreign `02` in `success/` after our `01`
/// went out: our next batch takes `03`, its job is not fooled into `succeeded`, and when the
/// gateway fails ours, the job and its result file say `failed`. A foreign file in `error/`
/// under the name of our waiting batch does not fail it. A stray `4294967295` does not make the
/// numbering wrap; the gateway never sees a clobber attempt.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn foreign_files_mid_day_never_stand_for_ours() {
    let mut s = Setup::new(Login::Key);
    s.gateway.stop();
    let today = s.today();
    let home = s.sshd.home();
    std::fs::write(
        home.join(format!("upload/ACME.{today}.4294967295.txt")),
        "stray",
    )
    .unwrap();
    s.gateway = gateway(&s, |b| b.delay(Duration::from_secs(2)));
    let daemon = s.daemon();
    s.drop_in("first.csv", rows("F", 3));
    s.wait_final(1, Duration::from_secs(30));
    assert!(
        s.remote("success")
            .contains(&format!("ACME.{today}.01.txt")),
        "no wrap-around"
    );
    once(&s, "F", 3);
    // Another system's 02 in success/, before our second batch.
    std::fs::write(
        home.join(format!("success/ACME.{today}.02.txt")),
        "foreign\n",
    )
    .unwrap();
    s.gateway.stop();
    s.gateway = gateway(&s, |b| b.fail_every(1).delay(Duration::from_secs(2)));
    s.drop_in("second.csv", rows("S", 5));
    wait_for("the second batch uploaded", Duration::from_secs(30), || {
        s.remote("upload").contains(&format!("ACME.{today}.03.txt"))
    });
    // Meanwhile a foreign file under our waiting name lands in error/.
    std::fs::write(
        home.join(format!("error/ACME.{today}.03.txt")),
        "not ours\n",
    )
    .unwrap();
    // The daemon has looked at error/ since, and said so.
    s.wait_log("another system's file under our name");
    assert_eq!(
        job(&s, "second.csv")["state"],
        "uploaded",
        "not failed by a foreign file"
    );
    std::fs::remove_file(home.join(format!("error/ACME.{today}.03.txt"))).unwrap();
    s.wait_final(2, Duration::from_secs(30));
    assert!(stop(daemon).success());
    let second = job(&s, "second.csv");
    assert_eq!(second["state"], "failed", "{second:#}");
    let csv_path = std::fs::read_dir(s.path("state/reports"))
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with("second.csv.result.csv")
        })
        .unwrap()
        .path();
    let csv = std::fs::read_to_string(csv_path).unwrap();
    assert_eq!(csv.matches(";failed;").count(), 5, "{csv}");
    assert!(!csv.contains(";succeeded;"), "{csv}");
    assert!(
        s.gateway
            .processed()
            .iter()
            .all(|(_, _, why)| !why.starts_with("duplicate name")),
        "{:?}",
        s.gateway.processed()
    );
}

/// Case 2: a crash right after the rename, before the journal heard of it, and a gateway that
/// cleans `success/`: on restart the batch is nowhere; it is `unknown`, not sent again, and
/// `status` lists it until the operator decides.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_crash_after_the_rename_with_a_cleaning_gateway_is_never_resent() {
    let mut s = Setup::new(Login::Key);
    s.gateway.stop();
    s.gateway = gateway(&s, |b| b.clean_success());
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    s.drop_in("a.csv", rows("C", 4));
    let out = s
        .command(&["run"])
        .env(smsdrop::crash::VAR, "renamed")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the crash point must abort: {}",
        show(&out)
    );
    wait_for(
        "the gateway processed and cleaned it",
        Duration::from_secs(20),
        || s.gateway.total_messages() == 4 && s.remote("success").is_empty(),
    );
    let daemon = s.daemon();
    wait_for("the batch marked unknown", Duration::from_secs(30), || {
        s.status()["waiting_for_decision"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    });
    // Rounds that could have sent it again, then gateway polls that would have taken it.
    s.wait_rounds(3);
    s.gateway.wait_polls(2);
    once(&s, "C", 4);
    let j = job(&s, "a.csv");
    assert!(
        j["reason"].as_str().unwrap().contains("smsdrop resolve"),
        "{j:#}"
    );
    let id = j["id"].as_i64().unwrap().to_string();
    let out = s.run(&["resolve", &id, "--sent"]);
    assert!(out.status.success(), "{}", show(&out));
    s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    assert_eq!(job(&s, "a.csv")["state"], "succeeded");
    once(&s, "C", 4);
}

/// Case 3: a job the gateway failed is retried by decision (`retry JOB --yes`), once.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_failed_job_is_retried_by_decision() {
    let mut s = Setup::new(Login::Key);
    s.gateway.stop();
    s.gateway = gateway(&s, |b| b.fail_every(1));
    let daemon = s.daemon();
    s.drop_in("a.csv", rows("R", 6));
    s.wait_final(1, Duration::from_secs(30));
    let j = job(&s, "a.csv");
    assert_eq!(j["state"], "failed");
    let id = j["id"].as_i64().unwrap().to_string();
    assert!(j["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("smsdrop retry {id}")));
    // Not on a terminal, and without --yes: nothing recorded.
    let refused = s.run(&["retry", &id]);
    assert_eq!(refused.status.code(), Some(2), "{}", show(&refused));
    s.gateway.stop();
    s.gateway = gateway(&s, |b| b);
    let out = s.run(&["retry", &id, "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    assert_eq!(job(&s, "a.csv")["state"], "succeeded");
    once(&s, "R", 6);
    // A succeeded job is never retried.
    assert_eq!(s.run(&["retry", &id, "--yes"]).status.code(), Some(2));
}

/// Eight operators (or scripts) run `retry JOB --yes` at once: one records the retry, the seven
/// others are refused and use no sequence number (each used to succeed and burn one).
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn concurrent_retries_of_one_job_record_one() {
    let mut s = Setup::new(Login::Key);
    s.gateway.stop();
    s.gateway = gateway(&s, |b| b.fail_every(1));
    let daemon = s.daemon();
    s.drop_in("a.csv", rows("K", 4));
    s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    let j = job(&s, "a.csv");
    assert_eq!(j["state"], "failed");
    let id = j["id"].as_i64().unwrap().to_string();
    let children: Vec<_> = (0..8)
        .map(|_| {
            s.command(&["retry", &id, "--yes"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        ok,
        1,
        "{}",
        outs.iter().map(show).collect::<Vec<_>>().join("\n")
    );
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(o.status.code(), Some(2), "{}", show(o));
    }
    s.gateway.stop();
    s.gateway = gateway(&s, |b| b);
    let daemon = s.daemon();
    s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    once(&s, "K", 4);
    // The failed file was number 01; its one retry is 02, not 09.
    let today = s.today();
    assert_eq!(
        s.remote("success"),
        vec![format!("ACME.{today}.02.txt")],
        "error/: {:?}",
        s.remote("error")
    );
}

/// Case 4: with the gateway stopped the job expires saying its file is still in `upload/`;
/// when the gateway resumes and delivers it, the job and its result file say `succeeded`.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn an_expired_job_takes_the_late_outcome() {
    let mut s = Setup::with(Login::Key, "");
    s.edit_config("poll_secs = 1", "poll_secs = 1\ngive_up_after = \"2s\"");
    s.gateway.stop();
    let daemon = s.daemon();
    s.drop_in("a.csv", rows("E", 3));
    s.wait_final(1, Duration::from_secs(30));
    let j = job(&s, "a.csv");
    assert_eq!(j["state"], "expired");
    assert!(
        j["reason"].as_str().unwrap().contains("still in upload/"),
        "{j:#}"
    );
    s.gateway = gateway(&s, |b| b);
    wait_for("the late outcome", Duration::from_secs(30), || {
        job(&s, "a.csv")["state"] == "succeeded"
    });
    // The round that took the outcome has written its reports, and later ones sent nothing.
    s.wait_rounds(3);
    s.gateway.wait_polls(2);
    assert!(stop(daemon).success());
    once(&s, "E", 3);
    let csv = std::fs::read_dir(s.path("state/reports"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".result.csv"))
        .unwrap()
        .path();
    let csv = std::fs::read_to_string(csv).unwrap();
    assert_eq!(csv.matches(";succeeded;").count(), 3, "{csv}");
}

/// Case 6: the journal deleted while a job waits to be uploaded: `run` refuses and names
/// `recover`; `status` and `check` say so; `recover --yes` sets the leftovers aside and queues
/// the pending batch again; it is delivered once. A damaged journal fails `check`.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_lost_journal_is_loud_and_recoverable() {
    let mut s = Setup::new(Login::Key);
    s.sshd.stop();
    let daemon = s.daemon();
    s.drop_in("a.csv", rows("L", 5));
    wait_for("the job converted", Duration::from_secs(30), || {
        std::fs::read_dir(s.path("state/spool")).is_ok_and(|d| d.count() == 1)
    });
    assert!(stop(daemon).success());
    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let _ = std::fs::remove_file(s.path("state").join(f));
    }
    s.sshd.restart().unwrap();
    let run = s.run(&["run"]);
    assert_eq!(run.status.code(), Some(1), "{}", show(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("smsdrop recover"),
        "{}",
        show(&run)
    );
    let status = s.run(&["status"]);
    assert!(!status.status.success());
    let said = String::from_utf8_lossy(&status.stderr);
    assert!(said.contains("smsdrop recover"), "{said}");
    // Said once, not repeated down the error chain.
    assert_eq!(said.matches("the journal is missing").count(), 1, "{said}");
    let check = s.run(&["check"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("FAIL  journal"),
        "{}",
        show(&check)
    );
    let list = s.run(&["recover"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("pending:"),
        "{}",
        show(&list)
    );
    let rec = s.run(&["recover", "--yes"]);
    assert!(rec.status.success(), "{}", show(&rec));
    let daemon = s.daemon();
    s.wait_final(1, Duration::from_secs(30));
    assert!(stop(daemon).success());
    once(&s, "L", 5);
    let aside: Vec<_> = std::fs::read_dir(s.path("state"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("recovered-"))
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "the earlier files are set aside, not deleted"
    );
    // A damaged journal.
    std::fs::write(
        s.path("state/journal.db"),
        b"not a database at all, not at all",
    )
    .unwrap();
    let check = s.run(&["check"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("FAIL  journal"),
        "{}",
        show(&check)
    );
}

/// Case 8: a full remote disk names the likely cause; a job waiting behind says why.
#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (mounts); CI runs as root"
)]
fn a_full_remote_disk_is_named_as_such() {
    let s = Setup::new(Login::Key);
    let upload = s.sshd.home().join("upload");
    support::setup::mount_tmpfs(&upload, "16k");
    let daemon = s.daemon();
    let mut big = String::from("celular;mensagem;id\n");
    for i in 0..2000 {
        big.push_str(&format!(
            "5511960{i:06};Mensagem longa para encher o disco {i};D{i}\n"
        ));
    }
    s.drop_in("big.csv", big);
    wait_for("the refusal reported", Duration::from_secs(30), || {
        jobs(&s).iter().any(|j| {
            j["reason"]
                .as_str()
                .is_some_and(|r| r.contains("disk may be full or the account over its quota"))
        })
    });
    assert!(stop(daemon).success());
    support::setup::umount(&upload);
}

/// Case 7: a value out of range is refused when the config is read, never a panic later.
#[test]
fn an_out_of_range_value_is_refused_up_front() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("smsdrop.toml");
    std::fs::write(&cfg, "[inbox]\nduplicate_days = 4294967295\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smsdrop"))
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("out of range"),
        "{}",
        show(&out)
    );
}
