//! The one place that touches randomness and keys.
//!
//! All secrets come from the operating system's generator (`getrandom`).
//! Sub-keys are derived from `CASTELLAN_SECRET_KEY` with HMAC-SHA-256 over a
//! fixed label, so each purpose has its own key and a leak of one derived
//! value says nothing about the others.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::SecretBytes;
use crate::domain::SessionToken;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random generator failed")]
pub struct RandomError;

/// `N` bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| RandomError)?;
    Ok(buf)
}

/// A keyed hash of a session token: what the database stores and looks up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Keys derived from the master secret, one per purpose.
#[derive(Clone)]
pub struct Keys {
    token_hash: Zeroizing<[u8; 32]>,
    csrf: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

fn derive(master: &[u8], label: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    // HMAC accepts keys of any length, so this cannot fail.
    if let Ok(mut mac) = HmacSha256::new_from_slice(master) {
        mac.update(label.as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = HmacSha256::new_from_slice(key) {
        mac.update(data);
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

impl Keys {
    pub fn derive(master: &SecretBytes) -> Self {
        Self {
            token_hash: derive(master.expose(), "castellan/v1/session-token-hash"),
            csrf: derive(master.expose(), "castellan/v1/csrf"),
        }
    }

    /// HMAC-SHA-256 of a session token.
    pub fn hash_token(&self, token: &SessionToken) -> TokenHash {
        TokenHash(hmac(&self.token_hash, token.expose().as_bytes()))
    }

    /// The CSRF token bound to one session: derived, so nothing extra is
    /// stored, and it changes whenever the session (and its id) rotates.
    pub fn csrf_token(&self, session_id: Uuid) -> String {
        URL_SAFE_NO_PAD.encode(hmac(&self.csrf, session_id.as_bytes()))
    }

    /// Checks a presented CSRF token in constant time.
    pub fn csrf_matches(&self, session_id: Uuid, presented: &str) -> bool {
        constant_time_eq(self.csrf_token(session_id).as_bytes(), presented.as_bytes())
    }
}

/// Compares two secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Loads the dev secret key from `data_dir/secret.key`, creating it (0600 in
/// a 0700 folder) on first start.
pub fn load_or_create_dev_key(data_dir: &Path) -> anyhow::Result<SecretBytes> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let path = data_dir.join("secret.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = STANDARD
                .decode(text.trim())
                .with_context(|| format!("{} is not base64", path.display()))?;
            anyhow::ensure!(
                bytes.len() >= 32,
                "{} holds fewer than 32 bytes",
                path.display()
            );
            Ok(SecretBytes(Zeroizing::new(bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = random_bytes::<32>()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(STANDARD.encode(bytes).as_bytes())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(SecretBytes(Zeroizing::new(bytes.to_vec())))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> Keys {
        Keys::derive(&SecretBytes(Zeroizing::new(vec![byte; 32])))
    }

    // covers: ASVS-7.2.1, ASVS-11.4.3
    #[test]
    fn token_hash_is_keyed() {
        let t = SessionToken::generate().unwrap();
        assert_eq!(keys(1).hash_token(&t), keys(1).hash_token(&t));
        assert_ne!(keys(1).hash_token(&t), keys(2).hash_token(&t));
    }

    #[test]
    fn csrf_token_is_bound_to_the_session() {
        let k = keys(1);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let token = k.csrf_token(a);
        assert!(k.csrf_matches(a, &token));
        assert!(!k.csrf_matches(b, &token));
        assert!(!k.csrf_matches(a, ""));
        assert!(URL_SAFE_NO_PAD.decode(&token).unwrap().len() >= 16);
    }

    // covers: ASVS-13.3.2
    #[test]
    fn dev_key_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let a = load_or_create_dev_key(&data).unwrap();
        let b = load_or_create_dev_key(&data).unwrap();
        assert_eq!(a.expose(), b.expose());
        let mode = std::fs::metadata(data.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
}
