//! Passkeys (WebAuthn): registration, passwordless sign-in, the second
//! factor of a pending session, and re-authentication. All cryptography
//! (challenges, attestation and assertion checks) is webauthn-rs's; this
//! module keeps each ceremony's state in the store between its start and
//! finish, bound to the caller's session where there is one, single use and
//! short-lived, and applies castellan's rules around it (who may register,
//! throttling, the counter policy, audit and mail).
//!
//! Counter policy: an assertion whose signature counter is not above the
//! stored one (when either is non-zero) may come from a cloned
//! authenticator. The sign-in is refused, a `passkey_counter_regression`
//! event is recorded, the user is mailed, and the passkey is flagged:
//! refused from then on until the user deletes it (and registers it again).

use serde_json::json;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Webauthn, WebauthnBuilder, WebauthnError,
};

use super::login::LoggedIn;
use super::mfa::MAX_PENDING_FAILURES;
use super::sessions::CheckError;
use super::throttle::{Bucket, Factor};
use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Aal, Session, SessionToken, User, UserId};
use crate::mail::Notice;
pub use crate::store::{CeremonyPurpose, PasskeyRecord};
use crate::store::{NewCeremony, NewPasskey, PasskeyDeletion, PasskeyUse, StoreError};

/// Longest passkey name, in characters.
pub const NAME_MAX: usize = 64;

/// A user-chosen passkey name: 1 to 64 printable characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyName(String);

impl PasskeyName {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > NAME_MAX {
            return Err("name: must be 1 to 64 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("name: must not contain control characters");
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// Passkeys are off: no relying-party id is configured.
    #[error("passkeys are not configured")]
    NotConfigured,
    /// The ceremony is unknown, already finished, expired, or belongs to
    /// another session.
    #[error("unknown, used or expired ceremony")]
    InvalidCeremony,
    /// The signed response does not verify (origin, RP id, challenge,
    /// signature, user verification, unknown or foreign credential, a
    /// flagged passkey or a counter regression).
    #[error("invalid passkey response")]
    InvalidCredential,
    /// The credential is already registered (to this or another account).
    #[error("credential already registered")]
    AlreadyRegistered,
    #[error("aal2 required")]
    Aal2Required,
    #[error("re-authentication required")]
    ReauthenticationRequired,
    /// The session is not waiting for a second factor.
    #[error("no second factor pending")]
    NotPending,
    /// The account has no usable passkey.
    #[error("no passkey")]
    NoPasskey,
    #[error("no such passkey")]
    NotFound,
    /// Deleting it would leave an account that must have MFA without one.
    #[error("last second factor")]
    LastFactor,
    #[error("account locked")]
    Locked,
    #[error("session gone")]
    SessionGone,
    #[error(transparent)]
    Throttled(#[from] super::throttle::Throttled),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for PasskeyError {
    fn from(e: StoreError) -> Self {
        PasskeyError::Service(e.into())
    }
}

impl From<CheckError> for PasskeyError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Unauthenticated => PasskeyError::SessionGone,
            CheckError::Store(e) => e.into(),
        }
    }
}

fn unexpected(context: &'static str, e: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Service(ServiceError::Unexpected(anyhow::anyhow!("{context}: {e}")))
}

/// A started ceremony: its id and the options for `navigator.credentials`
/// (`{"publicKey": {...}}`).
#[derive(Debug)]
pub struct Started {
    pub ceremony_id: Uuid,
    pub options: serde_json::Value,
}

/// The counter and backup flags inside a serialised webauthn-rs `Passkey`.
fn passkey_facts(passkey: &Passkey) -> Result<(String, u32, bool, bool), PasskeyError> {
    let value = serde_json::to_value(passkey).map_err(|e| unexpected("passkey json", e))?;
    let cred = &value["cred"];
    let counter = cred["counter"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0);
    let be = cred["backup_eligible"].as_bool().unwrap_or(false);
    let bs = cred["backup_state"].as_bool().unwrap_or(false);
    let text = serde_json::to_string(&value).map_err(|e| unexpected("passkey json", e))?;
    Ok((text, counter, be, bs))
}

