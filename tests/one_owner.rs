//! One owner per state folder, against the real OpenSSH sshd and the gateway simulator: two
//! `run`s and `send`s on one config, every row counted once at the gateway.

mod support;

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};
use support::setup::{show, stop, wait_for, Login, Setup};

const ROWS: usize = 40;

/// `count` inputs of [`ROWS`] rows, correlation ids `<prefix><file>-<row>`, in `dir`.
fn inputs(dir: &std::path::Path, prefix: &str, count: usize) -> Vec<std::path::PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|f| {
            let mut s = String::from("celular;mensagem;id\n");
            for r in 0..ROWS {
                s.push_str(&format!(
                    "551199{:03}{:04};Fatura {prefix}{f} linha {r};{prefix}{f}-{r}\n",
                    f, r
                ));
            }
            let p = dir.join(format!("{prefix}{f}.csv"));
            std::fs::write(&p, s).unwrap();
            p
        })
        .collect()
}

fn spawn_send(s: &Setup, files: &[std::path::PathBuf]) -> Child {
    let mut args: Vec<String> = vec!["send".into()];
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_output(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", show(&out));
    out
}

/// Waits until the `n`-th daemon started in this setup says it runs (its signal handlers are
/// installed by then).
fn wait_running(s: &Setup, n: usize) {
    let start = Instant::now();
    while s.log().matches("smsdrop running").count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon did not start:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every correlation id of `prefixes` x `files` x rows reached the gateway exactly once.
fn assert_each_row_once(s: &Setup, expected: usize) {
    let seen = s.gateway.messages();
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "rows sent twice: {twice:?}");
    assert_eq!(s.gateway.total_messages(), expected, "rows lost");
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn two_runs_and_two_sends_on_one_config_send_every_row_once() {
    let s = Setup::new(Login::Key);
    let daemon = s.daemon();
    wait_running(&s, 1);

    // A second daemon on the same config exits 1 at once, naming the lock and the owner.
    let started = Instant::now();
    let second = s.run(&["run"]);
    assert_eq!(second.status.code(), Some(1), "{}", show(&second));
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("state/lock") && err.contains("is locked"),
        "{err}"
    );
    let pid = std::fs::read_to_string(s.path("state/lock")).unwrap();
    assert!(err.contains(&format!("pid {}", pid.trim())), "{err}");

    // 70 inputs of 40 rows (2,800 rows): 30 dropped into the inbox while two `send`s hand over
    // 20 each to the running daemon.
    let a = inputs(&s.path("erp-a"), "a", 20);
    let b = inputs(&s.path("erp-b"), "b", 20);
    let send_a = spawn_send(&s, &a);
    let send_b = spawn_send(&s, &b);
    for p in inputs(&s.path("staging"), "i", 30) {
        s.drop_in(
            p.file_name().unwrap().to_str().unwrap(),
            std::fs::read(&p).unwrap(),
        );
    }
    // `status` reads beside the running daemon.
    assert!(s.run(&["status"]).status.success());
    let out_a = wait_output(send_a, "send a");
    wait_output(send_b, "send b");
    let text = String::from_utf8_lossy(&out_a.stdout);
    assert_eq!(
        text.matches(": succeeded (40 rows sent, 0 rejected)")
            .count(),
        20,
        "{text}"
    );
    assert!(
        text.contains("erp-a/a0.csv"),
        "send names the user's files: {text}"
    );
    s.wait_final(70, Duration::from_secs(120));
    assert!(stop(daemon).success(), "{}", s.log());
    assert_each_row_once(&s, 70 * ROWS);
    println!(
        "one owner: 2 runs (the second exited 1), 2 sends handed over 40 inputs, 30 dropped in \
         the inbox: {} rows sent once, 0 lost, 0 duplicated",
        s.gateway.total_messages()
    );
    // The user's files stay where they were; the queue is empty again.
    assert!(a.iter().chain(&b).all(|f| f.exists()));
    let queue: Vec<_> = std::fs::read_dir(s.path("state/queue"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    assert!(queue.is_empty(), "every queued file was taken: {queue:?}");
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn send_racing_a_daemon_start_and_a_daemon_killed_mid_handoff_lose_and_duplicate_nothing() {
    let s = Setup::new(Login::Key);
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    // A `send` and a `run` started together: whichever takes the lock, the other either hands
    // over (send) or exits 1 (run); the send finishes either way.
    let c = inputs(&s.path("erp-c"), "c", 10);
    let send_c = spawn_send(&s, &c);
    let mut racer = s.daemon();
    wait_output(send_c, "send c");
    racer.kill9();
    let started = s.log().matches("smsdrop running").count();

    // A daemon killed while a `send` waits on it: the send takes the lock and finishes.
    let mut daemon = s.daemon();
    wait_running(&s, started + 1);
    let d = inputs(&s.path("erp-d"), "d", 10);
    let send_d = spawn_send(&s, &d);
    // Killed once it has taken one of the handed-over files: the send is waiting on it then.
    wait_for(
        "the daemon to take a handed-over file",
        Duration::from_secs(30),
        || {
            s.log().lines().any(|l| {
                l.contains("input taken") && (0..10).any(|f| l.contains(&format!("/d{f}.csv")))
            })
        },
    );
    daemon.kill9();
    let out = wait_output(send_d, "send d");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": succeeded").count(), 10, "{text}");

    // Whatever the kill left unreported is finished by the next owner.
    let daemon = s.daemon();
    wait_running(&s, started + 2);
    s.wait_final(20, Duration::from_secs(60));
    assert!(stop(daemon).success(), "{}", s.log());
    assert_each_row_once(&s, 20 * ROWS);
    println!(
        "send racing a daemon start, daemon killed mid-handoff: {} rows sent once, 0 lost, 0 \
         duplicated",
        s.gateway.total_messages()
    );
}
