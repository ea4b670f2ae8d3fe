//! Message-level statuses end to end: the real sshd and test gateway take the files, smsdrop's
//! status simulator (real HTTP on loopback) decides each message by its number, and smsdrop
//! polls it, receives its webhook pushes, or both. Each test checks the `.delivery.csv` against
//! the simulator's decisions, message by message.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::setup::{free_port, show, stop, wait_for, Login, Setup};
use support::statuses::{delivery_rows, StatusSim, WEBHOOK_TOKEN};

/// Ten rows, one per last digit (every outcome the simulator knows); even lines carry the
/// ERP's id, odd ones none (smsdrop gives them one).
fn input() -> String {
    let mut s = String::from("numero;mensagem;id\n");
    for d in 0..10 {
        let id = if d % 2 == 0 {
            format!("erp-{d}")
        } else {
            String::new()
        };
        s.push_str(&format!("1199999000{d};Fatura {d} vence amanha;{id}\n"));
    }
    s
}

fn setup_with(sim_config: impl FnOnce(&Setup) -> (StatusSim, String)) -> (Setup, StatusSim) {
    let s = Setup::new(Login::Key);
    let (sim, extra) = sim_config(&s);
    let mut cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    cfg.push_str(&extra);
    cfg.push_str(
        "[report]\non_outcome = [\"sh\", \"-c\", \"echo $SMSDROP_EVENT $SMSDROP_JOB_ID >> hooks.log\"]\n",
    );
    std::fs::write(s.path("smsdrop.toml"), cfg).unwrap();
    (s, sim)
}

fn delivery_csv(s: &Setup, job: u32, input: &str) -> PathBuf {
    s.path(&format!("state/reports/{job}-{input}.delivery.csv"))
}

fn wait_delivery(s: &Setup, path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "no {} after {timeout:?}\n{}",
            path.display(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Checks every row of the delivery CSV against the simulator's decision for its id and number.
fn check_against_decisions(rows: &[Vec<String>], sim: &StatusSim) {
    let decisions = sim.decisions();
    assert_eq!(rows.len(), 10, "{rows:?}");
    assert_eq!(decisions.len(), 10, "{decisions:?}");
    for r in rows {
        let d = decisions
            .iter()
            .find(|d| d[0] == r[2])
            .unwrap_or_else(|| panic!("no decision for {r:?}"));
        assert_eq!(d[1], r[1], "number of {r:?}");
        assert_eq!(d[2], r[3], "sent status of {r:?}");
        assert!(!r[4].is_empty() && r[4].ends_with('Z'), "sent_at {r:?}");
        assert_eq!(d[3], r[5], "delivered status of {r:?}");
        assert_eq!(d[3].is_empty(), r[6].is_empty(), "delivered_at {r:?}");
        assert_eq!(d[4], r[7], "carrier of {r:?}");
    }
    let line = |n: &str| rows.iter().find(|r| r[0] == n).unwrap().clone();
    assert_eq!(line("2")[2], "erp-0");
    assert!(
        line("3")[2].starts_with("sd-"),
        "a generated id: {:?}",
        line("3")
    );
}

/// (delivered, failed) by the simulator's rules for the digits 0-9.
const DELIVERED: u64 = 6; // 0-3 delivered, 5 OI and 9 SERCOMTEL (no report): final on SENT_SUCCESS
const FAILED: u64 = 4; // 4 NOT_DELIVERED, 6 invalid number, 7 rejected, 8 opted out

#[test]
fn poll_mode_reports_every_message_as_the_gateway_decided() {
    let (s, sim) = setup_with(|s| {
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_millis(300),
            0,
            None,
        );
        let cfg = sim.config("poll", "poll_secs = 1\nsearch_after = \"1h\"");
        (sim, cfg)
    });
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    let path = delivery_csv(&s, 1, "faturas.csv");
    wait_delivery(&s, &path, Duration::from_secs(60));
    check_against_decisions(&delivery_rows(&path), &sim);

    // The delivery CSV is written before the journal records the end of tracking.
    wait_for("tracking ended", Duration::from_secs(10), || {
        s.status()["jobs"][0]["messages"]["tracking"] == "done"
    });
    let st = s.status();
    let m = &st["jobs"][0]["messages"];
    assert_eq!(m["delivered"], DELIVERED, "{st:#}");
    assert_eq!(m["failed"], FAILED, "{st:#}");
    assert_eq!(m["pending"], 0, "{st:#}");
    assert_eq!(m["tracking"], "done", "{st:#}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("state/reports/1-faturas.csv.json")).unwrap())
            .unwrap();
    let failed = report["messages"]["failed_messages"].as_array().unwrap();
    assert_eq!(failed.len() as u64, FAILED, "{report:#}");
    assert!(failed
        .iter()
        .any(|f| f["status"] == "INVALID_DESTINATION_NUMBER"
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("invalid destination number")));
    assert!(report["messages"]["delivery_csv"].as_str().is_some());
    wait_for("both hook runs", Duration::from_secs(10), || {
        std::fs::read_to_string(s.path("hooks.log")).is_ok_and(|h| h.contains("delivery 1"))
    });
    assert_eq!(
        std::fs::read_to_string(s.path("hooks.log")).unwrap(),
        "file 1\ndelivery 1\n"
    );
    // `list` only (search_after is 1h), never two requests within a second.
    let req = sim.requests();
    assert!(
        req.iter().all(|r| r.1 == "GET list" && r.2 == 200),
        "{req:?}"
    );
    for w in req.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= 1000,
            "two requests {} ms apart",
            w[1].0 - w[0].0
        );
    }
    assert!(stop(daemon).success());
    assert!(
        !s.log().contains(support::statuses::TOKEN),
        "the token was logged"
    );
}

