//! Crash loop: 300 inputs of varied size, the daemon killed with SIGKILL at seeded random moments
//! (at least 50 kills) and restarted each time, against a real OpenSSH sshd and the gateway
//! simulator. Every row must reach the gateway exactly once or be reported rejected; no remote name
//! may be written twice; no temporary file may stay. Long: `cargo test --test crash_loop --
//! --ignored` (run by `.ci/run`). `CRASH_LOOP_INPUTS`, `CRASH_LOOP_KILLS` and `CRASH_LOOP_SEED`
//! change the fixed defaults.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::setup::{stop, Login, Setup};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes the inputs; returns the correlation ids of good rows and of bad rows.
fn write_inputs(s: &Setup, rng: &mut Rng, files: u64) -> (HashSet<String>, HashSet<String>) {
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    let (mut good, mut bad) = (HashSet::new(), HashSet::new());
    for f in 0..files {
        let rows = 1 + rng.below(if f % 10 == 0 { 1500 } else { 150 });
        let mut text = String::from("telefone;mensagem;id\n");
        for r in 0..rows {
            let id = format!("F{f}-R{r}");
            // About 3% of rows are bad on purpose, never the first (each file stays sendable).
            if r > 0 && rng.below(100) < 3 {
                text.push_str(&format!("5.5119E+12;Mensagem {r};{id}\n"));
                bad.insert(id);
            } else {
                text.push_str(&format!(
                    "(11) 9{:04}-{:04};Olá, mensagem {r} do lote {f};{id}\n",
                    f % 10_000,
                    r % 10_000
                ));
                good.insert(id);
            }
        }
        std::fs::write(s.path(&format!("inbox/lote-{f:03}.csv")), text).unwrap();
    }
    (good, bad)
}

#[test]
#[ignore = "long: run by .ci/run"]
fn sigkill_loop_loses_and_duplicates_nothing() {
    let files = env_or("CRASH_LOOP_INPUTS", 300);
    let kills = env_or("CRASH_LOOP_KILLS", 60);
    let mut rng = Rng(env_or("CRASH_LOOP_SEED", 0x5EED_2026));
    let s = Setup::with(Login::Key, "");
    let cfg = std::fs::read_to_string(s.path("smsdrop.toml")).unwrap();
    let cfg = cfg.replace(
        "subaccount = \"ACME\"",
        "subaccount = \"ACME\"\nmax_rows_per_file = 100",
    );
    std::fs::write(s.path("smsdrop.toml"), cfg).unwrap();
    let (good, bad) = write_inputs(&s, &mut rng, files);

    let log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.path("daemon.log"))
            .unwrap()
    };
    for _ in 0..kills {
        let mut d = s
            .command(&["run"])
            .stdout(Stdio::null())
            .stderr(log())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        d.kill().unwrap(); // SIGKILL
        d.wait().unwrap();
    }
    let daemon = s.daemon();
    let st = s.wait_final(files as usize, Duration::from_secs(600));
    assert!(stop(daemon).success());

    let jobs = st["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, files, "one job per input");
    for j in jobs {
        assert_eq!(j["state"], "succeeded", "{j:#}");
    }
    let messages = s.gateway.messages();
    let twice: Vec<_> = messages.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "messages sent more than once: {twice:?}");
    let sent: HashSet<&String> = messages.keys().collect();
    let lost: Vec<_> = good
        .iter()
        .filter(|id| !sent.contains(id))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "good rows never sent: {lost:?}");
    assert!(
        bad.iter().all(|id| !sent.contains(id)),
        "a bad row was sent"
    );
    assert_eq!(s.gateway.total_messages(), good.len());

    // Bad rows are reported rejected in their job's result file.
    let mut reported_bad = 0;
    for e in std::fs::read_dir(s.path("state/reports")).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".result.csv") {
            let text = std::fs::read_to_string(&p).unwrap();
            reported_bad += text.lines().filter(|l| l.contains(";rejected;")).count();
        }
    }
    assert_eq!(reported_bad, bad.len(), "every bad row is reported");

    let processed = s.gateway.processed();
    let mut per_name: HashMap<&str, usize> = HashMap::new();
    for p in &processed {
        *per_name.entry(p.0.as_str()).or_default() += 1;
    }
    assert!(
        per_name.values().all(|&n| n == 1),
        "a remote name was written twice"
    );
    assert!(
        processed.iter().all(|p| p.1),
        "the gateway refused a file: {:?}",
        processed.iter().find(|p| !p.1)
    );
    assert!(
        s.remote("upload").is_empty(),
        "left in upload/: {:?}",
        s.remote("upload")
    );
    assert_eq!(
        std::fs::read_dir(s.path("state/archive")).unwrap().count() as u64,
        files
    );
    assert_eq!(std::fs::read_dir(s.path("inbox")).unwrap().count(), 0);
    let spool_left = std::fs::read_dir(s.path("state/spool")).unwrap().count();
    assert_eq!(spool_left, 0, "spool files are removed once reported");
    eprintln!(
        "crash loop: {files} inputs, {kills} SIGKILLs, {} rows sent once, {} rejected and reported, {} remote files, 0 lost, 0 duplicated",
        good.len(),
        bad.len(),
        processed.len()
    );
    let _ = Instant::now();
}
