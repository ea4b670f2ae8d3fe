//! `smsdrop demo` and `smsdrop sandbox` as a newcomer uses them: no credentials, no sshd, one
//! machine. Also the delivery guarantees against the embedded server (the same ones
//! `tests/deliver.rs` proves against OpenSSH).
#![cfg(feature = "sandbox")]

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{root, show, Dir};

fn smsdrop() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_smsdrop"));
    c.env_remove("SMSDROP_CONFIG");
    c
}

#[test]
fn the_demo_shows_every_sample_ending_as_expected() {
    let dir = Dir::new();
    let ws = dir.path().join("ws");
    let start = Instant::now();
    let out = smsdrop()
        .args(["demo", "--dir"])
        .arg(&ws)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for sample in [
        "protheus-cobranca.csv",
        "excel-utf8-bom.csv",
        "lembretes-tab.txt",
        "com-erros.csv",
        "campanha-virgulas.csv",
        "contatos.xlsx",
        "faturas-dados.csv",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(sample))
            .unwrap_or_else(|| panic!("{sample} missing:\n{text}"));
        assert!(
            line.contains("succeeded") && line.contains("as expected"),
            "{line}"
        );
    }
    assert!(text.contains("every sample ended as expected"), "{text}");
    // The customers answered; some opted out; the second campaign met them.
    let second = text
        .lines()
        .find(|l| l.contains("segunda-campanha.csv") && l.contains("as expected"))
        .unwrap_or_else(|| panic!("no second campaign:\n{text}"));
    assert!(second.contains("succeeded"), "{second}");
    assert!(text.contains("OPTED OUT"), "{text}");
    let result =
        std::fs::read_to_string(ws.join("state/reports/8-segunda-campanha.csv.result.csv"))
            .unwrap();
    assert_eq!(
        result.matches(";succeeded;").count(),
        1,
        "only the number not on the list went: {result}"
    );
    assert!(result.matches(";opted_out;").count() >= 1, "{result}");
    let names: Vec<String> = std::fs::read_dir(ws.join("state/reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let count = |suffix: &str| names.iter().filter(|n| n.ends_with(suffix)).count();
    assert_eq!(
        count(".json"),
        8,
        "a JSON report per sample and the second campaign: {names:?}"
    );
    assert_eq!(
        count(".result.csv"),
        8,
        "a result CSV per sample and the second campaign: {names:?}"
    );
    // A delivery CSV per sample that sent messages (a rejected input sends none).
    let sent = std::fs::read_dir(ws.join("sandbox/success"))
        .unwrap()
        .count();
    assert_eq!(count(".delivery.csv"), sent, "{names:?}");
    check_deliveries_against_the_simulator(&ws);
    assert_eq!(
        std::fs::read_dir(ws.join("sandbox/success"))
            .unwrap()
            .count(),
        8
    );
    eprintln!("demo took {:.1}s", start.elapsed().as_secs_f64());
}

/// Every row of every `.delivery.csv` carries what the simulator decided for that message
/// (its `statuses.log`), and every decided message is in one.
fn check_deliveries_against_the_simulator(ws: &Path) {
    let decided = std::fs::read_to_string(ws.join("sandbox/statuses.log")).unwrap();
    let decided: Vec<Vec<&str>> = decided.lines().map(|l| l.split('\t').collect()).collect();
    let mut rows = 0;
    for e in std::fs::read_dir(ws.join("state/reports")).unwrap() {
        let path = e.unwrap().path();
        if !path.to_string_lossy().ends_with(".delivery.csv") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("line;number;correlation_id;sent_status;sent_at;delivered_status;delivered_at;carrier")
        );
        for line in lines {
            let f: Vec<&str> = line.split(';').collect();
            let d = decided
                .iter()
                .find(|d| d[0] == f[2] && d[1] == f[1])
                .unwrap_or_else(|| panic!("{}: no decision for {line}", path.display()));
            assert_eq!(
                (f[3], f[5], f[7]),
                (d[2], d[3], d[4]),
                "{}: {line}",
                path.display()
            );
            assert!(!f[4].is_empty(), "{line}");
            rows += 1;
        }
    }
    assert_eq!(
        rows,
        decided.len(),
        "every message the gateway decided is reported once"
    );
}

