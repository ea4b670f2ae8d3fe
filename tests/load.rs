//! Load: a backlog of 10,000 small inputs present when the daemon starts, and inputs of 100,000
//! rows dropped into a running daemon, end to end against a real OpenSSH sshd and the gateway
//! simulator. Every row must reach the gateway exactly once. Each test prints one summary line
//! starting with `load:` (wall time, throughput, per-job overhead, the daemon's CPU time and peak
//! RSS from `/proc/<pid>/status` `VmHWM`, the journal's size on disk).
//!
//! Long: `cargo test --test load -- --ignored --nocapture` (run by `.ci/run`). The environment
//! changes the fixed defaults: `LOAD_FILES` (10000), `LOAD_SMALL_ROWS` (3), `LOAD_BIG_INPUTS` (3),
//! `LOAD_BIG_ROWS` (100000), `LOAD_RSS_LIMIT_MIB` (64), `LOAD_TIMEOUT_SECS` (3600),
//! `LOAD_LOG` (the daemon's `RUST_LOG`, default `smsdrop=info` as in production).

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::setup::{Login, Setup};

/// No sampled counter moving for this long fails the test (with the daemon log).
const STALL: Duration = Duration::from_secs(600);
/// The tests measure time and memory: they run one at a time even without `--test-threads 1`.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// How often progress is sampled (cheap folder counts; `status` is called once at the end).
const SAMPLE: Duration = Duration::from_millis(250);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `smsdrop run`, spawned here rather than with `Setup::daemon` so its pid is known for
/// `/proc/<pid>/...`. Killed when dropped, so a failing test leaves no daemon behind.
struct Daemon(Option<Child>);

impl Daemon {
    fn start(s: &Setup) -> Daemon {
        std::fs::create_dir_all(s.path("inbox")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.path("daemon.log"))
            .unwrap();
        let level = std::env::var("LOAD_LOG").unwrap_or_else(|_| "smsdrop=info".into());
        let child = s
            .command(&["run"])
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start daemon");
        Daemon(Some(child))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().expect("a running daemon").id()
    }

