//! `SftpRemote` against a real OpenSSH sshd (tests/support/sshd.rs). A test that needs the
//! server fails, never skips, when it cannot start.

mod support;

use smsdrop::config::{Auth, SftpConfig};
use smsdrop::remote::sftp::{self, HostKeyStatus, SftpRemote};
use smsdrop::remote::{Remote, RemoteError};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::sshd::{SftpAuth, Sshd};

fn start() -> Sshd {
    Sshd::start().unwrap_or_else(|e| panic!("cannot start sshd: {e}"))
}

fn config(sshd: &Sshd, auth: Auth) -> SftpConfig {
    SftpConfig {
        host: sshd.host().into(),
        port: sshd.port(),
        username: sshd.username().into(),
        auth,
        known_hosts: sshd.known_hosts_path(),
        upload_dir: "upload".into(),
        success_dir: "success".into(),
        error_dir: "error".into(),
        temp_dir: None,
        timeout: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
        strict_permissions: false,
        connections: 1,
        pipelining: true,
    }
}

fn key_auth(sshd: &Sshd) -> Auth {
    Auth::Key {
        path: sshd.private_key_path(),
        passphrase_env: None,
    }
}

/// Sets a test-specific environment variable (each test uses its own name).
fn env(name: &str, value: &str) -> String {
    std::env::set_var(name, value);
    name.to_owned()
}