/// A running `smsdrop sandbox` and the `[sftp]` section it printed.
struct Sandbox {
    child: Child,
    sftp_section: String,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sandbox(root: &Path, extra: &[&str]) -> Sandbox {
    let mut child = smsdrop()
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--delay",
            "0s",
            "--root",
        ])
        .arg(root)
        .args(extra)
        .env("SMSDROP_SANDBOX_PASSWORD", "sandbox-pw")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut section = String::new();
    let mut inside = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("[sftp]") {
            inside = true;
        } else if inside && line.trim().is_empty() {
            break;
        }
        if inside {
            section.push_str(&line);
            section.push('\n');
        }
    }
    assert!(
        section.contains("port ="),
        "no [sftp] section printed: {section:?}"
    );
    // Keep reading stdout in the background so the sandbox never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Sandbox {
        child,
        sftp_section: section,
    }
}

fn wait_final(ws: &Path, jobs: usize) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let out = smsdrop()
            .args(["status", "--json"])
            .current_dir(ws)
            .output()
            .unwrap();
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let list = st["jobs"].as_array().cloned().unwrap_or_default();
        let finals = ["succeeded", "failed", "expired", "rejected"];
        if list.len() >= jobs
            && list
                .iter()
                .all(|j| finals.contains(&j["state"].as_str().unwrap_or("")))
        {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not final: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_config(ws: &Path, sftp_section: &str) {
    std::fs::create_dir_all(ws.join("inbox")).unwrap();
    let config = format!(
        "[inbox]\ndir = \"inbox\"\nstable_secs = 0\nrescan_secs = 1\n[batch]\nsubaccount = \"HAND\"\n\
         [track]\npoll_secs = 1\n[state]\ndir = \"state\"\n{sftp_section}timeout_secs = 5\n"
    );
    std::fs::write(ws.join("smsdrop.toml"), config).unwrap();
}

/// A `smsdrop run` child, killed (and reaped) when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(ws: &Path) -> Daemon {
    let child = smsdrop()
        .arg("run")
        .current_dir(ws)
        .env("SMSDROP_SANDBOX_PASSWORD", "sandbox-pw")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(ws.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    Daemon(child)
}

fn drop_in(ws: &Path, name: &str, bytes: &[u8]) {
    let tmp = ws.join("inbox").join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, ws.join("inbox").join(name)).unwrap();
}

#[test]
fn sandbox_plus_run_with_the_printed_settings_delivers_a_file_dropped_by_hand() {
    let dir = Dir::new();
    let sb = start_sandbox(&dir.path().join("sandbox"), &[]);
    let ws = dir.path().join("ws");
    write_config(&ws, &sb.sftp_section);
    let d = daemon(&ws);
    drop_in(
        &ws,
        "by-hand.csv",
        &std::fs::read(root().join("samples/protheus-cobranca.csv")).unwrap(),
    );
    let st = wait_final(&ws, 1);
    drop(d);
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}");
    let success: Vec<_> = std::fs::read_dir(dir.path().join("sandbox/success"))
        .unwrap()
        .collect();
    assert_eq!(success.len(), 1);
    let log = std::fs::read_to_string(dir.path().join("sandbox/gateway.log")).unwrap();
    assert!(log.contains("HAND.") && log.contains("success"), "{log}");
}

#[test]
fn kill_9_mid_upload_against_the_sandbox_delivers_exactly_once() {
    let dir = Dir::new();
    let sb = start_sandbox(&dir.path().join("sandbox"), &[]);
    let ws = dir.path().join("ws");
    write_config(&ws, &sb.sftp_section);
    let rows = 300_000;
    let mut text = String::from("telefone;mensagem;id\n");
    for i in 0..rows {
        text.push_str(&format!(
            "119{i:08};Mensagem de teste numero {i} com algum texto para ocupar espaco;R{i}\n"
        ));
    }
    let d = daemon(&ws);
    drop_in(&ws, "big.csv", text.as_bytes());
    let upload = dir.path().join("sandbox/upload");
    let start = Instant::now();
    while !std::fs::read_dir(&upload)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        })
        .unwrap_or(false)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "upload never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(d); // SIGKILL mid-upload
    let d = daemon(&ws);
    let st = wait_final(&ws, 1);
    drop(d);
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}");
    // Every row exactly once across the success files, none left in upload/.
    let mut seen = std::collections::HashSet::new();
    for e in std::fs::read_dir(dir.path().join("sandbox/success")).unwrap() {
        for line in std::fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            let id = line.split(';').nth(2).unwrap_or("");
            if id.starts_with('R') {
                assert!(seen.insert(id.to_string()), "{id} sent twice");
            }
        }
    }
    assert_eq!(seen.len(), rows);
    let left: Vec<_> = std::fs::read_dir(&upload)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in upload/: {left:?}");
}