    fn running(&mut self) -> bool {
        matches!(self.0.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// A `/proc/<pid>/status` field in KiB (`VmHWM` is the peak RSS, `VmRSS` the current one).
    fn status_kib(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// User + system CPU time so far (`/proc/<pid>/stat` fields 14 and 15).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name in parentheses, starting with field 3 (state).
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// SIGTERM, then waits (at most 60 s) for the exit status.
    fn stop(mut self) -> ExitStatus {
        let mut child = self.0.take().expect("a running daemon");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Files in `dir` whose name ends with `suffix` (0 when `dir` does not exist yet).
fn count(dir: &Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count() as u64
        })
        .unwrap_or(0)
}

/// The last `n` lines of the daemon log, for failure messages.
fn log_tail(s: &Setup, n: usize) -> String {
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Bytes of the journal on disk (`journal.db` and, while a daemon has it open, `-wal`, `-shm`).
fn journal_bytes(s: &Setup) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|ext| std::fs::metadata(s.path(&format!("state/journal.db{ext}"))).ok())
        .map(|m| m.len())
        .sum()
}

/// When a sampled count first reached each tenth of its total, from the moment it first moved:
/// the per-item cost of the first and the last tenth tells whether the work slows down as the
/// journal grows.
struct Phase {
    total: u64,
    started: Option<Duration>,
    tenths: [Option<Duration>; 10],
    last: u64,
}

impl Phase {
    fn new(total: u64) -> Phase {
        Phase {
            total,
            started: None,
            tenths: [None; 10],
            last: 0,
        }
    }

    /// Records `n` seen at `at` (since the start); true when it changed.
    fn see(&mut self, n: u64, at: Duration) -> bool {
        if n > 0 && self.started.is_none() {
            self.started = Some(at);
        }
        for (k, slot) in self.tenths.iter_mut().enumerate() {
            if slot.is_none() && n * 10 >= self.total * (k as u64 + 1) {
                *slot = Some(at);
            }
        }
        let changed = n != self.last;
        self.last = n;
        changed
    }

    fn done(&self) -> Option<Duration> {
        self.tenths[9]
    }

    /// Milliseconds per item over the whole phase, its first tenth and its last tenth.
    fn ms_per_item(&self) -> (f64, f64, f64) {
        let (Some(start), Some(t1), Some(t9), Some(t10)) =
            (self.started, self.tenths[0], self.tenths[8], self.tenths[9])
        else {
            return (f64::NAN, f64::NAN, f64::NAN);
        };
        let per = |d: Duration, items: f64| d.as_secs_f64() * 1000.0 / items.max(1.0);
        let tenth = self.total as f64 / 10.0;
        (
            per(t10 - start, self.total as f64),
            per(t1 - start, tenth),
            per(t10 - t9, tenth),
        )
    }

    fn describe(&self, name: &str, unit: &str) -> String {
        let (all, first, last) = self.ms_per_item();
        let done = self.done().unwrap_or_default().as_secs_f64();
        if self.total < 100 {
            return format!("{name} done at {done:.1} s ({all:.0} ms/{unit})");
        }
        format!(
            "{name} done at {done:.1} s ({all:.2} ms/{unit}; first tenth {first:.2}, last tenth {last:.2})"
        )
    }
}

/// Samples taken (archived or rejected inputs), delivered (files the gateway moved to success/)
/// and reported (JSON reports) until all `jobs` are reported; panics on a stall, a timeout or a
/// dead daemon.
fn wait_reported(
    s: &Setup,
    daemon: &mut Daemon,
    jobs: u64,
    files: u64,
    start: Instant,
) -> [Phase; 3] {
    let timeout = Duration::from_secs(env_or("LOAD_TIMEOUT_SECS", 3600));
    let mut phases = [Phase::new(jobs), Phase::new(files), Phase::new(jobs)];
    let mut last_change = Instant::now();
    loop {
        let counts = [
            count(&s.path("state/archive"), "") + count(&s.path("state/rejected"), ""),
            count(&s.sshd.home().join("success"), ".txt"),
            count(&s.path("state/reports"), ".json"),
        ];
        let at = start.elapsed();
        let mut changed = false;
        for (phase, n) in phases.iter_mut().zip(counts) {
            changed |= phase.see(n, at);
        }
        if phases[2].done().is_some() {
            return phases;
        }
        if changed {
            last_change = Instant::now();
        }
        assert!(
            daemon.running(),
            "the daemon exited; counts (taken, delivered, reported) {counts:?}\n{}",
            log_tail(s, 80)
        );
        assert!(
            last_change.elapsed() < STALL && start.elapsed() < timeout,
            "no progress for {:?} or over {timeout:?}: counts (taken, delivered, reported) {counts:?} of ({jobs}, {files}, {jobs})\n{}",
            last_change.elapsed(),
            log_tail(s, 80)
        );
        std::thread::sleep(SAMPLE);
    }
}

/// What was measured on the daemon once every job was reported.
struct Figures {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    rss_kib: u64,
    status_time: Duration,
    status: serde_json::Value,
    journal_bytes: u64,
}

/// Reads the daemon's figures, asks `status` for every job (timed, the daemon still running, as
/// an operator would), then stops the daemon; it must exit 0.
fn measure_and_stop(s: &Setup, daemon: Daemon, wall: Duration) -> Figures {
    let peak_rss_kib = daemon.status_kib("VmHWM");
    let rss_kib = daemon.status_kib("VmRSS");
    let cpu = daemon.cpu();
    let t = Instant::now();
    let status = s.status();
    let status_time = t.elapsed();
    let exit = daemon.stop();
    assert!(exit.success(), "daemon exit {exit:?}\n{}", log_tail(s, 40));
    Figures {
        wall,
        cpu,
        peak_rss_kib,
        rss_kib,
        status_time,
        status,
        journal_bytes: journal_bytes(s),
    }
}

/// Every row exactly once, every file accepted, nothing left behind.
fn assert_delivered_once(s: &Setup, expected_ids: &HashSet<String>, remote_files: usize) {
    let messages = s.gateway.messages();
    let twice: Vec<_> = messages.iter().filter(|(_, &n)| n != 1).take(10).collect();
    assert!(twice.is_empty(), "messages sent more than once: {twice:?}");
    let lost: Vec<_> = expected_ids
        .iter()
        .filter(|id| !messages.contains_key(*id))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "rows never sent: {lost:?}");
    assert_eq!(
        messages.len(),
        expected_ids.len(),
        "unexpected ids were sent"
    );
    assert_eq!(s.gateway.total_messages(), expected_ids.len());
    let processed = s.gateway.processed();
    assert!(
        processed.iter().all(|p| p.1),
        "the gateway refused a file: {:?}",
        processed.iter().find(|p| !p.1)
    );
    let names: HashSet<&str> = processed.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names.len(),
        processed.len(),
        "a remote name was written twice"
    );
    assert_eq!(processed.len(), remote_files);
    assert!(
        s.remote("upload").is_empty(),
        "left in upload/: {:?}",
        s.remote("upload")
    );
    assert!(s.remote("error").is_empty());
    assert_eq!(count(&s.path("inbox"), ""), 0, "inputs left in the inbox");
    assert_eq!(count(&s.path("state/spool"), ""), 0, "spool files left");
}

