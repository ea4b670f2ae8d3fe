//! `smsdrop sandbox`: runs the embedded SFTP server and gateway simulator ([`crate::sandbox`])
//! in the foreground until SIGINT or SIGTERM, after printing everything needed to point smsdrop
//! (or OpenSSH's `sftp`) at it: address, root, host key fingerprint, a known_hosts line and a
//! ready `[sftp]` config section. Never prints the password.

use crate::sandbox::{self, SandboxError, SandboxOptions};
use crate::Outcome;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable holding the sandbox password (also used in the printed config).
pub const PASSWORD_ENV: &str = "SMSDROP_SANDBOX_PASSWORD";

/// The environment variable holding the status interface's token.
pub const STATUS_TOKEN_ENV: &str = "SMSDROP_SANDBOX_STATUS_TOKEN";

/// Flags of `smsdrop sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Address to listen on; loopback only (127.0.0.1 or [::1]).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// Folder served to SFTP clients; gets upload/, success/ and error/.
    #[arg(long, value_name = "DIR", default_value = "sandbox")]
    pub root: PathBuf,
    /// The user name clients log in with.
    #[arg(long, value_name = "NAME", default_value = "demo")]
    pub user: String,
    /// Password login (prefer the environment variable: a command line is visible to others).
    #[arg(long, value_name = "PW", env = PASSWORD_ENV, hide_env_values = true)]
    pub password: Option<String>,
    /// Public key login: an OpenSSH authorized_keys file (e.g. ~/.ssh/id_ed25519.pub).
    #[arg(long, value_name = "FILE")]
    pub authorized_key: Option<PathBuf>,
    /// How long a file sits in upload/ before the gateway judges it (e.g. 2s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_delay)]
    pub delay: Duration,
    /// Share of good files the gateway fails on purpose, 0 to 1.
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fail every N-th good file on purpose.
    #[arg(long, value_name = "N")]
    pub fail_every: Option<u32>,
    /// Seed for --error-rate (same seed, same failures).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Serve the HTTP status interface (list, search) here; loopback only.
    #[arg(long, value_name = "ADDR")]
    pub status_listen: Option<SocketAddr>,
    /// The token its clients send as `authenticationtoken` (with --user as `username`).
    #[arg(long, value_name = "TOKEN", env = STATUS_TOKEN_ENV, hide_env_values = true, default_value = "demo-token")]
    pub status_token: String,
    /// How long after a file is taken its first statuses come (delivery reports: twice that).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_delay)]
    pub status_delay: Duration,
    /// Answer the first N status requests with HTTP 429.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub status_fail_first: u32,
    /// Also POST every status to this URL as it happens (smsdrop's webhook).
    #[arg(long, value_name = "URL")]
    pub status_webhook: Option<String>,
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 2s, 30s, 1m"))
}

impl SandboxArgs {
    /// The library options these flags stand for.
    pub fn options(&self) -> SandboxOptions {
        SandboxOptions {
            listen: self.listen,
            root: self.root.clone(),
            username: self.user.clone(),
            password: self.password.clone(),
            authorized_keys: self.authorized_key.clone(),
            delay: self.delay,
            error_rate: self.error_rate,
            fail_every: self.fail_every,
            seed: self.seed,
            status: self.status_listen.map(|addr| {
                (
                    addr,
                    crate::sandbox::statuses::StatusOptions {
                        username: self.user.clone(),
                        token: self.status_token.clone(),
                        delay: self.status_delay,
                        fail_first: self.status_fail_first,
                        webhook: self.status_webhook.clone(),
                        ..crate::sandbox::statuses::StatusOptions::default()
                    },
                )
            }),
            ..SandboxOptions::default()
        }
    }
}

