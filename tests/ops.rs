//! The operations endpoint (`[http] listen`) against a running daemon, the real sshd and the
//! test gateway: `/metrics` parsed as Prometheus text and checked against the journal and the
//! server, `/healthz` turning 503 while the engine is stuck on a frozen server and 200 after,
//! the bearer token, and the status page in headless Chromium (its DOM, and a screenshot).

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use support::setup::{free_port, stop, wait_for, Login, Setup};

/// A setup whose daemon serves `[http]` on a free port, with `extra` lines in that section.
fn setup(extra: &str) -> (Setup, String) {
    let s = Setup::new(Login::Key);
    let port = free_port();
    let mut cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    cfg.push_str(&format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n"));
    std::fs::write(s.path("smsdrop.toml"), cfg).unwrap();
    (s, format!("http://127.0.0.1:{port}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `(status, body)` of a GET, optionally with a bearer token.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn wait_up(base: &str) {
    wait_for("the HTTP endpoint", Duration::from_secs(20), || {
        agent().get(&format!("{base}/healthz")).call().is_ok()
    });
}

/// Samples: (name, sorted labels) → value.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Samples (name, labels) → value.
fn scrape(base: &str) -> Samples {
    let (code, text) = get(&format!("{base}/metrics"), None);
    assert_eq!(code, 200, "{text}");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                out.insert(
                    (format!("{}_count", s.metric), labels.clone()),
                    h.iter().map(|b| b.count).fold(0.0, f64::max),
                );
                continue;
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert((s.metric, labels), v);
    }
    out
}

fn metric(m: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    *m.get(&(name.to_owned(), l.clone()))
        .unwrap_or_else(|| panic!("no {name}{l:?} in {:?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn metrics_agree_with_the_journal_and_the_server() {
    let (s, base) = setup("");
    let daemon = s.daemon();
    wait_up(&base);
    s.drop_sample("protheus-cobranca.csv", "a.csv");
    s.drop_sample("com-erros.csv", "b.csv");
    s.drop_in("empty.csv", "celular;mensagem\n");
    let st = s.wait_final(3, Duration::from_secs(60));
    let jobs = st["jobs"].as_array().unwrap();
    let m = scrape(&base);
    for state in [
        "detected",
        "converted",
        "uploading",
        "uploaded",
        "succeeded",
        "failed",
        "expired",
        "rejected",
    ] {
        let want = jobs.iter().filter(|j| j["state"] == state).count() as f64;
        assert_eq!(
            metric(&m, "smsdrop_jobs", &[("state", state)]),
            want,
            "{state}"
        );
        assert!(m.contains_key(&(
            "smsdrop_jobs_today".to_owned(),
            vec![("state".to_owned(), state.to_owned())]
        )));
    }
    let sum = |k: &str| jobs.iter().map(|j| j[k].as_u64().unwrap()).sum::<u64>() as f64;
    let rejected = sum("rows_rejected");
    assert_eq!(
        metric(&m, "smsdrop_rows_total", &[("outcome", "rejected")]),
        rejected
    );
    assert_eq!(
        metric(&m, "smsdrop_rows_total", &[("outcome", "sent")]),
        sum("rows") - rejected
    );
    let success: Vec<PathBuf> = s
        .remote("success")
        .iter()
        .map(|n| s.sshd.home().join("success").join(n))
        .collect();
    assert_eq!(
        metric(&m, "smsdrop_batches_uploaded_total", &[]),
        success.len() as f64
    );
    let bytes: u64 = success
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(metric(&m, "smsdrop_upload_bytes_total", &[]), bytes as f64);
    assert_eq!(
        metric(&m, "smsdrop_upload_seconds_count", &[]),
        success.len() as f64
    );
    assert_eq!(metric(&m, "smsdrop_sftp_connected", &[]), 1.0);
    assert_eq!(metric(&m, "smsdrop_oldest_pending_seconds", &[]), 0.0);
    assert_eq!(
        metric(
            &m,
            "smsdrop_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for t in [
        "smsdrop_last_successful_poll_timestamp_seconds",
        "smsdrop_last_round_timestamp_seconds",
    ] {
        let v = metric(&m, t, &[]);
        assert!((now - v).abs() < 60.0, "{t} = {v}, now {now}");
    }
    // Without show_messages, a job's page shows no message text.
    let (code, page) = get(&format!("{base}/jobs/1"), None);
    assert_eq!(code, 200);
    assert!(
        !page.contains("fatura") && !page.contains("Fatura"),
        "{page}"
    );
    // The status summary line says the same.
    let out = s.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("summary: 0 pending, 0 failed today"),
        "{text}"
    );
    assert!(stop(daemon).success());
}

#[test]
fn healthz_says_503_while_the_engine_is_stuck_and_ok_after() {
    let (mut s, base) = setup("health_round_secs = 10");
    s.edit_config("timeout_secs = 5", "timeout_secs = 40");
    let daemon = s.daemon();
    wait_up(&base);
    wait_for("healthy", Duration::from_secs(20), || {
        get(&format!("{base}/healthz"), None).0 == 200
    });
    s.drop_sample("protheus-cobranca.csv", "a.csv");
    s.wait_final(1, Duration::from_secs(60));
    // A frozen server: the engine's next upload hangs (up to timeout_secs).
    s.sshd.freeze();
    s.drop_sample("lembretes-tab.txt", "b.txt");
    let mut why = String::new();
    wait_for("503 from /healthz", Duration::from_secs(35), || {
        let (code, body) = get(&format!("{base}/healthz"), None);
        why = body;
        code == 503
    });
    assert!(why.contains("has not completed a round"), "{why}");
    s.sshd.thaw();
    wait_for("200 again", Duration::from_secs(60), || {
        get(&format!("{base}/healthz"), None).0 == 200
    });
    s.wait_final(2, Duration::from_secs(60));
    assert!(stop(daemon).success());
}

#[test]
fn the_token_guards_every_path_but_healthz() {
    let (s, base) = setup("token_env = \"SMSDROP_TEST_HTTP_TOKEN\"");
    let mut cmd = s.command(&["run"]);
    cmd.env("SMSDROP_TEST_HTTP_TOKEN", "ops-secret")
        .stderr(std::fs::File::create(s.path("daemon.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    wait_up(&base);
    for path in ["/", "/metrics", "/jobs/1"] {
        let (code, _) = get(&format!("{base}{path}"), None);
        assert_eq!(code, 401, "{path} without a token");
        assert_eq!(
            get(&format!("{base}{path}"), Some("guess")).0,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(get(&format!("{base}/"), Some("ops-secret")).0, 200);
    assert_eq!(get(&format!("{base}/metrics"), Some("ops-secret")).0, 200);
    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!s.log().contains("ops-secret"), "the token was logged");
}

/// Headless Chromium: the page's DOM after rendering, and a screenshot.
fn chromium(args: &[&str]) -> std::process::Output {
    let bin = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect(
        "Chromium is needed for this test (Debian: apt-get install chromium; .ci/run installs it)",
    );
    std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_status_page_in_a_real_browser() {
    let (s, base) = setup("");
    let daemon = s.daemon();
    wait_up(&base);
    let samples = [
        "protheus-cobranca.csv",
        "excel-utf8-bom.csv",
        "lembretes-tab.txt",
        "com-erros.csv",
    ];
    for name in samples {
        s.drop_sample(name, name);
    }
    s.wait_final(samples.len(), Duration::from_secs(60));
    let dom = chromium(&["--dump-dom", &format!("{base}/")]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("<table id=\"jobs\""), "{dom}");
    for name in samples {
        assert!(dom.contains(name), "{name} is not on the page:\n{dom}");
    }
    assert!(dom.contains("0 pending, 0 failed today"), "{dom}");
    // com-erros.csv's page lists its rejected rows with masked numbers, and no full number.
    let st = s.status();
    let id = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with("com-erros.csv"))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let page = chromium(&["--dump-dom", &format!("{base}/jobs/{id}")]);
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    assert!(page.contains("<table id=\"rejected\""), "{page}");
    // Line 6 of com-erros.csv: 11987654325, a valid number in a row with an empty text.
    assert!(
        page.contains("119****4325"),
        "no masked number on the job page:\n{page}"
    );
    assert!(
        !page.contains("11987654325"),
        "a full number on the job page:\n{page}"
    );
    assert!(page.contains("<table id=\"history\""), "{page}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let out = chromium(&[
        "--window-size=1100,520",
        &format!("--screenshot={}", shot.display()),
        &format!("{base}/"),
    ]);
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    eprintln!("screenshot: {}", shot.display());
    assert!(stop(daemon).success());
}

#[test]
fn systemd_hears_ready_status_and_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let (s, base) = setup("");
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // systemd names the watched process: the daemon's own pid (a shell execs it, keeping $$).
    let mut cmd = s.command(&[]);
    let bin = cmd.get_program().to_owned();
    cmd.arg("-c")
        .arg("export WATCHDOG_PID=$$; exec \"$0\" run")
        .arg(bin);
    let mut cmd = {
        let mut sh = std::process::Command::new("sh");
        sh.args(cmd.get_args()).current_dir(s.path("")).envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        );
        sh
    };
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(std::fs::File::create(s.path("daemon.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut heard = vec![];
    let mut buf = [0u8; 4096];
    let start = std::time::Instant::now();
    // READY=1 first (journal open, first scan done), then WATCHDOG=1 at least every second.
    while start.elapsed() < Duration::from_secs(6) {
        let n = sock.recv(&mut buf).expect("a notification within 20 s");
        heard.push((
            start.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    let first = &heard[0].1;
    assert!(first.contains("READY=1"), "{heard:?}");
    assert!(
        first.contains("STATUS=0 pending, 0 failed today"),
        "{heard:?}"
    );
    let pings: Vec<Duration> = heard
        .iter()
        .filter(|h| h.1.contains("WATCHDOG=1"))
        .map(|h| h.0)
        .collect();
    assert!(pings.len() >= 4, "{heard:?}");
    for w in pings.windows(2) {
        assert!(
            w[1] - w[0] <= Duration::from_millis(1500),
            "watchdog gap {:?}: {heard:?}",
            w[1] - w[0]
        );
    }
    let _ = base;
}

#[test]
fn message_texts_only_when_asked() {
    let (s, base) = setup("show_messages = true");
    let daemon = s.daemon();
    wait_up(&base);
    s.drop_sample("protheus-cobranca.csv", "a.csv");
    s.wait_final(1, Duration::from_secs(60));
    let (code, page) = get(&format!("{base}/jobs/1"), None);
    assert_eq!(code, 200);
    assert!(page.contains("<table id=\"messages\""), "{page}");
    assert!(page.contains("fatura"), "{page}");
    assert!(page.contains("****"), "{page}");
    assert!(stop(daemon).success());
}

/// Issue 19 item 6: the texts of an `inbox/NAME/` input are shown as its subaccount's template
/// made them (what the gateway got), not as `[input]` would read the file.
#[test]
fn message_texts_of_a_subaccount_come_from_its_template() {
    let (s, base) =
        setup("show_messages = true\n[subaccounts.COBRA]\ntemplate = \"Aviso para {Nome}\"");
    let daemon = s.daemon();
    wait_up(&base);
    s.drop_sample("protheus-cobranca.csv", "COBRA/a.csv");
    s.wait_final(1, Duration::from_secs(60));
    let (code, page) = get(&format!("{base}/jobs/1"), None);
    assert_eq!(code, 200);
    assert!(page.contains("<table id=\"messages\""), "{page}");
    assert!(page.contains("Aviso para Jos"), "{page}");
    assert!(!page.contains("fatura"), "{page}");
    assert!(stop(daemon).success());
}
