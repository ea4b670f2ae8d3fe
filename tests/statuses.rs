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

fn setup_with<T>(sim_config: impl FnOnce(&Setup) -> (T, String)) -> (Setup, T) {
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

// ---- Statuses only move forward (issue 19 item 2) ----

/// One raw HTTP/1.1 request: (status code, body); (0, "") when the server cut the connection.
fn http_answer(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A west-of-UTC fixed zone where it is not near midnight now (so a naive local time read as
/// UTC looks hours older than it is, and the day in file names does not change under the test).
fn west_zone() -> (String, i64) {
    use chrono::Timelike;
    let h = chrono::Utc::now().hour() as i64;
    let n = (3..=11)
        .find(|n| (2..=21).contains(&(h - n).rem_euclid(24)))
        .unwrap();
    (format!("Etc/GMT+{n}"), n)
}

/// Sets `[batch] timezone` (before the daemon starts).
fn set_zone(s: &Setup, zone: &str) {
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    let out: Vec<String> = cfg
        .lines()
        .map(|l| {
            if l.starts_with("timezone = ") {
                format!("timezone = {zone:?}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(s.path("smsdrop.toml"), out.join("\n") + "\n").unwrap();
}

/// The journal's row for a correlation id, as text.
fn message_row(s: &Setup, id: &str) -> String {
    messages(s)
        .lines()
        .find(|l| l.split('|').any(|f| f == id))
        .unwrap_or_else(|| panic!("no message {id}"))
        .to_owned()
}

/// A message's (sent code, delivered code, sent at).
fn codes(s: &Setup, id: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
    let db = rusqlite::Connection::open_with_flags(
        s.path("state/journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT sent_code, delivered_code, sent_at FROM messages WHERE correlation_id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn scrape(port: u16) -> String {
    http_answer(port, "GET", "/metrics", b"").1
}

#[test]
fn webhook_statuses_only_move_forward() {
    let port = free_port();
    let ops = free_port();
    let (zone, west_hours) = west_zone();
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
             webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n\
             [http]\nlisten = \"127.0.0.1:{ops}\"\n"
        );
        (sim, cfg)
    });
    set_zone(&s, &zone);
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    s.wait_final(1, Duration::from_secs(60));
    let path = format!("/sms-status?token={WEBHOOK_TOKEN}");
    // Every finding is checked, and all that fail are reported together.
    let problems = std::cell::RefCell::new(Vec::<String>::new());
    let check = |ok: bool, what: String| {
        if !ok {
            problems.borrow_mut().push(what);
        }
    };
    let post = |body: String| {
        let (code, answer) = http_answer(port, "POST", &path, body.as_bytes());
        check(code == 200, format!("{body} -> {code} {answer}"));
        answer
    };
    let t = now_ms();
    // A first-status failure is final: a later SENT_SUCCESS (and even a report) changes nothing.
    post(format!(
        r#"{{"correlationId": "erp-0", "destination": "5511999990000", "carrierName": "VIVO", "sentStatusCode": 202, "sentStatus": "INVALID_DESTINATION_NUMBER", "sentAt": {t}}}"#
    ));
    let failed_row = message_row(&s, "erp-0");
    let answer = post(format!(
        r#"{{"correlationId": "erp-0", "destination": "5511999990000", "carrierName": "VIVO", "sentStatusCode": 2, "sentStatus": "SENT_SUCCESS", "sentAt": {}}}"#,
        t + 1000
    ));
    check(
        answer.contains(r#""conflicts":1"#),
        format!("no conflict counted: {answer}"),
    );
    post(format!(
        r#"{{"correlationId": "erp-0", "sentStatusCode": 2, "deliveredStatusCode": 4, "sentAt": {}, "deliveredAt": {}}}"#,
        t + 1000,
        t + 2000
    ));
    let row = message_row(&s, "erp-0");
    check(
        row == failed_row,
        format!("a final failure was replaced: {failed_row} -> {row}"),
    );
    // A delivery report is final: a replayed NOT_DELIVERED does not flip it.
    post(format!(
        r#"{{"correlationId": "erp-2", "destination": "5511999990002", "carrierName": "VIVO", "sentStatusCode": 2, "sentAt": {t}, "deliveredStatusCode": 4, "deliveredStatus": "DELIVERED_SUCCESS", "deliveredAt": {}}}"#,
        t + 500
    ));
    let delivered_row = message_row(&s, "erp-2");
    post(format!(
        r#"{{"correlationId": "erp-2", "deliveredStatusCode": 104, "deliveredStatus": "NOT_DELIVERED", "deliveredAt": {}}}"#,
        t + 3000
    ));
    let row = message_row(&s, "erp-2");
    check(
        row == delivered_row,
        format!("a delivery report was replaced: {delivered_row} -> {row}"),
    );
    // A time without offset is the batch timezone's: matched, and recorded as that instant.
    let local = chrono::Utc::now() - chrono::Duration::hours(west_hours);
    let naive = local.format("%Y-%m-%dT%H:%M:%S").to_string();
    let want_ms = (local.timestamp() + west_hours * 3600) * 1000;
    post(format!(
        r#"{{"correlationId": "erp-4", "destination": "5511999990004", "carrierName": "OI", "sentStatusCode": 2, "sentStatus": "SENT_SUCCESS", "sentDate": "{naive}"}}"#
    ));
    let got = codes(&s, "erp-4");
    check(
        got.2 == Some(want_ms),
        format!("{naive} in {zone} is not {want_ms}: (sent, delivered, sent_at) {got:?}"),
    );
    // A status by name only is mapped by the name table, wherever the name appears; an unknown
    // name changes nothing.
    post(r#"{"correlationId": "erp-6", "sentStatus": "DELIVERED_SUCCESS"}"#.into());
    let got = codes(&s, "erp-6");
    check(
        got.0.is_none() && got.1 == Some(4),
        format!("DELIVERED_SUCCESS by name is not a delivery report: (sent, delivered) {got:?}"),
    );
    let before = message_row(&s, "erp-8");
    post(r#"{"correlationId": "erp-8", "sentStatus": "QUEUED_SOMEWHERE"}"#.into());
    let row = message_row(&s, "erp-8");
    check(
        row == before,
        format!("an unknown name changed the message: {before} -> {row}"),
    );

    // Statuses in one body are applied in the order of their own times, not as listed: the
    // failure (earlier) is final, the report listed before it is a conflict.
    let line3: String = rusqlite::Connection::open(s.path("state/journal.db"))
        .unwrap()
        .query_row(
            "SELECT correlation_id FROM messages WHERE line = 3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    post(format!(
        r#"[{{"correlationId": "{line3}", "sentStatusCode": 2, "deliveredStatusCode": 4, "sentAt": {}, "deliveredAt": {}}},
            {{"correlationId": "{line3}", "sentStatusCode": 202, "sentAt": {t}}}]"#,
        t + 1000,
        t + 2000
    ));
    let got = codes(&s, &line3);
    check(
        got.0 == Some(202) && got.1.is_none(),
        format!("not applied in time order: (sent, delivered) {got:?}"),
    );
    let st = s.status();
    let m = &st["jobs"][0]["messages"];
    let counts = (
        m["delivered"].as_u64(),
        m["failed"].as_u64(),
        m["pending"].as_u64(),
    );
    check(
        counts == (Some(3), Some(2), Some(5)),
        format!("(delivered, failed, pending) {counts:?}"),
    );
    // Conflicts: SENT_SUCCESS and the report after erp-0's failure, NOT_DELIVERED after erp-2's
    // report, line 3's SENT_SUCCESS and report after its failure; each logged with its job, line
    // and id, and counted.
    let log = s.log();
    let conflicts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("conflicting status"))
        .collect();
    check(
        conflicts.len() == 6
            && conflicts
                .iter()
                .any(|l| l.contains("erp-0") && l.contains("line=2"))
            && conflicts
                .iter()
                .any(|l| l.contains("erp-2") && l.contains("line=4")),
        format!("conflict log lines: {conflicts:#?}"),
    );
    let metrics = scrape(ops);
    check(
        metrics.contains("smsdrop_status_conflicts_total 6"),
        "smsdrop_status_conflicts_total is not 6".into(),
    );
    assert!(
        !log.contains(WEBHOOK_TOKEN),
        "the webhook secret was logged"
    );
    let problems = problems.into_inner();
    assert!(
        problems.is_empty(),
        "{}\n\n{}\n{log}",
        problems.join("\n"),
        messages(&s)
    );
    assert!(stop(daemon).success());
}

/// A scripted status API: answers queued raw HTTP responses in order (then `200 []`), and keeps
/// every request's head.
#[derive(Clone)]
struct FakeApi {
    port: u16,
    answers: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Vec<u8>>>>,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl FakeApi {
    fn start() -> FakeApi {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api = FakeApi {
            port: l.local_addr().unwrap().port(),
            answers: Default::default(),
            heads: Default::default(),
        };
        let a = api.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = c.read_exact(&mut body);
                a.heads.lock().unwrap().push(head);
                let answer = a.answers.lock().unwrap().pop_front();
                let answer = answer.unwrap_or_else(|| FakeApi::json(200, "[]"));
                let _ = c.write_all(&answer);
            }
        });
        api
    }

    fn json(code: u16, body: &str) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body.as_bytes());
        r
    }

    fn push(&self, answer: Vec<u8>) {
        self.answers.lock().unwrap().push_back(answer);
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    fn config(&self) -> String {
        format!(
            "[status]\nmode = \"poll\"\napi_url = \"http://127.0.0.1:{}\"\nusername = \"acme\"\n\
             token_env = \"SMSDROP_TEST_STATUS_TOKEN\"\npoll_secs = 1\nsearch_after = \"1h\"\n",
            self.port
        )
    }
}

#[test]
fn a_redirect_from_the_status_api_is_not_followed() {
    let api = FakeApi::start();
    let elsewhere = FakeApi::start();
    let location = format!("http://127.0.0.1:{}/v1/sms/status/list", elsewhere.port);
    for _ in 0..5 {
        api.push(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .into_bytes(),
        );
    }
    let (s, _) = setup_with(|_| ((), api.config()));
    let daemon = s.daemon();
    wait_for("the redirect reported", Duration::from_secs(30), || {
        s.log()
            .lines()
            .any(|l| l.contains("redirect") && l.contains(&location))
    });
    let log = s.log();
    assert!(log.contains("[status] api_url"), "{log}");
    assert!(!api.heads().is_empty());
    assert!(
        elsewhere.heads().is_empty(),
        "the credentials went to another host: {:?}",
        elsewhere.heads()
    );
    assert!(
        !log.contains(support::statuses::TOKEN),
        "the token was logged"
    );
    assert!(stop(daemon).success());
}

/// `list` answer whose statuses carry only a name: mapped by the name table (4 and 104 are
/// delivery reports wherever they appear).
#[test]
fn a_status_given_by_name_only_is_mapped_by_the_name_table() {
    let api = FakeApi::start();
    let (s, _) = setup_with(|_| ((), api.config()));
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    s.wait_final(1, Duration::from_secs(60));
    let t = now_ms();
    api.push(FakeApi::json(
        200,
        &format!(
            r#"[{{"correlationId": "erp-2", "destination": "5511999990002", "carrierName": "VIVO", "sentStatusCode": 2, "sentAt": {t}, "deliveredStatusCode": 4, "deliveredAt": {}}}]"#,
            t + 1
        ),
    ));
    wait_for("the report recorded", Duration::from_secs(30), || {
        s.status()["jobs"][0]["messages"]["delivered"] == 1
    });
    let named: Vec<String> = (0..5)
        .map(|d| {
            format!(
                r#"{{"correlationId": "erp-{}", "sentStatus": "DELIVERED_SUCCESS"}}"#,
                2 * d
            )
        })
        .collect();
    api.push(FakeApi::json(
        200,
        &format!("{{\"statuses\": [{}]}}", named.join(",")),
    ));
    wait_for("the five recorded", Duration::from_secs(30), || {
        s.status()["jobs"][0]["messages"]["pending"] == 5
    });
    let st = s.status();
    let m = &st["jobs"][0]["messages"];
    assert_eq!(
        (m["delivered"].as_u64(), m["failed"].as_u64()),
        (Some(5), Some(0)),
        "{st:#}\n{}",
        messages(&s)
    );
    assert!(stop(daemon).success());
}

/// The daemon's peak resident memory (VmHWM), in KiB: the `smsdrop` process working in `dir`.
fn daemon_peak_kib(dir: &Path) -> u64 {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let cwd_ok = std::fs::read_link(p.join("cwd")).is_ok_and(|c| c == dir);
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if cwd_ok && comm.trim() == "smsdrop" {
            let status = std::fs::read_to_string(p.join("status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no smsdrop process in {}", dir.display());
}

/// A 63 MB `list` answer: read as it arrives, kept only as the fields used, applied in slices.
#[test]
fn a_63_mb_list_answer_is_read_in_bounded_memory() {
    let api = FakeApi::start();
    let (s, _) = setup_with(|_| ((), api.config()));
    let daemon = s.daemon();
    s.drop_in("faturas.csv", input());
    s.wait_final(1, Duration::from_secs(60));
    let t = now_ms();
    let mut body = String::with_capacity(64 << 20);
    body.push('[');
    let mut n = 0u64;
    while body.len() < 63_000_000 {
        body.push_str(&format!(
            r#"{{"id": "6f1c2a3e-0000-4000-8000-{n:012}", "correlationId": "other-system-{n}", "carrierId": 5, "carrierName": "VIVO", "destination": "55119{n:08}", "sentStatusCode": 2, "sentStatus": "SENT_SUCCESS", "sentAt": {t}, "sentDate": "2026-12-07T15:55:49Z", "deliveredStatusCode": 4, "deliveredStatus": "DELIVERED_SUCCESS", "deliveredAt": {t}, "deliveredDate": "2026-12-07T15:55:50Z", "campaignId": null, "extraInfo": "campanha de teste"}},"#
        ));
        n += 1;
    }
    for d in [0, 2, 4, 6, 8] {
        body.push_str(&format!(
            r#"{{"correlationId": "erp-{d}", "destination": "551199999000{d}", "carrierName": "VIVO", "sentStatusCode": 2, "sentAt": {t}, "deliveredStatusCode": 4, "deliveredAt": {}}},"#,
            t + 1
        ));
    }
    body.pop();
    body.push(']');
    let size = body.len();
    let before = daemon_peak_kib(s.work.path());
    api.push(FakeApi::json(200, &body));
    drop(body);
    wait_for("the answer recorded", Duration::from_secs(120), || {
        s.status()["jobs"][0]["messages"]["delivered"] == 5
    });
    let peak = daemon_peak_kib(s.work.path());
    println!(
        "{n} statuses in a {:.1} MB answer: daemon peak RSS {:.1} MiB (before it: {:.1} MiB)",
        size as f64 / 1e6,
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
    assert!(stop(daemon).success());
}