#[test]
fn webhook_mode_records_pushed_statuses() {
    let port = free_port();
    let (s, sim) = setup_with(|s| {
        let hook = format!("http://127.0.0.1:{port}/sms-status?token={WEBHOOK_TOKEN}");
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_millis(300),
            0,
            Some(hook),
        );
        let cfg = format!(
            "[status]\nmode = \"webhook\"\nwebhook_listen = \"127.0.0.1:{port}\"\n\
             webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n"
        );
        (sim, cfg)
    });
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    let path = delivery_csv(&s, 1, "faturas.csv");
    wait_delivery(&s, &path, Duration::from_secs(60));
    check_against_decisions(&delivery_rows(&path), &sim);
    assert!(
        sim.requests().is_empty(),
        "webhook mode asked the API: {:?}",
        sim.requests()
    );
    assert!(stop(daemon).success());
    assert!(
        !s.log().contains(WEBHOOK_TOKEN),
        "the webhook secret was logged"
    );
}

#[test]
fn both_mode_searches_for_what_the_webhook_missed() {
    let port = free_port();
    let (s, sim) = setup_with(|s| {
        // The pushes go to a path smsdrop does not serve: every status must come from `search`.
        let hook = format!("http://127.0.0.1:{port}/elsewhere");
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_millis(300),
            0,
            Some(hook),
        );
        let cfg = sim.config(
            "both",
            &format!("poll_secs = 1\nsearch_after = \"1s\"\nwebhook_listen = \"127.0.0.1:{port}\""),
        );
        (sim, cfg)
    });
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    let path = delivery_csv(&s, 1, "faturas.csv");
    wait_delivery(&s, &path, Duration::from_secs(60));
    check_against_decisions(&delivery_rows(&path), &sim);
    let req = sim.requests();
    assert!(!req.is_empty());
    assert!(req.iter().all(|r| r.1 == "POST search"), "{req:?}");
    for w in req.windows(2) {
        assert!(
            w[1].0 - w[0].0 >= 1000,
            "two requests {} ms apart",
            w[1].0 - w[0].0
        );
    }
    assert!(stop(daemon).success());
}

#[test]
fn a_restart_midway_counts_nothing_twice_and_loses_nothing() {
    let (s, sim) = setup_with(|s| {
        // First statuses 3 s after the file is taken, delivery reports 3 s later.
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_secs(3),
            0,
            None,
        );
        let cfg = sim.config("poll", "poll_secs = 1\nsearch_after = \"2s\"");
        (sim, cfg)
    });
    let mut daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    // Killed once some statuses are recorded and others are still to come.
    wait_for("first statuses recorded", Duration::from_secs(60), || {
        let st = s.status();
        let m = &st["jobs"][0]["messages"];
        m["pending"].as_u64().is_some_and(|p| p < 10)
    });
    daemon.kill9();
    drop(daemon);
    std::thread::sleep(Duration::from_secs(4));
    let daemon = s.daemon();
    let path = delivery_csv(&s, 1, "faturas.csv");
    wait_delivery(&s, &path, Duration::from_secs(60));
    let rows = delivery_rows(&path);
    check_against_decisions(&rows, &sim);
    let st = s.status();
    let m = &st["jobs"][0]["messages"];
    assert_eq!(
        (m["delivered"].as_u64(), m["failed"].as_u64()),
        (Some(DELIVERED), Some(FAILED)),
        "{st:#}"
    );
    assert_eq!(m["sent"], 10);
    assert!(stop(daemon).success());
}

#[test]
fn a_429_storm_is_waited_out_at_one_request_per_second_or_less() {
    let (s, sim) = setup_with(|s| {
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_millis(300),
            3,
            None,
        );
        let cfg = sim.config("poll", "poll_secs = 1\nsearch_after = \"1h\"");
        (sim, cfg)
    });
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    let path = delivery_csv(&s, 1, "faturas.csv");
    wait_delivery(&s, &path, Duration::from_secs(120));
    check_against_decisions(&delivery_rows(&path), &sim);
    let req = sim.requests();
    assert!(req.iter().take(3).all(|r| r.2 == 429), "{req:?}");
    assert!(
        req.iter().skip(3).all(|r| r.2 == 200),
        "smsdrop came back too fast: {req:?}"
    );
    let mut busiest = 0;
    for (i, r) in req.iter().enumerate() {
        busiest = busiest.max(req[i..].iter().take_while(|q| q.0 - r.0 < 1000).count());
    }
    let gaps: Vec<i64> = req.windows(2).map(|w| w[1].0 - w[0].0).collect();
    println!(
        "{} requests, at most {busiest} in any second; gaps after the 429s (ms): {:?}",
        req.len(),
        &gaps[..3]
    );
    assert_eq!(busiest, 1);
    // After a 429 smsdrop waits longer each time (2 s and more), not the usual poll interval.
    assert!(gaps[..3].iter().all(|g| *g >= 2000), "{gaps:?}");
    assert!(gaps[2] > gaps[0], "no growing backoff: {gaps:?}");
    assert!(stop(daemon).success());
}