fn write_local(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

/// Deterministic pseudo-random bytes (xorshift), so a corrupted or shifted block shows.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn key_auth_upload_list_size_no_clobber_remove() {
    let sshd = start();
    let local = tempfile::tempdir().unwrap();
    let mut r = SftpRemote::new(config(&sshd, key_auth(&sshd)));
    assert!(!r.connected(), "new() must not connect");

    // A stale temp from an earlier crash is replaced.
    let stale = sshd.home().join("upload/.X.part");
    fs::write(&stale, "stale junk that is longer than the batch").unwrap();
    sshd.chown_to_user(&stale);

    let first = write_local(local.path(), "a.txt", b"5511900000000;hello;;\nEOF\n");
    let sent = r.upload(&first, "upload/.X.part", "upload/X.txt").unwrap();
    assert_eq!(sent, 26);
    assert!(r.connected());
    assert_eq!(r.list("upload").unwrap(), vec!["X.txt"]);
    assert_eq!(r.size("upload/X.txt").unwrap(), Some(26));
    assert_eq!(r.size("upload/nope.txt").unwrap(), None);
    let on_server = sshd.home().join("upload/X.txt");
    assert_eq!(fs::read(&on_server).unwrap(), fs::read(&first).unwrap());

    let second = write_local(local.path(), "b.txt", b"5511911111111;other;;\nEOF\n");
    match r.upload(&second, "upload/.X.part", "upload/X.txt") {
        Err(RemoteError::Exists { path }) => assert_eq!(path, "upload/X.txt"),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        fs::read(&on_server).unwrap(),
        fs::read(&first).unwrap(),
        "original clobbered"
    );
    assert_eq!(r.list("upload").unwrap(), vec!["X.txt"], "temp left behind");

    r.remove("upload/X.txt").unwrap();
    r.remove("upload/X.txt").unwrap(); // missing is fine
    assert_eq!(r.size("upload/X.txt").unwrap(), None);
    assert!(r.list("upload").unwrap().is_empty());
    assert!(r.list("").unwrap().contains(&"success".to_owned()));

    match r.list("no-such-dir") {
        Err(e @ RemoteError::Op { .. }) => {
            assert!(e.to_string().contains("list no-such-dir"), "{e}")
        }
        other => panic!("expected Op, got {other:?}"),
    }
    assert!(
        r.connected(),
        "a refused operation must not drop the session"
    );
    let missing = local.path().join("missing.txt");
    assert!(matches!(
        r.upload(&missing, "upload/.m.part", "upload/m.txt"),
        Err(RemoteError::Op { .. })
    ));
    r.disconnect();
    assert!(!r.connected());
    assert!(
        r.size("success").unwrap().is_some(),
        "reconnects after disconnect"
    );
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn password_from_env_works_and_a_wrong_one_is_an_auth_error_without_the_secret() {
    let sshd = start();
    let password = sshd
        .password()
        .expect("password auth needs the harness to run as root");
    let var = env("SMSDROP_TEST_SFTP_PW_OK", password);
    let mut r = SftpRemote::new(config(&sshd, Auth::PasswordEnv(var)));
    assert!(r.list("upload").unwrap().is_empty());

    let wrong = "wrong-Pa55word-9z";
    let var = env("SMSDROP_TEST_SFTP_PW_BAD", wrong);
    let mut r = SftpRemote::new(config(&sshd, Auth::PasswordEnv(var)));
    let err = r.list("upload").unwrap_err();
    assert!(matches!(err, RemoteError::Auth { .. }), "{err:?}");
    assert!(!err.is_transient());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "secret leaked: {text}");
        assert!(
            text.contains("SMSDROP_TEST_SFTP_PW_BAD"),
            "should name the source: {text}"
        );
    }

    let mut r = SftpRemote::new(config(
        &sshd,
        Auth::PasswordEnv("SMSDROP_TEST_SFTP_PW_UNSET".into()),
    ));
    match r.list("upload") {
        Err(RemoteError::Auth { message }) => {
            assert!(message.contains("SMSDROP_TEST_SFTP_PW_UNSET"), "{message}")
        }
        other => panic!("expected Auth, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let file = write_local(dir.path(), "pw", format!("{password}\n").as_bytes());
    let mut r = SftpRemote::new(config(&sshd, Auth::PasswordFile(file)));
    assert!(r.list("upload").unwrap().is_empty());
}

#[test]
#[cfg_attr(
    not(sshd_as_root),
    ignore = "needs OpenSSH sshd and root (password login, mounts); CI runs as root"
)]
fn keyboard_interactive_only_server_takes_the_password() {
    let mut sshd =
        Sshd::start_with_config("PasswordAuthentication no\nKbdInteractiveAuthentication yes\n")
            .unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
    let password = sshd
        .password()
        .expect("password auth needs the harness to run as root")
        .to_owned();
    let var = env("SMSDROP_TEST_SFTP_PW_KBD", &password);
    let mut r = SftpRemote::new(config(&sshd, Auth::PasswordEnv(var)));
    let listed = r.list("upload");
    assert!(listed.is_ok(), "{listed:?}\n{}", sshd.log());
    sshd.stop();
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn encrypted_key_with_passphrase_from_env() {
    let sshd = start();
    let var = env("SMSDROP_TEST_SFTP_PASSPHRASE", sshd.key_passphrase());
    let auth = Auth::Key {
        path: sshd.encrypted_key_path(),
        passphrase_env: Some(var),
    };
    let mut r = SftpRemote::new(config(&sshd, auth));
    assert!(r.list("upload").unwrap().is_empty());

    let wrong = "not the passphrase 42";
    let var = env("SMSDROP_TEST_SFTP_PASSPHRASE_BAD", wrong);
    let auth = Auth::Key {
        path: sshd.encrypted_key_path(),
        passphrase_env: Some(var),
    };
    let err = SftpRemote::new(config(&sshd, auth))
        .list("upload")
        .unwrap_err();
    assert!(matches!(err, RemoteError::Auth { .. }), "{err:?}");
    assert!(
        !format!("{err} {err:?}").contains(wrong),
        "secret leaked: {err}"
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn host_key_is_verified_and_only_accepted_on_request() {
    let sshd = start();
    let fingerprint = sshd.host_key_fingerprint().to_owned();

    let mut cfg = config(&sshd, key_auth(&sshd));
    cfg.known_hosts = sshd.wrong_known_hosts_path();
    let before = fs::read(&cfg.known_hosts).unwrap();
    let err = SftpRemote::new(cfg.clone()).list("upload").unwrap_err();
    match &err {
        RemoteError::HostKey { message } => {
            assert!(message.contains(&fingerprint), "{message}");
            assert!(message.to_lowercase().contains("changed"), "{message}");
            assert!(message.contains("refusing to connect"), "{message}");
        }
        other => panic!("expected HostKey, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(matches!(
        sftp::accept_new_host_key(&cfg),
        Err(RemoteError::HostKey { .. })
    ));
    assert_eq!(
        fs::read(&cfg.known_hosts).unwrap(),
        before,
        "a changed key must never be replaced"
    );
    assert_eq!(
        sftp::host_key_status(&cfg).unwrap(),
        (fingerprint.clone(), HostKeyStatus::Mismatch)
    );

    let dir = tempfile::tempdir().unwrap();
    cfg.known_hosts = dir.path().join("state/known_hosts");
    let mut r = SftpRemote::new(cfg.clone());
    match r.list("upload") {
        Err(RemoteError::HostKey { message }) => {
            assert!(message.contains("accept-new-host-key"), "{message}");
            assert!(message.contains(&fingerprint), "{message}");
            assert!(
                message.contains(&format!("127.0.0.1:{}", sshd.port())),
                "{message}"
            );
        }
        other => panic!("expected HostKey, got {other:?}"),
    }
    assert!(!cfg.known_hosts.exists(), "connect must never record a key");
    assert_eq!(
        sftp::host_key_status(&cfg).unwrap().1,
        HostKeyStatus::NotFound
    );

    assert_eq!(sftp::accept_new_host_key(&cfg).unwrap(), fingerprint);
    let mode = fs::metadata(&cfg.known_hosts).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&cfg.known_hosts).unwrap();
    assert!(
        text.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port())),
        "{text}"
    );
    assert_eq!(
        sftp::accept_new_host_key(&cfg).unwrap(),
        fingerprint,
        "idempotent"
    );
    assert_eq!(
        fs::read_to_string(&cfg.known_hosts).unwrap(),
        text,
        "no duplicate entry"
    );
    assert_eq!(
        sftp::host_key_status(&cfg).unwrap(),
        (fingerprint, HostKeyStatus::Match)
    );
    assert!(
        r.list("upload").unwrap().is_empty(),
        "connects once the key is recorded"
    );

    // The file we wrote is one OpenSSH itself accepts.
    let out = sshd.sftp_as(
        SftpAuth::Key(&sshd.private_key_path()),
        &cfg.known_hosts,
        "ls upload\n",
    );
    assert!(
        out.status.success(),
        "OpenSSH rejects our known_hosts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn reconnects_after_the_server_restarts() {
    let mut sshd = start();
    let mut r = SftpRemote::new(config(&sshd, key_auth(&sshd)));
    assert!(r.list("upload").unwrap().is_empty());
    assert!(r.connected());

    sshd.stop();
    let err = r.list("upload").unwrap_err();
    assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!r.connected(), "a dead session must be dropped");
    let err = r.size("upload/x").unwrap_err();
    assert!(
        matches!(err, RemoteError::Connect { .. }),
        "server down: {err:?}"
    );

    sshd.restart().unwrap();
    assert!(r.list("upload").unwrap().is_empty(), "reconnect");
    assert!(r.connected());

    // Sessions killed mid-life (listener up): one failed call, then the next reconnects.
    sshd.drop_connections();
    let local = tempfile::tempdir().unwrap();
    let file = write_local(local.path(), "a.txt", b"abc");
    let first = r.upload(&file, "upload/.a.part", "upload/a.txt");
    assert!(
        matches!(first, Err(RemoteError::Connect { .. })),
        "{first:?}"
    );
    assert_eq!(
        r.upload(&file, "upload/.a.part", "upload/a.txt").unwrap(),
        3
    );
    assert_eq!(r.size("upload/a.txt").unwrap(), Some(3));
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_paused_server_times_out_instead_of_hanging() {
    let mut sshd = start();
    let mut cfg = config(&sshd, key_auth(&sshd));
    cfg.timeout = Duration::from_secs(2);
    let mut r = SftpRemote::new(cfg.clone());

    sshd.pause();
    let t = Instant::now();
    let err = r.list("upload").unwrap_err();
    let took = t.elapsed();
    sshd.resume();
    eprintln!("paused listener: error after {took:?}: {err}");
    assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "the timeout should have been waited out: {took:?}"
    );
    assert!(!r.connected());

    assert!(r.list("upload").unwrap().is_empty(), "works after resume");
    r.keepalive().unwrap();
}

