//! A real OpenSSH `sshd` serving only SFTP on a free loopback port, for integration tests.
//!
//! Each [`Sshd`] lives in a fresh temporary folder holding its own config, generated host key,
//! client keys, `known_hosts` files, log and the SFTP user's home (with `upload/`, `success/` and
//! `error/` in it). Sessions are forced into `internal-sftp -d <home>` (no chroot: that needs
//! root-owned paths).
//!
//! Who logs in:
//! - as root (CI, the dev machines): the system user [`TEST_USER`] with password
//!   [`TEST_PASSWORD`], created once with `useradd` + `chpasswd`; password and key auth both work
//!   (`UsePAM yes`).
//! - as any other user: that user, key auth only; [`Sshd::password`] is `None`.
//!
//! (sshd without PAM refuses a locked account, e.g. `nobody`: run as a normal user.)
//!
//! A test that needs the server must fail, not skip, when it cannot start:
//! `let sshd = Sshd::start().expect("sshd");`. The error says what to install and carries the
//! sshd log.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The system user created (as root) for SFTP logins.
pub const TEST_USER: &str = "smsdrop-test";
/// Password of [`TEST_USER`]; fixed so parallel test processes agree on it.
pub const TEST_PASSWORD: &str = "smsdrop-test-pw-7Qx";
/// Passphrase of the encrypted client key ([`Sshd::encrypted_key_path`]).
pub const KEY_PASSPHRASE: &str = "smsdrop test passphrase";
/// Folders created in the SFTP home, owned by the SFTP user.
pub const GATEWAY_DIRS: [&str; 3] = ["upload", "success", "error"];

const HOST: &str = "127.0.0.1";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;
const SFTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) OpenSSH server; dropping it kills the server and its sessions.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    sshd_bin: PathBuf,
    extra_config: String,
    port: u16,
    user: String,
    uid: u32,
    gid: u32,
    password: Option<String>,
    host_public_key: String,
    fingerprint: String,
    child: Option<Child>,
    paused: bool,
}

