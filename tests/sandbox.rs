//! The embedded sandbox (`smsdrop sandbox`) driven by real clients: smsdrop's own ssh2 client,
//! raw ssh2 SFTP calls for path escapes, and OpenSSH's `sftp`. Each test starts its own sandbox on
//! `127.0.0.1:0` in a temporary root.
#![cfg(feature = "sandbox")]

mod util;

use smsdrop::config::{Auth, SftpConfig};
use smsdrop::remote::sftp::SftpRemote;
use smsdrop::remote::{Remote, RemoteError};
use smsdrop::sandbox::{self, Sandbox, SandboxError, SandboxOptions};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};
use util::Dir;

const PASSWORD: &str = "sandbox-test-pw";
const PASSWORD_VAR: &str = "SMSDROP_TEST_SANDBOX_PASSWORD";
const GOOD: &str = "number;text;correlationId;\n5511900000000;oi;a1;\n5511900000001;tchau;;\nEOF\n";

fn options(root: &Path) -> SandboxOptions {
    SandboxOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        root: root.to_owned(),
        password: Some(PASSWORD.into()),
        // Tests of the server keep the gateway away from their files.
        delay: Duration::from_secs(3600),
        poll: Duration::from_millis(50),
        ..SandboxOptions::default()
    }
}

fn start(opts: SandboxOptions) -> Sandbox {
    sandbox::start(opts).unwrap_or_else(|e| panic!("cannot start the sandbox: {e}"))
}

fn config(sb: &Sandbox, auth: Auth) -> SftpConfig {
    SftpConfig {
        host: sb.local_addr().ip().to_string(),
        port: sb.local_addr().port(),
        username: "demo".into(),
        auth,
        known_hosts: sb.known_hosts_path(),
        upload_dir: "upload".into(),
        success_dir: "success".into(),
        error_dir: "error".into(),
        temp_dir: None,
        timeout: Duration::from_secs(10),
        keepalive: Duration::from_secs(30),
        strict_permissions: false,
        connections: 1,
        pipelining: true,
    }
}

fn password_auth() -> Auth {
    static SET: Once = Once::new();
    SET.call_once(|| std::env::set_var(PASSWORD_VAR, PASSWORD));
    Auth::PasswordEnv(PASSWORD_VAR.into())
}

/// An ed25519 key pair made by OpenSSH's ssh-keygen: (private key, public key file).
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(&key)
        .output()
        .unwrap_or_else(|e| {
            panic!("ssh-keygen not runnable ({e}): apt-get install openssh-client")
        });
    assert!(out.status.success(), "ssh-keygen: {}", util::show(&out));
    (key.clone(), key.with_extension("pub"))
}