/// The per-connection sshd processes below the listener (the harness pauses only the listener).
fn session_pids(sshd: &Sshd) -> Vec<u32> {
    let mut parent_of = vec![];
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok());
        parent_of.extend(ppid.map(|p: u32| (pid, p)));
    }
    let mut found = vec![sshd.pid().expect("sshd runs")];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.split_off(1)
}

fn signal(name: &str, pids: &[u32]) {
    for pid in pids {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }
}

/// Waits (pacing 5 ms, at most 20 s) until `done`: the evidence a fault is injected mid-transfer.
fn wait_until_on_server(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A call on a frozen session with a 2 s timeout must return within this. Without cutting the
/// socket first, libssh2's cleanup (close file, close channel, free session) waits out the
/// timeout again at each step: 6-8 s here, minutes with the default 30 s.
const DROP_BOUND: Duration = Duration::from_secs(5);

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_session_that_stops_answering_times_out_and_is_replaced() {
    let sshd = start();
    let mut cfg = config(&sshd, key_auth(&sshd));
    cfg.timeout = Duration::from_secs(2);
    let mut r = SftpRemote::new(cfg);
    let local = tempfile::tempdir().unwrap();
    let small = write_local(local.path(), "small.txt", b"abc");
    let big = write_local(local.path(), "big.txt", &noise(64 * 1024 * 1024));

    // Frozen between two calls: the next request gets no answer.
    assert!(r.list("upload").unwrap().is_empty());
    let first = session_pids(&sshd);
    assert!(!first.is_empty(), "no session process found");
    signal("STOP", &first);
    let t = Instant::now();
    let err = r
        .upload(&small, "upload/.s.part", "upload/s.txt")
        .unwrap_err();
    let took = t.elapsed();
    eprintln!("frozen idle session: error after {took:?}: {err}");
    assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
    // The 2 s timeout plus dropping the dead session, which must not wait out more timeouts.
    assert!(
        took < DROP_BOUND,
        "took {took:?} (includes dropping the session)"
    );
    assert!(!r.connected());

    // Frozen in the middle of a big upload (the window fills, the write blocks).
    assert!(
        r.list("upload").unwrap().is_empty(),
        "a new session works meanwhile"
    );
    let second: Vec<u32> = session_pids(&sshd)
        .into_iter()
        .filter(|p| !first.contains(p))
        .collect();
    assert!(!second.is_empty(), "no new session process found");
    let freezer = {
        let second = second.clone();
        let part = sshd.home().join("upload/.big.part");
        std::thread::spawn(move || {
            // Mid-upload for certain: bytes of the 64 MB file have reached the server.
            wait_until_on_server("the upload to start", || {
                fs::metadata(&part).is_ok_and(|m| m.len() > 0)
            });
            signal("STOP", &second);
        })
    };
    let t = Instant::now();
    let err = r
        .upload(&big, "upload/.big.part", "upload/big.txt")
        .unwrap_err();
    let took = t.elapsed();
    freezer.join().unwrap();
    eprintln!("frozen mid-upload: error after {took:?}: {err}");
    assert!(matches!(err, RemoteError::Connect { .. }), "{err:?}");
    assert!(
        took < DROP_BOUND,
        "took {took:?} (includes dropping the session)"
    );
    assert!(!r.connected());

    assert_eq!(
        r.upload(&big, "upload/.big.part", "upload/big.txt")
            .unwrap(),
        64 * 1024 * 1024
    );
    assert_eq!(r.size("upload/big.txt").unwrap(), Some(64 * 1024 * 1024));
    signal("KILL", &first);
    signal("KILL", &second);
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn twenty_megabytes_round_trip() {
    let sshd = start();
    let local = tempfile::tempdir().unwrap();
    let bytes = noise(20 * 1024 * 1024 + 123);
    let file = write_local(local.path(), "big.txt", &bytes);
    let mut r = SftpRemote::new(config(&sshd, key_auth(&sshd)));
    let t = Instant::now();
    let sent = r
        .upload(&file, "upload/.big.part", "upload/big.txt")
        .unwrap();
    eprintln!("20 MB upload took {:?}", t.elapsed());
    assert_eq!(sent, bytes.len() as u64);
    assert_eq!(r.size("upload/big.txt").unwrap(), Some(bytes.len() as u64));
    let on_server = fs::read(sshd.home().join("upload/big.txt")).unwrap();
    assert!(on_server == bytes, "content differs");
}

/// A group of files through the pipelined channel: small ones, a big one (many writes in
/// flight), a stale temp file, a name already taken on the server, a local file gone, and the
/// intent callback called once with exactly the files about to be renamed.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_group_uploads_pipelined_with_the_same_promises() {
    use smsdrop::remote::Upload;
    let sshd = start();
    let local = tempfile::tempdir().unwrap();
    let mut r = SftpRemote::new(config(&sshd, key_auth(&sshd)));
    let taken = sshd.home().join("upload/T3.txt");
    fs::write(&taken, "another system's file\n").unwrap();
    sshd.chown_to_user(&taken);
    let stale = sshd.home().join("upload/.T1.txt.part");
    fs::write(&stale, vec![b'x'; 100_000]).unwrap();
    sshd.chown_to_user(&stale);

    let mut files = vec![];
    let mut contents = vec![];
    for i in 0..40 {
        let bytes = match i {
            7 => noise(5 * 1024 * 1024 + 17),
            1 => b"5511900000001;tiny;;\nEOF\n".to_vec(),
            _ => format!("5511900000{i:03};hello {i};;\nEOF\n").into_bytes(),
        };
        let name = format!("T{i}.txt");
        let path = if i == 11 {
            local.path().join("gone.txt")
        } else {
            write_local(local.path(), &name, &bytes)
        };
        files.push(Upload {
            local: path,
            temp: format!("upload/.{name}.part"),
            dest: format!("upload/{name}"),
        });
        contents.push(bytes);
    }
    // 40: the temporary name cannot be created (retried alone, then refused);
    // 41: the rename is refused for another reason than a taken name.
    let odd = write_local(local.path(), "odd.txt", b"5511900000040;odd;;\nEOF\n");
    files.push(Upload {
        local: odd.clone(),
        temp: "no-such-dir/.T40.txt.part".into(),
        dest: "upload/T40.txt".into(),
    });
    files.push(Upload {
        local: odd,
        temp: "upload/.T41.txt.part".into(),
        dest: "no-such-dir/T41.txt".into(),
    });
    let mut calls = vec![];
    let results = r.upload_many(&files, &mut |which| {
        calls.push(which.to_vec());
        Ok(())
    });
    assert_eq!(results.len(), 42);
    assert_eq!(calls.len(), 1, "one intent for the group: {calls:?}");
    let expected_ready: Vec<usize> = (0..42).filter(|&i| i != 11 && i != 40).collect();
    assert_eq!(calls[0], expected_ready);
    for (i, res) in results.iter().enumerate() {
        if i >= 40 {
            let op = if i == 40 { "create" } else { "rename" };
            assert!(
                matches!(res, Err(RemoteError::Op { op: o, .. }) if *o == op),
                "{i}: {res:?}"
            );
            assert!(!sshd.home().join(format!("upload/T{i}.txt")).exists());
            continue;
        }
        let on_server = sshd.home().join(format!("upload/T{i}.txt"));
        match i {
            3 => {
                assert!(
                    matches!(res, Err(RemoteError::Exists { path }) if path == "upload/T3.txt"),
                    "{res:?}"
                );
                assert_eq!(
                    fs::read(&on_server).unwrap(),
                    b"another system's file\n",
                    "clobbered"
                );
            }
            11 => {
                assert!(matches!(res, Err(RemoteError::Op { .. })), "{res:?}");
                assert!(!on_server.exists());
            }
            _ => {
                assert_eq!(res.as_ref().ok(), Some(&(contents[i].len() as u64)), "{i}");
                assert!(fs::read(&on_server).unwrap() == contents[i], "T{i} differs");
            }
        }
    }
    let left: Vec<String> = r
        .list("upload")
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    assert!(r.connected());

    // The journal refusing the intent: nothing is renamed.
    let again = vec![Upload {
        local: files[0].local.clone(),
        temp: "upload/.U.txt.part".into(),
        dest: "upload/U.txt".into(),
    }];
    let results = r.upload_many(&again, &mut |_| {
        Err(RemoteError::Op {
            op: "rename",
            path: String::new(),
            message: "journal".into(),
        })
    });
    assert!(results[0].is_err());
    assert_eq!(
        r.size("upload/U.txt").unwrap(),
        None,
        "renamed without intent"
    );
}

/// A server that allows one channel per connection (`MaxSessions 1`): the pipelined channel is
/// refused, the group goes one request at a time on the ordinary channel, nothing is lost and
/// the session stays usable.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn one_channel_per_session_still_uploads_every_file() {
    use smsdrop::remote::Upload;
    let sshd = Sshd::start_with_config("MaxSessions 1\n")
        .unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
    let local = tempfile::tempdir().unwrap();
    let mut r = SftpRemote::new(config(&sshd, key_auth(&sshd)));
    let files: Vec<Upload> = (0..5)
        .map(|i| Upload {
            local: write_local(
                local.path(),
                &format!("o{i}.txt"),
                format!("551190000000{i};one {i};;\nEOF\n").as_bytes(),
            ),
            temp: format!("upload/.O{i}.txt.part"),
            dest: format!("upload/O{i}.txt"),
        })
        .collect();
    let mut intents = 0;
    let results = r.upload_many(&files, &mut |which| {
        assert_eq!(which.len(), 1, "one file at a time on one channel");
        intents += 1;
        Ok(())
    });
    assert_eq!(intents, 5);
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res.as_ref().ok(), Some(&26), "O{i}: {res:?}");
    }
    assert_eq!(
        r.list("upload").unwrap(),
        (0..5).map(|i| format!("O{i}.txt")).collect::<Vec<_>>()
    );
    // The next group on the same session goes the same way at once.
    let more = vec![Upload {
        local: files[0].local.clone(),
        temp: "upload/.P.txt.part".into(),
        dest: "upload/P.txt".into(),
    }];
    assert!(r.upload_many(&more, &mut |_| Ok(()))[0].is_ok());
    assert!(r.connected());
}

