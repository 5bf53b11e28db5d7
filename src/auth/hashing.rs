//! Password hashing, isolated on its own threads.
//!
//! Argon2id is deliberately expensive, so it runs on a dedicated pool of
//! threads (one per CPU by default) fed by a bounded queue. When the queue is
//! full the caller is told at once ([`HashError::Busy`], a 503 with
//! `Retry-After`) instead of piling up memory, and the async runtime that
//! serves session checks never waits behind a hash.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use anyhow::anyhow;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;
use tracing::Span;
use zeroize::Zeroizing;

use crate::config::HashingConfig;
use crate::crypto;
use crate::domain::{BackupCode, Password};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every hashing thread is busy and the queue is full.
    #[error("password hashing is saturated")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash used other parameters than the configured ones.
    pub needs_rehash: bool,
}

/// The hashing pool. Cloning shares the same threads.
#[derive(Clone)]
pub struct Hasher {
    sender: SyncSender<Job>,
    /// Jobs submitted but not yet started (for metrics and tests).
    queued: Arc<AtomicUsize>,
    params: Params,
    /// A hash of a random password with the configured parameters, checked
    /// for unknown emails so they cost the same as a wrong password.
    dummy_hash: Arc<String>,
    /// Secret input to backup-code hashes, so a database dump alone
    /// cannot be brute-forced offline.
    pepper: Arc<Zeroizing<[u8; 32]>>,
    /// Peppers of previous secret keys, tried after the current one so
    /// codes issued before a key rotation keep working.
    previous_peppers: Arc<Vec<Zeroizing<[u8; 32]>>>,
}

/// Backup codes carry 75 random bits, so a low cost suffices (NIST
/// SP 800-63B allows it below 112 bits as long as the hash is salted).
fn backup_params() -> Params {
    Params::new(4096, 1, 1, None).unwrap_or_default()
}

fn backup_argon2(pepper: &[u8]) -> Option<Argon2<'_>> {
    Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, backup_params()).ok()
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish()
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

thread_local! {
    /// This hashing thread's Argon2 working memory (`m_cost` KiB), allocated
    /// by its first hash and reused by every later one. Allocating 19 MiB per
    /// hash instead let the allocator keep freed blocks around per thread
    /// and arena, so resident memory under a login flood grew well past
    /// threads x `m_cost`; now it is bounded by exactly that.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2 `params` over `password` and `salt` into `out`, in this
/// thread's reused memory; wiped afterwards, as the crate does with its own.
fn argon2_raw(params: &Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> anyhow::Result<()> {
    let blocks = params.block_count();
    let mut run = |memory: &mut [Block]| {
        let result =
            argon2(params).hash_password_into_with_memory(password, salt, out, &mut *memory);
        memory.fill(Block::new());
        result.map_err(|e| anyhow!("argon2 hashing failed: {e}"))
    };
    MEMORY.with(|cell| match cell.try_borrow_mut() {
        Ok(mut memory) => {
            if memory.len() < blocks {
                memory.resize(blocks, Block::new());
            }
            run(memory.get_mut(..blocks).unwrap_or_default())
        }
        // Not reachable (a job never nests another); allocate once then.
        Err(_) => run(&mut vec![Block::new(); blocks]),
    })
}

fn hash_blocking(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    let salt = crypto::random_bytes::<16>()?;
    let mut out = [0u8; 32];
    argon2_raw(params, password, &salt, &mut out)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| anyhow!("argon2 parameters: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow!("argon2 salt: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow!("argon2 output: {e}"))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches a parsed Argon2id hash, computed in this
/// thread's reused memory; `None` if the hash is not one this can check.
fn matches_argon2id(password: &[u8], parsed: &PasswordHash) -> Option<bool> {
    if parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed
            .version
            .is_some_and(|v| v != u32::from(Version::V0x13))
    {
        return None;
    }
    let stored = parsed.hash.as_ref()?;
    let salt = parsed.salt.as_ref()?;
    let params = Params::try_from(parsed).ok()?;
    let mut out = vec![0u8; stored.len()];
    let params = Params::new(
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        Some(out.len()),
    )
    .ok()?;
    argon2_raw(&params, password, salt.as_ref(), &mut out).ok()?;
    // `Output`'s equality is constant-time.
    Some(Output::new(&out).ok()? == *stored)
}

fn verify_blocking(params: &Params, password: &[u8], stored: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified {
            matches: false,
            needs_rehash: true,
        };
    };
    let matches = matches_argon2id(password, &parsed)
        .unwrap_or_else(|| argon2(params).verify_password(password, &parsed).is_ok());
    let current = Params::try_from(&parsed).ok();
    let needs_rehash = parsed.algorithm.as_str() != "argon2id"
        || current.is_none_or(|p| {
            p.m_cost() != params.m_cost()
                || p.t_cost() != params.t_cost()
                || p.p_cost() != params.p_cost()
        });
    Verified {
        matches,
        needs_rehash,
    }
}

/// Moves the calling thread to `SCHED_BATCH` at nice 19: the scheduler
/// then gives it only the CPU time that threads at normal priority (the
/// async workers serving session checks) leave unused, so a login flood
/// slows logins down instead of every request. Lowering one's own priority
/// needs no privilege; if the OS refuses anyway, hashing still works.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let result = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
        );
        if let Err(e) = result {
            tracing::warn!(error = ?e, "could not lower the priority of a hashing thread");
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    }
}

