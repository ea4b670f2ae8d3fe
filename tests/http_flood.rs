//! The HTTP listener under a hostile client (no token needed to try): half-sent headers that
//! never finish, bodies of almost 1 MiB that stall, more connections than the daemon has
//! descriptors. The daemon runs as systemd's default would start it (`ulimit -n 1024`), against
//! the real sshd and the test gateway, while exports arrive: every export goes out once and in
//! about the time it takes without the flood, nothing logs "Too many open files", memory stays
//! small, and `/healthz` answers as soon as the flood ends.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::setup::{free_port, stop, wait_for, Login, Setup};

const TOKEN: &str = support::statuses::WEBHOOK_TOKEN;

/// A setup serving the operations endpoints and the status webhook on one port, both guarded by
/// a token, with `extra` lines in `[http]`.
fn setup(extra: &str) -> (Setup, SocketAddr) {
    let port = free_port();
    let s = Setup::with(
        Login::Key,
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n\
             {extra}\n[status]\nmode = \"webhook\"\nwebhook_listen = \"127.0.0.1:{port}\"\n\
             webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n"
        ),
    );
    (s, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The status code of a `GET path` on a fresh connection, or `None` when it was closed or
/// timed out.
fn get_status(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let mut c = TcpStream::connect_timeout(&addr, timeout).ok()?;
    c.set_read_timeout(Some(timeout)).ok()?;
    c.set_write_timeout(Some(timeout)).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    c.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_up(addr: SocketAddr) {
    wait_for("/healthz", Duration::from_secs(30), || {
        get_status(addr, "/healthz", Duration::from_secs(2)) == Some(200)
    });
}

/// An export of `rows` rows whose correlation ids start with `tag`.
fn export(tag: &str, rows: usize) -> String {
    let mut s = String::from("numero;mensagem;id\n");
    for i in 0..rows {
        s.push_str(&format!(
            "11{:09};Fatura {tag} {i};{tag}-{i}\n",
            900_000_000 + i
        ));
    }
    s
}

/// `(VmRSS, VmHWM)` of `pid` in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The test process itself holds 1,400 sockets.
fn raise_own_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let want = l.maximum.unwrap_or(u64::MAX).min(8192);
    if l.current.is_some_and(|c| c < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: l.maximum,
            },
        )
        .expect("raise the test's open-file limit");
    }
}

/// Drops `rows` rows as one export and waits for every job to end; returns the time it took.
fn send_export(s: &Setup, jobs_after: usize, tag: &str, rows: usize) -> Duration {
    let start = Instant::now();
    s.drop_in(&format!("{tag}.csv"), export(tag, rows));
    let st = s.wait_final(jobs_after, Duration::from_secs(120));
    let jobs = st["jobs"].as_array().unwrap();
    assert!(
        jobs.iter().all(|j| j["state"] == "succeeded"),
        "not every job succeeded: {st:#}"
    );
    start.elapsed()
}

#[test]
fn a_flood_of_half_headers_and_slow_bodies_starves_neither_the_inbox_nor_healthz() {
    raise_own_open_files();
    let (s, addr) = setup("");
    let daemon = s.daemon_with_open_files(Some(1024));
    wait_up(addr);

    // Without the flood: the time an export takes end to end.
    let quiet = send_export(&s, 1, "quiet", 50);

    // 300 unauthenticated POSTs announcing a 1 MiB body, each sending all but 100 bytes of it,
    // then pausing; and 1,100 connections sending half a header and nothing more.
    let body = vec![b'x'; 1024 * 1024 - 100];
    let mut bodies = vec![];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let body = &body;
                scope.spawn(move || {
                    let mut held = vec![];
                    for _ in 0..15 {
                        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        else {
                            continue;
                        };
                        let _ = c.set_write_timeout(Some(Duration::from_millis(500)));
                        let _ = write!(
                            c,
                            "POST /sms-status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
                             application/json\r\nContent-Length: 1048576\r\n\r\n"
                        );
                        let _ = c.write_all(body);
                        held.push(c);
                    }
                    held
                })
            })
            .collect();
        for h in handles {
            bodies.extend(h.join().unwrap());
        }
    });
    let mut loris = vec![];
    let mut failed_in_a_row = 0;
    for _ in 0..1100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut c) => {
                failed_in_a_row = 0;
                let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
                loris.push(c);
            }
            // A daemon that stopped accepting (out of descriptors, its backlog full).
            Err(_) if failed_in_a_row == 5 => break,
            Err(_) => failed_in_a_row += 1,
        }
    }
    eprintln!(
        "flood: {} slow bodies and {} half headers connected",
        bodies.len(),
        loris.len()
    );
    assert!(
        loris.len() >= 1000,
        "the daemon stopped accepting connections after {}:\n{}",
        loris.len(),
        s.log()
    );

    // Exports while the flood holds on.
    let flooded = send_export(&s, 2, "flood-a", 50) + send_export(&s, 3, "flood-b", 50);
    let flooded = flooded / 2;
    let (rss, peak) = rss_kb(daemon.pid());

    // The flood ends: /healthz answers within 2 s.
    drop(loris);
    drop(bodies);
    let ended = Instant::now();
    wait_for("/healthz after the flood", Duration::from_secs(10), || {
        get_status(addr, "/healthz", Duration::from_secs(1)) == Some(200)
    });
    let healthz = ended.elapsed();
    eprintln!(
        "export without the flood {quiet:?}, during it {flooded:?}; daemon RSS {} MB (peak {} \
         MB); /healthz {healthz:?} after the flood",
        rss / 1024,
        peak / 1024
    );

    let counts = s.gateway.messages();
    assert_eq!(s.gateway.total_messages(), 150, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "a row went twice: {counts:?}"
    );
    assert!(
        flooded < quiet + Duration::from_secs(5),
        "exports slowed by the flood: {flooded:?} against {quiet:?}"
    );
    assert!(peak < 100 * 1024, "resident memory peaked at {peak} kB");
    assert!(
        healthz < Duration::from_secs(2),
        "/healthz took {healthz:?} after the flood"
    );
    let log = s.log();
    assert!(
        !log.contains("Too many open files"),
        "the daemon ran out of descriptors:\n{log}"
    );
    assert!(
        log.contains("connections are open; closing new ones"),
        "the cap was never reached, so the test proved nothing:\n{log}"
    );
    assert!(stop(daemon).success());
}

