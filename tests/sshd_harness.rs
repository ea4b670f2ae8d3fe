//! Proves the test harness itself: a real OpenSSH sshd (tests/support/sshd.rs) driven by the
//! OpenSSH `sftp` client, and the gateway simulator (tests/support/gateway.rs).
//!
//! These tests fail (never skip) when sshd cannot start: run `.ci/install-sshd.sh` first.

mod support;

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use support::gateway::{check_content, check_name, Content, Gateway};
use support::sshd::{SftpAuth, Sshd};

const WAIT: Duration = Duration::from_secs(10);
const VALID: &str = "number;text;correlationId;\n5511999990000;oi;id-1;\n5511999990001;olá;id-2;\n\
                     5511999990002;sem id;;\nEOF\n";

fn start() -> Sshd {
    Sshd::start().unwrap_or_else(|e| panic!("the harness needs a real sshd: {e}"))
}

/// Uploads `content` as `upload/.NAME.part` then renames it to `upload/NAME`, like smsdrop does.
fn upload(sshd: &Sshd, name: &str, content: &str) {
    let local = sshd.dir().join(format!("local-{name}"));
    fs::write(&local, content).unwrap();
    let script = format!(
        "put {} upload/.{name}.part\nrename upload/.{name}.part upload/{name}\n",
        local.display()
    );
    sshd.sftp(&script).unwrap();
}

