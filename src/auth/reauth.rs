//! Re-authentication: prove the password again (and the second factor when
//! MFA is on) to open the re-authentication window; the token rotates.

use serde_json::json;

use super::Auth;
use super::login::LoginError;
use super::mfa::{MfaError, SecondFactor};
use super::throttle::{Bucket, Factor};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Aal, Password, Session, SessionToken, User};

impl Auth {
    /// Checks the password (and, for an MFA user, the second factor) and
    /// rotates the session; it is aal2 when a second factor was given.
    /// The caller has already checked that `second` is present exactly
    /// when the user has MFA.
    pub async fn reauthenticate(
        &self,
        session: &Session,
        user: &User,
        password: &Password,
        second: Option<&SecondFactor>,
        meta: &RequestMeta,
    ) -> Result<(SessionToken, Session), LoginError> {
        let account = user.email.key();
        self.check_backoff(Factor::Password, account, meta).await?;
        let found = self.store.find_credentials(account).await?;
        let verified = self
            .hasher
            .verify(password, found.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        let now = self.clock.now();
        if !verified.matches {
            self.record_failure(Factor::Password, account, Some(user.id), meta)
                .await?;
            self.record_event_at(
                now,
                EventKind::ReauthenticationFailed,
                Some(session.user_id),
                meta,
                json!({"reason": "wrong_password", "factor": "password"}),
            )
            .await?;
            return Err(LoginError::InvalidCredentials);
        }
        self.record_success(Factor::Password, account, meta).await?;
        // The second factor gets the same limits as at the MFA login step.
        let aal = match second {
            Some(factor) => {
                self.count_attempt(Bucket::Mfa, meta).await?;
                self.check_backoff(Factor::SecondFactor, account, meta)
                    .await?;
                match self.verify_second_factor(user, factor, meta).await {
                    Ok(_) => {
                        self.record_success(Factor::SecondFactor, account, meta)
                            .await?
                    }
                    Err(MfaError::InvalidCode) => {
                        self.record_failure(Factor::SecondFactor, account, Some(user.id), meta)
                            .await?;
                        return Err(LoginError::InvalidCredentials);
                    }
                    Err(MfaError::Service(s)) => return Err(LoginError::Service(s)),
                    Err(MfaError::Throttled(t)) => return Err(LoginError::Throttled(t)),
                    Err(_) => return Err(LoginError::InvalidCredentials),
                }
                Aal::Aal2
            }
            None => Aal::Aal1,
        };
        let (token, rotated) = self
            .rotate_session(session, aal, meta, "reauthentication")
            .await
            .map_err(|e| match e {
                super::sessions::CheckError::Unauthenticated => LoginError::SessionGone,
                super::sessions::CheckError::Store(s) => s.into(),
            })?;
        self.record_event_at(
now,
            EventKind::Reauthenticated,
            Some(session.user_id),
            meta,
            json!({"factor": second.map_or("password", |_| "password+second_factor"), "session_id": rotated.id}),
        )
        .await?;
        Ok((token, rotated))
    }
}