#[test]
fn the_token_is_checked_before_a_body_is_read_and_slow_clients_are_cut() {
    let (s, addr) = setup("max_connections = 3");
    let daemon = s.daemon();
    wait_up(addr);

    // A 1 MiB body announced without a token: 401 at once, before one byte of it is sent.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "POST /sms-status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).expect("an answer without the body");
    assert_eq!(&head[9..12], b"401", "{}", String::from_utf8_lossy(&head));
    drop(c);
    // The same with the token in a lower-case bearer scheme is let through to the page.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: bearer {TOKEN}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    c.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"200", "{}", String::from_utf8_lossy(&head));
    drop(c);

    // A header past 64 KiB is refused (431), not buffered.
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(
        c,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 431") || answer.is_empty(),
        "a 70 KiB header was served: {}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    drop(c);

    // Three idle connections take every place: a fourth is closed at once, not queued.
    let connected = Instant::now();
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // the server takes them
    let mut extra = TcpStream::connect(addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a connection over the cap was served");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not closed at once"
    );

    // A connection that never finishes its header is closed by the server (10 s).
    let mut first = &idle[0];
    let _ = first.write_all(b"GET /healthz HTTP/1.1\r\nHost: 1");
    let n = first.read(&mut buf).unwrap_or(0);
    let took = connected.elapsed();
    assert_eq!(n, 0, "the half header got an answer");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "closed after {took:?}, not the header timeout"
    );
    drop(idle);
    wait_up(addr);
    let log = s.log();
    assert!(!log.contains(TOKEN), "the token was logged");
    assert!(stop(daemon).success());
}

#[test]
fn a_flood_on_the_webhook_leaves_healthz_served_on_its_own_address() {
    let ops_port = free_port();
    let hook_port = free_port();
    let s = Setup::with(
        Login::Key,
        &format!(
            "[http]\nlisten = \"127.0.0.1:{ops_port}\"\nmax_connections = 3\n[status]\n\
             mode = \"webhook\"\nwebhook_listen = \"127.0.0.1:{hook_port}\"\n\
             webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n"
        ),
    );
    let ops = SocketAddr::from(([127, 0, 0, 1], ops_port));
    let hook = SocketAddr::from(([127, 0, 0, 1], hook_port));
    let daemon = s.daemon();
    wait_up(ops);
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(hook).unwrap()).collect();
    // The webhook's places are taken: one more is closed at once...
    let extra = wait_closed(hook);
    assert!(extra, "a connection over the webhook's cap was served");
    // ...while /healthz on the operations address answers.
    assert_eq!(
        get_status(ops, "/healthz", Duration::from_secs(2)),
        Some(200)
    );
    drop(held);
    assert!(stop(daemon).success());
}

/// Whether a new connection to `addr` is closed by the server within 2 s without an answer
/// (tried a few times: the server takes the earlier connections a moment after they connect).
fn wait_closed(addr: SocketAddr) -> bool {
    for _ in 0..20 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        if matches!(c.read(&mut buf), Ok(0)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