fn banner_within(sshd: &Sshd, timeout: Duration) -> Result<String, String> {
    let mut stream = TcpStream::connect(sshd.addr()).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn sshd_serves_only_sftp_in_the_home_with_gateway_folders() {
    let sshd = start();
    assert!(sshd.host_key_fingerprint().starts_with("SHA256:"));
    let kh = fs::read_to_string(sshd.known_hosts_path()).unwrap();
    assert!(kh.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port())));
    let out = sshd.sftp("pwd\nls -1\n").unwrap();
    assert!(
        out.contains(&sshd.home().display().to_string()),
        "remote cwd is not the home: {out}"
    );
    for dir in ["upload", "success", "error"] {
        assert!(out.contains(dir), "{dir} missing from listing: {out}");
    }
    // An interactive command is refused: ForceCommand turns every session into internal-sftp.
    let ssh = std::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-i")
        .arg(sshd.private_key_path())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            sshd.known_hosts_path().display()
        ))
        .arg("-p")
        .arg(sshd.port().to_string())
        .arg(format!("{}@127.0.0.1", sshd.username()))
        .arg("echo shell-works")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ssh.stdout).contains("shell-works"));
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn valid_batch_uploaded_under_temp_name_then_renamed_goes_to_success() {
    let sshd = start();
    let gateway = Gateway::start(sshd.home());
    upload(&sshd, "ACME.20261125.01.txt", VALID);
    let outcome = gateway.wait_for("ACME.20261125.01.txt", WAIT);
    assert_eq!(
        outcome,
        Some((true, "3 messages".into())),
        "{:?}",
        gateway.processed()
    );
    assert!(sshd.home().join("success/ACME.20261125.01.txt").is_file());
    assert!(!sshd.home().join("upload/ACME.20261125.01.txt").exists());
    assert_eq!(gateway.total_messages(), 3);
    let messages = gateway.messages();
    assert_eq!(
        (messages["id-1"], messages["id-2"], messages[""]),
        (1, 1, 1)
    );
    // The SFTP user can still see (and could remove) the moved file.
    let listing = sshd.sftp("ls -1 success\n").unwrap();
    assert!(listing.contains("ACME.20261125.01.txt"), "{listing}");
    // The temp name was never processed.
    assert_eq!(gateway.processed().len(), 1);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn invalid_batches_go_to_error() {
    let sshd = start();
    let gateway = Gateway::start(sshd.home());
    upload(
        &sshd,
        "ACME.20261125.02.txt",
        "551199999;short number;;\nEOF\n",
    );
    upload(&sshd, "ACME.2026-11-25.03.txt", VALID);
    upload(&sshd, "ACME.20261125.04.txt", "5511999990000;no eof;;\n");
    for name in [
        "ACME.20261125.02.txt",
        "ACME.2026-11-25.03.txt",
        "ACME.20261125.04.txt",
    ] {
        let outcome = gateway.wait_for(name, WAIT);
        assert!(
            matches!(outcome, Some((false, _))),
            "{name}: {outcome:?} / {:?}",
            gateway.processed()
        );
        assert!(sshd.home().join("error").join(name).is_file(), "{name}");
    }
    assert_eq!(gateway.total_messages(), 0);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn wrong_known_hosts_is_refused() {
    let sshd = start();
    let out = sshd.sftp_as(
        SftpAuth::Key(&sshd.private_key_path()),
        &sshd.wrong_known_hosts_path(),
        "ls\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "connected despite a wrong host key");
    assert!(
        stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn unknown_key_is_refused() {
    let sshd = start();
    let stranger = sshd.dir().join("stranger");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(status.success());
    let out = sshd.sftp_as(SftpAuth::Key(&stranger), &sshd.known_hosts_path(), "ls\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn stop_then_restart_on_the_same_port() {
    let mut sshd = start();
    let port = sshd.port();
    sshd.sftp("ls\n").unwrap();
    sshd.stop();
    assert!(!sshd.is_running());
    assert!(
        TcpStream::connect(sshd.addr()).is_err(),
        "still listening after stop()"
    );
    assert!(sshd.sftp("ls\n").is_err());
    sshd.restart().unwrap();
    assert_eq!(sshd.port(), port);
    sshd.sftp("ls\n").unwrap();
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn paused_server_accepts_tcp_but_sends_no_banner() {
    let mut sshd = start();
    sshd.pause();
    let silent = banner_within(&sshd, Duration::from_millis(700));
    assert!(silent.is_err(), "banner while paused: {silent:?}");
    sshd.resume();
    let banner = banner_within(&sshd, Duration::from_secs(5)).unwrap();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    // A paused server still stops cleanly.
    sshd.pause();
    sshd.stop();
    assert!(!sshd.is_running());
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn password_auth_works_when_root() {
    let sshd = start();
    let password = sshd
        .password()
        .expect("password auth is set up when running as root");
    let out = sshd.sftp_as(
        SftpAuth::Password(password),
        &sshd.known_hosts_path(),
        "ls -1\n",
    );
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("upload"));
    let wrong = sshd.sftp_as(
        SftpAuth::Password("not-the-password"),
        &sshd.known_hosts_path(),
        "ls\n",
    );
    assert!(!wrong.status.success());
    assert!(sshd.log().contains("Failed password"), "{}", sshd.log());
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn encrypted_key_needs_its_passphrase_and_is_authorized() {
    let sshd = start();
    let key = sshd.encrypted_key_path();
    let derive = |pass: &str| {
        std::process::Command::new("ssh-keygen")
            .args(["-y", "-P", pass, "-f"])
            .arg(&key)
            .output()
            .unwrap()
    };
    assert!(!derive("").status.success(), "key is not encrypted");
    let public = derive(sshd.key_passphrase());
    assert!(public.status.success());
    let public = String::from_utf8_lossy(&public.stdout);
    let authorized = fs::read_to_string(sshd.dir().join("authorized_keys")).unwrap();
    let key_b64 = public.split_whitespace().nth(1).unwrap();
    assert!(authorized.contains(key_b64));
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn gateway_fail_every_and_duplicate_names() {
    let home = tempfile::tempdir().unwrap();
    for d in ["upload", "success", "error"] {
        fs::create_dir(home.path().join(d)).unwrap();
    }
    let put = |name: &str| fs::write(home.path().join("upload").join(name), VALID).unwrap();
    fs::write(home.path().join("success/X.20261125.03.txt"), "old").unwrap();
    let gateway = Gateway::builder(home.path())
        .poll_interval(Duration::from_millis(20))
        .fail_every(2)
        .start();
    put(".X.20261125.09.txt.part");
    for seq in 1..=3 {
        put(&format!("X.20261125.{seq:02}.txt"));
    }
    let processed = gateway.wait_processed(3, WAIT);
    gateway.wait_polls(3);
    let processed_later = gateway.processed();
    assert_eq!(processed, processed_later, "a refusal was recorded twice");
    let got: Vec<(&str, bool)> = processed
        .iter()
        .map(|(n, ok, _)| (n.as_str(), *ok))
        .collect();
    assert_eq!(
        got,
        [
            ("X.20261125.01.txt", true),
            ("X.20261125.02.txt", false),
            ("X.20261125.03.txt", false)
        ]
    );
    assert!(processed[1].2.contains("forced failure"), "{processed:?}");
    assert!(
        processed[2].2.starts_with("duplicate name"),
        "{processed:?}"
    );
    assert!(home.path().join("upload/X.20261125.03.txt").exists());
    assert!(home.path().join("upload/.X.20261125.09.txt.part").exists());
    assert_eq!(gateway.total_messages(), 3);
    assert_eq!(
        fs::read_to_string(home.path().join("success/X.20261125.03.txt")).unwrap(),
        "old"
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn gateway_delay_holds_files() {
    let home = tempfile::tempdir().unwrap();
    for d in ["upload", "success", "error"] {
        fs::create_dir(home.path().join(d)).unwrap();
    }
    let gateway = Gateway::builder(home.path())
        .poll_interval(Duration::from_millis(20))
        .delay(Duration::from_millis(500))
        .start();
    fs::write(home.path().join("upload/D.20261125.01.txt"), VALID).unwrap();
    gateway.wait_polls(5);
    assert!(gateway.processed().is_empty());
    assert_eq!(
        gateway.wait_for("D.20261125.01.txt", WAIT),
        Some((true, "3 messages".into()))
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn gateway_rules() {
    for ok in ["3486.20170101.01.txt", "PROJECT_1-a.20170101.123.txt"] {
        assert_eq!(check_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "ACME.20261125.1.txt",
        "ACME.2026112.01.txt",
        "AC ME.20261125.01.txt",
        "ACME.20261125.01.csv",
        ".20261125.01.txt",
        "A.B.20261125.01.txt",
    ] {
        assert!(check_name(bad).is_err(), "{bad}");
    }
    let ids = |c: Content| match c {
        Content::Done(Ok(ids)) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(ids(check_content(VALID.as_bytes())), ["id-1", "id-2", ""]);
    assert_eq!(ids(check_content(b"5511999990000;x;;\nEOF")), [""]);
    let long_ok = format!(
        "5511999990000;{};{};\nEOF\n",
        "é".repeat(1280),
        "i".repeat(64)
    );
    assert_eq!(ids(check_content(long_ok.as_bytes())).len(), 1);
    for incomplete in [
        &b""[..],
        b"5511999990000;x;;\n",
        b"5511999990000;x;;\r\nEOF\r\n",
        b"5511999990000;x;;\nEOF\n\n",
    ] {
        assert_eq!(check_content(incomplete), Content::Incomplete);
    }
    for bad in [
        "EOF\n".to_owned(),
        "number;text;correlationId;\nEOF\n".to_owned(),
        "5511999990000;x;;\r\nEOF\n".to_owned(),
        "\u{feff}5511999990000;x;;\nEOF\n".to_owned(),
        "5511999990000;x;\nEOF\n".to_owned(),
        "5511999990000;x;;;\nEOF\n".to_owned(),
        "5511999990000;x;y\nEOF\n".to_owned(),
        "551199999;x;;\nEOF\n".to_owned(),
        "5511999990000000;x;;\nEOF\n".to_owned(),
        "+5511999990000;x;;\nEOF\n".to_owned(),
        "5511999990000;;;\nEOF\n".to_owned(),
        "5511999990000;x;;\n\nEOF\n".to_owned(),
        "5511999990000;x;;\nEOF\nEOF\n".to_owned(),
        format!("5511999990000;{};;\nEOF\n", "a".repeat(1281)),
        format!("5511999990000;x;{};\nEOF\n", "i".repeat(65)),
    ] {
        assert!(
            matches!(check_content(bad.as_bytes()), Content::Done(Err(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        check_content(b"5511999990000;\xff;;\nEOF\n"),
        Content::Done(Err(e)) if e.contains("UTF-8")
    ));
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn start_failure_carries_the_sshd_log() {
    let err = Sshd::start_with_config("NoSuchKeyword yes\n").unwrap_err();
    assert!(err.contains("could not start OpenSSH sshd"), "{err}");
    assert!(err.contains("NoSuchKeyword"), "{err}");
}

/// Opens an sftp session and holds it (stdin kept open) until the returned child is killed.
fn hold_session(sshd: &Sshd) -> std::process::Child {
    let sessions = |log: String| log.matches("Starting session").count();
    let before = sessions(sshd.log());
    let child = sshd
        .sftp_command(
            SftpAuth::Key(&sshd.private_key_path()),
            &sshd.known_hosts_path(),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while sessions(sshd.log()) == before {
        assert!(std::time::Instant::now() < deadline, "{}", sshd.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// After the server cut the session: the next command fails, so sftp exits non-zero.
fn session_was_cut(mut held: std::process::Child) -> Result<(), String> {
    use std::io::Write;
    let mut stdin = held.stdin.take().unwrap();
    // sftp notices the dead connection only when it next talks to the server.
    let _ = stdin.write_all(b"ls\n");
    drop(stdin);
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Some(status) = held.try_wait().unwrap() {
            return if status.success() {
                Err("the session still worked".into())
            } else {
                Ok(())
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = held.kill();
    let _ = held.wait();
    Err("sftp hung".into())
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn drop_connections_and_stop_cut_open_sessions() {
    let mut sshd = start();
    // Control: an untouched session still works, so the checks below mean something.
    let held = hold_session(&sshd);
    assert_eq!(
        session_was_cut(held),
        Err("the session still worked".to_owned())
    );

    let held = hold_session(&sshd);
    sshd.drop_connections();
    session_was_cut(held).expect("drop_connections()");
    sshd.sftp("ls\n")
        .expect("still listening after drop_connections()");

    let held = hold_session(&sshd);
    sshd.stop();
    session_was_cut(held).expect("stop()");
}
