//! The bad-input corpus (`tests/corpus/`, outcomes in `EXPECTED.tsv`): every file dropped into
//! one running daemon's inbox at once. The daemon must survive them all, and each input must end as
//! expected with a report giving a reason a person can act on.

mod support;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;
use support::setup::{root, stop, Login, Setup};

#[test]
#[cfg_attr(
    not(has_sshd),
    ignore = "needs OpenSSH sshd: apt-get install openssh-server (CI requires it)"
)]
fn the_daemon_survives_the_whole_corpus_and_explains_each_rejection() {
    let s = Setup::new(Login::Key);
    // The corpus tests reading, and its files share rows (the same number and text): the row
    // guard would rightly send each such row once. Its own tests are in inbox_changes.rs and
    // pipeline_tests.rs.
    s.edit_config(
        "subaccount = \"ACME\"",
        "subaccount = \"ACME\"\nduplicate_rows = \"send\"",
    );
    let inbox = s.path("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let corpus = root().join("tests/corpus");
    let mut expected = vec![];
    for line in std::fs::read_to_string(corpus.join("EXPECTED.tsv"))
        .unwrap()
        .lines()
    {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split('\t');
        let (name, state, needle) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap_or(""),
        );
        std::fs::copy(corpus.join(name), inbox.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        expected.push((name.to_string(), state.to_string(), needle.to_string()));
    }
    assert!(expected.len() >= 40, "the corpus holds at least 40 inputs");
    // Too big to commit: one 100 MB line. And a name that is not UTF-8.
    let mut huge = b"telefone;mensagem\n11987654321;".to_vec();
    huge.resize(100 << 20, b'x');
    std::fs::write(inbox.join("huge-single-line.csv"), huge).unwrap();
    expected.push((
        "huge-single-line.csv".into(),
        "succeeded-or-rejected".into(),
        "too large".into(),
    ));
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1-name.csv");
    std::fs::write(
        inbox.join(odd),
        "telefone;mensagem\n11987654300;nome estranho\n",
    )
    .unwrap();
    expected.push((
        String::from_utf8_lossy(odd.as_bytes()).into_owned(),
        "succeeded".into(),
        String::new(),
    ));

    let daemon = s.daemon();
    let st = s.wait_final(expected.len(), Duration::from_secs(180));
    let pid_alive = stop(daemon);
    assert!(
        pid_alive.success(),
        "the daemon must survive the corpus and stop cleanly\n{}",
        s.log()
    );

    let jobs: HashMap<String, &serde_json::Value> = st["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let input = j["input"].as_str().unwrap();
            (input.rsplit('/').next().unwrap().to_string(), j)
        })
        .collect();
    let reports = s.path("state/reports");
    let mut failures = vec![];
    let mut duplicates = 0;
    for (name, want, needle) in &expected {
        let Some(job) = jobs.get(name) else {
            failures.push(format!("{name}: no job"));
            continue;
        };
        let state = job["state"].as_str().unwrap();
        let ok = match want.as_str() {
            "succeeded-or-duplicate" => {
                duplicates += usize::from(state == "rejected");
                state == "succeeded"
                    || (state == "rejected"
                        && job["reason"].as_str().unwrap_or("").contains("duplicate"))
            }
            "succeeded-or-rejected" => state == "succeeded" || state == "rejected",
            w => state == w,
        };
        if !ok {
            failures.push(format!("{name}: {state}, expected {want}: {job}"));
        }
        let id = job["id"].as_i64().unwrap();
        let report_path = reports.join(format!("{id}-{name}.json"));
        let Ok(text) = std::fs::read_to_string(&report_path) else {
            failures.push(format!("{name}: no report at {}", report_path.display()));
            continue;
        };
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut reasons: Vec<String> = report["reason"]
            .as_str()
            .map(String::from)
            .into_iter()
            .collect();
        for r in report["conversion"]["rejected"]
            .as_array()
            .into_iter()
            .flatten()
        {
            reasons.push(r["reason"].as_str().unwrap_or("").to_string());
        }
        if state == "rejected" && report["reason"].as_str().is_none_or(|r| r.len() < 20) {
            failures.push(format!("{name}: rejected without a usable reason"));
        }
        if !needle.is_empty() && !reasons.iter().any(|r| r.contains(needle.as_str())) {
            failures.push(format!(
                "{name}: no reason mentions {needle:?}: {reasons:?}"
            ));
        }
        assert!(
            s.path(&format!("state/reports/{id}-{name}.result.csv"))
                .exists(),
            "{name}: result csv"
        );
    }
    assert_eq!(
        duplicates, 1,
        "one of dup-a/dup-b is rejected as the other's duplicate"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing lost: every input ended in the archive or the rejected folder.
    let stored = std::fs::read_dir(s.path("state/archive")).unwrap().count()
        + std::fs::read_dir(s.path("state/rejected")).unwrap().count();
    assert_eq!(stored, expected.len());
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 0);
    let messages = s.gateway.processed();
    assert!(
        messages.iter().all(|p| p.1),
        "the gateway refused a batch: {messages:?}"
    );
}
