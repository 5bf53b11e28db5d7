//! Use cases: registration, login, the session check, logout. Each takes
//! parsed domain values and returns an outcome the HTTP layer maps; none of
//! them knows about status codes.

use std::sync::Arc;

use crate::audit;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keys;
use crate::domain::PasswordPolicy;
use crate::store::{Store, StoreError};

pub mod accounts;
pub mod admin;
pub mod backup_status;
pub mod hashing;
pub mod login;
pub mod mfa;
pub mod passkeys;
pub mod reauth;
pub mod recovery;
pub mod sessions;
pub mod throttle;

pub use hashing::{HashError, Hasher};

/// What every use case needs: configuration, storage, keys, the hasher and
/// the clock. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub hasher: Hasher,
    pub clock: Arc<dyn Clock>,
    pub mailer: crate::mail::Mailer,
}

impl Auth {
    /// Records a security event at the current time (see [`audit::record`]).
    pub(crate) async fn record_event(
        &self,
        kind: audit::EventKind,
        user: Option<crate::domain::UserId>,
        meta: &audit::RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        audit::record(&*self.store, self.clock.now(), kind, user, meta, detail).await
    }

    pub fn password_policy(&self) -> PasswordPolicy {
        PasswordPolicy {
            min_length: self.config.password_min_length,
            max_length: self.config.password_max_length,
            min_strength: self.config.password_min_strength,
            context_words: self.config.password_context_words.clone(),
        }
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