/// How [`Sshd::sftp_as`] authenticates the OpenSSH `sftp` client.
#[derive(Debug, Clone, Copy)]
pub enum SftpAuth<'a> {
    /// A private key file (`-i`); must be unencrypted (batch mode cannot prompt).
    Key(&'a Path),
    /// A password, typed by `sshpass` (`apt-get install sshpass`).
    Password(&'a str),
}

impl Sshd {
    /// Starts sshd on a free loopback port and waits until it sends its `SSH-2.0` banner.
    ///
    /// # Errors
    /// Why it could not start (binary missing: what to install; otherwise with the sshd log).
    pub fn start() -> Result<Sshd, String> {
        Self::start_with_config("")
    }

    /// Like [`Sshd::start`], with extra `sshd_config` lines (e.g. `"LoginGraceTime 5\n"`).
    /// They are written before the harness's own lines, so they win (sshd keeps the first value
    /// it reads for a keyword). No `Match` blocks.
    ///
    /// # Errors
    /// As [`Sshd::start`].
    pub fn start_with_config(extra: &str) -> Result<Sshd, String> {
        let sshd_bin = find_sshd()?;
        check_tool("ssh-keygen", "openssh-client")?;
        let root = is_root();
        let (user, uid, gid, password) = if root {
            prepare_privsep_dir()?;
            let (uid, gid) = ensure_test_user()?;
            (
                TEST_USER.to_owned(),
                uid,
                gid,
                Some(TEST_PASSWORD.to_owned()),
            )
        } else {
            let meta = fs::metadata("/proc/self").map_err(|e| format!("stat /proc/self: {e}"))?;
            (current_user_name()?, meta.uid(), meta.gid(), None)
        };
        // As root the SFTP user must traverse the folder's parents: /tmp is world-traversable,
        // a TMPDIR under /root might not be.
        let base = if root {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("smsdrop-sshd.")
            .tempdir_in(&base)
            .map_err(|e| format!("creating a temp dir in {}: {e}", base.display()))?;
        set_mode(dir.path(), 0o755)?;
        let mut sshd = Sshd {
            dir,
            sshd_bin,
            extra_config: extra.to_owned(),
            port: 0,
            user,
            uid,
            gid,
            password,
            host_public_key: String::new(),
            fingerprint: String::new(),
            child: None,
            paused: false,
        };
        sshd.make_keys()?;
        sshd.make_home()?;
        sshd.launch_on_free_port()?;
        Ok(sshd)
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The TCP port; stays the same across [`Sshd::stop`] and [`Sshd::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The SFTP login name ([`TEST_USER`] as root, else the current user).
    pub fn username(&self) -> &str {
        &self.user
    }

    /// The login password: `Some` only when the harness runs as root (it needs a real local
    /// user with a password set and PAM); `None` otherwise, when only key auth works.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Unencrypted ed25519 client private key (OpenSSH format), authorized on the server.
    pub fn private_key_path(&self) -> PathBuf {
        self.path("id_ed25519")
    }

    /// Public half of [`Sshd::private_key_path`].
    pub fn public_key_path(&self) -> PathBuf {
        self.path("id_ed25519.pub")
    }

    /// Passphrase-protected ed25519 client private key, authorized on the server.
    pub fn encrypted_key_path(&self) -> PathBuf {
        self.path("id_ed25519_enc")
    }

    /// Passphrase of [`Sshd::encrypted_key_path`].
    pub fn key_passphrase(&self) -> &'static str {
        KEY_PASSPHRASE
    }

    /// Local path of the SFTP home (remote `.`), holding `upload/`, `success/`, `error/`.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// The server's temporary folder (config, keys, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A known_hosts file with the server's key for `[127.0.0.1]:PORT` and `[localhost]:PORT`.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// The same host entries as [`Sshd::known_hosts_path`] but with another ed25519 key.
    pub fn wrong_known_hosts_path(&self) -> PathBuf {
        self.path("wrong_known_hosts")
    }

    /// The server's public host key as `ssh-ed25519 AAAA...` (no comment).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// The host key fingerprint as `ssh-keygen -lf` prints it: `SHA256:...`.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The listening sshd's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the listening sshd is running (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The sshd log so far (plus anything sshd wrote to stderr), for assertion messages.
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.path("sshd.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.path("sshd.stderr")).unwrap_or_default();
        if stderr.trim().is_empty() {
            log
        } else {
            format!("{log}--- sshd stderr ---\n{stderr}")
        }
    }

    /// Server goes away: SIGTERM to the listener and to every live session (so open
    /// connections drop), then waits (SIGKILL after 5 s). Start it again with [`Sshd::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sessions = descendants(child.id());
        signal("TERM", child.id());
        for &pid in &sessions {
            signal("TERM", pid);
        }
        if self.paused {
            signal("CONT", child.id());
            self.paused = false;
        }
        if !wait_exit(&mut child, Duration::from_secs(5)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        reap_gone(&sessions, Duration::from_secs(2));
    }

    /// Starts the server again on the same port with the same keys, users and home (after
    /// [`Sshd::stop`]; stops it first if it runs). Retries while the port is still busy.
    ///
    /// (Named `restart` because `start` is the constructor.)
    ///
    /// # Errors
    /// Why it could not start, with the sshd log.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log_start = self.log_len();
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline && self.bind_failed_since(log_start) => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(self.failure(&e)),
            }
        }
    }

    /// SIGSTOP the listening sshd: TCP connects still complete (kernel backlog) but no banner
    /// ever comes. Sessions already open keep working.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal("STOP", pid);
            self.paused = true;
        }
    }

    /// SIGCONT after [`Sshd::pause`].
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            signal("CONT", pid);
            self.paused = false;
        }
    }

    /// SIGSTOP the listener and every open session: the server accepts TCP and then says nothing,
    /// and transfers in flight hang.
    pub fn freeze(&mut self) {
        if let Some(pid) = self.pid() {
            signal("STOP", pid);
            for p in descendants(pid) {
                signal("STOP", p);
            }
            self.paused = true;
        }
    }

    /// SIGCONT after [`Sshd::freeze`].
    pub fn thaw(&mut self) {
        if let Some(pid) = self.pid() {
            signal("CONT", pid);
            for p in descendants(pid) {
                signal("CONT", p);
            }
            self.paused = false;
        }
    }

    /// SIGKILL every open session (connections drop mid-transfer) but keep listening.
    pub fn drop_connections(&mut self) {
        if let Some(pid) = self.pid() {
            let sessions = descendants(pid);
            for &p in &sessions {
                signal("KILL", p);
            }
            reap_gone(&sessions, Duration::from_secs(2));
        }
    }

    /// Creates `rel` (and parents) under the SFTP home, owned by the SFTP user.
    ///
    /// # Panics
    /// If it cannot.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.home().join(rel);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.chown_to_user(&path);
        path
    }

    /// Gives `path` to the SFTP user (so it can write or delete it over SFTP).
    ///
    /// # Panics
    /// If it cannot.
    pub fn chown_to_user(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    /// Runs an OpenSSH `sftp -b -` script with the unencrypted key and the right known_hosts.
    ///
    /// # Errors
    /// The exit status with stdout and stderr when sftp fails.
    pub fn sftp(&self, script: &str) -> Result<String, String> {
        let out = self.sftp_as(
            SftpAuth::Key(&self.private_key_path()),
            &self.known_hosts_path(),
            script,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "sftp failed ({}):\n{stdout}\n{}\n--- sshd log ---\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ))
        }
    }

    /// Runs the OpenSSH `sftp` client in batch mode (`-b -`, strict host key checking against
    /// `known_hosts`, no agent, no user config) against this server; killed after 30 s.
    pub fn sftp_as(&self, auth: SftpAuth<'_>, known_hosts: &Path, script: &str) -> Output {
        run_with_timeout(
            self.sftp_command(auth, known_hosts),
            script.as_bytes(),
            SFTP_TIMEOUT,
        )
    }

    /// The `sftp -b -` command [`Sshd::sftp_as`] runs, to spawn yourself (e.g. keep its stdin
    /// open to hold a session while the server goes away).
    pub fn sftp_command(&self, auth: SftpAuth<'_>, known_hosts: &Path) -> Command {
        let mut cmd = match auth {
            SftpAuth::Key(_) => Command::new("sftp"),
            SftpAuth::Password(pw) => {
                let mut c = Command::new("sshpass");
                c.arg("-e").arg("sftp").env("SSHPASS", pw);
                c
            }
        };
        cmd.arg("-F").arg("/dev/null");
        match auth {
            SftpAuth::Key(key) => {
                cmd.args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
                    .arg(key);
            }
            // `-b` turns BatchMode on (no password prompt) unless an earlier -o says otherwise.
            SftpAuth::Password(_) => {
                cmd.args([
                    "-o",
                    "BatchMode=no",
                    "-o",
                    "PubkeyAuthentication=no",
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                    "-o",
                    "NumberOfPasswordPrompts=1",
                ]);
            }
        }
        cmd.args(["-b", "-", "-P"])
            .arg(self.port.to_string())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{}@{HOST}", self.user));
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn make_keys(&mut self) -> Result<(), String> {
        keygen(&self.path("ssh_host_ed25519_key"), "", "smsdrop-test-host")?;
        keygen(&self.path("other_host_key"), "", "smsdrop-test-wrong-host")?;
        keygen(&self.private_key_path(), "", "smsdrop-test-client")?;
        keygen(
            &self.encrypted_key_path(),
            KEY_PASSPHRASE,
            "smsdrop-test-client-enc",
        )?;
        let host_pub = read(&self.path("ssh_host_ed25519_key.pub"))?;
        self.host_public_key = key_without_comment(&host_pub);
        let out = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.path("ssh_host_ed25519_key.pub")))?;
        self.fingerprint = out
            .split_whitespace()
            .nth(1)
            .filter(|f| f.starts_with("SHA256:"))
            .ok_or_else(|| format!("unexpected `ssh-keygen -lf` output: {out:?}"))?
            .to_owned();
        let authorized = format!(
            "{}{}",
            read(&self.public_key_path())?,
            read(&self.path("id_ed25519_enc.pub"))?
        );
        let path = self.path("authorized_keys");
        write(&path, &authorized)?;
        // sshd reads authorized_keys as the user.
        set_mode(&path, 0o644)
    }

    fn make_home(&self) -> Result<(), String> {
        let home = self.home();
        for dir in std::iter::once(home.clone()).chain(GATEWAY_DIRS.iter().map(|d| home.join(d))) {
            fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            set_mode(&dir, 0o755)?;
            std::os::unix::fs::chown(&dir, Some(self.uid), Some(self.gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    fn write_port_files(&self) -> Result<(), String> {
        let other = key_without_comment(&read(&self.path("other_host_key.pub"))?);
        let entries = |key: &str| {
            format!(
                "[{HOST}]:{port} {key}\n[localhost]:{port} {key}\n",
                port = self.port
            )
        };
        write(&self.known_hosts_path(), &entries(&self.host_public_key))?;
        write(&self.wrong_known_hosts_path(), &entries(&other))?;
        write(&self.path("sshd_config"), &self.config())
    }

    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let pam = if self.password.is_some() { "yes" } else { "no" };
        format!(
            "{extra}\n\
             Port {port}\n\
             ListenAddress {HOST}\n\
             AddressFamily inet\n\
             HostKey {dir}/ssh_host_ed25519_key\n\
             PidFile none\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             StrictModes no\n\
             UsePAM {pam}\n\
             PasswordAuthentication {pam}\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             PermitRootLogin no\n\
             AllowUsers {user}\n\
             UseDNS no\n\
             LogLevel VERBOSE\n\
             MaxStartups 100\n\
             MaxAuthTries 6\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             X11Forwarding no\n\
             PermitTTY no\n\
             PrintMotd no\n\
             Subsystem sftp internal-sftp\n\
             ForceCommand internal-sftp -d {home}\n",
            extra = self.extra_config,
            port = self.port,
            user = self.user,
            home = self.home().display(),
        )
    }

    fn launch_on_free_port(&mut self) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            let log_start = self.log_len();
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(e) if self.bind_failed_since(log_start) => last = e,
                Err(e) => return Err(self.failure(&e)),
            }
        }
        Err(self.failure(&format!(
            "no free port after {PORT_ATTEMPTS} attempts; last: {last}"
        )))
    }

    /// Spawns sshd on `self.port` and waits for its banner.
    fn launch(&mut self) -> Result<(), String> {
        self.write_port_files()?;
        let err_path = self.path("sshd.stderr");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&err_path)
            .map_err(|e| format!("open {}: {e}", err_path.display()))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| format!("dup {}: {e}", err_path.display()))?;
        // Absolute paths throughout: sshd re-executes itself for each connection from `/`.
        let child = Command::new(&self.sshd_bin)
            .arg("-D")
            .arg("-E")
            .arg(self.path("sshd.log"))
            .arg("-f")
            .arg(self.path("sshd_config"))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.sshd_bin.display()))?;
        self.child = Some(child);
        self.paused = false;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = self.addr();
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err("sshd is not running".into());
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "sshd on port {} exited ({status}) before accepting connections",
                    self.port
                ));
            }
            if banner_ok(addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(format!(
                    "sshd on port {} sent no SSH-2.0 banner within {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_len(&self) -> usize {
        self.log().len()
    }

    fn bind_failed_since(&self, start: usize) -> bool {
        let log = self.log();
        let new = log.get(start..).unwrap_or(&log);
        new.contains("Cannot bind any address") || new.contains("Address already in use")
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "could not start OpenSSH sshd ({}): {what}\n\
             config: {}\n--- sshd log ({}) ---\n{}",
            self.sshd_bin.display(),
            self.path("sshd_config").display(),
            self.path("sshd.log").display(),
            self.log()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let sessions = descendants(child.id());
            let _ = child.kill();
            for &pid in &sessions {
                signal("KILL", pid);
            }
            let _ = child.wait();
        }
    }
}

