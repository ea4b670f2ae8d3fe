//! The outcome hook (`[report] on_outcome`) can neither stall the engine nor learn a secret: a
//! hook that never ends, under a 2 s systemd watchdog, while 20 exports go out; a hook killed at
//! its timeout with everything it started; the hook's environment; a hook cut short by a crash
//! runs again after the restart. Real sshd and the test gateway.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::setup::{stop, wait_for, Login, Setup};

fn hook(script: &str, extra: &str) -> String {
    format!("[report]\non_outcome = [\"sh\", \"-c\", {script:?}]\n{extra}\n")
}

/// `smsdrop run` as systemd starts it with `WatchdogSec=2s`: notifications go to `sock`.
fn run_watched(s: &Setup, sock: &Path) -> Child {
    let cmd = s.command(&[]);
    let mut sh = Command::new("sh");
    // systemd names the watched process: the daemon's own pid (the shell execs it, keeping $$).
    sh.arg("-c")
        .arg("export WATCHDOG_PID=$$; exec \"$0\" run")
        .arg(cmd.get_program())
        .current_dir(s.path(""))
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("NOTIFY_SOCKET", sock)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(std::fs::File::create(s.path("daemon.log")).unwrap());
    sh.spawn().unwrap()
}

fn export(tag: usize) -> String {
    let mut s = String::from("numero;mensagem;id\n");
    for i in 0..5 {
        s.push_str(&format!("1199{tag:03}{i:04};Aviso {tag} {i};h-{tag}-{i}\n"));
    }
    s
}

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purpose: its parent (init) reaps it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| st.split_whitespace().nth(2) != Some("Z"))
}

