//! Replies end to end: the real sshd and test gateway take the files, smsdrop's simulator (real
//! HTTP on loopback) decides which customers answer (some opting out, with punctuation and
//! accents), and smsdrop fetches the answers and writes them to the outbox. A SIGKILL right after
//! a consuming `list` answer loses nothing (`search` finds what it handed out); every reply is in
//! exactly one outbox file with its job, line and correlation id; a second export meets the
//! opted-out numbers and none of them reaches the gateway.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::setup::{stop, wait_for, Login, Setup};
use support::statuses::{options, StatusSim};

const ROWS: usize = 60;

fn export(tag: &str) -> String {
    let mut s = String::from("numero;mensagem;id\n");
    for r in 0..ROWS {
        s.push_str(&format!("11988{r:06};Lembrete {tag} {r};{tag}-{r}\n"));
    }
    s
}

/// `(reply id -> fields)` of every outbox file, failing on a reply id seen twice.
fn outbox(s: &Setup) -> BTreeMap<String, Vec<String>> {
    let mut seen = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(s.path("outbox")) else {
        return seen;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        assert!(
            name.starts_with("ACME.replies.") && name.ends_with(".csv"),
            "{name}"
        );
        let text = std::fs::read_to_string(e.path()).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("received_at;number;text;correlation_id;erp_correlation_id;job;input;line;reply_id;carrier;short_code;opt_out")
        );
        for l in lines {
            let f: Vec<String> = l.split(';').map(str::to_owned).collect();
            assert_eq!(f.len(), 12, "{l}");
            let id = f[8].clone();
            assert!(seen.insert(id.clone(), f).is_none(), "reply {id} twice");
        }
    }
    seen
}

/// A workspace and the simulator, replies pushed to `reply_webhook` when given, statuses and
/// replies 200 ms after each file.
fn start(reply_webhook: Option<String>) -> (Setup, StatusSim) {
    let s = Setup::new(Login::Key);
    let sim = StatusSim::start_with(
        &s.sshd.home(),
        &s.path("sim"),
        smsdrop::sandbox::statuses::StatusOptions {
            reply_webhook,
            ..options(Duration::from_millis(200))
        },
    );
    (s, sim)
}

/// Appends `text` to the workspace's config (before the daemon starts).
fn add_config(s: &Setup, text: &str) {
    let mut cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    cfg.push_str(text);
    std::fs::write(s.path("smsdrop.toml"), cfg).unwrap();
}