fn load_passkey(record: &PasskeyRecord) -> Result<Passkey, PasskeyError> {
    serde_json::from_str(&record.credential).map_err(|e| unexpected("stored passkey", e))
}

/// Why a verification failed, for the audit record only.
fn reason(e: &WebauthnError) -> &'static str {
    match e {
        WebauthnError::InvalidRPOrigin => "wrong_origin",
        WebauthnError::InvalidRPIDHash => "wrong_rp_id",
        WebauthnError::MismatchedChallenge => "wrong_challenge",
        WebauthnError::UserNotVerified => "user_not_verified",
        WebauthnError::CredentialPossibleCompromise => "counter_regression",
        WebauthnError::InvalidClientDataType => "wrong_ceremony_type",
        _ => "verification_failed",
    }
}

impl Auth {
    /// The WebAuthn relying party as configured (cheap to build).
    fn webauthn(&self) -> Result<Webauthn, PasskeyError> {
        let pk = &self.config.passkeys;
        let (Some(rp_id), Some(first)) = (pk.rp_id.as_deref(), pk.origins.first()) else {
            return Err(PasskeyError::NotConfigured);
        };
        let mut builder = WebauthnBuilder::new(rp_id, first)
            .map_err(|e| unexpected("passkey settings", e))?
            .rp_name(rp_id)
            .timeout(pk.challenge_ttl);
        for origin in pk.origins.iter().skip(1) {
            builder = builder.append_allowed_origin(origin);
        }
        builder
            .build()
            .map_err(|e| unexpected("passkey settings", e))
    }

    /// Stores the state of a new ceremony and records that it started.
    async fn begin_ceremony<S: serde::Serialize>(
        &self,
        purpose: CeremonyPurpose,
        session: Option<&Session>,
        user: Option<UserId>,
        state: &S,
        options: serde_json::Value,
        meta: &RequestMeta,
    ) -> Result<Started, PasskeyError> {
        let now = self.clock.now();
        let id = Uuid::new_v4();
        let state = serde_json::to_string(state).map_err(|e| unexpected("ceremony state", e))?;
        self.store
            .create_ceremony(&NewCeremony {
                id,
                purpose,
                session_id: session.map(|s| s.id),
                user_id: user,
                state,
                now,
                expires_at: now + self.config.passkeys.challenge_ttl,
            })
            .await?;
        self.record_event(
            EventKind::PasskeyCeremonyStarted,
            user,
            meta,
            json!({"purpose": purpose.as_str(), "ceremony_id": id}),
        )
        .await?;
        Ok(Started {
            ceremony_id: id,
            options,
        })
    }

