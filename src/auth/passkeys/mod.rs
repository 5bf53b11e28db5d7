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

mod registration;
mod sign_in;

use serde_json::json;
use uuid::Uuid;
use webauthn_rs::prelude::{Passkey, Webauthn, WebauthnBuilder, WebauthnError};

use super::sessions::CheckError;
use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Session, User, UserId};
pub use crate::store::{CeremonyPurpose, PasskeyRecord};
use crate::store::{NewCeremony, StoreError};

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

service_failures!(PasskeyError: StoreError);

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
