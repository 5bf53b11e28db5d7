//! Use cases: registration, login, the session check, logout. Each takes
//! parsed domain values and returns an outcome the HTTP layer maps; none of
//! them knows about status codes.

use std::sync::Arc;

use crate::audit;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keys;
use crate::domain::PasswordPolicy;
use crate::store::Store;

/// Routes lower-layer failures (`StoreError`, `HashError`, ...) into a use
/// case's `Service` variant through [`ServiceError`], so `?` works in the
/// use cases: `service_failures!(LoginError: StoreError, HashError);`.
macro_rules! service_failures {
    ($error:ident: $($from:ty),+) => {
        $(impl From<$from> for $error {
            fn from(e: $from) -> Self {
                $error::Service(e.into())
            }
        })+
    };
}

pub mod accounts;
pub mod admin;
pub mod admin_guard;
pub mod hashing;
pub mod login;
pub mod maintenance;
pub mod mfa;
pub mod passkeys;
pub mod reauth;
pub mod recovery;
pub mod sessions;
pub mod throttle;

pub use hashing::{HashError, Hasher};
pub use maintenance::RuntimeStats;
// The storage types the callers of the use cases see.
pub use crate::store::{Event, EventFilter, PruneOutcome, StoreError};

/// What every use case needs: configuration, storage, keys, the hasher and
/// the clock. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    keys: Keys,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    mailer: crate::mail::Mailer,
    /// Wrong admin tokens per address, in this process (no database).
    admin_guard: Arc<admin_guard::AdminTokenGuard>,
}

impl Auth {
    /// Puts the use cases together (see `app::build_auth`).
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        keys: Keys,
        hasher: Hasher,
        clock: Arc<dyn Clock>,
        mailer: crate::mail::Mailer,
    ) -> Self {
        Self {
            config,
            store,
            keys,
            hasher,
            clock,
            mailer,
            admin_guard: Arc::default(),
        }
    }

    /// The validated configuration (read-only).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock every use case reads.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The CSRF token bound to one session.
    pub fn csrf_token(&self, session_id: uuid::Uuid) -> String {
        self.keys.csrf_token(session_id)
    }

    /// Checks a presented CSRF token in constant time.
    pub fn csrf_matches(&self, session_id: uuid::Uuid, presented: &str) -> bool {
        self.keys.csrf_matches(session_id, presented)
    }

    /// The mailer, e.g. to wait for delivery before a command exits.
    pub fn mailer(&self) -> &crate::mail::Mailer {
        &self.mailer
    }

    /// The storage backend, for maintenance commands and tests that check
    /// what was stored. HTTP code never calls it (a layer test checks).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Records a security event at `now`: every security event of the use
    /// cases goes through here (see [`audit::record`]).
    pub(crate) async fn record_event_at(
        &self,
        now: time::OffsetDateTime,
        kind: audit::EventKind,
        user: Option<crate::domain::UserId>,
        meta: &audit::RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        audit::record(&*self.store, now, kind, user, meta, detail).await
    }

    /// Records a security event at the current time.
    pub(crate) async fn record_event(
        &self,
        kind: audit::EventKind,
        user: Option<crate::domain::UserId>,
        meta: &audit::RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.record_event_at(self.clock.now(), kind, user, meta, detail)
            .await
    }

    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.config.passwords
    }
}

/// Failures shared by every use case.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Hashing is saturated; retry shortly.
    #[error("busy")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<HashError> for ServiceError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ServiceError::Busy,
            HashError::Failed(e) => ServiceError::Unexpected(e),
        }
    }
}

impl From<crate::crypto::RandomError> for ServiceError {
    fn from(e: crate::crypto::RandomError) -> Self {
        ServiceError::Unexpected(e.into())
    }
}