#[test]
#[ignore = "long: run by .ci/run"]
fn ten_thousand_small_inputs_present_at_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let files = env_or("LOAD_FILES", 10_000);
    let rows = env_or("LOAD_SMALL_ROWS", 3);
    let limit_mib = env_or("LOAD_RSS_LIMIT_MIB", 64);
    let s = Setup::new(Login::Key);
    std::fs::create_dir_all(s.path("inbox")).unwrap();
    let mut ids = HashSet::new();
    let mut input_bytes = 0;
    for f in 0..files {
        let mut text = String::from("telefone;mensagem;id\n");
        for r in 0..rows {
            let id = format!("S{f}-{r}");
            text.push_str(&format!(
                "(11) 9{:04}-{:04};Lembrete {r} do lote {f}: sua fatura vence amanhã;{id}\n",
                f % 10_000,
                r % 10_000
            ));
            ids.insert(id);
        }
        input_bytes += text.len();
        std::fs::write(s.path(&format!("inbox/lote-{f:05}.csv")), text).unwrap();
    }

    let start = Instant::now();
    let mut daemon = Daemon::start(&s);
    let [taken, delivered, reported] = wait_reported(&s, &mut daemon, files, files, start);
    let wall = reported.done().unwrap();
    let fig = measure_and_stop(&s, daemon, wall);

    let jobs = fig.status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, files, "one job per input");
    for j in jobs {
        assert_eq!(j["state"], "succeeded", "{j:#}");
        assert_eq!(j["rows"], rows, "{j:#}");
    }
    assert_delivered_once(&s, &ids, files as usize);
    assert_eq!(count(&s.path("state/archive"), ""), files);

    let secs = fig.wall.as_secs_f64();
    eprintln!(
        "load: {files} small inputs ({rows} rows, {:.0} KiB in all) present at start: all succeeded, \
         {} rows each sent once; wall {secs:.1} s, {:.1} files/s, {:.2} ms/job overall; {}; {}; {}; \
         daemon CPU {:.1} s ({:.2} ms/job); peak RSS (VmHWM) {:.1} MiB (limit {limit_mib} MiB), \
         RSS at end {:.1} MiB; journal {:.2} MiB ({:.0} bytes/job); `status --json` of {files} jobs {:.2} s",
        input_bytes as f64 / 1024.0,
        ids.len(),
        files as f64 / secs,
        secs * 1000.0 / files as f64,
        taken.describe("intake", "job"),
        delivered.describe("at the gateway", "file"),
        reported.describe("reported", "job"),
        fig.cpu.as_secs_f64(),
        fig.cpu.as_secs_f64() * 1000.0 / files as f64,
        mib(fig.peak_rss_kib),
        mib(fig.rss_kib),
        fig.journal_bytes as f64 / (1024.0 * 1024.0),
        fig.journal_bytes as f64 / files as f64,
        fig.status_time.as_secs_f64(),
    );
    assert!(
        fig.peak_rss_kib < limit_mib * 1024,
        "the daemon's peak RSS {:.1} MiB is over {limit_mib} MiB",
        mib(fig.peak_rss_kib)
    );
}

