//! The SSH side of the sandbox: accepting connections, checking logins, and starting the SFTP
//! subsystem (and nothing else: no shell, exec or forwarding) on session channels.
//!
//! Logins are checked for real: the configured user name, and either the password (compared as
//! SHA-256 digests in constant time) or a public key listed in the authorized_keys file. russh
//! verifies the key's signature and delays every rejection by a fixed time. Credentials never
//! reach a log.

use super::fs::SftpSession;
use super::jail::Jail;
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Who may log in.
pub struct Credentials {
    user: String,
    password: Option<[u8; 32]>,
    keys: Vec<PublicKey>,
}

impl Credentials {
    /// `user` with an optional password and the keys allowed for it.
    pub fn new(user: &str, password: Option<&str>, keys: Vec<PublicKey>) -> Credentials {
        Credentials {
            user: user.to_owned(),
            password: password.map(digest),
            keys,
        }
    }

    /// The login methods to offer.
    pub fn methods(&self) -> MethodSet {
        let mut kinds = vec![];
        if self.password.is_some() {
            kinds.push(MethodKind::Password);
        }
        if !self.keys.is_empty() {
            kinds.push(MethodKind::PublicKey);
        }
        MethodSet::from(&kinds[..])
    }

    fn password_ok(&self, user: &str, password: &str) -> bool {
        let Some(want) = &self.password else {
            return false;
        };
        let same = constant_time_eq(want, &digest(password));
        same & (user == self.user)
    }

    fn key_ok(&self, user: &str, key: &PublicKey) -> bool {
        user == self.user && self.keys.iter().any(|k| k.key_data() == key.key_data())
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What every connection shares.
pub struct Shared {
    pub jail: Arc<Jail>,
    pub credentials: Credentials,
}

/// The russh server configuration for `key` and `credentials`.
pub fn config(key: russh::keys::PrivateKey, credentials: &Credentials) -> russh::server::Config {
    russh::server::Config {
        methods: credentials.methods(),
        auth_rejection_time: Duration::from_millis(500),
        // OpenSSH and libssh2 first probe with "none" to learn the methods: answer at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        inactivity_timeout: Some(Duration::from_secs(600)),
        nodelay: true,
        ..Default::default()
    }
}

/// Accepts connections on `listener` until `shutdown` changes; each client runs in its own task.
pub async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let client = Client::new(shared.clone(), peer);
                    tokio::spawn(run_client(config.clone(), stream, client, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn run_client(
    config: Arc<russh::server::Config>,
    stream: tokio::net::TcpStream,
    client: Client,
    peer: SocketAddr,
) {
    tracing::debug!(%peer, "sandbox: connection");
    let result = match russh::server::run_stream(config, stream, client).await {
        Ok(session) => session.await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tracing::debug!(%peer, "sandbox: connection closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "sandbox: connection ended"),
    }
}

/// One connection.
struct Client {
    shared: Arc<Shared>,
    peer: SocketAddr,
    user: Option<String>,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Client {
    fn new(shared: Arc<Shared>, peer: SocketAddr) -> Client {
        Client {
            shared,
            peer,
            user: None,
            channels: HashMap::new(),
        }
    }

    fn verdict(&mut self, user: &str, method: &'static str, ok: bool) -> Auth {
        if ok {
            tracing::info!(peer = %self.peer, user, method, "sandbox: login accepted");
            self.user = Some(user.to_owned());
            Auth::Accept
        } else {
            tracing::info!(peer = %self.peer, user, method, "sandbox: login refused");
            Auth::reject()
        }
    }
}

impl russh::server::Handler for Client {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let ok = self.shared.credentials.password_ok(user, password);
        Ok(self.verdict(user, "password", ok))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only a probe: no log line, and an unknown key just lets the client try the next one.
        Ok(if self.shared.credentials.key_ok(user, offer.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let ok = self.shared.credentials.key_ok(user, key.public_key);
        Ok(self.verdict(user, "publickey", ok))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.close(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let channel = self.channels.remove(&channel_id);
        match channel {
            Some(channel) if name == "sftp" => {
                session.channel_success(channel_id)?;
                let user = self.user.as_deref().unwrap_or("?");
                let sftp = SftpSession::new(self.shared.jail.clone(), user);
                russh_sftp::server::run(channel.into_stream(), sftp).await;
            }
            _ => {
                tracing::info!(peer = %self.peer, subsystem = name, "sandbox: refused a subsystem");
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_check_user_and_secret() {
        let c = Credentials::new("demo", Some("s3cret"), vec![]);
        assert!(c.password_ok("demo", "s3cret"));
        assert!(!c.password_ok("demo", "s3cret "));
        assert!(!c.password_ok("root", "s3cret"));
        assert!(!c.password_ok("demo", ""));
        let none = Credentials::new("demo", None, vec![]);
        assert!(!none.password_ok("demo", ""));
        assert_eq!(none.methods().len(), 0);
        assert_eq!(c.methods().len(), 1);
    }
}