/// One raw HTTP/1.1 request; the status code, or None when the server cut the connection.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<u16> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).ok()?;
    let _ = c.write_all(body);
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    answer.split(' ').nth(1)?.parse().ok()
}

/// The messages table, as text (what a refused request must leave alone).
fn messages(s: &Setup) -> String {
    let db = rusqlite::Connection::open_with_flags(
        s.path("state/journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = db
        .prepare("SELECT * FROM messages ORDER BY job_id, line")
        .unwrap();
    let n = st.column_count();
    let rows = st
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get::<_, rusqlite::types::Value>(i).unwrap() {
                    rusqlite::types::Value::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[test]
fn bad_webhook_requests_are_refused_and_change_nothing() {
    let port = free_port();
    let (s, _sim) = setup_with(|s| {
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_millis(300),
            0,
            None,
        );
        let cfg = format!(
            "[status]\nmode = \"webhook\"\nwebhook_listen = \"127.0.0.1:{port}\"\n\
             webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n"
        );
        (sim, cfg)
    });
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    s.wait_final(1, Duration::from_secs(60));
    let before = messages(&s);
    assert!(before.contains("erp-0"), "{before}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let good = format!(
        r#"{{"correlationId": "erp-0", "destination": "5511999990000", "carrierName": "VIVO", "sentStatusCode": 2, "sentStatus": "SENT_SUCCESS", "sentAt": {now_ms}}}"#
    );
    let good = good.as_bytes();
    let path = format!("/sms-status?token={WEBHOOK_TOKEN}");
    let huge = vec![b' '; 10 << 20];
    let cases: [(&str, String, &[u8], Option<u16>); 7] = [
        ("no token", "/sms-status".into(), good, Some(401)),
        (
            "wrong token",
            "/sms-status?token=guess".into(),
            good,
            Some(401),
        ),
        ("10 MiB body", path.clone(), &huge, Some(413)),
        ("garbage", path.clone(), b"{\"correlationId\": ", Some(400)),
        ("not statuses", path.clone(), b"[1, 2]", Some(400)),
        (
            "unknown id",
            path.clone(),
            br#"{"correlationId": "nobody", "sentStatusCode": 2}"#,
            Some(422),
        ),
        (
            "no id",
            path.clone(),
            br#"[{"sentStatusCode": 2}]"#,
            Some(422),
        ),
    ];
    for (what, p, body, want) in &cases {
        let got = http(port, "POST", p, body);
        // A server may close a connection whose body is far too large before reading it all.
        let acceptable = got == *want || (*what == "10 MiB body" && got.is_none());
        assert!(
            acceptable,
            "{what}: got {got:?}, want {want:?}\n{}",
            s.log()
        );
        assert_eq!(messages(&s), before, "{what} changed the journal");
    }
    assert_eq!(http(port, "GET", &path, b""), Some(405));
    // The daemon is still there, and a good status is recorded (once).
    assert_eq!(http(port, "POST", &path, good), Some(200));
    let after = messages(&s);
    assert_ne!(after, before);
    assert!(after.contains("SENT_SUCCESS"), "{after}");
    assert_eq!(http(port, "POST", &path, good), Some(200));
    assert_eq!(messages(&s), after, "a repeated status changed the journal");
    let st = s.status();
    assert_eq!(st["jobs"][0]["messages"]["pending"], 10, "{st:#}");
    let log = s.log();
    assert!(log.contains("status webhook: refused"), "{log}");
    assert!(
        !log.contains(WEBHOOK_TOKEN),
        "the webhook secret was logged"
    );
    assert!(stop(daemon).success(), "{}", show(&s.run(&["status"])));
}

#[test]
fn check_tries_the_status_api_credentials() {
    let (s, sim) = setup_with(|s| {
        let sim = StatusSim::start(
            &s.sshd.home(),
            &s.path("sim"),
            Duration::from_millis(300),
            0,
            None,
        );
        let cfg = sim.config("poll", "");
        (sim, cfg)
    });
    let out = s.run(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("ok    status API"), "{}", show(&out));
    let out = s
        .command(&["check"])
        .env("SMSDROP_TEST_STATUS_TOKEN", "wrong")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL  status API")
            && text.contains("HTTP 401")
            && text.contains("SMSDROP_TEST_STATUS_TOKEN"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "the token was printed: {text}");
    // `check` asked with `search` only: `list` would take statuses away from the daemon.
    assert!(
        sim.requests().iter().all(|r| r.1 == "POST search"),
        "{:?}",
        sim.requests()
    );
}
