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
pub use crate::domain::TokenHash;
use crate::domain::backup_code::{self, BackupCode};
use crate::domain::session_token::RANDOM_BYTES;
use crate::domain::totp::{SECRET_BYTES, TotpSecret};

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

/// Keys derived from the master secret, one per purpose.
#[derive(Clone)]
pub struct Keys {
    token_hash: Zeroizing<[u8; 32]>,
    csrf: Zeroizing<[u8; 32]>,
    /// Hashes mailed single-use tokens (reset, verification).
    account_token: Zeroizing<[u8; 32]>,
    /// Pepper mixed into backup-code hashes (Argon2 secret input).
    pub(crate) backup_pepper: Zeroizing<[u8; 32]>,
    /// Peppers of previous master secrets: backup codes issued before a
    /// rotation still verify (they are never hashed with these again).
    pub(crate) previous_backup_peppers: Vec<Zeroizing<[u8; 32]>>,
    /// Seals TOTP secrets: the current key first, then decrypt-only keys
    /// derived from previous master secrets (key rotation).
    sealing: Vec<SealingKey>,
}

/// An AES-256-GCM key and its public id (the first 4 bytes of its SHA-256).
#[derive(Clone)]
struct SealingKey {
    id: [u8; 4],
    key: Zeroizing<[u8; 32]>,
}

impl SealingKey {
    fn derive(master: &[u8]) -> Self {
        use sha2::Digest;
        let key = derive(master, "castellan/v1/totp-secret-aes256gcm");
        let digest = Sha256::digest(key.as_slice());
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest[..4]);
        Self { id, key }
    }
}

/// Format version of sealed blobs: `0x01 | key id (4) | nonce (12) | ciphertext and 16-byte tag`.
const SEALED_V1: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("no key with this id is configured")]
    UnknownKey,
    #[error("the sealed value failed authentication (tampered or wrong row)")]
    Tampered,
    #[error("random generator failed")]
    Random,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

const BACKUP_PEPPER_LABEL: &str = "castellan/v1/backup-code-pepper";

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
    /// Derives every key from the master secret; `previous` masters stay
    /// usable for opening sealed values and checking backup codes only.
    pub fn derive(master: &SecretBytes, previous: &[SecretBytes]) -> Self {
        let mut sealing = vec![SealingKey::derive(master.expose())];
        sealing.extend(previous.iter().map(|p| SealingKey::derive(p.expose())));
        Self {
            token_hash: derive(master.expose(), "castellan/v1/session-token-hash"),
            csrf: derive(master.expose(), "castellan/v1/csrf"),
            account_token: derive(master.expose(), "castellan/v1/account-token-hash"),
            backup_pepper: derive(master.expose(), BACKUP_PEPPER_LABEL),
            previous_backup_peppers: previous
                .iter()
                .map(|p| derive(p.expose(), BACKUP_PEPPER_LABEL))
                .collect(),
            sealing,
        }
    }

    /// Encrypts `plain` with AES-256-GCM under the current key, binding it
    /// to `aad` (the owning row's identity) so it cannot be moved.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let key = &self.sealing[0];
        let nonce_bytes = random_bytes::<12>().map_err(|_| SealError::Random)?;
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(key.key.as_slice())
            .map_err(|_| SealError::Malformed)?;
        let nonce = aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::from(nonce_bytes);
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plain, aad })
            .map_err(|_| SealError::Malformed)?;
        let mut out = Vec::with_capacity(1 + 4 + 12 + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a value sealed by [`Keys::seal`] with the same `aad`.
    pub fn open(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        if blob.len() < 1 + 4 + 12 + 16 || blob[0] != SEALED_V1 {
            return Err(SealError::Malformed);
        }
        let key = self
            .sealing
            .iter()
            .find(|k| k.id == blob[1..5])
            .ok_or(SealError::UnknownKey)?;
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes.copy_from_slice(&blob[5..17]);
        let nonce = aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::from(nonce_bytes);
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(key.key.as_slice())
            .map_err(|_| SealError::Malformed)?;
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &blob[17..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }

    /// Whether `blob` was sealed with a previous key (re-seal it).
    pub fn sealed_with_old_key(&self, blob: &[u8]) -> bool {
        blob.get(1..5).is_some_and(|id| id != self.sealing[0].id)
    }

    /// HMAC-SHA-256 of a session token.
    pub fn hash_token(&self, token: &SessionToken) -> TokenHash {
        TokenHash(hmac(&self.token_hash, token.expose().as_bytes()))
    }

    /// HMAC-SHA-256 of a mailed single-use token.
    pub fn hash_account_token(&self, token: &str) -> TokenHash {
        TokenHash(hmac(&self.account_token, token.as_bytes()))
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

// The generating constructors of domain values live here, so `domain`
// stays free of I/O and of this module.
impl SessionToken {
    /// A fresh token from the OS random generator.
    pub fn generate() -> Result<Self, RandomError> {
        Ok(Self::from_random(random_bytes::<RANDOM_BYTES>()?))
    }
}

impl TotpSecret {
    /// A new random secret from the OS generator.
    pub fn generate() -> Result<Self, RandomError> {
        Ok(Self::from_bytes(random_bytes::<SECRET_BYTES>()?.to_vec()))
    }
}

impl BackupCode {
    /// Generates a fresh batch of [`backup_code::BATCH_SIZE`] codes, one per slot.
    pub fn generate_batch() -> Result<Vec<Self>, RandomError> {
        (0..backup_code::BATCH_SIZE)
            .map(|slot| {
                Ok(Self::from_random(
                    slot,
                    random_bytes::<{ backup_code::RANDOM_CHARS }>()?,
                ))
            })
            .collect()
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

    fn master(byte: u8) -> SecretBytes {
        SecretBytes(Zeroizing::new(vec![byte; 32]))
    }

    fn keys(byte: u8) -> Keys {
        Keys::derive(&master(byte), &[])
    }

    // covers: ASVS-11.3.2, ASVS-11.3.3, ASVS-11.1.1, RFC-08
    #[test]
    fn sealing_is_authenticated_bound_to_the_row_and_rotatable() {
        let k = keys(1);
        let blob = k.seal(b"twenty byte secret!!", b"user-a").unwrap();
        assert_eq!(blob[0], 1, "version");
        assert_eq!(
            blob.len(),
            1 + 4 + 12 + 20 + 16,
            "96-bit nonce, 128-bit tag"
        );
        assert_eq!(
            k.open(&blob, b"user-a").unwrap().as_slice(),
            b"twenty byte secret!!"
        );
        assert_eq!(
            k.open(&blob, b"user-b"),
            Err(SealError::Tampered),
            "moved to another row"
        );
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(k.open(&flipped, b"user-a"), Err(SealError::Tampered));
        assert_ne!(
            k.seal(b"x", b"a").unwrap()[5..17],
            k.seal(b"x", b"a").unwrap()[5..17],
            "fresh nonces"
        );
        // Rotation: a new master with the old one as decrypt-only.
        let rotated = Keys::derive(&master(2), &[master(1)]);
        assert_eq!(
            rotated.open(&blob, b"user-a").unwrap().as_slice(),
            b"twenty byte secret!!"
        );
        assert!(rotated.sealed_with_old_key(&blob));
        let resealed = rotated.seal(b"twenty byte secret!!", b"user-a").unwrap();
        assert!(!rotated.sealed_with_old_key(&resealed));
        assert_eq!(keys(2).open(&blob, b"user-a"), Err(SealError::UnknownKey));
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
