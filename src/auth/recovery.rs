//! The account lifecycle: password change, password reset by mailed token,
//! email verification. Mailed tokens carry 256 bits from the OS generator,
//! are stored only as keyed hashes, are spent once by a conditional update,
//! and a newer token of the same kind kills the older ones.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use zeroize::Zeroizing;

use super::throttle::{Bucket, Factor, Throttled};
use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Email, Password, Session, User};
use crate::mail::Notice;
use crate::store::{StoreError, TokenPurpose};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The current password was wrong (password change).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The mailed token is malformed, unknown, used or expired.
    #[error("invalid token")]
    InvalidToken,
    /// The new password breaks the policy for this account.
    #[error("weak password: {0}")]
    WeakPassword(String),
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

service_failures!(RecoveryError: StoreError, super::HashError);

/// A fresh mailed token: 32 random bytes, base64url.
fn new_token() -> Result<Zeroizing<String>, ServiceError> {
    let bytes = crate::crypto::random_bytes::<32>()?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes)))
}

/// Checks the shape of a presented token (43 base64url characters).
fn token_shape_ok(token: &str) -> bool {
    token.len() == 43 && URL_SAFE_NO_PAD.decode(token).is_ok_and(|b| b.len() == 32)
}

impl Auth {
    /// Issues a single-use token of `purpose` (killing older ones) and mails
    /// the link to the hosted landing page that carries it. The token is in
    /// the query so the page works without JavaScript; the page moves it
    /// into a cookie at once, and access logs never record query strings
    /// (see `http::pages::recovery`).
    async fn mail_token(
        &self,
        user: &User,
        purpose: TokenPurpose,
        notice: impl FnOnce(String) -> Notice,
    ) -> Result<(), RecoveryError> {
        let (ttl, path) = match purpose {
            TokenPurpose::PasswordReset => {
                (self.config.token_lifetimes.reset, "/ui/password/reset")
            }
            TokenPurpose::EmailVerification => {
                (self.config.token_lifetimes.verification, "/ui/email/verify")
            }
        };
        let now = self.clock.now();
        let token = new_token()?;
        let hash = self.keys.hash_account_token(&token);
        self.store
            .issue_token(&hash, user.id, purpose, now, now + ttl)
            .await?;
        let url = format!(
            "{}{path}?token={}",
            self.config.public_base_url,
            token.as_str()
        );
        self.mailer.notify(&user.email, notice(url)).await;
        Ok(())
    }

    /// Changes the password of the session's user (the current password
    /// is required) and ends every other session.
    pub async fn change_password(
        &self,
        session: &Session,
        user: &User,
        current: &Password,
        new: &Password,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        let account = user.email.key();
        let attempt = self
            .reserve_attempt(Factor::Password, account, meta)
            .await?;
        let stored = self
            .store
            .find_credentials(account)
            .await?
            .map(|c| c.password_hash);
        if !self
            .hasher
            .verify(current, stored.as_deref())
            .await?
            .matches
        {
            self.attempt_failed(&attempt, Some(user.id), meta).await?;
            self.record_event(EventKind::LoginFailed, Some(user.id), meta, json!({"reason": "wrong_password", "during": "password_change", "factor": "password"}))
                .await?;
            return Err(RecoveryError::InvalidCredentials);
        }
        let phc = self.hasher.hash(new).await?;
        let now = self.clock.now();
        self.store
            .change_password(user.id, &phc, session.id, now)
            .await?;
        self.record_success(Factor::Password, account, meta).await?;
        self.record_event(
            EventKind::PasswordChanged,
            Some(user.id),
            meta,
            json!({"other_sessions": "revoked"}),
        )
        .await?;
        self.mailer
            .notify(&user.email, Notice::PasswordChanged)
            .await;
        Ok(())
    }

    /// Mails a reset link if the account exists and its hourly mail cap
    /// allows; the caller always answers 202 the same way. The request path
    /// does the same work for a known and an unknown email (the rate, one
    /// lookup, one background task); the mail cap, the token, the mail and
    /// the event happen in that task, so the answer's timing does not tell
    /// whether the email is registered.
    pub async fn request_password_reset(
        &self,
        email: &Email,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        self.count_attempt(Bucket::ResetRequest, meta).await?;
        let user = self
            .store
            .find_credentials(email.key())
            .await?
            .map(|c| c.user);
        let auth = self.clone();
        let meta = meta.clone();
        self.mailer.defer(async move {
            if let Err(e) = auth.finish_reset_request(user, &meta).await {
                tracing::error!(error = %e, "a password reset request could not be completed");
            }
        });
        Ok(())
    }