fn find_sshd() -> Result<PathBuf, String> {
    let configured = std::env::var_os("SSHD");
    let path = PathBuf::from(
        configured
            .clone()
            .unwrap_or_else(|| "/usr/sbin/sshd".into()),
    );
    if path.is_file() {
        // sshd refuses to run from a relative path (it re-executes itself).
        return fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()));
    }
    Err(match configured {
        Some(_) => format!("SSHD={} is not a file", path.display()),
        None => "OpenSSH server not found at /usr/sbin/sshd: run `apt-get install -y \
                 openssh-server openssh-client sshpass` (or .ci/install-sshd.sh), or set SSHD=/path/to/sshd"
            .into(),
    })
}

fn check_tool(name: &str, package: &str) -> Result<(), String> {
    match Command::new(name).arg("-?").output() {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "`{name}` cannot run ({e}): run `apt-get install -y {package}` (or .ci/install-sshd.sh)"
        )),
    }
}

fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn current_user_name() -> Result<String, String> {
    let name = run(Command::new("id").arg("-un"))?.trim().to_owned();
    if name.is_empty() {
        Err("`id -un` printed nothing".into())
    } else {
        Ok(name)
    }
}

/// sshd (as root) needs its privilege separation dir, root-owned and not group/world writable.
fn prepare_privsep_dir() -> Result<(), String> {
    let dir = Path::new("/run/sshd");
    fs::create_dir_all(dir).map_err(|e| format!("mkdir /run/sshd: {e}"))?;
    set_mode(dir, 0o755)
}

