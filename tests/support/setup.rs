//! A workspace wired to a real OpenSSH sshd and the gateway simulator, for tests that drive the
//! built binary end to end.

use super::gateway::Gateway;
use super::sshd::Sshd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// stdout and stderr of a run, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A server, a gateway, and a workspace with a config pointing at them.
pub struct Setup {
    pub sshd: Sshd,
    pub gateway: Gateway,
    pub work: tempfile::TempDir,
}

pub enum Login {
    Key,
    Password,
}

impl Setup {
    pub fn new(login: Login) -> Setup {
        Self::with(login, "")
    }

    pub fn with(login: Login, extra: &str) -> Setup {
        let sshd = Sshd::start().expect("sshd must start for this test");
        let gateway = Gateway::builder(sshd.home())
            .poll_interval(Duration::from_millis(100))
            .start();
        let work = tempfile::tempdir().unwrap();
        let auth = match login {
            Login::Key => format!("private_key = {:?}", sshd.private_key_path()),
            Login::Password => "password_env = \"SMSDROP_TEST_PASSWORD\"".to_string(),
        };
        let config = format!(
            "[inbox]\ndir = \"inbox\"\nstable_secs = 0\nrescan_secs = 1\n\
             [batch]\nsubaccount = \"ACME\"\ntimezone = {:?}\n\
             [sftp]\nhost = \"127.0.0.1\"\nport = {}\nusername = {:?}\n{auth}\nknown_hosts = {:?}\ntimeout_secs = 5\n\
             [track]\npoll_secs = 1\n\
             [state]\ndir = \"state\"\n{extra}",
            noon_zone(),
            sshd.port(),
            sshd.username(),
            sshd.known_hosts_path(),
        );
        std::fs::write(work.path().join("smsdrop.toml"), config).unwrap();
        Setup {
            sshd,
            gateway,
            work,
        }
    }

    /// The sending day in the test's zone (see [`noon_zone`]), as file names carry it.
    pub fn today(&self) -> String {
        let tz: chrono_tz::Tz = noon_zone().parse().unwrap();
        chrono::Utc::now()
            .with_timezone(&tz)
            .format("%Y%m%d")
            .to_string()
    }

    /// Replaces `from` with `to` in the config (before the daemon starts).
    pub fn edit_config(&self, from: &str, to: &str) {
        let cfg = std::fs::read_to_string(self.path("smsdrop.toml")).unwrap();
        assert!(cfg.contains(from), "{from:?} is not in the config");
        std::fs::write(self.path("smsdrop.toml"), cfg.replacen(from, to, 1)).unwrap();
    }