    async fn finish_reset_request(
        &self,
        user: Option<User>,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        let Some(user) = user else {
            self.record_event(
                EventKind::PasswordResetRequested,
                None,
                meta,
                json!({"sent": false, "reason": "unknown_email"}),
            )
            .await?;
            return Ok(());
        };
        let now = self.clock.now();
        let cap = self.config.limits.reset_mails_per_account;
        let (sent, _) = self
            .store
            .throttle_hit(&format!("mail:reset:{}", user.id.0), now, cap.window)
            .await?;
        if sent > cap.limit {
            self.record_event(
                EventKind::PasswordResetRequested,
                Some(user.id),
                meta,
                json!({"sent": false, "reason": "mail_cap"}),
            )
            .await?;
            return Ok(());
        }
        self.record_event(
            EventKind::PasswordResetRequested,
            Some(user.id),
            meta,
            json!({"sent": true}),
        )
        .await?;
        self.mail_token(&user, TokenPurpose::PasswordReset, |url| {
            Notice::PasswordResetLink { url }
        })
        .await
    }

    /// Sets a new password with a mailed token: the token is spent, every
    /// session ends, the password's failure counters are cleared. MFA still
    /// applies at the next login.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        new: &Password,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        // Token guesses from one address are bounded like reset requests.
        self.count_attempt(Bucket::ResetRequest, meta).await?;
        if !token_shape_ok(token) {
            self.record_event(
                EventKind::TokenRejected,
                None,
                meta,
                json!({"purpose": "password_reset", "reason": "malformed"}),
            )
            .await?;
            return Err(RecoveryError::InvalidToken);
        }
        let hash = self.keys.hash_account_token(token);
        // One password policy everywhere: the account's own words are
        // refused here as at registration and change.
        if let Some(email) = self
            .store
            .reset_token_owner(&hash, self.clock.now())
            .await?
        {
            let text = std::str::from_utf8(new.expose_bytes()).unwrap_or_default();
            Password::new_for_account(
                text,
                self.password_policy(),
                &[email.local_part(), email.as_str()],
            )
            .map_err(|e| RecoveryError::WeakPassword(e.to_string()))?;
        }
        let phc = self.hasher.hash(new).await?;
        let now = self.clock.now();
        let Some(user) = self.store.reset_password(&hash, &phc, now).await? else {
            self.record_event(
                EventKind::TokenRejected,
                None,
                meta,
                json!({"purpose": "password_reset", "reason": "unknown_used_or_expired"}),
            )
            .await?;
            return Err(RecoveryError::InvalidToken);
        };
        let found = self.store.get_user(user).await?;
        if let Some(u) = &found {
            self.clear_factor(Factor::Password, u.email.key()).await?;
        }
        self.record_event(
            EventKind::PasswordReset,
            Some(user),
            meta,
            json!({"sessions": "revoked"}),
        )
        .await?;
        if let Some(u) = found {
            self.mailer.notify(&u.email, Notice::PasswordReset).await;
        }
        Ok(())
    }

    /// Mails a verification link to the caller's address.
    pub async fn request_email_verification(
        &self,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        self.count_attempt(Bucket::VerificationRequest, meta)
            .await?;
        let now = self.clock.now();
        let cap = self.config.limits.verification_mails_per_account;
        let (sent, started) = self
            .store
            .throttle_hit(&format!("mail:verify:{}", user.id.0), now, cap.window)
            .await?;
        if sent > cap.limit {
            let retry = u64::try_from((started + cap.window - now).whole_seconds())
                .unwrap_or(1)
                .max(1);
            return Err(Throttled::RetryAfter(retry).into());
        }
        self.record_event(
            EventKind::EmailVerificationRequested,
            Some(user.id),
            meta,
            json!({}),
        )
        .await?;
        self.mail_token(user, TokenPurpose::EmailVerification, |url| {
            Notice::VerificationLink { url }
        })
        .await
    }

    /// Marks the address verified with a mailed token.
    pub async fn confirm_email_verification(
        &self,
        token: &str,
        meta: &RequestMeta,
    ) -> Result<(), RecoveryError> {
        self.count_attempt(Bucket::VerificationRequest, meta)
            .await?;
        if !token_shape_ok(token) {
            self.record_event(
                EventKind::TokenRejected,
                None,
                meta,
                json!({"purpose": "email_verification", "reason": "malformed"}),
            )
            .await?;
            return Err(RecoveryError::InvalidToken);
        }
        let hash = self.keys.hash_account_token(token);
        let Some(user) = self
            .store
            .claim_token(&hash, TokenPurpose::EmailVerification, self.clock.now())
            .await?
        else {
            self.record_event(
                EventKind::TokenRejected,
                None,
                meta,
                json!({"purpose": "email_verification", "reason": "unknown_used_or_expired"}),
            )
            .await?;
            return Err(RecoveryError::InvalidToken);
        };
        self.store.mark_email_verified(user).await?;
        self.record_event(EventKind::EmailVerified, Some(user), meta, json!({}))
            .await?;
        if let Some(u) = self.store.get_user(user).await? {
            self.mailer.notify(&u.email, Notice::EmailVerified).await;
        }
        Ok(())
    }
}
