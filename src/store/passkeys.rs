//! The passkey role: registered WebAuthn credentials and the short-lived
//! state of ceremonies between their start and finish. The credential
//! itself is opaque JSON here (webauthn-rs's serialised `Passkey`); the
//! rules that must hold across requests and nodes are conditional
//! statements: a ceremony is taken by one `DELETE ... RETURNING`, and the
//! signature counter only moves forward.

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::domain::UserId;

/// What a ceremony is for; a ceremony started for one purpose cannot
/// finish another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a new passkey on an authenticated session.
    Register,
    /// Passwordless sign-in (discoverable credential), no session yet.
    Login,
    /// The second factor of a pending (password-first) session.
    SecondFactor,
    /// Re-authentication of a full session.
    Reauthenticate,
}

impl CeremonyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyPurpose::Register => "register",
            CeremonyPurpose::Login => "login",
            CeremonyPurpose::SecondFactor => "second_factor",
            CeremonyPurpose::Reauthenticate => "reauthenticate",
        }
    }
}

/// A ceremony to store at its start.
#[derive(Debug, Clone)]
pub struct NewCeremony {
    pub id: Uuid,
    pub purpose: CeremonyPurpose,
    /// The session it is bound to (none for passwordless sign-in).
    pub session_id: Option<Uuid>,
    pub user_id: Option<UserId>,
    /// webauthn-rs's serialised ceremony state (holds the challenge).
    pub state: String,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A ceremony taken back at its finish (it no longer exists in storage).
#[derive(Debug, Clone)]
pub struct Ceremony {
    pub session_id: Option<Uuid>,
    pub user_id: Option<UserId>,
    pub state: String,
    pub expires_at: OffsetDateTime,
}

/// A passkey to store after a successful registration.
#[derive(Debug, Clone)]
pub struct NewPasskey {
    pub id: Uuid,
    pub user_id: UserId,
    pub credential_id: Vec<u8>,
    pub name: String,
    pub credential: String,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub now: OffsetDateTime,
}

/// A stored passkey.
#[derive(Debug, Clone)]
pub struct PasskeyRecord {
    pub id: Uuid,
    pub user_id: UserId,
    pub credential_id: Vec<u8>,
    pub name: String,
    pub credential: String,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    /// When a counter regression was seen; such a passkey is refused.
    pub flagged_at: Option<OffsetDateTime>,
}

/// The state of a passkey after a successful assertion.
#[derive(Debug, Clone)]
pub struct PasskeyUse {
    pub id: Uuid,
    pub credential: String,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub now: OffsetDateTime,
}

/// What deleting a passkey did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasskeyDeletion {
    /// Deleted; the passkey's name.
    Deleted(String),
    /// No such passkey on this account.
    NotFound,
    /// Refused: it is the account's last second factor and one is required.
    LastFactor,
}

#[async_trait]
pub trait PasskeyStore: Send + Sync {
    /// Stores a ceremony; an older unfinished ceremony of the same session
    /// and purpose is dropped in the same transaction.
    async fn create_ceremony(&self, new: &NewCeremony) -> Result<(), StoreError>;
    /// Takes (deletes and returns) a ceremony of `purpose`, expired or not;
    /// of concurrent callers exactly one gets it.
    async fn take_ceremony(
        &self,
        id: Uuid,
        purpose: CeremonyPurpose,
    ) -> Result<Option<Ceremony>, StoreError>;
    /// Deletes ceremonies that expired before `now`; returns how many.
    async fn purge_ceremonies(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
    /// Stores a new passkey (`Conflict` when the credential id exists on
    /// any account) and, in the same transaction, raises `raise_session`
    /// to aal2.
    async fn insert_passkey(
        &self,
        new: &NewPasskey,
        raise_session: Option<Uuid>,
    ) -> Result<(), StoreError>;
    /// The user's passkeys, oldest first.
    async fn list_passkeys(&self, user: UserId) -> Result<Vec<PasskeyRecord>, StoreError>;
    /// How many passkeys the user has (flagged ones included).
    async fn count_passkeys(&self, user: UserId) -> Result<u32, StoreError>;
    /// The passkey with this credential id, on whatever account.
    async fn find_passkey(&self, credential_id: &[u8])
    -> Result<Option<PasskeyRecord>, StoreError>;
    /// Records a successful assertion; false (and nothing written) unless
    /// the new counter is above the stored one (or both are zero).
    async fn record_passkey_use(&self, used: &PasskeyUse) -> Result<bool, StoreError>;
    /// Marks a passkey as flagged (its counter went backwards).
    async fn flag_passkey(&self, id: Uuid, now: OffsetDateTime) -> Result<(), StoreError>;
    /// Renames one of the user's passkeys; false when there is none.
    async fn rename_passkey(&self, user: UserId, id: Uuid, name: &str) -> Result<bool, StoreError>;
    /// Deletes one of the user's passkeys. With `keep_last_factor`, the
    /// last passkey of a user without TOTP is kept (decided in the same
    /// transaction).
    async fn delete_passkey(
        &self,
        user: UserId,
        id: Uuid,
        keep_last_factor: bool,
    ) -> Result<PasskeyDeletion, StoreError>;
    /// Deletes every passkey of the user (admin MFA reset); returns how many.
    async fn remove_passkeys(&self, user: UserId) -> Result<u64, StoreError>;
}
