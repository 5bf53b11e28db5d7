//! Passkey assertions: passwordless sign-in, the second factor of a
//! pending session, and re-authentication; the counter policy.

use serde_json::json;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PublicKeyCredential,
};

use super::{
    CeremonyPurpose, PasskeyError, PasskeyRecord, Started, load_passkey, passkey_facts, reason,
    unexpected,
};
use crate::audit::{EventKind, RequestMeta};
use crate::auth::Auth;
use crate::auth::login::LoggedIn;
use crate::auth::mfa::MAX_PENDING_FAILURES;
use crate::auth::throttle::{Bucket, Factor};
use crate::domain::{Aal, Session, SessionToken, User};
use crate::mail::Notice;
use crate::store::PasskeyUse;

impl Auth {
    /// Starts a passwordless sign-in: the browser offers any discoverable
    /// credential for this relying party. Counted like a login attempt.
    pub async fn start_passkey_login(&self, meta: &RequestMeta) -> Result<Started, PasskeyError> {
        let webauthn = self.webauthn()?;
        self.count_attempt(Bucket::Login, meta).await?;
        let (rcr, state) = webauthn
            .start_discoverable_authentication()
            .map_err(|e| unexpected("start sign-in", e))?;
        let mut options = serde_json::to_value(&rcr).map_err(|e| unexpected("options", e))?;
        // The page decides between conditional (autofill) and modal UI.
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        self.begin_ceremony(CeremonyPurpose::Login, None, None, &state, options, meta)
            .await
    }

    /// Finishes a passwordless sign-in: a verified discoverable credential
    /// (user verification required) opens a full aal2 session.
    pub async fn finish_passkey_login(
        &self,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
        meta: &RequestMeta,
    ) -> Result<LoggedIn, PasskeyError> {
        let webauthn = self.webauthn()?;
        let state: DiscoverableAuthentication = match self
            .take_ceremony(ceremony_id, CeremonyPurpose::Login, None)
            .await?
        {
            Ok(s) => s,
            Err(why) => {
                self.passkey_failed(EventKind::LoginFailed, None, "login", why, meta)
                    .await?;
                return Err(PasskeyError::InvalidCeremony);
            }
        };
        let Ok((handle, cred_id)) = webauthn.identify_discoverable_authentication(response) else {
            self.passkey_failed(
                EventKind::LoginFailed,
                None,
                "login",
                "no_user_handle",
                meta,
            )
            .await?;
            return Err(PasskeyError::InvalidCredential);
        };
        let record = self.store.find_passkey(cred_id).await?;
        // The user handle the authenticator returns must name the account
        // the credential is registered to.
        let Some(record) = record.filter(|r| r.user_id.0 == handle) else {
            self.passkey_failed(
                EventKind::LoginFailed,
                None,
                "login",
                "unknown_credential",
                meta,
            )
            .await?;
            return Err(PasskeyError::InvalidCredential);
        };
        let Some(user) = self.store.get_user(record.user_id).await? else {
            return Err(PasskeyError::InvalidCredential);
        };
        let account = user.email.key().to_string();
        let attempt = self
            .reserve_attempt(Factor::SecondFactor, &account, meta)
            .await?;
        let passkey = load_passkey(&record)?;
        let verified = webauthn
            .finish_discoverable_authentication_v2(response, state, &passkey)
            .map_err(|e| reason(&e));
        match self
            .conclude_assertion(&user, &record, passkey, verified, meta)
            .await?
        {
            Ok(()) => {}
            Err(why) => {
                self.attempt_failed(&attempt, Some(user.id), meta).await?;
                self.passkey_failed(EventKind::LoginFailed, Some(user.id), "login", why, meta)
                    .await?;
                return Err(PasskeyError::InvalidCredential);
            }
        }
        self.record_success(Factor::SecondFactor, &account, meta)
            .await?;
        if user.locked {
            self.passkey_failed(
                EventKind::LoginFailed,
                Some(user.id),
                "login",
                "locked",
                meta,
            )
            .await?;
            return Err(PasskeyError::Locked);
        }
        let (token, session) = self.open_session(user.id, Aal::Aal2, false, meta).await?;
        let now = self.clock.now();
        self.store.record_login(user.id, now).await?;
        self.record_event(
            EventKind::LoginSucceeded,
            Some(user.id),
            meta,
            json!({"factor": "passkey", "passkey_id": record.id, "session_id": session.id,
                   "mfa_pending": false}),
        )
        .await?;
        Ok(LoggedIn { token, session })
    }