impl Hasher {
    /// Starts `config.threads` hashing threads (0 = one per CPU) with room
    /// for `config.queue` waiting jobs; with `config.low_priority` they run
    /// at the lowest OS priority (see [`lower_priority`]).
    pub fn start(config: &HashingConfig, pepper: Zeroizing<[u8; 32]>) -> anyhow::Result<Self> {
        let HashingConfig {
            argon2: cost,
            threads,
            queue,
            low_priority,
        } = *config;
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|e| anyhow!("invalid Argon2 parameters: {e}"))?;
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            threads
        };
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let queued = Arc::new(AtomicUsize::new(0));
        for i in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    if low_priority {
                        lower_priority();
                    }
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender dropped: shut down
                        }
                    }
                })?;
        }
        let mut random = crypto::random_bytes::<32>()?;
        let dummy_hash = Arc::new(hash_blocking(&params, &random)?);
        zeroize::Zeroize::zeroize(&mut random);
        Ok(Self {
            sender,
            queued,
            params,
            dummy_hash,
            pepper: Arc::new(pepper),
            previous_peppers: Arc::new(Vec::new()),
        })
    }

    /// Also accepts backup codes hashed with these peppers (those of
    /// previous secret keys). New codes always use the current pepper.
    pub fn with_previous_peppers(mut self, previous: Vec<Zeroizing<[u8; 32]>>) -> Self {
        self.previous_peppers = Arc::new(previous);
        self
    }

    /// Jobs waiting for a thread right now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Params) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = oneshot::channel();
        let params = self.params.clone();
        let queued = self.queued.clone();
        let span = Span::current();
        let job: Job = Box::new(move || {
            queued.fetch_sub(1, Ordering::Relaxed);
            let _entered = span.enter();
            let started = std::time::Instant::now();
            let result = work(&params);
            metrics::histogram!(crate::metrics::HASH_DURATION)
                .record(started.elapsed().as_secs_f64());
            let _ = tx.send(result);
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(HashError::Busy);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(HashError::Failed(anyhow!("hashing threads are gone")));
            }
        }
        rx.await
            .map_err(|_| HashError::Failed(anyhow!("hashing job was dropped")))
    }

    /// Hashes a batch of backup codes (peppered, low-cost Argon2id).
    pub async fn hash_backup_codes(&self, codes: &[BackupCode]) -> Result<Vec<String>, HashError> {
        let codes = codes.to_vec();
        let pepper = self.pepper.clone();
        self.run(move |_| {
            let argon2 = backup_argon2(pepper.as_slice())
                .ok_or_else(|| anyhow!("invalid backup-code parameters"))?;
            codes
                .iter()
                .map(|code| {
                    let salt = crypto::random_bytes::<16>()?;
                    argon2
                        .hash_password_with_salt(code.expose().as_bytes(), &salt)
                        .map(|h| h.to_string())
                        .map_err(|e| anyhow!("backup code hashing failed: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await?
        .map_err(HashError::Failed)
    }

    /// Checks a backup code against its stored hash, with the current
    /// pepper and then each previous one (a wrong code costs one hash per
    /// configured key).
    pub async fn verify_backup_code(
        &self,
        code: &BackupCode,
        stored: &str,
    ) -> Result<bool, HashError> {
        let code = code.clone();
        let stored = stored.to_string();
        let pepper = self.pepper.clone();
        let previous = self.previous_peppers.clone();
        self.run(move |_| {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return false;
            };
            std::iter::once(pepper.as_ref())
                .chain(previous.iter())
                .filter_map(|p| backup_argon2(p.as_slice()))
                .any(|a| a.verify_password(code.expose().as_bytes(), &parsed).is_ok())
        })
        .await
    }

    /// Hashes a new password (Argon2id, 16-byte random salt, PHC string).
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let password = password.clone();
        self.run(move |params| hash_blocking(params, password.expose_bytes()))
            .await?
            .map_err(HashError::Failed)
    }

    /// Checks a password against a stored hash; with `None` (unknown user)
    /// the same work is done against a dummy hash and the answer is "no".
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let password = password.clone();
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy_hash.as_str().to_string(), str::to_string);
        let verified = self
            .run(move |params| verify_blocking(params, password.expose_bytes(), &stored))
            .await?;
        Ok(Verified {
            matches: verified.matches && known,
            needs_rehash: verified.needs_rehash && known,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Argon2Config;
    use crate::domain::PasswordPolicy;

    const CHEAP: Argon2Config = Argon2Config {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
    };

    /// A hashing pool of `threads` threads at normal priority.
    fn pool(threads: usize, queue: usize, argon2: Argon2Config) -> HashingConfig {
        HashingConfig {
            argon2,
            threads,
            queue,
            low_priority: false,
        }
    }

    fn pw(s: &str) -> Password {
        Password::new_with_policy(
            s,
            &PasswordPolicy {
                min_length: 8,
                max_length: 1024,
                min_strength: 0,
                context_words: Vec::new(),
            },
        )
        .unwrap()
    }

    // covers: ASVS-11.4.2, ASVS-11.2.2, N63B-10, N63B-09
    #[tokio::test]
    async fn hashes_are_argon2id_with_unique_salts_and_verify_exactly() {
        let h = Hasher::start(&pool(1, 4, CHEAP), Zeroizing::new([3; 32])).unwrap();
        let long = "x".repeat(100);
        let a = h.hash(&pw(&long)).await.unwrap();
        let b = h.hash(&pw(&long)).await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "salts must differ");
        assert!(h.verify(&pw(&long), Some(&a)).await.unwrap().matches);
        // No truncation: the 72-character prefix must not match.
        assert!(!h.verify(&pw(&long[..72]), Some(&a)).await.unwrap().matches);
        assert!(
            !h.verify(&pw(&"X".repeat(100)), Some(&a))
                .await
                .unwrap()
                .matches
        );
        // Unknown user: never matches.
        assert!(!h.verify(&pw(&long), None).await.unwrap().matches);
        // Stronger configured parameters ask for a rehash of the old hash.
        let stronger = Hasher::start(
            &pool(
                1,
                4,
                Argon2Config {
                    memory_kib: 9 * 1024,
                    ..CHEAP
                },
            ),
            Zeroizing::new([3; 32]),
        )
        .unwrap();
        let v = stronger.verify(&pw(&long), Some(&a)).await.unwrap();
        assert!(v.matches && v.needs_rehash);
    }

    // covers: ASVS-6.5.2, N63B-13
    #[tokio::test]
    async fn backup_codes_are_peppered_salted_argon2id() {
        let h = Hasher::start(&pool(1, 4, CHEAP), Zeroizing::new([3; 32])).unwrap();
        let codes = BackupCode::generate_batch().unwrap();
        let hashes = h.hash_backup_codes(&codes).await.unwrap();
        assert_eq!(hashes.len(), 10);
        for (code, hash) in codes.iter().zip(&hashes) {
            assert!(hash.starts_with("$argon2id$v=19$m=4096,t=1,p=1$"), "{hash}");
            assert!(!hash.contains(code.expose()));
            assert!(h.verify_backup_code(code, hash).await.unwrap());
        }
        assert!(!h.verify_backup_code(&codes[0], &hashes[1]).await.unwrap());
        let salts: std::collections::HashSet<_> = hashes
            .iter()
            .map(|h| h.split('$').nth(4).unwrap().to_string())
            .collect();
        assert_eq!(salts.len(), 10, "distinct salts");
        // Another pepper (another deployment's key) does not verify.
        let other = Hasher::start(&pool(1, 4, CHEAP), Zeroizing::new([4; 32])).unwrap();
        assert!(
            !other
                .verify_backup_code(&codes[0], &hashes[0])
                .await
                .unwrap()
        );
        // After a key rotation the old pepper is a previous one: old codes
        // still verify, and new codes use the new pepper only.
        let rotated = Hasher::start(&pool(1, 4, CHEAP), Zeroizing::new([4; 32]))
            .unwrap()
            .with_previous_peppers(vec![Zeroizing::new([3; 32])]);
        assert!(
            rotated
                .verify_backup_code(&codes[0], &hashes[0])
                .await
                .unwrap()
        );
        assert!(
            !rotated
                .verify_backup_code(&codes[0], &hashes[1])
                .await
                .unwrap()
        );
        let fresh = rotated.hash_backup_codes(&codes[..1]).await.unwrap();
        assert!(!h.verify_backup_code(&codes[0], &fresh[0]).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let h = Hasher::start(
            &pool(
                1,
                1,
                Argon2Config {
                    memory_kib: 64 * 1024,
                    iterations: 4,
                    parallelism: 1,
                },
            ),
            Zeroizing::new([3; 32]),
        )
        .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let h = h.clone();
            tasks.push(tokio::spawn(
                async move { h.hash(&pw("abcdefghijkl")).await },
            ));
        }
        let mut busy = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(HashError::Busy)) {
                busy += 1;
            }
        }
        assert!(
            busy >= 1,
            "with one thread and a queue of one, some of 8 must be refused"
        );
    }
}
