//! Storage: small role traits, implemented by an SQLite and a PostgreSQL
//! backend. All SQL lives in this folder; signatures take and return domain
//! types. Rules that must hold across requests and nodes (uniqueness, caps)
//! are enforced inside one transaction or one conditional statement.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::audit_chain::{ChainHead, ChainedContent, Digest32, StoredLink};
use crate::domain::{Aal, Email, Session, TokenHash, User, UserId};

pub mod diagnostics;
pub mod limits;
mod ops;
mod options;
pub mod passkeys;
pub mod postgres;
pub mod sqlite;

pub use ops::Op;
pub use options::{Backend, PoolOptions, StoreOptions};
pub use passkeys::{
    Ceremony, CeremonyPurpose, NewCeremony, NewPasskey, PasskeyDeletion, PasskeyRecord,
    PasskeyStore, PasskeyUse,
};

/// What can go wrong in storage, phrased for the caller.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write (e.g. email already registered).
    #[error("conflict")]
    Conflict,
    /// The database cannot be reached now; worth retrying later (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a corrupt row (500).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Data for a new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub email: Email,
    pub password_hash: String,
    pub now: OffsetDateTime,
}

/// A user with the password hash, used only by login.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// Data for a new session.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub token_hash: TokenHash,
    pub user_id: UserId,
    pub aal: Aal,
    pub mfa_pending: bool,
    pub now: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: String,
    pub ip: String,
}

impl NewSession {
    pub fn into_session(self) -> Session {
        Session {
            id: self.id,
            user_id: self.user_id,
            aal: self.aal,
            mfa_pending: self.mfa_pending,
            created_at: self.now,
            authenticated_at: self.now,
            last_seen_at: self.now,
            expires_at: self.expires_at,
            user_agent: self.user_agent,
            ip: self.ip,
        }
    }
}

/// A security event to append to the record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub kind: &'static str,
    pub user_id: Option<UserId>,
    pub ip: String,
    pub user_agent: String,
    pub request_id: String,
    /// Small JSON object; never holds a secret.
    pub detail: serde_json::Value,
}

/// A stored security event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Position in the audit chain (consecutive, no gaps).
    pub seq: i64,
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub kind: String,
    pub user_id: Option<UserId>,
    pub ip: String,
    pub user_agent: String,
    pub request_id: String,
    pub detail: serde_json::Value,
    /// The chain link; absent on events written before the chain existed.
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
    pub mac: Option<Vec<u8>>,
}

impl Event {
    /// The event as the chain verifier reads it.
    pub fn as_link(&self) -> StoredLink<'_> {
        StoredLink {
            content: ChainedContent {
                seq: self.seq,
                id: self.id,
                at: self.at,
                kind: &self.kind,
                user_id: self.user_id.map(|u| u.0),
                ip: &self.ip,
                user_agent: &self.user_agent,
                request_id: &self.request_id,
                detail: &self.detail,
            },
            prev_hash: self.prev_hash.as_deref(),
            hash: self.hash.as_deref(),
            mac: self.mac.as_deref(),
        }
    }
}

impl NewEvent {
    /// The event timed no earlier than `floor`, the previous event's time.
    /// Appenders call this under the chain's lock, so the chain order and
    /// the time order agree even when events from several requests or
    /// nodes (each with its own clock reading) reach the lock out of order.
    pub fn not_before(&self, floor: Option<OffsetDateTime>) -> std::borrow::Cow<'_, NewEvent> {
        match floor {
            Some(floor) if floor > self.at => std::borrow::Cow::Owned(NewEvent {
                at: floor,
                ..self.clone()
            }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// The fields the chain protects, once the event has its place.
    pub fn chained(&self, seq: i64) -> ChainedContent<'_> {
        ChainedContent {
            seq,
            id: self.id,
            at: self.at,
            kind: self.kind,
            user_id: self.user_id.map(|u| u.0),
            ip: &self.ip,
            user_agent: &self.user_agent,
            request_id: &self.request_id,
            detail: &self.detail,
        }
    }
}

/// Which events an audit query wants; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub user: Option<UserId>,
    pub kind: Option<String>,
    /// Events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Events strictly before this time.
    pub until: Option<OffsetDateTime>,
    /// Pagination cursor: events with a smaller `seq`.
    pub before_seq: Option<i64>,
    pub limit: u32,
}

impl EventFilter {
    /// The newest `limit` events.
    pub fn newest(limit: u32) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }
}

