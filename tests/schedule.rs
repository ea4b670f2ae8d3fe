//! Send windows end to end, against the real OpenSSH sshd and the gateway simulator: a window
//! that opens a little after the daemon starts; exports dropped before it opens are converted and
//! held (nothing reaches the server, `status` names them and the opening), and every batch is on
//! the server shortly after the window opens.

mod support;

use chrono::{Duration as Span, Timelike, Utc};
use std::time::{Duration, Instant};
use support::setup::{free_port, noon_zone, show, stop, Login, Setup};

/// The body of a GET to the operations endpoint.
fn get(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

const FILES: usize = 3;
const ROWS: usize = 5;

/// The next whole minute at least 25 s away, in the tests' zone, as (UTC instant, "HH:MM").
fn opening() -> (chrono::DateTime<Utc>, String, String) {
    let tz: chrono_tz::Tz = noon_zone().parse().unwrap();
    let now = Utc::now();
    let mut at = (now + Span::seconds(60))
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    if at - now < Span::seconds(25) {
        at += Span::seconds(60);
    }
    let local = at.with_timezone(&tz);
    let end = local + Span::hours(2);
    (
        at,
        local.format("%H:%M").to_string(),
        end.format("%H:%M").to_string(),
    )
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn exports_before_the_window_opens_are_held_then_all_sent_when_it_opens() {
    let (opens, start, end) = opening();
    let port = free_port();
    let s = Setup::with(
        Login::Key,
        &format!(
            "[schedule]\nwindows = [\"daily {start}-{end}\"]\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    let base = format!("http://127.0.0.1:{port}");
    let daemon = s.daemon();
    for f in 0..FILES {
        let mut csv = String::from("numero;mensagem;id\n");
        for r in 0..ROWS {
            csv.push_str(&format!("1199{f:03}{r:04};Lembrete {f}-{r};w{f}-{r}\n"));
        }
        s.drop_in(&format!("e{f}.csv"), csv);
    }
    // Every export is taken and held.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = s.status();
        let held = st["held"].as_array().unwrap().len();
        if held == FILES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exports not held in time: {st:#}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        Utc::now() < opens,
        "the test was too slow to see the window closed"
    );
    s.wait_rounds(2);
    assert!(s.remote("upload").is_empty(), "sent while closed");
    assert_eq!(s.gateway.total_messages(), 0);
    let text = s.run(&["status"]);
    assert!(text.status.success(), "{}", show(&text));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("closed, opens ") && text.contains(&format!(" {start} (in")),
        "{text}"
    );
    assert!(
        text.contains("held:    3 job(s) waiting for the send window: 1, 2, 3"),
        "{text}"
    );
    assert!(
        text.contains("waiting for the send window: opens"),
        "{text}"
    );
    let metrics = get(&format!("{base}/metrics"));
    assert!(
        metrics.contains("smsdrop_jobs{state=\"held\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("smsdrop_schedule_open{subaccount=\"ACME\"} 0"),
        "{metrics}"
    );
    let page = get(&format!("{base}/"));
    assert!(
        page.contains("3 job(s) held for their send window"),
        "{page}"
    );
    let check = s.run(&["check"]);
    let check = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.contains("send window: [schedule] for *: closed now; next opening"),
        "{check}"
    );

    // Opened: every batch on the server shortly after.
    let processed = s.gateway.wait_processed(FILES, Duration::from_secs(120));
    let landed = Utc::now();
    assert_eq!(processed.len(), FILES, "{}", s.log());
    assert!(landed >= opens, "a batch went before the window opened");
    let late = (landed - opens).num_milliseconds();
    assert!(
        late < 15_000,
        "batches landed {late} ms after the window opened"
    );
    s.wait_final(FILES, Duration::from_secs(60));
    let metrics = get(&format!("{base}/metrics"));
    assert!(
        metrics.contains("smsdrop_schedule_open{subaccount=\"ACME\"} 1"),
        "{metrics}"
    );
    assert!(stop(daemon).success(), "{}", s.log());
    assert_eq!(s.gateway.total_messages(), FILES * ROWS);
    let messages = s.gateway.messages();
    assert!(messages.values().all(|&n| n == 1), "{messages:?}");
    println!(
        "send window opened at {opens}; {FILES} held exports on the server {late} ms after it opened"
    );
}
