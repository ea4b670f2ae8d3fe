//! The sandbox server's identity and its users' keys: an ed25519 host key generated on first start
//! into `<root>/.sandbox/host_key` (mode 0600) and reused afterwards, so a client's known_hosts
//! entry stays valid; its `SHA256:` fingerprint and known_hosts line; and the OpenSSH
//! `authorized_keys` file naming the public keys allowed to log in. A damaged key file is
//! reported, never silently replaced (that would change the server's identity).

use super::SandboxError;
use russh::keys::ssh_key::authorized_keys::AuthorizedKeys;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey, PublicKey};
use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The host key file under the private folder.
pub const HOST_KEY_FILE: &str = "host_key";

/// Loads `<dir>/host_key`, or creates it (ed25519, mode 0600) when it does not exist.
///
/// # Errors
/// [`SandboxError::HostKey`] when the file cannot be read, parsed or written.
pub fn load_or_create(dir: &Path) -> Result<PrivateKey, SandboxError> {
    let path = dir.join(HOST_KEY_FILE);
    let err = |message: String| SandboxError::HostKey {
        path: path.clone(),
        message,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            return PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
                err(format!(
                    "not an OpenSSH private key ({e}); delete it to make a new one (clients must \
                     then accept the new host key)"
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(format!("cannot create its folder: {e}")))?;
    let key =
        PrivateKey::from(Ed25519Keypair::from_seed(&random_seed().map_err(|e| {
            err(format!("cannot read random bytes from /dev/urandom: {e}"))
        })?));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| err(format!("cannot encode the new key: {e}")))?;
    // Written under a temporary name (0600 from creation), then linked: never half a key, never
    // over a key another process created meanwhile.
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".host_key")
            .tempfile_in(dir)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))?;
        tmp.write_all(pem.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist_noclobber(&path).map_err(|e| e.error)?;
        Ok(())
    };
    match write() {
        Ok(()) => {
            tracing::info!(path = %path.display(), "sandbox host key created");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(dir),
        Err(e) => Err(err(format!("cannot write it: {e}"))),
    }
}

fn random_seed() -> std::io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

/// The key's OpenSSH fingerprint, `SHA256:...`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The known_hosts line for `key` at `addr`: `[127.0.0.1]:2222 ssh-ed25519 AAAA...`, or the bare
/// address on port 22, as OpenSSH writes it.
///
/// # Errors
/// [`SandboxError::HostKey`] if the key cannot be encoded (not expected for ed25519).
pub fn known_hosts_line(key: &PublicKey, addr: SocketAddr) -> Result<String, SandboxError> {
    let host = match (addr.port(), addr) {
        (22, SocketAddr::V4(a)) => a.ip().to_string(),
        (22, SocketAddr::V6(a)) => a.ip().to_string(),
        (port, SocketAddr::V4(a)) => format!("[{}]:{port}", a.ip()),
        (port, SocketAddr::V6(a)) => format!("[{}]:{port}", a.ip()),
    };
    let mut key = key.clone();
    key.set_comment("");
    let text = key.to_openssh().map_err(|e| SandboxError::HostKey {
        path: HOST_KEY_FILE.into(),
        message: format!("cannot encode the public key: {e}"),
    })?;
    Ok(format!("{host} {}", text.trim_end()))
}

/// Reads the public keys of an OpenSSH `authorized_keys` file (options are ignored; blank lines
/// and `#` comments skipped).
///
/// # Errors
/// [`SandboxError::AuthorizedKeys`] when the file cannot be read, a line is not a public key, or
/// it holds no key at all.
pub fn read_authorized_keys(path: &Path) -> Result<Vec<PublicKey>, SandboxError> {
    let err = |message: String| SandboxError::AuthorizedKeys {
        path: path.to_owned(),
        message,
    };
    let text = fs::read_to_string(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let mut keys = vec![];
    for (i, entry) in AuthorizedKeys::new(&text).enumerate() {
        let entry = entry.map_err(|e| {
            err(format!(
                "entry {} is not an OpenSSH public key line ({e})",
                i + 1
            ))
        })?;
        keys.push(entry.public_key().clone());
    }
    if keys.is_empty() {
        return Err(err("it holds no public key".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_key_is_created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join(".sandbox");
        let first = load_or_create(&private).unwrap();
        let mode = fs::metadata(private.join(HOST_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&private).unwrap();
        let fp = fingerprint(first.public_key());
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(fp, fingerprint(again.public_key()));
        let addr: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        let line = known_hosts_line(first.public_key(), addr).unwrap();
        assert!(
            line.starts_with("[127.0.0.1]:2222 ssh-ed25519 AAAA"),
            "{line}"
        );
        assert_eq!(line.split(' ').count(), 3, "{line}");

        fs::write(private.join(HOST_KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            load_or_create(&private),
            Err(SandboxError::HostKey { .. })
        ));
    }

    #[test]
    fn authorized_keys_parse_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(dir.path()).unwrap();
        let mut public = key.public_key().clone();
        public.set_comment("me@example");
        let line = public.to_openssh().unwrap();
        let file = dir.path().join("authorized_keys");
        fs::write(&file, format!("# mine\n\n{line}\n")).unwrap();
        let keys = read_authorized_keys(&file).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_data(), key.public_key().key_data());
        fs::write(&file, "not a key\n").unwrap();
        assert!(read_authorized_keys(&file).is_err());
        fs::write(&file, "# nothing\n").unwrap();
        assert!(read_authorized_keys(&file).is_err());
    }
}
