//! Registration.

use serde_json::json;
use uuid::Uuid;

use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Email, Password, User, UserId};
use crate::store::{NewUser, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("email already registered")]
    EmailTaken,
    #[error(transparent)]
    Throttled(#[from] super::throttle::Throttled),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for RegisterError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => RegisterError::EmailTaken,
            other => RegisterError::Service(other.into()),
        }
    }
}

impl Auth {
    /// Creates an account with a password that already passed the policy.
    pub async fn register(
        &self,
        email: Email,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<User, RegisterError> {
        self.count_attempt(super::throttle::Bucket::Registration, meta)
            .await?;
        let password_hash = self
            .hasher
            .hash(password)
            .await
            .map_err(ServiceError::from)?;
        let now = self.clock.now();
        let user = self
            .store
            .create_user(&NewUser {
                id: UserId(Uuid::new_v4()),
                email,
                password_hash,
                now,
            })
            .await?;
        self.record_event_at(
            now,
            EventKind::UserRegistered,
            Some(user.id),
            meta,
            json!({}),
        )
        .await?;
        Ok(user)
    }
}
