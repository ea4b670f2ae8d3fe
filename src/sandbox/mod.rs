//! The sandbox: an embedded SFTP server and gateway simulator, so smsdrop can be tried on one
//! machine without gateway credentials (`smsdrop sandbox`).
//!
//! [`start`] prepares a root folder (`upload/`, `success/`, `error/`, and the private
//! `.sandbox/` holding the persistent host key and a ready known_hosts file), binds a loopback
//! address, and runs the SSH/SFTP server ([`server`], [`fs`]) on a tokio runtime in a background
//! thread and the gateway simulator ([`gateway`]) on another. The returned [`Sandbox`] stops both
//! when dropped. The sandbox listens on loopback only, checks every login for real, never lets
//! an SFTP path leave the root, and never overwrites a file.

pub mod fs;
pub mod gateway;
pub mod hostkey;
pub mod jail;
pub mod replies;
pub mod server;
pub mod statuses;

use jail::{Jail, PRIVATE_DIR};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// How to run the sandbox. `Default` gives the documented defaults, with no login method.
#[derive(Clone)]
pub struct SandboxOptions {
    /// Where to listen; must be a loopback address. Default `127.0.0.1:2222`.
    pub listen: SocketAddr,
    /// The folder served as the SFTP home. Default `./sandbox`.
    pub root: PathBuf,
    /// The only user name accepted. Default `demo`.
    pub username: String,
    /// Password login, when set.
    pub password: Option<String>,
    /// Public key login, for the keys in this OpenSSH authorized_keys file.
    pub authorized_keys: Option<PathBuf>,
    /// How old (by modification time) a file in `upload/` must be before the gateway judges it.
    pub delay: Duration,
    /// Share of good files the gateway fails on purpose, 0 to 1.
    pub error_rate: f64,
    /// Fail every n-th good file on purpose.
    pub fail_every: Option<u32>,
    /// How often the gateway looks at `upload/`.
    pub poll: Duration,
    /// Seed of the `error_rate` draws (same seed, same failures).
    pub seed: u64,
    /// The HTTP status interface: where it listens, and how it behaves.
    pub status: Option<(SocketAddr, statuses::StatusOptions)>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            root: PathBuf::from("sandbox"),
            username: "demo".into(),
            password: None,
            authorized_keys: None,
            delay: Duration::from_secs(2),
            error_rate: 0.0,
            fail_every: None,
            poll: Duration::from_millis(500),
            seed: 1,
            status: None,
        }
    }
}

impl fmt::Debug for SandboxOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxOptions")
            .field("listen", &self.listen)
            .field("root", &self.root)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("authorized_keys", &self.authorized_keys)
            .field("delay", &self.delay)
            .field("error_rate", &self.error_rate)
            .field("fail_every", &self.fail_every)
            .field("poll", &self.poll)
            .field("seed", &self.seed)
            .finish()
    }
}

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `listen` is not a loopback address.
    #[error("refusing to listen on {addr}: the sandbox accepts loopback addresses only (127.0.0.1 or [::1])")]
    NotLoopback { addr: SocketAddr },
    /// Neither a password nor an authorized keys file.
    #[error("no login method: set a password (--password or SMSDROP_SANDBOX_PASSWORD) and/or an authorized keys file (--authorized-key)")]
    NoAuth,
    /// Another option is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {error} (is another sandbox running? pick another --listen port)"
    )]
    Bind { addr: SocketAddr, error: io::Error },
    /// The root or a file in it could not be created.
    #[error("cannot prepare {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// The host key could not be read, parsed or created.
    #[error("host key {}: {message}", path.display())]
    HostKey { path: PathBuf, message: String },
    /// The authorized keys file could not be read or holds no key.
    #[error("authorized keys file {}: {message}", path.display())]
    AuthorizedKeys { path: PathBuf, message: String },
    /// A thread or the async runtime could not be started.
    #[error("cannot start the sandbox's threads: {0}")]
    Runtime(io::Error),
}

impl SandboxError {
    /// True when the options were wrong (exit code 2), false for a runtime failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SandboxError::NotLoopback { .. }
                | SandboxError::NoAuth
                | SandboxError::Invalid(_)
                | SandboxError::AuthorizedKeys { .. }
        )
    }
}

/// A running sandbox. Dropping it stops the server and the gateway.
pub struct Sandbox {
    local_addr: SocketAddr,
    root: PathBuf,
    fingerprint: String,
    known_hosts_line: String,
    shutdown: Option<watch::Sender<bool>>,
    server: Option<JoinHandle<()>>,
    gateway: gateway::Gateway,
    status: Option<statuses::Service>,
}

impl Sandbox {
    /// The address the server listens on (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The root folder, absolute.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host key's OpenSSH fingerprint, `SHA256:...`.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The known_hosts line for this server, e.g. `[127.0.0.1]:2222 ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> &str {
        &self.known_hosts_line
    }

    /// A known_hosts file holding [`Sandbox::known_hosts_line`], rewritten at every start.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.root.join(PRIVATE_DIR).join("known_hosts")
    }

    /// Where the status interface listens, when it runs.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        self.status.as_ref().map(statuses::Service::addr)
    }

    /// The gateway's decision log.
    pub fn gateway_log(&self) -> PathBuf {
        self.root.join(gateway::LOG_FILE)
    }

    /// Stops the server (open sessions are cut) and the gateway, and waits for their threads.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        self.gateway.stop();
        self.status = None;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("local_addr", &self.local_addr)
            .field("root", &self.root)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Checks the options, prepares the root, binds, and starts the server and the gateway.
