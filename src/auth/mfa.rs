//! The second factor: TOTP enrolment and activation, backup codes, and the
//! MFA step of login. Secrets are sealed at rest; single use (TOTP steps,
//! backup codes) is decided by conditional updates in the store.

use serde_json::json;

use super::sessions::CheckError;
use super::throttle::{Bucket, Factor, Throttled};
use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::totp::{TotpSecret, otpauth_uri};
use crate::domain::{Aal, BackupCode, Session, SessionToken, TotpCode, User, UserId};
use crate::mail::Notice;
use crate::store::{BackupCodeHash, StoreError};

/// Wrong codes a pending session may send before it is ended.
pub const MAX_PENDING_FAILURES: u32 = 5;

/// A second factor as presented.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    Totp(TotpCode),
    Backup(BackupCode),
}

impl SecondFactor {
    fn name(&self) -> &'static str {
        match self {
            SecondFactor::Totp(_) => "totp",
            SecondFactor::Backup(_) => "backup_code",
        }
    }
}

/// What a successful second factor tells the caller.
#[derive(Debug, Clone, Copy)]
pub struct FactorUsed {
    /// Unused backup codes left, when a backup code was used.
    pub backup_codes_remaining: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// Wrong, replayed or already used code.
    #[error("invalid code")]
    InvalidCode,
    /// The session is not waiting for a second factor.
    #[error("no second factor pending")]
    NotPending,
    /// Activation without an enrolment, or a factor the user does not have.
    #[error("no TOTP enrolment pending")]
    NothingToActivate,
    #[error("TOTP is already enabled")]
    AlreadyEnabled,
    /// The action needs a session that proved a second factor.
    #[error("aal2 required")]
    Aal2Required,
    #[error("re-authentication required")]
    ReauthenticationRequired,
    /// The caller's session ended meanwhile.
    #[error("session gone")]
    SessionGone,
    /// Rate limit, back-off or the hard stop.
    #[error(transparent)]
    Throttled(#[from] super::throttle::Throttled),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

service_failures!(MfaError: StoreError, super::HashError);

impl From<CheckError> for MfaError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Unauthenticated => MfaError::SessionGone,
            CheckError::Store(e) => e.into(),
        }
    }
}

/// What enrolment returns, shown to the user once.
#[derive(Debug)]
pub struct Enrolment {
    pub secret_base32: zeroize::Zeroizing<String>,
    pub otpauth_uri: zeroize::Zeroizing<String>,
    pub qr_svg: String,
}

/// Associated data binding a sealed TOTP secret to its owner's row.
fn totp_aad(user: UserId) -> Vec<u8> {
    let mut aad = b"castellan/totp/".to_vec();
    aad.extend_from_slice(user.0.as_bytes());
    aad
}