/// Creates [`TEST_USER`] if missing and sets its password; once per process. Tolerates another
/// process doing the same at the same time (useradd/chpasswd lock /etc/passwd and /etc/shadow).
fn ensure_test_user() -> Result<(u32, u32), String> {
    static USER: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    USER.get_or_init(|| {
        let mut last = String::new();
        for _ in 0..30 {
            if lookup_user(TEST_USER).is_none() {
                if let Err(e) = run(Command::new("useradd").args([
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    TEST_USER,
                ])) {
                    last = e;
                }
            }
            if let Some(ids) = lookup_user(TEST_USER) {
                let line = format!("{TEST_USER}:{TEST_PASSWORD}\n");
                let mut cmd = Command::new("chpasswd");
                cmd.args(["-c", "SHA512"]);
                let out = run_with_timeout(cmd, line.as_bytes(), SFTP_TIMEOUT);
                if out.status.success() {
                    return Ok(ids);
                }
                last = format!("chpasswd: {}", String::from_utf8_lossy(&out.stderr));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!("could not create user {TEST_USER}: {last}"))
    })
    .clone()
}

/// `(uid, gid)` from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

fn banner_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.starts_with(b"SSH-2.0-")
}

fn keygen(path: &Path, passphrase: &str, comment: &str) -> Result<(), String> {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(path))
    .map(drop)
}

fn key_without_comment(public: &str) -> String {
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends a signal with `kill(1)` (the test crate has no libc binding).
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// All processes below `root` (sshd's per-connection monitors and session children).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parens, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for `pids` to disappear, SIGKILLing what is left after `timeout`.
fn reap_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let alive = |pid: &u32| {
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    while Instant::now() < deadline {
        if !pids.iter().any(alive) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for pid in pids.iter().filter(|p| alive(p)) {
        signal("KILL", *pid);
    }
}

/// Runs `cmd` with `input` on stdin; SIGKILLs it after `timeout` (output so far is kept).
fn run_with_timeout(mut cmd: Command, input: &[u8], timeout: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Output {
                status: failed_status(),
                stdout: Vec::new(),
                stderr: format!(
                    "cannot run {:?}: {e} (run .ci/install-sshd.sh to install it)",
                    cmd.get_program()
                )
                .into_bytes(),
            }
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            signal("KILL", pid);
            rx.recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("waiter thread died")))
        }
    };
    result.unwrap_or_else(|e| Output {
        status: failed_status(),
        stdout: Vec::new(),
        stderr: format!("waiting for {:?}: {e}", cmd.get_program()).into_bytes(),
    })
}

fn failed_status() -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(1 << 8)
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
}