/// The session killed while a group is in flight: a file that came back `Ok` is complete on
/// the server, a file under its final name is complete and had its intent recorded first,
/// every other file gets a connection error (never a per-file verdict), and the next group runs
/// on a fresh session and pipelined channel.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn a_session_killed_mid_group_leaves_no_partial_file_and_the_next_group_goes() {
    use smsdrop::remote::Upload;
    let mut sshd = start();
    let local = tempfile::tempdir().unwrap();
    let mut r = SftpRemote::new(config(&sshd, key_auth(&sshd)));
    let mut files = vec![];
    let mut contents = vec![];
    for i in 0..24 {
        let mut bytes = noise(3 * 1024 * 1024 + i);
        bytes[0] = b'A' + i as u8;
        let name = format!("K{i}.txt");
        files.push(Upload {
            local: write_local(local.path(), &name, &bytes),
            temp: format!("upload/.{name}.part"),
            dest: format!("upload/{name}"),
        });
        contents.push(bytes);
    }
    r.connect().unwrap();
    let mut intended = vec![];
    let results = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            // A group in flight for certain: a temporary file has bytes on the server.
            let upload = sshd.home().join("upload");
            wait_until_on_server("the group to start", || {
                fs::read_dir(&upload).is_ok_and(|rd| {
                    rd.flatten().any(|e| {
                        e.file_name().to_string_lossy().ends_with(".part")
                            && e.metadata().is_ok_and(|m| m.len() > 0)
                    })
                })
            });
            sshd.drop_connections();
        });
        let results = r.upload_many(&files, &mut |which| {
            intended.extend_from_slice(which);
            Ok(())
        });
        killer.join().unwrap();
        results
    });
    let mut ok = 0;
    for (i, res) in results.iter().enumerate() {
        let on_server = sshd.home().join(format!("upload/K{i}.txt"));
        match res {
            Ok(n) => {
                ok += 1;
                assert_eq!(*n, contents[i].len() as u64);
                assert!(fs::read(&on_server).unwrap() == contents[i], "K{i} differs");
            }
            Err(e @ RemoteError::Connect { .. }) => {
                if on_server.exists() {
                    // Renamed before the answer was lost: complete, and intended first.
                    assert!(fs::read(&on_server).unwrap() == contents[i], "K{i} partial");
                    assert!(intended.contains(&i), "K{i} renamed without intent: {e}");
                }
            }
            Err(e) => panic!("K{i}: a lost session must not be a per-file verdict: {e}"),
        }
    }
    assert!(
        ok < files.len(),
        "the kill came after the whole group (make the files bigger)"
    );
    // The next group: a fresh session and channel; the files not sent yet go now.
    let rest: Vec<Upload> = (0..files.len())
        .filter(|&i| !sshd.home().join(format!("upload/K{i}.txt")).exists())
        .map(|i| files[i].clone())
        .collect();
    let again = r.upload_many(&rest, &mut |_| Ok(()));
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    for (i, c) in contents.iter().enumerate() {
        let on_server = sshd.home().join(format!("upload/K{i}.txt"));
        assert!(
            fs::read(&on_server).unwrap() == *c,
            "K{i} differs at the end"
        );
    }
    eprintln!(
        "{ok} of {} ok before the kill; {} sent after",
        files.len(),
        rest.len()
    );
}