/// What a prune removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOutcome {
    /// The new checkpoint: the last removed event.
    pub through_seq: i64,
    pub removed: u64,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates an account; [`StoreError::Conflict`] when the email is taken.
    async fn create_user(&self, new: &NewUser) -> Result<User, StoreError>;
    /// Looks a user up by the case-folded email, with the password hash.
    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError>;
    /// Looks a user up by the case-folded email, without the password
    /// hash (what administrators see).
    async fn find_user(&self, email_key: &str) -> Result<Option<User>, StoreError>;
    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// Replaces the stored hash, e.g. after a parameter upgrade.
    async fn set_password_hash(&self, id: UserId, phc: &str) -> Result<(), StoreError>;
    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Locks or unlocks an account; `false` when no such user exists.
    async fn set_locked(
        &self,
        id: UserId,
        locked: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session. A full (not pending) session that brings the user
    /// over `max_full_sessions` evicts the oldest full ones in the same
    /// transaction; their ids are returned.
    async fn create_session(
        &self,
        new: &NewSession,
        max_full_sessions: usize,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// The hot path: one indexed lookup by token hash, with the user.
    async fn find_session(&self, hash: &TokenHash) -> Result<Option<(Session, User)>, StoreError>;
    /// Records activity, only if the stored value is older than `older_than`.
    async fn touch_session(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        older_than: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Replaces session `old` by `new` in one transaction (token rotation);
    /// `false` when `old` no longer exists, and then nothing is written.
    async fn rotate_session(&self, old: Uuid, new: &NewSession) -> Result<bool, StoreError>;
    /// Deletes one session; `false` when it did not exist.
    async fn delete_session(&self, id: Uuid) -> Result<bool, StoreError>;
    /// The user's sessions, newest first.
    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError>;
    /// Deletes a user's sessions, keeping `except` if given; returns how many.
    async fn delete_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError>;
    /// Deletes every session of every user (incident response).
    async fn delete_all_sessions(&self) -> Result<u64, StoreError>;
    /// Deletes up to `batch` sessions that ended before `now` (absolute
    /// expiry, or no activity since `idle_cutoff`) and says which.
    async fn purge_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        batch: u32,
    ) -> Result<Vec<(Uuid, UserId)>, StoreError>;
}

/// The audit log: an append-only hash chain. Appends are serialised in the
/// database (a row lock on the chain head in PostgreSQL, the write lock in
/// SQLite), so several processes on one database extend one chain.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Links the event to the newest one and stores it, in one transaction.
    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError>;
    /// Newest first, filtered.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError>;
    /// Up to `limit` events with `seq > after_seq`, in chain order.
    async fn chain_events(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, StoreError>;
    /// The chain's head row.
    async fn chain_head(&self) -> Result<ChainHead, StoreError>;
    /// In one transaction: deletes the events older than `cutoff`, moves
    /// the checkpoint to the last one deleted and appends `record` (kind
    /// `audit_pruned`, detail filled in here) naming the checkpoint.
    /// `None` when nothing was old enough.
    async fn prune_events(
        &self,
        cutoff: OffsetDateTime,
        record: &NewEvent,
    ) -> Result<Option<PruneOutcome>, StoreError>;
}

/// A stored TOTP credential (the secret still sealed).
#[derive(Debug, Clone)]
pub struct TotpRecord {
    pub sealed_secret: Vec<u8>,
    pub enabled: bool,
    pub last_used_step: Option<u64>,
}

/// A backup code's stored hash, by slot.
#[derive(Debug, Clone)]
pub struct BackupCodeHash {
    pub slot: u8,
    pub code_hash: String,
}

/// Second factors. Single use is enforced here with conditional updates, so
/// it holds across concurrent requests and nodes.
#[async_trait]
pub trait MfaStore: Send + Sync {
    /// Stores (or replaces) a pending enrolment; [`StoreError::Conflict`]
    /// when TOTP is already enabled.
    async fn put_pending_totp(
        &self,
        user: UserId,
        sealed: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn get_totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError>;
    /// Enables the pending credential with `step` as the last used step,
    /// stores the backup codes and raises `session` to aal2, all in one
    /// transaction. `false` (and nothing written) when nothing was pending.
    async fn activate_totp(
        &self,
        user: UserId,
        step: u64,
        codes: &[BackupCodeHash],
        session: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Replaces the sealed secret (re-sealed under a new key).
    async fn reseal_totp(&self, user: UserId, sealed: &[u8]) -> Result<(), StoreError>;
    /// Accepts `step` only if it is later than the last accepted one.
    async fn claim_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError>;
    /// Removes TOTP and backup codes and clears `mfa_enabled`.
    async fn remove_mfa(&self, user: UserId) -> Result<bool, StoreError>;
    /// Replaces every backup code in one transaction.
    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: &[BackupCodeHash],
    ) -> Result<(), StoreError>;
    /// The unused code in `slot`, if any.
    async fn unused_backup_code(
        &self,
        user: UserId,
        slot: u8,
    ) -> Result<Option<String>, StoreError>;
    /// Marks the code used if it is still unused and still this hash.
    async fn claim_backup_code(
        &self,
        user: UserId,
        slot: u8,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// `(remaining, total)`.
    async fn backup_code_counts(&self, user: UserId) -> Result<(u32, u32), StoreError>;
    /// Counts a wrong code from a pending session; returns the new count.
    async fn record_mfa_failure(&self, session: Uuid) -> Result<u32, StoreError>;
}

/// What a mailed single-use token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    PasswordReset,
    EmailVerification,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::PasswordReset => "password_reset",
            TokenPurpose::EmailVerification => "email_verification",
        }
    }
}

