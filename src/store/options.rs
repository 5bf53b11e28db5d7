//! What storage needs to know, and nothing else: the backend, the pool,
//! the TLS policy and the audit chain's sealer. The wiring (`app`) fills it
//! from the configuration, so `store` does not depend on `config`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::audit_chain::ChainSealer;

/// Which backend and where.
#[derive(Clone)]
pub enum Backend {
    Sqlite { path: PathBuf },
    Postgres { url: SecretString },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            Backend::Postgres { .. } => f.write_str("Postgres { url: [redacted] }"),
        }
    }
}

/// The PostgreSQL pool (ignored by SQLite).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The pool size, already resolved (configured or CPU-based default).
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

/// Everything [`super::open`] needs.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub backend: Backend,
    pub pool: PoolOptions,
    /// Production refuses a PostgreSQL TLS mode weaker than verify-full to
    /// a remote host, unless `allow_unverified_tls` is set.
    pub production: bool,
    pub allow_unverified_tls: bool,
    /// Seals new audit events (with the HMAC key when one is configured).
    pub sealer: ChainSealer,
}