#[test]
#[ignore = "long: run by .ci/run"]
fn hundred_thousand_row_inputs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let inputs = env_or("LOAD_BIG_INPUTS", 3);
    let rows = env_or("LOAD_BIG_ROWS", 100_000);
    // 64 MiB, plus what the row guard (`[batch] duplicate_rows = "skip"`, the default) is
    // documented to hold for the rows it remembers: about 42 bytes each in its index, counted
    // here as 48 (300,000 rows: 14 MiB).
    let guard_mib = (inputs * rows * 48).div_ceil(1024 * 1024);
    let limit_mib = env_or("LOAD_RSS_LIMIT_MIB", 64 + guard_mib);
    // `max_rows_per_file` keeps its default.
    let per_file = 50_000;
    let files_per_input = rows.div_ceil(per_file);
    let s = Setup::new(Login::Key);

    let mut daemon = Daemon::start(&s);
    support::setup::wait_for("the daemon to start", Duration::from_secs(60), || {
        s.log().contains("smsdrop running")
    });
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = daemon.status_kib("VmRSS");

    let mut ids = HashSet::new();
    let mut contents = vec![];
    for f in 0..inputs {
        let mut text = String::from("telefone;mensagem;id\n");
        for r in 0..rows {
            let id = format!("B{f}-{r}");
            text.push_str(&format!(
                "119{:08};Mensagem de teste numero {r} do lote {f}, com acentuação e algum texto;{id}\n",
                r
            ));
            ids.insert(id);
        }
        contents.push(text);
    }
    let input_bytes: usize = contents.iter().map(String::len).sum();
    let start = Instant::now();
    for (f, text) in contents.iter().enumerate() {
        s.drop_in(&format!("grande-{f}.csv"), text);
    }
    drop(contents);
    let [taken, delivered, reported] =
        wait_reported(&s, &mut daemon, inputs, inputs * files_per_input, start);
    let wall = reported.done().unwrap();
    let fig = measure_and_stop(&s, daemon, wall);

    let jobs = fig.status["jobs"].as_array().unwrap();
    assert_eq!(jobs.len() as u64, inputs, "one job per input");
    for j in jobs {
        assert_eq!(j["state"], "succeeded", "{j:#}");
        assert_eq!(j["rows"], rows, "{j:#}");
        let parts = j["remote_files"].as_array().unwrap();
        assert_eq!(parts.len() as u64, files_per_input, "{j:#}");
        let part_rows: u64 = parts.iter().map(|p| p["rows"].as_u64().unwrap()).sum();
        assert_eq!(part_rows, rows, "{j:#}");
        assert!(
            parts
                .iter()
                .all(|p| p["rows"].as_u64().unwrap() <= per_file),
            "{j:#}"
        );
    }
    assert_delivered_once(&s, &ids, (inputs * files_per_input) as usize);

    let secs = fig.wall.as_secs_f64();
    let total_rows = inputs * rows;
    eprintln!(
        "load: {inputs} inputs x {rows} rows ({:.1} MiB in all) dropped into a running daemon: all \
         succeeded, {total_rows} rows in {} batch files each sent once; wall {secs:.1} s, {:.0} rows/s, \
         {:.1} s/input; {}; {}; {}; daemon CPU {:.1} s; peak RSS (VmHWM) {:.1} MiB (idle {:.1} MiB, \
         limit {limit_mib} MiB), RSS at end {:.1} MiB; journal {:.2} MiB",
        input_bytes as f64 / (1024.0 * 1024.0),
        inputs * files_per_input,
        total_rows as f64 / secs,
        secs / inputs as f64,
        taken.describe("intake", "job"),
        delivered.describe("at the gateway", "file"),
        reported.describe("reported", "job"),
        fig.cpu.as_secs_f64(),
        mib(fig.peak_rss_kib),
        mib(idle_kib),
        mib(fig.rss_kib),
        fig.journal_bytes as f64 / (1024.0 * 1024.0),
    );
    assert!(
        fig.peak_rss_kib < limit_mib * 1024,
        "the daemon's peak RSS {:.1} MiB is over {limit_mib} MiB",
        mib(fig.peak_rss_kib)
    );
}