#[test]
fn a_hook_that_never_ends_holds_up_neither_uploads_nor_the_watchdog() {
    let s = Setup::with(
        Login::Key,
        &hook(
            "echo $SMSDROP_JOB_ID >> started.log; exec sleep 100000",
            "hook_timeout_secs = 3600",
        ),
    );
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = run_watched(&s, &sock_path);
    // The first export's hook hangs; the 19 others are dropped once it does.
    s.drop_in("e00.csv", export(0));
    let mut pings = vec![];
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut hung_at = None;
    let mut done = false;
    let mut next_status = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                pings.push(start.elapsed());
            }
        }
        if hung_at.is_none() && s.path("started.log").exists() {
            hung_at = Some(Instant::now());
            for n in 1..20 {
                s.drop_in(&format!("e{n:02}.csv"), export(n));
            }
        }
        if Instant::now() >= next_status && hung_at.is_some() {
            next_status = Instant::now() + Duration::from_secs(1);
            let st = s.status();
            let jobs = st["jobs"].as_array().unwrap();
            let reports = std::fs::read_dir(s.path("state/reports")).map_or(0, |d| d.count());
            // Every job uploaded and reported, and the watchdog watched for 10 s of the hang.
            if jobs.len() == 20
                && jobs.iter().all(|j| j["state"] == "succeeded")
                && reports >= 40
                && hung_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10))
            {
                done = true;
                break;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    }
    let started = std::fs::read_to_string(s.path("started.log")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(done, "not every job was uploaded:\n{}", s.log());
    assert_eq!(s.gateway.total_messages(), 100);
    assert!(s.gateway.messages().values().all(|&n| n == 1));
    // The hook did run, and hung: the proof that it could have stalled the engine.
    assert_eq!(started.lines().count(), 1, "hook runs: {started:?}");
    assert!(pings.len() >= 3, "no watchdog pings: {pings:?}");
    let mut last = Duration::ZERO;
    for p in &pings {
        assert!(
            *p - last < Duration::from_secs(2),
            "no WATCHDOG=1 for {:?} (systemd would have killed the daemon): {pings:?}",
            *p - last
        );
        last = *p;
    }
    // Clean up the hung hook (its own process group).
    let _ = Command::new("pkill").args(["-f", "sleep 100000"]).status();
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_what_it_started_and_sees_no_secret() {
    let s = Setup::with(
        Login::Key,
        &hook(
            "env > env-$SMSDROP_JOB_ID.txt; sleep 1000 & echo $! > child-$SMSDROP_JOB_ID.pid; wait",
            "hook_timeout_secs = 2",
        ),
    );
    // Every kind of secret smsdrop may be given, in the daemon's environment.
    let secrets = [
        ("SMSDROP_TEST_STATUS_TOKEN", support::statuses::TOKEN),
        (
            "SMSDROP_TEST_WEBHOOK_TOKEN",
            support::statuses::WEBHOOK_TOKEN,
        ),
    ];
    let mut cmd = s.command(&["run"]);
    cmd.env("SMSDROP_HTTP_TOKEN", "http-token-never-in-a-hook")
        .env("PGPASSWORD", "journal-password-never-in-a-hook")
        .env("SOME_SECRET_NAMED_ANYHOW", "anything-else-never-in-a-hook")
        .stderr(std::fs::File::create(s.path("daemon.log")).unwrap());
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    let mut daemon = cmd.spawn().unwrap();
    s.drop_in("a.csv", export(1));
    s.drop_in("b.csv", export(2));
    // Both hooks ran (the second after the first was killed at its 2 s timeout).
    wait_for("two hook runs", Duration::from_secs(60), || {
        s.path("child-2.pid").exists() && s.path("child-1.pid").exists()
    });
    wait_for("the first hook killed", Duration::from_secs(10), || {
        s.log().contains("on_outcome hook killed")
    });
    let pid: i32 = std::fs::read_to_string(s.path("child-1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the hook's child gone", Duration::from_secs(5), || {
        !alive(pid)
    });
    for n in [1, 2] {
        let env = std::fs::read_to_string(s.path(&format!("env-{n}.txt"))).unwrap();
        for value in secrets
            .iter()
            .map(|s| s.1)
            .chain([
                "http-token-never-in-a-hook",
                "journal-password-never-in-a-hook",
            ])
            .chain(["anything-else-never-in-a-hook"])
        {
            assert!(!env.contains(value), "a secret reached the hook:\n{env}");
        }
        assert!(env.contains(&format!("SMSDROP_JOB_ID={n}")), "{env}");
        assert!(env.contains("SMSDROP_EVENT=file"), "{env}");
        assert!(env.contains("PATH="), "{env}");
    }
    // A stop (SIGTERM) ends the engine; the runner kills the hook it was running.
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let stopped = daemon.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}\n{}", s.log());
    let pid2: i32 = std::fs::read_to_string(s.path("child-2.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the second hook's child gone",
        Duration::from_secs(10),
        || !alive(pid2),
    );
}

#[test]
fn a_hook_cut_short_by_a_crash_runs_again_after_the_restart() {
    let s = Setup::with(
        Login::Key,
        &hook(
            "if [ -f ok ]; then echo $SMSDROP_JOB_ID $SMSDROP_OUTCOME >> done.log; else echo x >> tries.log; exec sleep 30; fi",
            "",
        ),
    );
    let mut daemon = s.daemon();
    s.drop_in("a.csv", export(1));
    wait_for("the hook started", Duration::from_secs(60), || {
        s.path("tries.log").exists()
    });
    daemon.kill9();
    let _ = Command::new("pkill").args(["-f", "sleep 30"]).status();
    std::fs::write(s.path("ok"), "").unwrap();
    let daemon = s.daemon();
    wait_for("the hook ran again", Duration::from_secs(30), || {
        s.path("done.log").exists()
    });
    assert_eq!(
        std::fs::read_to_string(s.path("done.log")).unwrap(),
        "1 succeeded\n"
    );
    assert!(stop(daemon).success());
    assert_eq!(
        s.gateway.total_messages(),
        5,
        "sent again after the restart"
    );
}