    /// Adds `line` to the config's `[inbox]` section (before the daemon starts).
    pub fn inbox_setting(&self, line: &str) {
        let cfg = std::fs::read_to_string(self.path("smsdrop.toml")).unwrap();
        std::fs::write(
            self.path("smsdrop.toml"),
            cfg.replacen("[inbox]\n", &format!("[inbox]\n{line}\n"), 1),
        )
        .unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_smsdrop"));
        c.args(args)
            .current_dir(self.work.path())
            .env_remove("SMSDROP_CONFIG")
            .env("RUST_LOG", "smsdrop=debug")
            // Message statuses: the test status interface's token and the webhook's secret.
            .env("SMSDROP_TEST_STATUS_TOKEN", super::statuses::TOKEN)
            .env("SMSDROP_TEST_WEBHOOK_TOKEN", super::statuses::WEBHOOK_TOKEN);
        if let Some(pw) = self.sshd.password() {
            c.env("SMSDROP_TEST_PASSWORD", pw);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run smsdrop")
    }

    pub fn daemon(&self) -> Daemon {
        self.daemon_with_open_files(None)
    }

    /// [`Setup::daemon`] with its open-file limit (soft and hard) set to `limit`, as
    /// `ulimit -n` or systemd's `LimitNOFILE=` would.
    pub fn daemon_with_open_files(&self, limit: Option<u64>) -> Daemon {
        std::fs::create_dir_all(self.path("inbox")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let mut cmd = self.command(&["run"]);
        cmd.stdout(Stdio::null()).stderr(log);
        if let Some(n) = limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let l = rustix::process::Rlimit {
                        current: Some(n),
                        maximum: Some(n),
                    };
                    rustix::process::setrlimit(rustix::process::Resource::Nofile, l)
                        .map_err(std::io::Error::from)
                });
            }
        }
        Daemon(Some(cmd.spawn().expect("start daemon")))
    }

    /// Drops a file into the inbox as an ERP should: written under a name the inbox ignores,
    /// then renamed (the tests run with `stable_secs = 0`, so a half-written file could be taken).
    pub fn drop_in(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let dest = self.path(&format!("inbox/{rel}"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let tmp = dest.with_file_name(format!(
            ".{}.tmp",
            dest.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }

    /// [`Setup::drop_in`] with a sample's content.
    pub fn drop_sample(&self, sample_name: &str, rel: &str) {
        self.drop_in(rel, std::fs::read(sample(sample_name)).unwrap());
    }

    pub fn remote(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.sshd.home().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json", "--limit", "1000000"]);
        assert!(out.status.success(), "{}", show(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits until every job in `status` is final, or panics with the daemon log.
    pub fn wait_final(&self, jobs: usize, timeout: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let st = self.status();
            let list = st["jobs"].as_array().unwrap();
            let finals = ["succeeded", "failed", "expired", "rejected"];
            let reports = std::fs::read_dir(self.path("state/reports")).map_or(0, |d| d.count());
            if list.len() >= jobs
                && list
                    .iter()
                    .all(|j| finals.contains(&j["state"].as_str().unwrap()))
                && reports >= 2 * list.len()
            {
                return st;
            }
            assert!(
                start.elapsed() < timeout,
                "jobs not final in time: {st:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// Waits (at most 30 s) until `what` occurs in the daemon log more often than the `before`
    /// times counted earlier (`self.log().matches(what).count()`), or panics with the log.
    pub fn wait_log_more(&self, what: &str, before: usize) {
        let start = Instant::now();
        while self.log().matches(what).count() <= before {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no new {what:?} in the daemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 30 s) until the daemon log contains `what`, or panics with the log.
    pub fn wait_log(&self, what: &str) {
        self.wait_log_more(what, 0);
    }

    /// Waits until the running daemon has completed `n` more engine rounds (its `round done`
    /// debug lines). The last `n - 1` of them began after this call, so what every round does
    /// (upload what is pending, report what is final) had its chance, and with the tests' 1 s
    /// rescan and poll, scans and tracking come about once a round: wait for this before
    /// asserting that something did *not* happen. Panics with the log after 30 s.
    pub fn wait_rounds(&self, n: usize) {
        let target = self.log().matches(ROUND_DONE).count() + n;
        let start = Instant::now();
        while self.log().matches(ROUND_DONE).count() < target {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not complete {n} more rounds:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the daemon logs (at debug level, as [`Setup::command`] sets) at the end of each round.
const ROUND_DONE: &str = "round done";

/// A running `smsdrop run`; killed when dropped, so a failing test leaves no daemon behind.
pub struct Daemon(Option<Child>);

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("a running daemon").id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// SIGTERM, then waits (at most 20 s) for the exit status.
pub fn stop(mut daemon: Daemon) -> std::process::ExitStatus {
    let mut child = daemon.0.take().expect("a running daemon");
    unsafe { libc_kill(child.id() as i32, 15) };
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("daemon did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn sample(name: &str) -> String {
    root()
        .join("samples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A big input so an upload takes long enough to interrupt.
pub fn big_input(path: &Path, rows: usize) {
    let mut text = String::from("telefone;mensagem;id\n");
    for i in 0..rows {
        text.push_str(&format!(
            "119{:08};Mensagem de teste numero {i} com algum texto para ocupar espaco;R{i}\n",
            i
        ));
    }
    std::fs::write(path, text).unwrap();
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn has_temp(s: &Setup) -> bool {
    std::fs::read_dir(s.sshd.home().join("upload"))
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        })
        .unwrap_or(false)
}

/// A fixed-offset zone where it is now between 12:00 and 12:59, so a test of a few minutes never
/// runs across midnight (the day in file names would change under it). `Etc/GMT-3` is UTC+3.
pub fn noon_zone() -> String {
    use chrono::Timelike;
    let off = 12 - chrono::Utc::now().hour() as i32;
    match off {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// Mounts a tmpfs of `size` on `dir` (root only: CI runs as root).
pub fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status();
    assert!(
        st.is_ok_and(|s| s.success()),
        "mounting a tmpfs needs root (CI runs as root)"
    );
}

pub fn umount(dir: &Path) {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir)
        .status();
}

/// A free loopback port (bound then released; the test binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
