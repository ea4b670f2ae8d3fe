//! Server, network and local faults against a running daemon: each must end with every row
//! delivered exactly once (or a clear reason), and the daemon still running.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::setup::{sample, stop, wait_for, Login, Setup};

fn status_of(s: &Setup) -> serde_json::Value {
    s.status()["jobs"][0].clone()
}

fn assert_once(s: &Setup, rows: usize) {
    assert_eq!(
        s.gateway.total_messages(),
        rows,
        "{:?}",
        s.gateway.messages()
    );
    assert!(
        s.gateway.messages().values().all(|&n| n == 1),
        "a message went twice"
    );
    assert!(
        s.remote("upload").is_empty(),
        "left in upload/: {:?}",
        s.remote("upload")
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn sshd_stopped_and_restarted_repeatedly_mid_flow() {
    let mut s = Setup::new(Login::Key);
    let daemon = s.daemon();
    let mut rows = 0;
    for round in 0..4 {
        let name = format!("r{round}.csv");
        let text: String = (0..30)
            .map(|i| format!("1198765{round}{i:03};rodada {round} linha {i};R{round}-{i}\n"))
            .collect();
        s.drop_in(&name, text);
        rows += 30;
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        s.sshd.stop();
        std::thread::sleep(Duration::from_millis(1500));
        s.sshd.restart().expect("sshd restarts");
    }
    let st = s.wait_final(4, Duration::from_secs(120));
    assert!(stop(daemon).success(), "{}", s.log());
    for j in st["jobs"].as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{j:#}");
    }
    assert_once(&s, rows);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_server_that_accepts_tcp_but_never_answers_times_out_then_recovers() {
    let mut s = Setup::new(Login::Key);
    s.sshd.freeze();
    let daemon = s.daemon();
    s.drop_sample("lembretes-tab.txt", "a.txt");
    // timeout_secs = 5 in the test config: the first attempt must give up, not hang.
    let start = Instant::now();
    while !s.log().contains("server unavailable") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no timeout logged:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("server unavailable"))
        .unwrap();
    assert!(
        line.to_lowercase().contains("time"),
        "the error says it timed out: {line}"
    );
    s.sshd.thaw();
    let st = s.wait_final(1, Duration::from_secs(120));
    assert!(stop(daemon).success());
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}\n{}", s.log());
    assert_once(&s, 3);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_session_frozen_mid_upload_is_abandoned_and_the_batch_sent_once() {
    let mut s = Setup::new(Login::Key);
    support::setup::big_input(&s.path("big.csv"), 300_000);
    let daemon = s.daemon();
    std::fs::rename(s.path("big.csv"), s.path("inbox/big.csv")).unwrap();
    wait_for("the upload to start", Duration::from_secs(60), || {
        support::setup::has_temp(&s)
    });
    let failed = s.log().matches("upload failed").count();
    s.sshd.freeze();
    // Thawed only once the daemon has given the frozen session up (timeout_secs = 5): a daemon
    // that hung on it would otherwise be rescued by the thaw.
    s.wait_log_more("upload failed", failed);
    s.sshd.thaw();
    let st = s.wait_final(1, Duration::from_secs(180));
    assert!(stop(daemon).success());
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}");
    assert_once(&s, 300_000);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_missing_upload_folder_is_a_clear_error_per_job_then_retried() {
    let s = Setup::new(Login::Key);
    let upload = s.sshd.home().join("upload");
    let gone = s.sshd.home().join("upload.gone");
    std::fs::rename(&upload, &gone).unwrap();
    let daemon = s.daemon();
    s.drop_sample("lembretes-tab.txt", "a.txt");
    let start = Instant::now();
    loop {
        let j = status_of(&s);
        if j["reason"].as_str().is_some_and(|r| {
            r.contains("upload") && (r.contains("retrying") || r.contains("waiting"))
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no per-job error: {j:#}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::rename(&gone, &upload).unwrap();
    let st = s.wait_final(1, Duration::from_secs(120));
    assert!(stop(daemon).success());
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}");
    assert!(
        st["jobs"][0]["reason"].is_null(),
        "the retry note is cleared once uploaded: {st:#}"
    );
    assert_once(&s, 3);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn thousands_of_unrelated_and_odd_names_in_success_do_not_confuse_tracking() {
    let s = Setup::new(Login::Key);
    let success = s.sshd.home().join("success");
    let today = s.today();
    for i in 0..3000 {
        std::fs::write(success.join(format!("OTHER.{today}.{i:04}.txt")), "").unwrap();
    }
    let odd = [
        "with space.txt",
        "ação.txt",
        "ACME.20261126.01.txt.bak",
        &format!(".ACME.{today}.01.txt.part"),
        "quote\"name",
        "semi;colon",
        "-dash",
        &"x".repeat(250),
        "tab\tname",
        "ACME..txt",
        &format!("acme.{today}.01.txt"),
    ];
    for name in odd {
        std::fs::write(success.join(name), "").unwrap();
    }
    let out = s.run(&["send", &sample("lembretes-tab.txt")]);
    assert_eq!(out.status.code(), Some(0), "{}", support::setup::show(&out));
    assert_eq!(status_of(&s)["state"], "succeeded");
    assert!(s
        .remote("success")
        .contains(&format!("ACME.{today}.01.txt")));
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn a_full_archive_disk_is_retried_and_nothing_is_lost() {
    let s = Setup::new(Login::Key);
    let archive = s.path("full-archive");
    support::setup::mount_tmpfs(&archive, "64k");
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    std::fs::write(
        s.path("smsdrop.toml"),
        cfg.replace(
            "dir = \"state\"",
            "dir = \"state\"\narchive_dir = \"full-archive\"",
        ),
    )
    .unwrap();
    // No late-write watch: the archive move is tried at once (and fails: the disk is full).
    s.inbox_setting("late_write_secs = 0");
    support::setup::big_input(&s.path("inbox-big.csv"), 5_000);
    let daemon = s.daemon();
    std::fs::rename(s.path("inbox-big.csv"), s.path("inbox/big.csv")).unwrap();
    wait_for("the disk-full error", Duration::from_secs(30), || {
        s.log().contains("could not move")
    });
    // The input was claimed out of the inbox before it was read: the move to the full archive
    // is retried on the claimed file, never on the inbox path.
    assert!(!s.path("inbox/big.csv").exists());
    assert_eq!(
        std::fs::read_dir(s.path("inbox/.smsdrop-claimed"))
            .unwrap()
            .count(),
        1
    );
    // The ERP drops its next export under the same name meanwhile: a job of its own.
    let mut next = String::from("telefone;mensagem;id\n");
    for i in 0..100 {
        next.push_str(&format!(
            "119{:08};Segunda exportacao {i};N{i}\n",
            50_000 + i
        ));
    }
    s.drop_in("big.csv", next);
    wait_for("the second export's job", Duration::from_secs(30), || {
        s.status()["jobs"].as_array().unwrap().len() == 2
    });
    let remount = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&archive)
        .status()
        .unwrap();
    assert!(remount.success());
    let st = s.wait_final(2, Duration::from_secs(60));
    wait_for("both archived", Duration::from_secs(30), || {
        std::fs::read_dir(&archive).unwrap().count() == 2
    });
    assert!(stop(daemon).success());
    support::setup::umount(&archive);
    for j in st["jobs"].as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{st:#}");
    }
    assert!(!s.path("inbox/big.csv").exists());
    assert_once(&s, 5_100);
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn a_full_state_disk_is_retried_and_the_daemon_keeps_running() {
    let s = Setup::new(Login::Key);
    let state = s.path("state");
    support::setup::mount_tmpfs(&state, "1m");
    support::setup::big_input(&s.path("big.csv"), 40_000); // ~3 MB of batch files: does not fit
    let daemon = s.daemon();
    std::fs::rename(s.path("big.csv"), s.path("inbox/big.csv")).unwrap();
    wait_for("the disk-full error", Duration::from_secs(30), || {
        let log = s.log();
        log.contains("No space left") || log.contains("disk is full") || log.contains("full")
    });
    let remount = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(remount.success());
    let st = s.wait_final(1, Duration::from_secs(90));
    assert!(stop(daemon).success(), "{}", s.log());
    support::setup::umount(&state);
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}\n{}", s.log());
    assert_once(&s, 40_000);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_vanished_inbox_and_a_vanished_input_do_not_stop_the_daemon() {
    let s = Setup::new(Login::Key);
    // An input recorded, then deleted by the ERP before it was converted.
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    s.drop_sample("lembretes-tab.txt", "a.txt");
    let crashed = s
        .command(&["run"])
        .env("SMSDROP_TEST_CRASH_AT", "detected")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    std::fs::remove_file(s.path("inbox/a.txt")).unwrap();
    // The inbox itself disappears for a while.
    let daemon = s.daemon();
    // The first round has run (and found a.txt gone) before the inbox goes away.
    s.wait_log("input disappeared before it was taken");
    std::fs::rename(s.path("inbox"), s.path("inbox.away")).unwrap();
    wait_for("the inbox error", Duration::from_secs(30), || {
        s.log().contains("cannot read the inbox")
    });
    std::fs::rename(s.path("inbox.away"), s.path("inbox")).unwrap();
    s.drop_sample("excel-utf8-bom.csv", "b.csv");
    let st = s.wait_final(2, Duration::from_secs(60));
    assert!(stop(daemon).success());
    let jobs = st["jobs"].as_array().unwrap();
    let gone = jobs
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with("a.txt"))
        .unwrap();
    assert_eq!(gone["state"], "rejected");
    assert!(
        gone["reason"].as_str().unwrap().contains("disappeared"),
        "{gone:#}"
    );
    let b = jobs
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with("b.csv"))
        .unwrap();
    assert_eq!(b["state"], "succeeded", "{b:#}");
}

/// Connections cut again and again while groups of uploads are in flight on the pipelined
/// channel: each cut drops the session with requests unanswered (creates, writes, renames); the
/// files not renamed yet stay `uploading` and are looked for on the server in the next round.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn connections_cut_while_groups_are_in_flight_lose_and_duplicate_nothing() {
    let mut s = Setup::new(Login::Key);
    let daemon = s.daemon();
    let (inputs, per) = (90, 400);
    for f in 0..inputs {
        let text: String = (0..per)
            .map(|i| {
                format!("119{f:03}{i:05};arquivo {f} linha {i}: lembrete de pagamento;C{f}-{i}\n")
            })
            .collect();
        s.drop_in(&format!("c{f:03}.csv"), text);
    }
    let start = Instant::now();
    let mut cuts = 0;
    while start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(120 + 40 * (cuts % 5)));
        s.sshd.drop_connections();
        cuts += 1;
    }
    let st = s.wait_final(inputs as usize, Duration::from_secs(180));
    assert!(stop(daemon).success(), "{}", s.log());
    for j in st["jobs"].as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{j:#}");
    }
    assert_once(&s, (inputs * per) as usize);
    let log = s.log();
    eprintln!(
        "{cuts} cuts; {} uploads met a lost session; {} rows once",
        log.matches("connection lost").count(),
        inputs * per
    );
}
