//! Exactly once across crashes, with the crash made deterministic: the daemon aborts right after
//! each step of the state machine (`SMSDROP_TEST_CRASH_AT`), is restarted, and must deliver every
//! row exactly once, leave no temporary file, and archive every input.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::setup::{show, stop, Login, Setup};

/// Three inputs of 5 rows each, cut into 2-row batch files: 9 remote files, 15 messages.
fn inputs(s: &Setup) -> usize {
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    let mut rows = 0;
    for f in 0..3 {
        let mut text = String::from("telefone;mensagem;id\n");
        for r in 0..5 {
            text.push_str(&format!(
                "1198765{f}{r:03};Mensagem {r} do arquivo {f};C{f}-{r}\n"
            ));
            rows += 1;
        }
        std::fs::write(s.path(&format!("inbox/in{f}.csv")), text).unwrap();
    }
    rows
}

/// Fails (never skips) when the binary was built without its crash points.
#[cfg(not(feature = "crash-points"))]
fn require_crash_points(point: &str) {
    panic!(
        "{point}: the crash points are compiled in only with `--features crash-points`: run the \
         README's test command (`cargo test --locked --features crash-points`)"
    );
}

#[cfg(feature = "crash-points")]
fn require_crash_points(_: &str) {}

fn crash_then_recover(point: &str) {
    require_crash_points(point);
    let s = Setup::with(Login::Key, "");
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    std::fs::write(
        s.path("smsdrop.toml"),
        cfg.replace(
            "subaccount = \"ACME\"",
            "subaccount = \"ACME\"\nmax_rows_per_file = 2",
        ),
    )
    .unwrap();
    let rows = inputs(&s);
    let log = std::fs::File::create(s.path("crash.log")).unwrap();
    let mut crashed = s
        .command(&["run"])
        .env("SMSDROP_TEST_CRASH_AT", point)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = crashed.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{point}: the crash point was never reached"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let crash_log = std::fs::read_to_string(s.path("crash.log")).unwrap();
    assert!(
        !status.success()
            && crash_log.contains(&format!(
                "crash point \"{}\"",
                point.split(':').next().unwrap()
            )),
        "{point}: {status:?}\n{crash_log}"
    );

    let daemon = s.daemon();
    let st = s.wait_final(3, Duration::from_secs(60));
    support::setup::wait_for("every report", Duration::from_secs(30), || {
        std::fs::read_dir(s.path("state/reports")).map_or(0, |d| d.count()) >= 6
    });
    assert!(stop(daemon).success());
    for j in st["jobs"].as_array().unwrap() {
        assert_eq!(j["state"], "succeeded", "{point}: {j:#}\n{}", s.log());
    }
    let messages = s.gateway.messages();
    assert_eq!(s.gateway.total_messages(), rows, "{point}: {messages:?}");
    assert!(
        messages.values().all(|&n| n == 1),
        "{point}: a message went twice: {messages:?}"
    );
    let processed = s.gateway.processed();
    let mut names: Vec<&str> = processed.iter().map(|p| p.0.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        processed.len(),
        "{point}: a remote name was written twice: {processed:?}"
    );
    assert_eq!(s.remote("success").len(), 9, "{point}");
    assert!(
        s.remote("upload").is_empty(),
        "{point}: left in upload/: {:?}",
        s.remote("upload")
    );
    assert_eq!(
        std::fs::read_dir(s.path("state/archive")).unwrap().count(),
        3,
        "{point}"
    );
    assert_eq!(
        std::fs::read_dir(s.path("inbox")).unwrap().count(),
        0,
        "{point}"
    );
    let reports = std::fs::read_dir(s.path("state/reports")).unwrap().count();
    assert_eq!(reports, 6, "{point}: a JSON and a CSV report per job");
    let status = s.run(&["status"]);
    assert!(status.status.success(), "{}", show(&status));
}

macro_rules! crash_tests {
    ($($name:ident => $point:expr,)*) => {$(
        #[test]
        #[cfg_attr(not(has_sshd), ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)")]
        fn $name() {
            crash_then_recover($point);
        }
    )*};
}

crash_tests! {
    crash_after_detected => "detected",
    crash_after_claim_before_journal => "claimed",
    crash_after_converted => "converted",
    crash_during_archive_move => "archive",
    crash_after_marking_uploading => "uploading",
    crash_after_temp_upload => "temp-uploaded",
    crash_after_rename_before_journal => "renamed",
    crash_after_recording_upload => "uploaded",
    crash_after_outcome_seen => "outcome",
    crash_after_report_written => "reported",
    crash_on_the_fifth_rename => "renamed:5",
}