/// A daemon whose first `list` answer holding replies aborts it before it records them.
fn daemon_crashing_after_list(s: &Setup) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.path("daemon.log"))
        .unwrap();
    let mut cmd = s.command(&["run"]);
    cmd.env("SMSDROP_TEST_CRASH_AT", "replies-listed")
        .stdout(Stdio::null())
        .stderr(log);
    cmd.spawn().unwrap()
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn every_reply_once_through_a_kill_after_list_and_no_text_to_who_opted_out() {
    let s = Setup::new(Login::Key);
    let sim = StatusSim::start_with(
        &s.sshd.home(),
        &s.path("sim"),
        smsdrop::sandbox::statuses::StatusOptions {
            reply_delay: Some(Duration::from_millis(300)),
            ..options(Duration::from_millis(300))
        },
    );
    // Statuses polled too: one budget of a request a second for both.
    add_config(
        &s,
        &sim.config("poll", "poll_secs = 1\nsearch_after = \"2s\""),
    );
    add_config(
        &s,
        "[replies]\nmode = \"poll\"\npoll_secs = 1\nreconcile = \"1m\"\nflush_secs = 1\n\
         outbox = \"outbox\"\n\
         [report]\non_outcome = [\"sh\", \"-c\", \"echo $SMSDROP_EVENT $SMSDROP_REPLIES_CSV >> hooks.log\"]\n",
    );

    let mut first = daemon_crashing_after_list(&s);
    s.drop_in("campanha.csv", export("a"));
    // The kill: the first `list` answer that held replies, not recorded.
    wait_for("the crash after list", Duration::from_secs(60), || {
        s.log()
            .contains("test crash point \"replies-listed\" reached")
    });
    let exit = first.wait().unwrap();
    assert!(!exit.success(), "the crash point aborts");
    let daemon = s.daemon();
    // Every reply the simulator decided is in the outbox once.
    let deadline = Instant::now() + Duration::from_secs(90);
    let decided = loop {
        let decided = sim.replies();
        let got = outbox(&s);
        if !decided.is_empty() && got.len() == decided.len() {
            break decided;
        }
        assert!(
            Instant::now() < deadline,
            "outbox has {} of {} replies\n{}",
            got.len(),
            decided.len(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        decided.len() >= 5,
        "too few replies to prove much: {decided:?}"
    );
    let got = outbox(&s);
    wait_for(
        "a status list beside the replies",
        Duration::from_secs(30),
        || sim.requests().iter().any(|r| r.1 == "GET list"),
    );
    let all = sim.requests();
    let requests: Vec<String> = all.iter().map(|r| r.1.clone()).collect();
    assert!(
        requests.iter().any(|r| r.contains("receive/search")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("receive/list")),
        "{requests:?}"
    );
    assert!(requests.iter().any(|r| r == "GET list"), "{requests:?}");
    // Within each daemon's run (the first was killed; the second starts with a search), never
    // two requests of either kind less than a second apart.
    let restart = all
        .iter()
        .skip(1)
        .position(|r| r.1.contains("receive/search"))
        .map_or(all.len(), |i| i + 1);
    for part in [&all[..restart], &all[restart..]] {
        for w in part.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= 1000,
                "{} then {} {} ms apart",
                w[0].1,
                w[1].1,
                w[1].0 - w[0].0
            );
        }
    }
    let mut opted: BTreeSet<String> = BTreeSet::new();
    for d in &decided {
        let f = &got[&d[0]];
        assert_eq!(f[1], d[1], "number of {}", d[0]);
        assert_eq!(f[3], d[2], "correlation id of {}", d[0]);
        assert_eq!(f[5], "1", "job of {}", d[0]);
        assert_eq!(f[6], "campanha.csv");
        let row: usize = d[2].trim_start_matches("a-").parse().unwrap();
        assert_eq!(f[7], (row + 2).to_string(), "line of {}", d[0]);
        let out = smsdrop::sandbox::replies::OPT_OUTS.contains(&d[3].as_str());
        assert_eq!(f[11], if out { "yes" } else { "no" }, "{f:?}");
        if out {
            opted.insert(d[1].clone());
        }
    }
    assert!(!opted.is_empty(), "no reply opted out: {decided:?}");
    wait_for("the replies hook", Duration::from_secs(20), || {
        std::fs::read_to_string(s.path("hooks.log")).is_ok_and(|h| h.contains("replies "))
    });

    // The list as it stands: the replies' opt-outs, and numbers whose first status was 204
    // (the simulator blocks some), once the first campaign's statuses are in.
    wait_for(
        "the first campaign's statuses",
        Duration::from_secs(60),
        || s.status()["jobs"][0]["messages"]["pending"] == 0,
    );
    let out = s.run(&["optout", "export"]);
    assert!(out.status.success(), "{}", support::setup::show(&out));
    let listed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split(';').nth(1).map(str::to_owned))
        .collect();
    assert!(opted.is_subset(&listed), "{opted:?} not all in {listed:?}");
    let opted = listed;
    // A second export to the same numbers: the opted-out ones are not sent.
    let before = s.gateway.total_messages();
    s.drop_in("campanha2.csv", export("b"));
    s.wait_final(2, Duration::from_secs(60));
    assert!(stop(daemon).success(), "{}", s.log());
    let sent_b: BTreeSet<String> = s
        .gateway
        .messages()
        .keys()
        .filter(|k| k.starts_with("b-"))
        .cloned()
        .collect();
    assert_eq!(sent_b.len(), ROWS - opted.len(), "{}", s.log());
    assert_eq!(s.gateway.total_messages(), before + ROWS - opted.len());
    for n in &opted {
        let row: usize = n[n.len() - 6..].parse().unwrap();
        assert!(
            !sent_b.contains(&format!("b-{row}")),
            "{n} opted out and was sent"
        );
    }
    let result =
        std::fs::read_to_string(s.path("state/reports/2-campanha2.csv.result.csv")).unwrap();
    assert_eq!(
        result.matches(";opted_out;").count(),
        opted.len(),
        "{result}"
    );
    println!(
        "replies: {} decided, each once in the outbox after a SIGKILL following list; {} opted out, none texted again",
        decided.len(),
        opted.len()
    );
}

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn pushed_replies_twice_out_of_order_or_unknown_are_each_written_once() {
    let port = support::setup::free_port();
    let token = support::statuses::WEBHOOK_TOKEN;
    let (s, sim) = start(Some(format!(
        "http://127.0.0.1:{port}/sms-reply?token={token}"
    )));
    add_config(
        &s,
        &format!(
            "[status]\nwebhook_listen = \"127.0.0.1:{port}\"\n\
             webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\"\n\
             [replies]\nmode = \"webhook\"\nflush_secs = 1\noutbox = \"outbox\"\n"
        ),
    );
    let daemon = s.daemon();
    s.drop_in("campanha.csv", export("a"));
    wait_for("replies decided", Duration::from_secs(60), || {
        sim.replies().len() >= 5
    });
    // A reply to no message of ours, twice, and one older than the rest; and one by GET.
    let unknown = serde_json::json!({"id": "mo-x1", "source": "5511900000009",
        "messageText": "quem fala?", "receivedAt": 1_765_000_000_000_i64,
        "mt": {"correlationId": "not-ours"}});
    sim.service.inject_reply(unknown.clone());
    sim.service.inject_reply(unknown);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |q: &str| {
        agent
            .get(&format!("http://127.0.0.1:{port}/sms-reply?{q}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        get("id=mo-g1&source=5511900000008&messageText=SIM"),
        401,
        "no token"
    );
    let q =
        format!("token={token}&id=mo-g1&source=5511900000008&messageText=PARE.&correlationId=zz");
    assert_eq!(get(&q), 200);
    assert_eq!(get(&q), 200, "again: still 200, still once");
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = loop {
        let decided = sim.replies();
        let mut ids: BTreeSet<String> = decided.iter().map(|d| d[0].clone()).collect();
        ids.insert("mo-g1".into());
        let got = outbox(&s);
        if got.len() == ids.len() && !decided.is_empty() {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "outbox {:?} of {:?}\n{}",
            got.keys(),
            ids,
            s.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let got = outbox(&s);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let x = &got["mo-x1"];
    assert_eq!(
        (x[5].as_str(), x[6].as_str(), x[7].as_str()),
        ("", "", ""),
        "{x:?}"
    );
    assert_eq!(got["mo-g1"][11], "yes", "PARE. opts out");
    assert!(stop(daemon).success(), "{}", s.log());
}

/// `mode = "both"`: replies pushed while the push URL is down are found by `search` (at start and
/// every `reconcile`); those pushed later arrive by the push; each once in the outbox.
#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn both_mode_finds_what_the_push_missed_by_search() {
    let port = support::setup::free_port();
    let token = support::statuses::WEBHOOK_TOKEN;
    // The simulator pushes to a path nobody serves (a misconfigured URL at the gateway): every
    // push is lost; only `search` can bring the replies.
    let (s, sim) = start(Some(format!(
        "http://127.0.0.1:{port}/nowhere?token={token}"
    )));
    add_config(
        &s,
        &sim.config(
            "off",
            &format!(
                "webhook_listen = \"127.0.0.1:{port}\"\n\
                 webhook_token_env = \"SMSDROP_TEST_WEBHOOK_TOKEN\""
            ),
        ),
    );
    add_config(
        &s,
        "[replies]\nmode = \"both\"\nreconcile = \"1m\"\nflush_secs = 1\noutbox = \"outbox\"\n",
    );
    let mut first = s.daemon();
    s.drop_in("campanha.csv", export("a"));
    wait_for("replies decided", Duration::from_secs(60), || {
        sim.replies().len() >= 5
    });
    std::thread::sleep(Duration::from_millis(500));
    // None came by the push; a restart searches.
    assert!(outbox(&s).is_empty(), "{}", s.log());
    first.kill9();
    let daemon = s.daemon();
    let want: BTreeSet<String> = sim.replies().iter().map(|d| d[0].clone()).collect();
    wait_for("every reply by search", Duration::from_secs(60), || {
        outbox(&s).keys().cloned().collect::<BTreeSet<_>>() == want
    });
    let requests: Vec<String> = sim.requests().into_iter().map(|r| r.1).collect();
    assert!(
        requests.iter().any(|r| r.contains("receive/search")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("receive/list")),
        "both never lists: {requests:?}"
    );
    assert!(stop(daemon).success(), "{}", s.log());
}