/// Password changes and the mailed tokens of the account lifecycle.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a token, deleting the user's earlier unused tokens of the
    /// same purpose (a newer token kills the older ones).
    async fn issue_token(
        &self,
        hash: &TokenHash,
        user: UserId,
        purpose: TokenPurpose,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Spends a live token of `purpose` once; the owner, or `None` when it
    /// is unknown, used or expired.
    async fn claim_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError>;
    /// Resets the password with a token in one transaction: spends the
    /// token, stores the hash, ends every session and every other reset
    /// token. `None` (nothing written) when the token is not live.
    async fn reset_password(
        &self,
        hash: &TokenHash,
        phc: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError>;
    /// Changes the password in one transaction: stores the hash, ends every
    /// session but `keep`, deletes unused reset tokens.
    async fn change_password(
        &self,
        user: UserId,
        phc: &str,
        keep: Uuid,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    async fn mark_email_verified(&self, user: UserId) -> Result<(), StoreError>;
    /// Deletes tokens (used or not) that expired before `now`; returns how many.
    async fn purge_account_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// Shared counters for rate limits and back-off.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Counts one hit in a fixed window of `window` for `key`; returns the
    /// count in the current window and when that window started.
    async fn throttle_hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: std::time::Duration,
    ) -> Result<(u64, OffsetDateTime), StoreError>;
    /// Blocks `key` until `until` (keeps a later existing block).
    async fn throttle_block(
        &self,
        key: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// The latest block among `keys` still in force at `now`.
    async fn throttle_blocked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError>;
    /// The current count of `key` (0 when absent).
    async fn throttle_count(&self, key: &str) -> Result<u64, StoreError>;
    /// Forgets `keys` (after a success).
    async fn throttle_clear(&self, keys: &[String]) -> Result<(), StoreError>;
    /// Deletes the counters whose key starts with `prefix`, whose window
    /// started before `started_before` and that block nothing at `now`;
    /// returns how many.
    async fn purge_throttles(
        &self,
        prefix: &str,
        started_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;
}

/// Everything a backend provides.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + EventStore
    + MfaStore
    + AccountStore
    + ThrottleStore
    + limits::LimitStore
    + PasskeyStore
{
    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Name for logs and metrics.
    fn backend(&self) -> &'static str;
    /// Connection pool `(open, idle, max)`, where the backend has a pool.
    fn pool_stats(&self) -> Option<(u32, usize, u32)> {
        None
    }
}

/// Opens the configured backend and applies pending migrations.
pub async fn open(options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &options.backend {
        Backend::Sqlite { path } => {
            Arc::new(sqlite::SqliteStore::open(path, options.sealer.clone()).await?)
        }
        Backend::Postgres { url } => Arc::new(postgres::PgStore::connect(url, options).await?),
    })
}

/// Like [`open`], for `serve`: a PostgreSQL database that cannot be reached
/// yet is not an error; the store reports `Unavailable` until it appears.
pub async fn open_for_serving(options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &options.backend {
        Backend::Postgres { url } => {
            Arc::new(postgres::PgStore::connect_or_wait(url, options).await?)
        }
        Backend::Sqlite { .. } => open(options).await?,
    })
}

/// A stored chain hash as a [`Digest32`]; a column of another length is a
/// corrupt row.
pub(crate) fn stored_digest(bytes: Vec<u8>) -> Result<Digest32, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Unexpected(anyhow::anyhow!("audit chain hash is not 32 bytes")))
}

/// Applies pending migrations only (the `migrate` command).
pub async fn migrate(options: &StoreOptions) -> anyhow::Result<()> {
    open(options).await.map(|_| ())
}