    /// Takes a ceremony back: it must exist, have this purpose, be bound to
    /// `session` (when one is given) and not have expired. It is gone from
    /// storage afterwards whatever the outcome.
    async fn take_ceremony<S: serde::de::DeserializeOwned>(
        &self,
        id: Uuid,
        purpose: CeremonyPurpose,
        session: Option<&Session>,
    ) -> Result<Result<S, &'static str>, PasskeyError> {
        let Some(ceremony) = self.store.take_ceremony(id, purpose).await? else {
            return Ok(Err("unknown_or_used_ceremony"));
        };
        if ceremony.session_id != session.map(|s| s.id) {
            return Ok(Err("ceremony_of_another_session"));
        }
        if ceremony.expires_at <= self.clock.now() {
            return Ok(Err("ceremony_expired"));
        }
        let state =
            serde_json::from_str(&ceremony.state).map_err(|e| unexpected("ceremony state", e))?;
        Ok(Ok(state))
    }

    /// The user's passkeys that may still sign in (flagged ones excluded).
    async fn usable_passkeys(&self, user: UserId) -> Result<Vec<Passkey>, PasskeyError> {
        self.store
            .list_passkeys(user)
            .await?
            .iter()
            .filter(|r| r.flagged_at.is_none())
            .map(load_passkey)
            .collect()
    }

    /// Whether the user has a second factor of any kind.
    pub async fn has_second_factor(&self, user: &User) -> Result<bool, StoreError> {
        Ok(user.mfa_enabled || self.store.count_passkeys(user.id).await? > 0)
    }

    /// Who may register a passkey: a full session inside the
    /// re-authentication window, at aal2 when the account already has a
    /// second factor (so a stolen password alone cannot add one).
    async fn may_register(&self, session: &Session, user: &User) -> Result<(), PasskeyError> {
        if session.aal != Aal::Aal2 && self.has_second_factor(user).await? {
            return Err(PasskeyError::Aal2Required);
        }
        if !session.in_reauth_window(self.clock.now(), self.config.session.reauth_window) {
            return Err(PasskeyError::ReauthenticationRequired);
        }
        Ok(())
    }

    /// Starts registering a passkey for the session's user.
    pub async fn start_passkey_registration(
        &self,
        session: &Session,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<Started, PasskeyError> {
        let webauthn = self.webauthn()?;
        self.may_register(session, user).await?;
        let existing = self
            .store
            .list_passkeys(user.id)
            .await?
            .iter()
            .map(load_passkey)
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (ccr, state) = webauthn
            .start_passkey_registration(
                user.id.0,
                user.email.as_str(),
                user.email.as_str(),
                Some(exclude),
            )
            .map_err(|e| unexpected("start registration", e))?;
        let mut options = serde_json::to_value(&ccr).map_err(|e| unexpected("options", e))?;
        // Ask for a discoverable credential, so the passkey can later sign in
        // without a user name (browsers treat "preferred" like "required").
        if let Some(sel) = options["publicKey"]["authenticatorSelection"].as_object_mut() {
            sel.insert("residentKey".into(), json!("preferred"));
        }
        self.begin_ceremony(
            CeremonyPurpose::Register,
            Some(session),
            Some(user.id),
            &state,
            options,
            meta,
        )
        .await
    }

    /// Finishes a registration: verifies the response against the stored
    /// state and stores the passkey. A first second factor raises the
    /// session to aal2 (password plus a verified possession factor).
    pub async fn finish_passkey_registration(
        &self,
        session: &Session,
        user: &User,
        ceremony_id: Uuid,
        name: &PasskeyName,
        response: &RegisterPublicKeyCredential,
        meta: &RequestMeta,
    ) -> Result<PasskeyRecord, PasskeyError> {
        let webauthn = self.webauthn()?;
        self.count_attempt(Bucket::Mfa, meta).await?;
        let state: PasskeyRegistration = match self
            .take_ceremony(ceremony_id, CeremonyPurpose::Register, Some(session))
            .await?
        {
            Ok(s) => s,
            Err(why) => {
                self.passkey_failed(
                    EventKind::MfaFailed,
                    Some(user.id),
                    "registration",
                    why,
                    meta,
                )
                .await?;
                return Err(PasskeyError::InvalidCeremony);
            }
        };
        self.may_register(session, user).await?;
        let passkey = match webauthn.finish_passkey_registration(response, &state) {
            Ok(p) => p,
            Err(e) => {
                self.passkey_failed(
                    EventKind::MfaFailed,
                    Some(user.id),
                    "registration",
                    reason(&e),
                    meta,
                )
                .await?;
                return Err(PasskeyError::InvalidCredential);
            }
        };
        let (credential, sign_count, backup_eligible, backup_state) = passkey_facts(&passkey)?;
        let now = self.clock.now();
        let new = NewPasskey {
            id: Uuid::new_v4(),
            user_id: user.id,
            credential_id: passkey.cred_id().clone(),
            name: name.as_str().to_string(),
            credential,
            sign_count,
            backup_eligible,
            backup_state,
            now,
        };
        let raise = (session.aal == Aal::Aal1).then_some(session.id);
        match self.store.insert_passkey(&new, raise).await {
            Err(StoreError::Conflict) => {
                self.passkey_failed(
                    EventKind::MfaFailed,
                    Some(user.id),
                    "registration",
                    "credential_already_registered",
                    meta,
                )
                .await?;
                return Err(PasskeyError::AlreadyRegistered);
            }
            other => other?,
        }
        self.record_event(
            EventKind::PasskeyRegistered,
            Some(user.id),
            meta,
            json!({"passkey_id": new.id, "backup_eligible": backup_eligible,
                   "backup_state": backup_state, "session_raised": raise.is_some()}),
        )
        .await?;
        self.mailer.notify(&user.email, Notice::PasskeyAdded).await;
        Ok(PasskeyRecord {
            id: new.id,
            user_id: user.id,
            credential_id: new.credential_id,
            name: new.name,
            credential: new.credential,
            sign_count,
            backup_eligible,
            backup_state,
            created_at: now,
            last_used_at: None,
            flagged_at: None,
        })
    }

    /// Records a failed passkey step (no secret in the detail).
    async fn passkey_failed(
        &self,
        kind: EventKind,
        user: Option<UserId>,
        during: &'static str,
        why: &'static str,
        meta: &RequestMeta,
    ) -> Result<(), StoreError> {
        self.record_event(
            kind,
            user,
            meta,
            json!({"factor": "passkey", "during": during, "reason": why}),
        )
        .await
    }

    /// The user's passkeys, oldest first.
    pub async fn list_passkeys(&self, user: &User) -> Result<Vec<PasskeyRecord>, PasskeyError> {
        Ok(self.store.list_passkeys(user.id).await?)
    }

    /// Renames one of the user's passkeys.
    pub async fn rename_passkey(
        &self,
        user: &User,
        id: Uuid,
        name: &PasskeyName,
        meta: &RequestMeta,
    ) -> Result<(), PasskeyError> {
        if !self
            .store
            .rename_passkey(user.id, id, name.as_str())
            .await?
        {
            return Err(PasskeyError::NotFound);
        }
        self.record_event(
            EventKind::PasskeyRenamed,
            Some(user.id),
            meta,
            json!({"passkey_id": id}),
        )
        .await?;
        Ok(())
    }

    /// Deletes one of the user's passkeys: needs aal2 and the window. When
    /// MFA is required, the account's last second factor stays.
    pub async fn delete_passkey(
        &self,
        session: &Session,
        user: &User,
        id: Uuid,
        meta: &RequestMeta,
    ) -> Result<(), PasskeyError> {
        if session.aal != Aal::Aal2 {
            return Err(PasskeyError::Aal2Required);
        }
        if !session.in_reauth_window(self.clock.now(), self.config.session.reauth_window) {
            return Err(PasskeyError::ReauthenticationRequired);
        }
        match self
            .store
            .delete_passkey(user.id, id, self.config.require_mfa)
            .await?
        {
            PasskeyDeletion::Deleted(_) => {}
            PasskeyDeletion::NotFound => return Err(PasskeyError::NotFound),
            PasskeyDeletion::LastFactor => return Err(PasskeyError::LastFactor),
        }
        self.record_event(
            EventKind::PasskeyRemoved,
            Some(user.id),
            meta,
            json!({"passkey_id": id, "by": "user"}),
        )
        .await?;
        self.mailer
            .notify(&user.email, Notice::PasskeyRemoved)
            .await;
        Ok(())
    }

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

    /// Deletes ceremonies whose time ran out (the cleanup job).
    pub async fn purge_passkey_ceremonies(&self) -> Result<u64, StoreError> {
        self.store.purge_ceremonies(self.clock.now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::PasskeyName;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(PasskeyName::parse("  Laptop ").unwrap().as_str(), "Laptop");
        assert!(PasskeyName::parse("   ").is_err());
        assert!(PasskeyName::parse(&"x".repeat(65)).is_err());
        assert!(PasskeyName::parse(&"é".repeat(64)).is_ok());
        assert!(PasskeyName::parse("a\u{7}b").is_err());
    }
}