    /// Applies a verification outcome to the stored passkey: a flagged
    /// passkey is refused; a counter regression flags it (see the module
    /// comment); a success stores the new counter and flags, and only if
    /// the counter still moves forward in storage (so two assertions
    /// racing with one counter value cannot both pass).
    async fn conclude_assertion(
        &self,
        user: &User,
        record: &PasskeyRecord,
        mut passkey: Passkey,
        verified: Result<webauthn_rs::prelude::AuthenticationResult, &'static str>,
        meta: &RequestMeta,
    ) -> Result<Result<(), &'static str>, PasskeyError> {
        if record.flagged_at.is_some() {
            return Ok(Err("passkey_flagged"));
        }
        let result = match verified {
            Ok(r) => r,
            Err("counter_regression") => {
                self.flag_counter_regression(user, record, None, meta)
                    .await?;
                return Ok(Err("counter_regression"));
            }
            Err(why) => return Ok(Err(why)),
        };
        passkey.update_credential(&result);
        let (credential, sign_count, backup_eligible, backup_state) = passkey_facts(&passkey)?;
        let used = PasskeyUse {
            id: record.id,
            credential,
            sign_count,
            backup_eligible,
            backup_state,
            now: self.clock.now(),
        };
        if !self.store.record_passkey_use(&used).await? {
            self.flag_counter_regression(user, record, Some(sign_count), meta)
                .await?;
            return Ok(Err("counter_regression"));
        }
        Ok(Ok(()))
    }

    async fn flag_counter_regression(
        &self,
        user: &User,
        record: &PasskeyRecord,
        presented: Option<u32>,
        meta: &RequestMeta,
    ) -> Result<(), PasskeyError> {
        self.store.flag_passkey(record.id, self.clock.now()).await?;
        self.record_event(
            EventKind::PasskeyCounterRegression,
            Some(user.id),
            meta,
            json!({"passkey_id": record.id, "stored_counter": record.sign_count,
                   "presented_counter": presented, "action": "passkey_flagged"}),
        )
        .await?;
        self.mailer
            .notify(&user.email, Notice::PasskeyFlagged)
            .await;
        Ok(())
    }

    /// Starts a passkey assertion for the session's user (second factor of
    /// a pending session, or re-authentication of a full one).
    pub async fn start_passkey_assertion(
        &self,
        session: &Session,
        user: &User,
        purpose: CeremonyPurpose,
        meta: &RequestMeta,
    ) -> Result<Started, PasskeyError> {
        let webauthn = self.webauthn()?;
        match purpose {
            CeremonyPurpose::SecondFactor if !session.mfa_pending => {
                return Err(PasskeyError::NotPending);
            }
            CeremonyPurpose::SecondFactor | CeremonyPurpose::Reauthenticate => {}
            CeremonyPurpose::Register | CeremonyPurpose::Login => {
                return Err(PasskeyError::InvalidCeremony);
            }
        }
        let passkeys = self.usable_passkeys(user.id).await?;
        if passkeys.is_empty() {
            return Err(PasskeyError::NoPasskey);
        }
        let (rcr, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(|e| unexpected("start assertion", e))?;
        let options = serde_json::to_value(&rcr).map_err(|e| unexpected("options", e))?;
        self.begin_ceremony(purpose, Some(session), Some(user.id), &state, options, meta)
            .await
    }

    /// Verifies an assertion of a session-bound ceremony against the
    /// user's passkeys, with the second-factor limits and back-off.
    async fn verify_session_assertion(
        &self,
        session: &Session,
        user: &User,
        ceremony_id: Uuid,
        purpose: CeremonyPurpose,
        response: &PublicKeyCredential,
        meta: &RequestMeta,
    ) -> Result<Result<(), &'static str>, PasskeyError> {
        let webauthn = self.webauthn()?;
        self.count_attempt(Bucket::Mfa, meta).await?;
        let account = user.email.key().to_string();
        let attempt = self
            .reserve_attempt(Factor::SecondFactor, &account, meta)
            .await?;
        let state: PasskeyAuthentication = match self
            .take_ceremony(ceremony_id, purpose, Some(session))
            .await?
        {
            Ok(s) => s,
            Err(why) => return Ok(Err(why)),
        };
        let outcome = match self
            .store
            .find_passkey(response.get_credential_id())
            .await?
        {
            Some(record) if record.user_id == user.id => {
                let passkey = load_passkey(&record)?;
                let verified = webauthn
                    .finish_passkey_authentication(response, &state)
                    .map_err(|e| reason(&e));
                self.conclude_assertion(user, &record, passkey, verified, meta)
                    .await?
            }
            _ => Err("unknown_credential"),
        };
        match outcome {
            Ok(()) => {
                self.record_success(Factor::SecondFactor, &account, meta)
                    .await?;
            }
            Err(_) => {
                self.attempt_failed(&attempt, Some(user.id), meta).await?;
            }
        }
        Ok(outcome)
    }

    /// The MFA step of a password login with a passkey: a pending session
    /// becomes a fresh aal2 session. Failures count like wrong TOTP codes.
    pub async fn finish_passkey_second_factor(
        &self,
        session: &Session,
        user: &User,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
        meta: &RequestMeta,
    ) -> Result<(SessionToken, Session), PasskeyError> {
        if !session.mfa_pending {
            return Err(PasskeyError::NotPending);
        }
        match self
            .verify_session_assertion(
                session,
                user,
                ceremony_id,
                CeremonyPurpose::SecondFactor,
                response,
                meta,
            )
            .await?
        {
            Ok(()) => {
                self.record_event(
                    EventKind::MfaVerified,
                    Some(user.id),
                    meta,
                    json!({"factor": "passkey"}),
                )
                .await?;
                Ok(self.rotate_session(session, Aal::Aal2, meta, "mfa").await?)
            }
            Err(why) => {
                self.passkey_failed(EventKind::MfaFailed, Some(user.id), "login", why, meta)
                    .await?;
                let failures = self.store.record_mfa_failure(session.id).await?;
                if failures >= MAX_PENDING_FAILURES {
                    self.store.delete_session(session.id).await?;
                    self.record_event(
                        EventKind::SessionRevoked,
                        Some(user.id),
                        meta,
                        json!({"session_id": session.id, "by": "mfa_failures", "failures": failures}),
                    )
                    .await?;
                }
                Err(if why.contains("ceremony") {
                    PasskeyError::InvalidCeremony
                } else {
                    PasskeyError::InvalidCredential
                })
            }
        }
    }

    /// Re-authentication with a passkey: a verified, user-verified
    /// assertion (a multi-factor authenticator) rotates the session to
    /// aal2 and opens the re-authentication window.
    pub async fn finish_passkey_reauthentication(
        &self,
        session: &Session,
        user: &User,
        ceremony_id: Uuid,
        response: &PublicKeyCredential,
        meta: &RequestMeta,
    ) -> Result<(SessionToken, Session), PasskeyError> {
        match self
            .verify_session_assertion(
                session,
                user,
                ceremony_id,
                CeremonyPurpose::Reauthenticate,
                response,
                meta,
            )
            .await?
        {
            Ok(()) => {
                let (token, rotated) = self
                    .rotate_session(session, Aal::Aal2, meta, "reauthentication")
                    .await?;
                self.record_event(
                    EventKind::Reauthenticated,
                    Some(user.id),
                    meta,
                    json!({"factor": "passkey", "session_id": rotated.id}),
                )
                .await?;
                Ok((token, rotated))
            }
            Err(why) => {
                self.passkey_failed(
                    EventKind::ReauthenticationFailed,
                    Some(user.id),
                    "reauthentication",
                    why,
                    meta,
                )
                .await?;
                Err(if why.contains("ceremony") {
                    PasskeyError::InvalidCeremony
                } else {
                    PasskeyError::InvalidCredential
                })
            }
        }
    }
}