fn unix_seconds(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

impl Auth {
    /// `(remaining, total)` backup codes of `user`.
    pub async fn backup_code_status(&self, user: UserId) -> Result<(u32, u32), StoreError> {
        self.store.backup_code_counts(user).await
    }

    /// A fresh batch of backup codes (to show once) and their hashed rows
    /// (to store).
    async fn new_backup_codes(&self) -> Result<(Vec<BackupCode>, Vec<BackupCodeHash>), MfaError> {
        let codes = BackupCode::generate_batch().map_err(ServiceError::from)?;
        let hashes = self.hasher.hash_backup_codes(&codes).await?;
        let rows = codes
            .iter()
            .zip(hashes)
            .map(|(c, code_hash)| BackupCodeHash {
                slot: c.slot(),
                code_hash,
            })
            .collect();
        Ok((codes, rows))
    }

    fn require_recent_aal2(&self, session: &Session) -> Result<(), MfaError> {
        if session.aal != Aal::Aal2 {
            return Err(MfaError::Aal2Required);
        }
        if !session.in_reauth_window(self.clock.now(), self.config.session.reauth_window) {
            return Err(MfaError::ReauthenticationRequired);
        }
        Ok(())
    }

    async fn event(
        &self,
        kind: EventKind,
        user: UserId,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.record_event(kind, Some(user), meta, detail).await
    }

    /// Starts (or restarts) TOTP enrolment: a new secret, sealed, pending
    /// until activated. Needs the re-authentication window.
    pub async fn enroll_totp(
        &self,
        session: &Session,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<Enrolment, MfaError> {
        if user.mfa_enabled {
            return Err(MfaError::AlreadyEnabled);
        }
        if !session.in_reauth_window(self.clock.now(), self.config.session.reauth_window) {
            return Err(MfaError::ReauthenticationRequired);
        }
        let secret = TotpSecret::generate().map_err(ServiceError::from)?;
        let sealed = self
            .keys
            .seal(secret.expose_bytes(), &totp_aad(user.id))
            .map_err(|e| ServiceError::Unexpected(e.into()))?;
        match self
            .store
            .put_pending_totp(user.id, &sealed, self.clock.now())
            .await
        {
            Err(StoreError::Conflict) => return Err(MfaError::AlreadyEnabled),
            other => other?,
        }
        let uri = otpauth_uri(&secret, &self.config.totp_issuer, user.email.as_str());
        let qr_svg = qrcode::QrCode::new(uri.as_bytes())
            .map(|qr| {
                qr.render::<qrcode::render::svg::Color<'_>>()
                    .min_dimensions(200, 200)
                    .build()
            })
            .map_err(|e| ServiceError::Unexpected(anyhow::anyhow!("QR code: {e}")))?;
        self.event(
            EventKind::MfaEnrolled,
            user.id,
            meta,
            json!({"factor": "totp"}),
        )
        .await?;
        Ok(Enrolment {
            secret_base32: secret.to_base32(),
            otpauth_uri: uri,
            qr_svg,
        })
    }

    /// Activates the pending enrolment with a first code: enables TOTP,
    /// issues 10 backup codes and raises the session to aal2, atomically.
    pub async fn activate_totp(
        &self,
        session: &Session,
        user: &User,
        code: &TotpCode,
        meta: &RequestMeta,
    ) -> Result<Vec<BackupCode>, MfaError> {
        self.count_attempt(Bucket::Mfa, meta).await?;
        let record = match self.store.get_totp(user.id).await? {
            Some(r) if r.enabled => return Err(MfaError::AlreadyEnabled),
            Some(r) => r,
            None => return Err(MfaError::NothingToActivate),
        };
        let secret = self
            .open_totp_secret(user.id, &record.sealed_secret, meta)
            .await?;
        let Some(step) = secret.verify(code, unix_seconds(self.clock.now())) else {
            self.event(
                EventKind::MfaFailed,
                user.id,
                meta,
                json!({"factor": "totp", "reason": "wrong_code", "during": "activation"}),
            )
            .await?;
            return Err(MfaError::InvalidCode);
        };
        let (codes, rows) = self.new_backup_codes().await?;
        if !self
            .store
            .activate_totp(user.id, step, &rows, session.id, self.clock.now())
            .await?
        {
            return Err(MfaError::NothingToActivate);
        }
        self.event(
            EventKind::MfaActivated,
            user.id,
            meta,
            json!({"factor": "totp", "backup_codes": rows.len()}),
        )
        .await?;
        self.mailer.notify(&user.email, Notice::TotpEnabled).await;
        Ok(codes)
    }

    /// Opens a sealed TOTP secret; a failure (tampering, unknown key) is
    /// logged as an error and fails closed.
    async fn open_totp_secret(
        &self,
        user: UserId,
        sealed: &[u8],
        meta: &RequestMeta,
    ) -> Result<TotpSecret, MfaError> {
        match self.keys.open(sealed, &totp_aad(user)) {
            Ok(plain) => Ok(TotpSecret::from_bytes(plain.to_vec())),
            Err(e) => {
                tracing::error!(error = %e, "a stored TOTP secret cannot be opened");
                self.event(
                    EventKind::MfaFailed,
                    user,
                    meta,
                    json!({"factor": "totp", "reason": "secret_unreadable"}),
                )
                .await?;
                Err(MfaError::InvalidCode)
            }
        }
    }

    /// Checks a second factor of an MFA user and spends it (a TOTP step or
    /// a backup code is accepted once, across requests and nodes).
    pub async fn verify_second_factor(
        &self,
        user: &User,
        factor: &SecondFactor,
        meta: &RequestMeta,
    ) -> Result<FactorUsed, MfaError> {
        let fail = |reason: &'static str| async move {
            self.event(
                EventKind::MfaFailed,
                user.id,
                meta,
                json!({"factor": factor.name(), "reason": reason}),
            )
            .await?;
            Err::<FactorUsed, MfaError>(MfaError::InvalidCode)
        };
        match factor {
            SecondFactor::Totp(code) => {
                let Some(record) = self.store.get_totp(user.id).await?.filter(|r| r.enabled) else {
                    return fail("not_enrolled").await;
                };
                let secret = self
                    .open_totp_secret(user.id, &record.sealed_secret, meta)
                    .await?;
                let Some(step) = secret.verify(code, unix_seconds(self.clock.now())) else {
                    return fail("wrong_code").await;
                };
                if !self.store.claim_totp_step(user.id, step).await? {
                    return fail("replay").await;
                }
                if self.keys.sealed_with_old_key(&record.sealed_secret) {
                    // Re-seal under the current key now that it verified.
                    if let Ok(sealed) = self.keys.seal(secret.expose_bytes(), &totp_aad(user.id)) {
                        self.store.reseal_totp(user.id, &sealed).await?;
                    }
                }
                self.event(
                    EventKind::MfaVerified,
                    user.id,
                    meta,
                    json!({"factor": "totp"}),
                )
                .await?;
                Ok(FactorUsed {
                    backup_codes_remaining: None,
                })
            }
            SecondFactor::Backup(code) => {
                let Some(hash) = self.store.unused_backup_code(user.id, code.slot()).await? else {
                    return fail("unknown_or_used").await;
                };
                if !self.hasher.verify_backup_code(code, &hash).await? {
                    return fail("wrong_code").await;
                }
                if !self
                    .store
                    .claim_backup_code(user.id, code.slot(), &hash, self.clock.now())
                    .await?
                {
                    return fail("reused").await;
                }
                let (remaining, _) = self.store.backup_code_counts(user.id).await?;
                self.event(
                    EventKind::BackupCodeUsed,
                    user.id,
                    meta,
                    json!({"slot": code.slot(), "remaining": remaining}),
                )
                .await?;
                self.mailer
                    .notify(&user.email, Notice::BackupCodeUsed { remaining })
                    .await;
                Ok(FactorUsed {
                    backup_codes_remaining: Some(remaining),
                })
            }
        }
    }

    /// The MFA step of login: a pending session plus a valid second factor
    /// becomes a fresh aal2 session with a new token. Wrong codes count;
    /// the fifth ends the pending session.
    pub async fn complete_mfa_login(
        &self,
        session: &Session,
        user: &User,
        factor: &SecondFactor,
        meta: &RequestMeta,
    ) -> Result<(SessionToken, Session, FactorUsed), MfaError> {
        if !session.mfa_pending {
            return Err(MfaError::NotPending);
        }
        self.count_attempt(Bucket::Mfa, meta).await?;
        let account = user.email.key();
        let attempt = match self
            .reserve_attempt(Factor::SecondFactor, account, meta)
            .await
        {
            Ok(attempt) => Some(attempt),
            // After the hard stop TOTP stays off; a backup code still works
            // (and re-enables TOTP when it succeeds).
            Err(Throttled::FactorDisabled) if matches!(factor, SecondFactor::Backup(_)) => None,
            Err(e) => return Err(e.into()),
        };
        // Limiter 11, reserved like the others: concurrent codes on one
        // pending session cannot get past the fifth.
        let Some(failures) = self
            .store
            .reserve_mfa_attempt(session.id, MAX_PENDING_FAILURES)
            .await?
        else {
            return Err(MfaError::InvalidCode);
        };
        match self.verify_second_factor(user, factor, meta).await {
            Ok(used) => {
                if matches!(factor, SecondFactor::Backup(_)) {
                    self.clear_factor(Factor::SecondFactor, account).await?;
                }
                self.record_success(Factor::SecondFactor, account, meta)
                    .await?;
                let (token, rotated) = self.rotate_session(session, Aal::Aal2, meta, "mfa").await?;
                Ok((token, rotated, used))
            }
            Err(MfaError::InvalidCode) => {
                if let Some(attempt) = &attempt {
                    self.attempt_failed(attempt, Some(user.id), meta).await?;
                }
                if failures >= MAX_PENDING_FAILURES {
                    self.store.delete_session(session.id).await?;
                    self.event(
                        EventKind::SessionRevoked,
                        user.id,
                        meta,
                        json!({"session_id": session.id, "by": "mfa_failures", "failures": failures}),
                    )
                    .await?;
                    // Only one request reaches the limit, so one mail per
                    // stopped sign-in; the account limits bound how many.
                    self.mailer
                        .notify(&user.email, Notice::SecondFactorFailed)
                        .await;
                }
                Err(MfaError::InvalidCode)
            }
            Err(other) => Err(other),
        }
    }

    /// Removes TOTP and every backup code. Needs aal2 and the window.
    pub async fn remove_totp(
        &self,
        session: &Session,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<(), MfaError> {
        self.require_recent_aal2(session)?;
        if !self.store.remove_mfa(user.id).await? {
            return Err(MfaError::NothingToActivate);
        }
        self.event(EventKind::MfaRemoved, user.id, meta, json!({"by": "user"}))
            .await?;
        self.mailer
            .notify(&user.email, Notice::TotpRemoved { by_admin: false })
            .await;
        Ok(())
    }

    /// Replaces every backup code (the old ones die in the same
    /// transaction). Needs aal2 and the window.
    pub async fn regenerate_backup_codes(
        &self,
        session: &Session,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<Vec<BackupCode>, MfaError> {
        self.require_recent_aal2(session)?;
        if !user.mfa_enabled {
            return Err(MfaError::NothingToActivate);
        }
        let (codes, rows) = self.new_backup_codes().await?;
        self.store.replace_backup_codes(user.id, &rows).await?;
        self.event(
            EventKind::BackupCodesRegenerated,
            user.id,
            meta,
            json!({"count": rows.len()}),
        )
        .await?;
        self.mailer
            .notify(&user.email, Notice::BackupCodesRegenerated)
            .await;
        Ok(codes)
    }
}
