//! Password login.
//!
//! The outcome is an explicit state: a full session, or, for a user with a
//! second factor, a pending session that may only finish MFA or log out.

use serde_json::json;

use super::throttle::{Bucket, Factor};
use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Aal, Email, Password, Session, SessionToken};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown email or wrong password: indistinguishable on purpose.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Correct password, but an administrator locked the account.
    #[error("account locked")]
    Locked,
    /// The caller's session ended while the request ran.
    #[error("session gone")]
    SessionGone,
    /// Rate limit, back-off or the hard stop.
    #[error(transparent)]
    Throttled(#[from] super::throttle::Throttled),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

service_failures!(LoginError: crate::store::StoreError, super::HashError);

/// A successful login: the token is shown to the client once.
#[derive(Debug)]
pub struct LoggedIn {
    pub token: SessionToken,
    pub session: Session,
}

impl Auth {
    /// Checks email and password and opens a session.
    pub async fn login(
        &self,
        email: &Email,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<LoggedIn, LoginError> {
        self.count_attempt(Bucket::Login, meta).await?;
        let attempt = self
            .reserve_attempt(Factor::Password, email.key(), meta)
            .await?;
        let found = self.store.find_credentials(email.key()).await?;
        let verified = match self
            .hasher
            .verify(password, found.as_ref().map(|c| c.password_hash.as_str()))
            .await
        {
            Ok(v) => v,
            Err(super::HashError::Busy) => {
                let now = self.clock.now();
                self.record_event_at(
                    now,
                    EventKind::HashingSaturated,
                    None,
                    meta,
                    json!({"route": "login"}),
                )
                .await?;
                return Err(ServiceError::Busy.into());
            }
            Err(e) => return Err(e.into()),
        };
        let now = self.clock.now();
        let user = found.as_ref().map(|c| c.user.id);
        let Some(credentials) = found.filter(|_| verified.matches) else {
            self.attempt_failed(&attempt, user, meta).await?;
            let reason = if user.is_some() {
                "wrong_password"
            } else {
                "unknown_user"
            };
            self.record_event_at(
                now,
                EventKind::LoginFailed,
                user,
                meta,
                json!({"reason": reason, "factor": "password"}),
            )
            .await?;
            return Err(LoginError::InvalidCredentials);
        };
        let user = credentials.user;
        self.record_success(Factor::Password, email.key(), meta)
            .await?;
        if user.locked {
            self.record_event_at(
                now,
                EventKind::LoginFailed,
                Some(user.id),
                meta,
                json!({"reason": "locked", "factor": "password"}),
            )
            .await?;
            return Err(LoginError::Locked);
        }
        if verified.needs_rehash {
            // The password is known to be right: store it with today's cost.
            let upgraded = self.hasher.hash(password).await?;
            self.store.set_password_hash(user.id, &upgraded).await?;
            self.record_event_at(
                now,
                EventKind::PasswordRehashed,
                Some(user.id),
                meta,
                json!({}),
            )
            .await?;
        }
        // Any second factor (TOTP or a passkey) makes the session pending.
        let pending = self.has_second_factor(&user).await?;
        let (token, session) = self.open_session(user.id, Aal::Aal1, pending, meta).await?;
        self.store.record_login(user.id, now).await?;
        self.record_event_at(
            now,
            EventKind::LoginSucceeded,
            Some(user.id),
            meta,
            json!({"factor": "password", "session_id": session.id, "mfa_pending": pending}),
        )
        .await?;
        Ok(LoggedIn { token, session })
    }
}