/// Starts the sandbox, prints how to use it, and serves until SIGINT or SIGTERM.
///
/// # Errors
/// [`SandboxError`] when it cannot start; [`SandboxError::is_usage`] tells bad flags apart.
pub fn run(args: &SandboxArgs) -> Result<Outcome, SandboxError> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(SandboxError::Runtime)?;
    let sandbox = sandbox::start(args.options())?;
    print!("{}", banner(args, &sandbox));
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "sandbox stopping");
    }
    sandbox.stop();
    println!("sandbox stopped");
    Ok(Outcome::Ok)
}

/// What the operator needs to connect, as printed on start.
fn banner(args: &SandboxArgs, sb: &sandbox::Sandbox) -> String {
    let addr = sb.local_addr();
    let root = sb.root().display();
    let known_hosts = sb.known_hosts_path();
    let mut logins = vec![];
    if args.password.is_some() {
        logins.push(format!("password (from --password or {PASSWORD_ENV})"));
    }
    if let Some(keys) = &args.authorized_key {
        logins.push(format!("public keys in {}", keys.display()));
    }
    let failing = match (args.error_rate, args.fail_every) {
        (0.0, None) => "never fails a good file on purpose".to_owned(),
        (rate, n) => format!(
            "fails good files on purpose: rate {rate}, every {}",
            n.map_or_else(|| "-".to_owned(), |n| format!("{n}th"))
        ),
    };
    let mut s = String::new();
    let _ = writeln!(s, "smsdrop sandbox: SFTP server + gateway simulator");
    let _ = writeln!(s, "  listening    {addr} (loopback only)");
    let _ = writeln!(s, "  root         {root} (upload/, success/, error/)");
    let _ = writeln!(
        s,
        "  login        user {:?} with {}",
        args.user,
        logins.join(" or ")
    );
    let _ = writeln!(s, "  host key     {}", sb.host_key_fingerprint());
    let _ = writeln!(s, "  known_hosts  {}", sb.known_hosts_line());
    let _ = writeln!(s, "               (written to {})", known_hosts.display());
    let _ = writeln!(
        s,
        "  gateway      judges files in upload/ after {:?}; {failing}; log: {}",
        args.delay,
        sb.gateway_log().display()
    );
    let _ = writeln!(s, "\nFor smsdrop.toml:\n\n[sftp]");
    let _ = writeln!(s, "host = {:?}", addr.ip().to_string());
    let _ = writeln!(s, "port = {}", addr.port());
    let _ = writeln!(s, "username = {:?}", args.user);
    match (&args.password, &args.authorized_key) {
        (Some(_), _) => {
            let _ = writeln!(
                s,
                "password_env = {PASSWORD_ENV:?}   # export {PASSWORD_ENV}=..."
            );
        }
        (None, Some(keys)) => {
            let _ = writeln!(s, "private_key = {:?}", private_key_guess(keys));
        }
        (None, None) => {}
    }
    let _ = writeln!(s, "known_hosts = {:?}", known_hosts.display().to_string());
    if let Some(status) = sb.status_addr() {
        let _ = writeln!(s, "\n[status]");
        let _ = writeln!(s, "mode = \"poll\"");
        let _ = writeln!(s, "api_url = \"http://{status}\"");
        let _ = writeln!(s, "username = {:?}", args.user);
        let _ = writeln!(
            s,
            "token_env = {STATUS_TOKEN_ENV:?}   # export {STATUS_TOKEN_ENV}=... (default demo-token)"
        );
    }
    let _ = writeln!(
        s,
        "\nOr by hand: sftp -P {} -o UserKnownHostsFile={} {}@{}",
        addr.port(),
        known_hosts.display(),
        args.user,
        match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    );
    let _ = writeln!(s, "Stop with Ctrl-C.");
    s
}

/// The private key beside a `.pub` file, or a placeholder to fill in.
fn private_key_guess(public: &Path) -> String {
    let beside = public
        .extension()
        .filter(|e| *e == "pub")
        .map(|_| public.with_extension(""));
    match beside {
        Some(p) if p.exists() => std::path::absolute(&p).unwrap_or(p).display().to_string(),
        _ => "/path/to/the/private/key".to_owned(),
    }
}
