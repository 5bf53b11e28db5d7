//! Re-authentication: prove the password again (and the second factor when
//! MFA is on) to open the re-authentication window; the token rotates.

use serde_json::json;

use super::Auth;
use super::login::LoginError;
use crate::audit::{self, EventKind, RequestMeta};
use crate::domain::{Aal, Password, Session, SessionToken};

impl Auth {
    /// Checks the password of the session's user and rotates the session.
    pub async fn reauthenticate(
        &self,
        session: &Session,
        email_key: &str,
        password: &Password,
        meta: &RequestMeta,
    ) -> Result<(SessionToken, Session), LoginError> {
        let found = self.store.find_credentials(email_key).await?;
        let verified = self
            .hasher
            .verify(password, found.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        let now = self.clock.now();
        if !verified.matches {
            audit::record(
                &*self.store,
                now,
                EventKind::ReauthenticationFailed,
                Some(session.user_id),
                meta,
                json!({"reason": "wrong_password", "factor": "password"}),
            )
            .await?;
            return Err(LoginError::InvalidCredentials);
        }
        let (token, rotated) = self
            .rotate_session(session, Aal::Aal1, meta, "reauthentication")
            .await
            .map_err(|e| match e {
                super::sessions::CheckError::Unauthenticated => LoginError::SessionGone,
                super::sessions::CheckError::Store(s) => s.into(),
            })?;
        audit::record(
            &*self.store,
            now,
            EventKind::Reauthenticated,
            Some(session.user_id),
            meta,
            json!({"factor": "password", "session_id": rotated.id}),
        )
        .await?;
        Ok((token, rotated))
    }
}