/// A raw ssh2 SFTP channel logged in with the password.
fn raw_sftp(sb: &Sandbox) -> (ssh2::Session, ssh2::Sftp) {
    let tcp = TcpStream::connect(sb.local_addr()).expect("connect");
    let mut session = ssh2::Session::new().expect("session");
    session.set_timeout(10_000);
    session.set_tcp_stream(tcp);
    session.handshake().expect("handshake");
    session
        .userauth_password("demo", PASSWORD)
        .expect("password login");
    let sftp = session.sftp().expect("sftp subsystem");
    (session, sftp)
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn smsdrop_client_uploads_lists_and_never_overwrites() {
    let dir = Dir::new();
    let sb = start(options(&dir.path().join("root")));
    let first = dir.write("first.txt", GOOD);
    let second = dir.write("second.txt", "other bytes\n");
    let dest = "upload/ACME.20260101.01.txt";
    let mut remote = SftpRemote::new(config(&sb, password_auth()));

    let sent = remote
        .upload(&first, "upload/.ACME.20260101.01.txt.part", dest)
        .expect("first upload");
    assert_eq!(sent, GOOD.len() as u64);
    assert_eq!(
        remote.list("upload").unwrap(),
        vec!["ACME.20260101.01.txt".to_owned()]
    );
    assert_eq!(remote.size(dest).unwrap(), Some(GOOD.len() as u64));
    assert_eq!(remote.size("upload/missing.txt").unwrap(), None);
    assert_eq!(remote.list("").unwrap(), ["error", "success", "upload"]);

    let again = remote.upload(&second, "upload/.second.part", dest);
    assert!(
        matches!(&again, Err(RemoteError::Exists { path }) if path == dest),
        "{again:?}"
    );
    let local = sb.root().join(dest);
    assert_eq!(
        fs::read_to_string(&local).unwrap(),
        GOOD,
        "first file changed"
    );
    assert_eq!(
        remote.list("upload").unwrap(),
        ["ACME.20260101.01.txt"],
        "temp left"
    );
    remote.remove(dest).expect("remove");
    remote
        .remove(dest)
        .expect("removing a missing file is fine");
    assert!(!local.exists());

    // Key login with a key made by ssh-keygen.
    let (key, public) = keygen(dir.path());
    drop(sb);
    let sb = start(SandboxOptions {
        password: None,
        authorized_keys: Some(public),
        ..options(&dir.path().join("root"))
    });
    let auth = Auth::Key {
        path: key,
        passphrase_env: None,
    };
    let mut remote = SftpRemote::new(config(&sb, auth));
    remote
        .upload(&first, "upload/.k.part", "upload/KEY.20260101.01.txt")
        .expect("upload with key login");
    assert_eq!(remote.list("upload").unwrap(), ["KEY.20260101.01.txt"]);
}

#[test]
fn wrong_credentials_and_unknown_host_keys_are_refused() {
    let dir = Dir::new();
    let sb = start(options(&dir.path().join("root")));
    let pw = dir.write("pw", "not-the-password\n");
    let mut remote = SftpRemote::new(config(&sb, Auth::PasswordFile(pw)));
    let got = remote.connect();
    assert!(matches!(got, Err(RemoteError::Auth { .. })), "{got:?}");

    let (key, _) = keygen(dir.path());
    let stranger = Auth::Key {
        path: key,
        passphrase_env: None,
    };
    let got = SftpRemote::new(config(&sb, stranger)).connect();
    assert!(matches!(got, Err(RemoteError::Auth { .. })), "{got:?}");

    let mut cfg = config(&sb, password_auth());
    cfg.known_hosts = dir.write("empty_known_hosts", "");
    let got = SftpRemote::new(cfg.clone()).connect();
    assert!(matches!(got, Err(RemoteError::HostKey { .. })), "{got:?}");

    // Another sandbox's key recorded for this address: a changed key, refused too.
    let other = start(options(&dir.path().join("other")));
    let line = other.known_hosts_line().replace(
        &format!("]:{} ", other.local_addr().port()),
        &format!("]:{} ", sb.local_addr().port()),
    );
    cfg.known_hosts = dir.write("changed_known_hosts", format!("{line}\n"));
    let got = SftpRemote::new(cfg).connect();
    assert!(
        matches!(&got, Err(RemoteError::HostKey { message }) if message.contains("CHANGED")),
        "{got:?}"
    );
    SftpRemote::new(config(&sb, password_auth()))
        .connect()
        .expect("the right password and host key still work");
}

#[test]
fn paths_cannot_escape_the_root() {
    let dir = Dir::new();
    let root = dir.path().join("root");
    let sb = start(options(&root));
    fs::write(root.join("upload/inside.txt"), "inside").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("upload/etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    std::os::unix::fs::symlink(root.join("upload/inside.txt"), root.join("inner")).unwrap();
    let (_session, sftp) = raw_sftp(&sb);
    let p = Path::new;

    for path in [
        "../etc/passwd",
        "/../etc/passwd",
        "upload/../../x",
        "passwd",
        "inner",
    ] {
        assert!(sftp.open(p(path)).is_err(), "opened {path}");
        assert!(sftp.stat(p(path)).is_err(), "stat {path}");
    }
    // An absolute path is relative to the root: no /etc/passwd there.
    let err = sftp
        .open(p("/etc/passwd"))
        .err()
        .expect("opened /etc/passwd");
    assert_eq!(err.code(), ssh2::ErrorCode::SFTP(2), "{err}");
    for path in ["..", "upload/etc", "/upload/etc/", "/.sandbox"] {
        assert!(sftp.opendir(p(path)).is_err(), "listed {path}");
    }
    assert!(sftp.open(p(".sandbox/host_key")).is_err());
    assert_eq!(
        sftp.realpath(p("/upload/../upload/./x")).unwrap(),
        p("/upload/x")
    );
    assert!(sftp.realpath(p("..")).is_err());

    let mut names: Vec<_> = sftp
        .readdir(p("/"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["/error", "/inner", "/passwd", "/success", "/upload"].map(PathBuf::from),
        "the root listing shows the sandbox, not the system, and hides .sandbox"
    );

    let escape = dir.path().join("x");
    for target in ["../x", "/../x", "upload/../../x"] {
        let err = sftp.rename(p("upload/inside.txt"), p(target), None);
        assert!(err.is_err(), "renamed to {target}");
    }
    assert!(!escape.exists());
    assert!(sftp.create(p("../x")).is_err());
    assert!(sftp.mkdir(p("../x"), 0o755).is_err());
    assert!(!escape.exists());
    assert!(root.join("upload/inside.txt").exists());
    // The links themselves may go; what they point at stays.
    sftp.unlink(p("passwd")).expect("remove the link");
    assert!(Path::new("/etc/passwd").exists());
}

#[test]
fn openssh_sftp_can_put_list_rename_and_remove() {
    let dir = Dir::new();
    let (key, public) = keygen(dir.path());
    let sb = start(SandboxOptions {
        password: None,
        authorized_keys: Some(public),
        ..options(&dir.path().join("root"))
    });
    let local = dir.write("batch.txt", GOOD);
    let script = format!(
        "cd upload\nput {local} .ACME.part\nrename .ACME.part ACME.20260101.01.txt\nput {local} \
         other.txt\n-rename other.txt ACME.20260101.01.txt\nls -1\nrm other.txt\nls -1 /upload\n",
        local = local.display()
    );
    let port = sb.local_addr().port().to_string();
    let known_hosts = format!("UserKnownHostsFile={}", sb.known_hosts_path().display());
    let child = Command::new("sftp")
        .args([
            "-b",
            "-",
            "-F",
            "/dev/null",
            "-P",
            &port,
            "-o",
            &known_hosts,
        ])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-i"])
        .arg(&key)
        .arg("demo@127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!("cannot run OpenSSH's sftp ({e}): install it with apt-get install openssh-client")
    });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = util::show(&out);
    assert!(out.status.success(), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ACME.20260101.01.txt\nother.txt"),
        "{shown}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Failure"),
        "rename onto an existing file: {shown}"
    );
    let upload = sb.root().join("upload");
    assert_eq!(
        fs::read_to_string(upload.join("ACME.20260101.01.txt")).unwrap(),
        GOOD
    );
    assert!(!upload.join("other.txt").exists(), "rm: {shown}");
    assert!(!upload.join(".ACME.part").exists(), "rename: {shown}");
}

#[test]
fn gateway_moves_files_by_the_spec_rules_and_logs_why() {
    let dir = Dir::new();
    let root = dir.path().join("root");
    let sb = start(SandboxOptions {
        delay: Duration::ZERO,
        ..options(&root)
    });
    fs::write(root.join("success/DUP.20260101.01.txt"), "theirs").unwrap();
    let files = [
        ("ACME.20260101.01.txt", GOOD, "success"),
        ("not-a-batch.txt", GOOD, "error"),
        ("ACME.20260101.02.txt", "5511900000000;oi;;\n", "error"),
        (
            "ACME.20260101.03.txt",
            "5511900000000;oi;;\n123;x;;\nEOF\n",
            "error",
        ),
    ];
    fs::write(root.join("upload/.hidden.part"), "x").unwrap();
    fs::write(root.join("upload/DUP.20260101.01.txt"), GOOD).unwrap();
    for (name, text, _) in files {
        fs::write(root.join("upload").join(name), text).unwrap();
    }
    wait_until("the gateway's decisions", Duration::from_secs(20), || {
        files.iter().all(|(n, _, d)| root.join(d).join(n).exists())
    });
    for (name, _, dir) in files {
        assert!(
            !root.join("upload").join(name).exists(),
            "{name} left in upload"
        );
        let other = if dir == "success" { "error" } else { "success" };
        assert!(!root.join(other).join(name).exists(), "{name} in {other}");
    }
    assert!(root.join("upload/.hidden.part").exists());
    assert!(root.join("upload/DUP.20260101.01.txt").exists());
    assert_eq!(
        fs::read_to_string(root.join("success/DUP.20260101.01.txt")).unwrap(),
        "theirs"
    );
    let log = fs::read_to_string(sb.gateway_log()).unwrap();
    let line = |name: &str| {
        log.lines()
            .find(|l| l.split('\t').nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no log line for {name}:\n{log}"))
            .to_owned()
    };
    assert!(
        line("ACME.20260101.01.txt").ends_with("\tsuccess\t2 messages"),
        "{log}"
    );
    assert!(
        line("not-a-batch.txt").contains("\terror\tbad name"),
        "{log}"
    );
    assert!(
        line("ACME.20260101.02.txt").contains("\terror\tincomplete"),
        "{log}"
    );
    assert!(
        line("ACME.20260101.03.txt").contains("\terror\tline 2: number"),
        "{log}"
    );
    assert!(
        line("DUP.20260101.01.txt").contains("already exists"),
        "{log}"
    );
    assert_eq!(line("ACME.20260101.01.txt").split('\t').count(), 4, "{log}");

    // Once the clash is gone, the stuck file goes through.
    fs::remove_file(root.join("success/DUP.20260101.01.txt")).unwrap();
    wait_until("the stuck file", Duration::from_secs(20), || {
        root.join("success/DUP.20260101.01.txt").exists()
    });
    assert_eq!(
        fs::read_to_string(root.join("success/DUP.20260101.01.txt")).unwrap(),
        GOOD
    );
}

#[test]
fn gateway_fail_every_fails_good_files() {
    let dir = Dir::new();
    let root = dir.path().join("root");
    let sb = start(SandboxOptions {
        delay: Duration::ZERO,
        fail_every: Some(1),
        ..options(&root)
    });
    fs::write(root.join("upload/ACME.20260101.01.txt"), GOOD).unwrap();
    wait_until("a forced failure", Duration::from_secs(20), || {
        root.join("error/ACME.20260101.01.txt").exists()
    });
    let log = fs::read_to_string(sb.gateway_log()).unwrap();
    assert!(
        log.contains("\terror\tforced failure (fail_every 1)"),
        "{log}"
    );
    assert!(!root.join("success/ACME.20260101.01.txt").exists());
}

#[test]
fn gateway_waits_for_the_delay() {
    let dir = Dir::new();
    let root = dir.path().join("root");
    let _sb = start(SandboxOptions {
        delay: Duration::from_secs(2),
        ..options(&root)
    });
    let started = Instant::now();
    fs::write(root.join("upload/ACME.20260101.01.txt"), GOOD).unwrap();
    wait_until("success", Duration::from_secs(20), || {
        root.join("success/ACME.20260101.01.txt").exists()
    });
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn host_key_persists_across_restarts() {
    let dir = Dir::new();
    let root = dir.path().join("root");
    let first = start(options(&root));
    let (fp, line) = (
        first.host_key_fingerprint().to_owned(),
        first.known_hosts_line().to_owned(),
    );
    assert!(fp.starts_with("SHA256:"), "{fp}");
    assert!(line.starts_with(&format!(
        "[127.0.0.1]:{} ssh-ed25519 AAAA",
        first.local_addr().port()
    )));
    first.stop();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(root.join(".sandbox/host_key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let again = start(options(&root));
    assert_eq!(again.host_key_fingerprint(), fp);
    let recorded = fs::read_to_string(again.known_hosts_path()).unwrap();
    assert_eq!(recorded.trim_end(), again.known_hosts_line());
    SftpRemote::new(config(&again, password_auth()))
        .connect()
        .expect("the restarted server is trusted");
    let other = start(options(&dir.path().join("other")));
    assert_ne!(other.host_key_fingerprint(), fp);
}

#[test]
fn bad_options_are_refused() {
    let dir = Dir::new();
    let root = dir.path().join("root");
    let public = SandboxOptions {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..options(&root)
    };
    let got = sandbox::start(public);
    assert!(
        matches!(got, Err(SandboxError::NotLoopback { .. })),
        "{got:?}"
    );
    let got = sandbox::start(SandboxOptions {
        password: None,
        ..options(&root)
    });
    assert!(matches!(got, Err(SandboxError::NoAuth)), "{got:?}");
    let got = sandbox::start(SandboxOptions {
        error_rate: 1.5,
        ..options(&root)
    });
    assert!(matches!(got, Err(SandboxError::Invalid(_))), "{got:?}");

    let out = dir.run(&["sandbox", "--listen", "0.0.0.0:2222", "--password", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", util::show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn cli_prints_what_to_paste_and_stops_on_sigterm() {
    let dir = Dir::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_smsdrop"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--root", "sb"])
        .env(PASSWORD_VAR, "unused")
        .env("SMSDROP_SANDBOX_PASSWORD", "cli-pw")
        .env_remove("SMSDROP_CONFIG")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smsdrop sandbox");
    // Its last banner line is the evidence that it serves and waits for a signal.
    let lines = {
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let mut printed = String::new();
    while !printed.contains("Stop with Ctrl-C.") {
        match lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => printed.push_str(&(line + "\n")),
            Err(e) => panic!("no banner ({e}): {printed}"),
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut out = child.wait_with_output().unwrap();
    printed.extend(lines.iter().map(|l| l + "\n"));
    out.stdout = printed.into_bytes();
    let shown = util::show(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "SHA256:",
        "[sftp]",
        "host = \"127.0.0.1\"",
        "username = \"demo\"",
        "password_env = \"SMSDROP_SANDBOX_PASSWORD\"",
        "known_hosts = ",
        "ssh-ed25519 AAAA",
        "sandbox stopped",
    ] {
        assert!(stdout.contains(want), "missing {want:?}: {shown}");
    }
    assert!(!stdout.contains("cli-pw"), "password printed: {shown}");
}
