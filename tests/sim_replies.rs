//! The simulator's replies (MO) over real HTTP on loopback: `GET /v1/sms/receive/list`
//! (consuming), `GET /v1/sms/receive/search` (a period, not consuming), their envelope, headers
//! and the 1 request/second budget shared with the status endpoints, injected replies, and the
//! push to a webhook. Fed by writing batch files into the folder the test simulator watches
//! (`<home>/success`), so no sshd is needed.

mod support;

use serde_json::{json, Value};
use smsdrop::sandbox::{replies, statuses};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::statuses::{options, StatusSim, TOKEN, USER};
use tempfile::TempDir;

/// A simulator on loopback, and a client that keeps to its pace unless told not to.
struct Sim {
    sim: StatusSim,
    home: PathBuf,
    agent: ureq::Agent,
    last: Option<Instant>,
    _dir: TempDir,
}

fn start(opts: statuses::StatusOptions) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join("success")).unwrap();
    let sim = StatusSim::start_with(&home, &dir.path().join("sim"), opts);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    Sim {
        sim,
        home,
        agent,
        last: None,
        _dir: dir,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Sim {
    /// A GET with these headers and query, right away (`paced`: a little over a second after
    /// the previous request, so the budget allows it). The status and the body.
    fn get_with(
        &mut self,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        paced: bool,
    ) -> (u16, String) {
        if let (true, Some(last)) = (paced, self.last) {
            let wait = Duration::from_millis(1100).saturating_sub(last.elapsed());
            std::thread::sleep(wait);
        }
        let mut req = self.agent.get(format!("{}{path}", self.sim.url()));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().expect("the simulator answers");
        self.last = Some(Instant::now());
        let body = resp.body_mut().read_to_string().unwrap();
        (resp.status().as_u16(), body)
    }

    /// A paced GET with the right credentials.
    fn get(&mut self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        self.get_with(
            path,
            query,
            &[("username", USER), ("authenticationtoken", TOKEN)],
            true,
        )
    }

    /// A paced GET answered 200 with JSON.
    fn json(&mut self, path: &str, query: &[(&str, &str)]) -> Value {
        let (code, body) = self.get(path, query);
        assert_eq!(code, 200, "{path} {query:?}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// A file the gateway moved to `success/`, written whole under its final name.
    fn feed(&self, name: &str, rows: &[(String, String)]) {
        let mut text = String::from("number;text;correlationId;\n");
        for (number, cid) in rows {
            text.push_str(&format!("{number};Fatura vence amanha;{cid};\n"));
        }
        text.push_str("EOF\n");
        let tmp = self.home.join(format!(".{name}"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.home.join("success").join(name)).unwrap();
    }

    /// Waits until `replies.log` holds `n` replies, then until all of them have arrived.
    fn wait_replies(&self, n: usize) -> Vec<[String; 5]> {
        let start = Instant::now();
        let mut got = self.sim.replies();
        while got.len() < n {
            assert!(start.elapsed() < Duration::from_secs(20), "{got:?}");
            std::thread::sleep(Duration::from_millis(20));
            got = self.sim.replies();
        }
        let last = got.iter().map(|r| r[4].parse::<i64>().unwrap()).max();
        let wait = last.unwrap_or(0) - now_ms();
        if wait >= 0 {
            std::thread::sleep(Duration::from_millis(wait as u64 + 20));
        }
        got
    }
}

fn ids(v: &Value) -> Vec<String> {
    let messages = v["messages"].as_array().unwrap_or_else(|| panic!("{v}"));
    messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

const LIST: &str = "/v1/sms/receive/list";
const SEARCH: &str = "/v1/sms/receive/search";

/// Rows for a file, and how many replies the simulator should decide for them: only messages
/// the carrier took (first status 2) can be answered.
fn campaign(n: usize) -> (Vec<(String, String)>, usize) {
    let rows: Vec<(String, String)> = (0..n)
        .map(|i| (format!("5511999{i:06}"), format!("c-{i}")))
        .collect();
    let replying = rows
        .iter()
        .filter(|(num, cid)| statuses::decide(num).sent == 2 && replies::decide(num, cid).is_some())
        .count();
    (rows, replying)
}

#[test]
fn list_hands_each_reply_out_once_and_search_finds_them_again() {
    let mut s = start(statuses::StatusOptions {
        reply_delay: Some(Duration::from_millis(300)),
        ..options(Duration::from_millis(100))
    });
    let (rows, replying) = campaign(80);
    assert!(replying >= 5, "{replying} replies: pick more rows");
    let fed = now_ms();
    s.feed("ACME.20261207.01.txt", &rows);
    let log = s.wait_replies(replying);
    assert_eq!(log.len(), replying, "{log:?}");

    let first = s.json(LIST, &[]);
    assert_eq!(first["total"], replying, "{first}");
    let listed = ids(&first);
    let logged: Vec<String> = log.iter().map(|r| r[0].clone()).collect();
    assert_eq!(listed, logged, "every decided reply, in arrival order");
    for (m, r) in first["messages"].as_array().unwrap().iter().zip(&log) {
        let (number, cid, text) = (&r[1], &r[2], &r[3]);
        assert_eq!(m["source"], *number, "{m}");
        assert_eq!(m["mt"]["correlationId"], *cid, "{m}");
        assert_eq!(m["messageText"], *text, "{m}");
        assert_eq!(Some(text.as_str()), replies::decide(number, cid), "{m}");
        assert_eq!(m["subAccount"], "ACME");
        assert_eq!(m["shortCode"], replies::SHORT_CODE);
        assert_eq!(m["mt"]["username"], USER);
        assert!(m["mt"]["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert_eq!(m["carrierName"], statuses::decide(number).carrier);
        let at = m["receivedAt"].as_i64().unwrap();
        assert!(at >= fed + 400, "{m}: a reply comes after its status");
        let date = chrono::DateTime::parse_from_rfc3339(m["receivedDate"].as_str().unwrap());
        assert_eq!(date.unwrap().timestamp(), at / 1000, "{m}");
        assert!(m["receivedDate"].as_str().unwrap().ends_with('Z'));
    }
    assert!(
        first["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["campaignAlias"] == "ACME.20261207.01"),
        "{first}"
    );
    for key in ["start", "end"] {
        assert!(
            first[key].as_str().is_some_and(|t| t.ends_with('Z')),
            "{first}"
        );
    }

    let again = s.json(LIST, &[]);
    assert_eq!(again["total"], 0, "list consumes: {again}");
    assert_eq!(again["messages"], json!([]));

    let found = s.json(SEARCH, &[]);
    assert_eq!(ids(&found), logged, "search is not consuming");
    assert_eq!(found["total"], replying);
    // An offset and fractions in the period, as a client may send them.
    let from = chrono::DateTime::from_timestamp_millis(fed - 1000)
        .unwrap()
        .with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).unwrap())
        .to_rfc3339();
    let found = s.json(SEARCH, &[("start", &from)]);
    assert_eq!(ids(&found), logged, "{from}");
    let before = s.json(
        SEARCH,
        &[
            ("start", "2016-09-12T00:00:00"),
            ("end", "2016-09-13T00:00:00"),
        ],
    );
    assert_eq!(before["total"], 0, "{before}");
    assert_eq!(s.json(SEARCH, &[])["total"], replying, "search again");

    let requests = s.sim.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.1 == "GET receive/list")
            .all(|r| r.2 == 200),
        "{requests:?}"
    );
}

#[test]
fn bad_credentials_are_refused_as_on_the_status_endpoints() {
    let mut s = start(options(Duration::from_millis(100)));
    s.sim
        .service
        .inject_reply(json!({"id": "mo-x", "messageText": "SIM"}));
    let wrong = [
        vec![],
        vec![("username", USER)],
        vec![("username", USER), ("authenticationtoken", "nope")],
        vec![("username", "other"), ("authenticationtoken", TOKEN)],
    ];
    for headers in &wrong {
        let status = s.get_with("/v1/sms/status/list", &[], headers, false).0;
        for path in [LIST, SEARCH] {
            let (code, body) = s.get_with(path, &[], headers, false);
            assert_eq!(code, status, "{path} {headers:?}: {body}");
            assert_eq!(code, 401, "{path} {headers:?}: {body}");
        }
    }
    assert_eq!(
        ids(&s.json(LIST, &[])),
        ["mo-x"],
        "refused lists took nothing"
    );
}

#[test]
fn one_budget_of_a_request_a_second_for_statuses_and_replies() {
    let mut s = start(options(Duration::from_millis(100)));
    s.sim
        .service
        .inject_reply(json!({"id": "mo-1", "messageText": "2"}));
    let good = [("username", USER), ("authenticationtoken", TOKEN)];
    assert_eq!(s.get("/v1/sms/status/list", &[]).0, 200);
    assert_eq!(
        s.get_with(LIST, &[], &good, false).0,
        429,
        "right after a status list"
    );
    assert_eq!(s.get_with(SEARCH, &[], &good, false).0, 429);
    let (code, body) = s.get(SEARCH, &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        s.get_with(LIST, &[], &good, false).0,
        429,
        "right after a search"
    );
    assert_eq!(
        s.get_with("/v1/sms/status/list", &[], &good, false).0,
        429,
        "a status list right after a reply search"
    );
    assert_eq!(ids(&s.json(LIST, &[])), ["mo-1"], "a 429 took nothing");
    let log: Vec<(String, u16)> = s.sim.requests().into_iter().map(|r| (r.1, r.2)).collect();
    let want = [
        ("GET list", 200),
        ("GET receive/list", 429),
        ("GET receive/search", 429),
        ("GET receive/search", 200),
        ("GET receive/list", 429),
        ("GET list", 429),
        ("GET receive/list", 200),
    ];
    let want: Vec<(String, u16)> = want.iter().map(|(w, c)| (w.to_string(), *c)).collect();
    assert_eq!(log, want);
}

#[test]
fn a_bad_date_is_400() {
    let mut s = start(options(Duration::from_millis(100)));
    for query in [
        [("start", "yesterday"), ("end", "2016-09-13T00:00:00")],
        [
            ("start", "2016-09-12T00:00:00"),
            ("end", "2016-13-01T00:00:00"),
        ],
        [("start", "2016-09-12T00:00:00"), ("end", "12/09/2016")],
        [
            ("start", "2016-09-13T00:00:00"),
            ("end", "2016-09-12T00:00:00"),
        ],
    ] {
        let (code, body) = s.get(SEARCH, &query);
        assert_eq!(code, 400, "{query:?}: {body}");
    }
    for start in ["2016-09-12T00:00:00Z", "2016-09-12T00:00:00-03:00"] {
        assert_eq!(s.get(SEARCH, &[("start", start)]).0, 200, "{start}");
    }
}

#[test]
fn injected_replies_unknown_repeated_late_or_old_are_served_as_given() {
    let mut s = start(options(Duration::from_millis(100)));
    let now = now_ms();
    let reply = |id: &str, received: Option<i64>| {
        let mut r = json!({
            "id": id, "subAccount": "ACME", "source": "5511999000001", "shortCode": "28128",
            "messageText": "SAIR", "mt": {"correlationId": "nobody-sent-this"},
        });
        if let Some(at) = received {
            r["receivedAt"] = json!(at);
        }
        r
    };
    let hour = 3_600_000;
    let service = &s.sim.service;
    service.inject_reply(reply("mo-new", None));
    service.inject_reply(reply("mo-twice", None));
    service.inject_reply(reply("mo-twice", None));
    service.inject_reply(reply("mo-late", Some(now - hour)));
    service.inject_reply(reply("mo-4-days", Some(now - 96 * hour)));
    service.inject_reply(reply("mo-6-days", Some(now - 144 * hour)));
    let logged: Vec<String> = s.sim.replies().into_iter().map(|r| r[0].clone()).collect();
    let all = [
        "mo-new",
        "mo-twice",
        "mo-twice",
        "mo-late",
        "mo-4-days",
        "mo-6-days",
    ];
    assert_eq!(logged, all, "every injected reply is logged");

    let listed = s.json(LIST, &[]);
    assert_eq!(
        ids(&listed),
        ["mo-new", "mo-twice", "mo-twice", "mo-late"],
        "list keeps 3 days, in arrival order, duplicates and all"
    );
    assert!(
        listed["messages"][0]["receivedDate"].is_string(),
        "filled in"
    );
    let recent = chrono::DateTime::from_timestamp_millis(now - hour / 2).unwrap();
    let recent = recent.format("%Y-%m-%dT%H:%M:%S").to_string();
    let found = s.json(SEARCH, &[("start", &recent)]);
    assert_eq!(ids(&found), ["mo-new", "mo-twice", "mo-twice"], "{recent}");
    let found = s.json(SEARCH, &[]);
    assert_eq!(ids(&found), &all[..5], "search keeps 5 days");
    let found = s.json(SEARCH, &[("subAccount", "OTHER")]);
    assert_eq!(found["total"], 0, "{found}");
}

#[test]
fn list_returns_at_most_a_thousand_a_call() {
    let mut s = start(options(Duration::from_millis(100)));
    for i in 0..1001 {
        s.sim
            .service
            .inject_reply(json!({"id": format!("mo-{i}"), "messageText": "SIM"}));
    }
    let first = s.json(LIST, &[]);
    assert_eq!(first["total"], 1000);
    assert_eq!(ids(&first).first().map(String::as_str), Some("mo-0"));
    assert_eq!(ids(&s.json(LIST, &[])), ["mo-1000"]);
    assert_eq!(s.json(LIST, &[])["total"], 0);
}

#[test]
fn bare_array_answers_a_top_level_array() {
    let mut s = start(statuses::StatusOptions {
        bare_array: true,
        ..options(Duration::from_millis(100))
    });
    s.sim
        .service
        .inject_reply(json!({"id": "mo-a", "messageText": "2"}));
    let listed = s.json(LIST, &[]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["id"], "mo-a");
    let found = s.json(SEARCH, &[]);
    assert_eq!(found[0]["id"], "mo-a", "{found}");
    assert_eq!(s.json(LIST, &[]), json!([]));
}

/// Reads one HTTP request from the listener and answers it with `status`: the request line
/// and the JSON body.
fn take_one(listener: &TcpListener, status: &str) -> (String, Value) {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    assert!(length > 0, "{request_line}: want a JSON body with a length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    (
        request_line.trim().to_owned(),
        serde_json::from_slice(&body).unwrap(),
    )
}

#[test]
fn each_reply_is_pushed_as_it_arrives_until_the_webhook_takes_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/sms-reply?token=t",
        listener.local_addr().unwrap()
    );
    let s = start(statuses::StatusOptions {
        reply_webhook: Some(url),
        reply_delay: Some(Duration::from_millis(200)),
        ..options(Duration::from_millis(100))
    });
    s.sim
        .service
        .inject_reply(json!({"id": "mo-pushed", "messageText": "Stop"}));
    let (line, body) = take_one(&listener, "503 Service Unavailable");
    assert_eq!(line, "POST /sms-reply?token=t HTTP/1.1");
    assert_eq!(body["id"], "mo-pushed", "one object per push: {body}");
    let (_, body) = take_one(&listener, "200 OK");
    assert_eq!(body["id"], "mo-pushed", "a refused push is tried again");

    // A decided reply is pushed too, once it arrives.
    let (rows, replying) = campaign(40);
    assert!(replying > 0);
    s.feed("ACME.20261207.02.txt", &rows);
    let log = s.wait_replies(1 + replying);
    let (_, body) = take_one(&listener, "200 OK");
    assert_eq!(body["id"].as_str(), Some(log[1][0].as_str()), "{body}");
    assert_eq!(
        body["mt"]["correlationId"].as_str(),
        Some(log[1][2].as_str())
    );
}