///
/// # Errors
/// [`SandboxError`]: bad options ([`SandboxError::is_usage`]), or the root, host key, address or
/// threads could not be set up.
pub fn start(opts: SandboxOptions) -> Result<Sandbox, SandboxError> {
    validate(&opts)?;
    let root = prepare_root(&opts.root)?;
    let private = root.join(PRIVATE_DIR);
    let key = hostkey::load_or_create(&private)?;
    let keys = match &opts.authorized_keys {
        Some(path) => hostkey::read_authorized_keys(path)?,
        None => vec![],
    };
    let credentials = server::Credentials::new(&opts.username, opts.password.as_deref(), keys);
    let listener = std::net::TcpListener::bind(opts.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|error| SandboxError::Bind {
            addr: opts.listen,
            error,
        })?;
    let local_addr = listener.local_addr().map_err(|error| SandboxError::Bind {
        addr: opts.listen,
        error,
    })?;
    let fingerprint = hostkey::fingerprint(key.public_key());
    let known_hosts_line = hostkey::known_hosts_line(key.public_key(), local_addr)?;
    let known_hosts = private.join("known_hosts");
    write_replacing(&known_hosts, &format!("{known_hosts_line}\n")).map_err(|error| {
        SandboxError::Io {
            path: known_hosts.clone(),
            error,
        }
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sandbox-ssh")
        .enable_all()
        .build()
        .map_err(SandboxError::Runtime)?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(SandboxError::Runtime)?
    };
    let config = Arc::new(server::config(key, &credentials));
    let shared = Arc::new(server::Shared {
        jail: Arc::new(Jail::new(root.clone())),
        credentials,
    });
    let (tx, rx) = watch::channel(false);
    let status = match &opts.status {
        Some((addr, o)) => Some(
            statuses::Service::start(*addr, o, &root)
                .map_err(|error| SandboxError::Bind { addr: *addr, error })?,
        ),
        None => None,
    };
    let gateway = gateway::Gateway::spawn(gateway::GatewayConfig {
        statuses: status.as_ref().map(statuses::Service::book),
        root: root.clone(),
        delay: opts.delay,
        poll: opts.poll,
        error_rate: opts.error_rate,
        fail_every: opts.fail_every,
        seed: opts.seed,
    })
    .map_err(SandboxError::Runtime)?;
    let server = std::thread::Builder::new()
        .name("sandbox-server".into())
        .spawn(move || {
            runtime.block_on(server::serve(listener, config, shared, rx));
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(SandboxError::Runtime)?;
    tracing::info!(addr = %local_addr, root = %root.display(), %fingerprint, "sandbox started");
    Ok(Sandbox {
        local_addr,
        root,
        fingerprint,
        known_hosts_line,
        shutdown: Some(tx),
        server: Some(server),
        gateway,
        status,
    })
}

fn validate(opts: &SandboxOptions) -> Result<(), SandboxError> {
    let invalid = |m: &str| Err(SandboxError::Invalid(m.to_owned()));
    if !opts.listen.ip().is_loopback() {
        return Err(SandboxError::NotLoopback { addr: opts.listen });
    }
    if let Some((addr, _)) = &opts.status {
        if !addr.ip().is_loopback() {
            return Err(SandboxError::NotLoopback { addr: *addr });
        }
    }
    if opts.password.is_none() && opts.authorized_keys.is_none() {
        return Err(SandboxError::NoAuth);
    }
    if opts.password.as_deref() == Some("") {
        return invalid("the sandbox password is empty: choose one");
    }
    let name_ok = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    if opts.username.is_empty() || !opts.username.bytes().all(name_ok) {
        return invalid("the sandbox user name must be letters, digits, '.', '_' or '-'");
    }
    if !(0.0..=1.0).contains(&opts.error_rate) {
        return invalid(
            "the error rate must be between 0 and 1 (e.g. 0.1 fails one good file in ten)",
        );
    }
    if opts.fail_every == Some(0) {
        return invalid("fail-every must be at least 1");
    }
    if opts.poll.is_zero() {
        return invalid("the gateway poll interval must be above zero");
    }
    Ok(())
}

/// Creates the root and its folders when missing; returns the root's canonical path.
fn prepare_root(root: &Path) -> Result<PathBuf, SandboxError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |error| SandboxError::Io { path, error }
    };
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let root = root.canonicalize().map_err(io_err(root))?;
    for dir in ["upload", "success", "error"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path).map_err(io_err(&path))?;
    }
    let private = root.join(PRIVATE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&private)
        .map_err(io_err(&private))?;
    Ok(root)
}

/// Writes `text` to `path` through a temporary file and a rename.
fn write_replacing(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
