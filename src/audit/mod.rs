//! Security events: what happened, to whom, from where. Each event is
//! written to the database (the admin API reads it back) and logged.
//! Details are small JSON objects and never carry a secret. The stored
//! events form a hash chain; [`chain`] verifies, exports and prunes it.

pub mod chain;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::UserId;
use crate::domain::audit_chain::truncate_to_millis;
use crate::store::{NewEvent, Store, StoreError};

/// Every kind of security event castellan records. `docs/logging.md` lists
/// them all; a test fails when one is missing there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    UserRegistered,
    LoginSucceeded,
    LoginFailed,
    Logout,
    SessionCreated,
    SessionRevoked,
    SessionRotated,
    SessionExpired,
    Reauthenticated,
    ReauthenticationFailed,
    AccessDenied,
    MfaEnrolled,
    MfaActivated,
    MfaVerified,
    MfaFailed,
    MfaRemoved,
    BackupCodeUsed,
    BackupCodesRegenerated,
    Throttled,
    PasswordChanged,
    PasswordResetRequested,
    PasswordReset,
    EmailVerificationRequested,
    EmailVerified,
    TokenRejected,
    AdminAction,
    PasswordRehashed,
    HashingSaturated,
    AuditPruned,
    PasskeyCeremonyStarted,
    PasskeyRegistered,
    PasskeyRenamed,
    PasskeyRemoved,
    PasskeyCounterRegression,
}

impl EventKind {
    pub const ALL: &[EventKind] = &[
        EventKind::UserRegistered,
        EventKind::LoginSucceeded,
        EventKind::LoginFailed,
        EventKind::Logout,
        EventKind::SessionCreated,
        EventKind::SessionRevoked,
        EventKind::SessionRotated,
        EventKind::SessionExpired,
        EventKind::Reauthenticated,
        EventKind::ReauthenticationFailed,
        EventKind::AccessDenied,
        EventKind::MfaEnrolled,
        EventKind::MfaActivated,
        EventKind::MfaVerified,
        EventKind::MfaFailed,
        EventKind::MfaRemoved,
        EventKind::BackupCodeUsed,
        EventKind::BackupCodesRegenerated,
        EventKind::Throttled,
        EventKind::PasswordChanged,
        EventKind::PasswordResetRequested,
        EventKind::PasswordReset,
        EventKind::EmailVerificationRequested,
        EventKind::EmailVerified,
        EventKind::TokenRejected,
        EventKind::AdminAction,
        EventKind::PasswordRehashed,
        EventKind::HashingSaturated,
        EventKind::AuditPruned,
        EventKind::PasskeyCeremonyStarted,
        EventKind::PasskeyRegistered,
        EventKind::PasskeyRenamed,
        EventKind::PasskeyRemoved,
        EventKind::PasskeyCounterRegression,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UserRegistered => "user_registered",
            EventKind::LoginSucceeded => "login_succeeded",
            EventKind::LoginFailed => "login_failed",
            EventKind::Logout => "logout",
            EventKind::SessionCreated => "session_created",
            EventKind::SessionRevoked => "session_revoked",
            EventKind::SessionRotated => "session_rotated",
            EventKind::SessionExpired => "session_expired",
            EventKind::Reauthenticated => "reauthenticated",
            EventKind::ReauthenticationFailed => "reauthentication_failed",
            EventKind::AccessDenied => "access_denied",
            EventKind::MfaEnrolled => "mfa_enrolled",
            EventKind::MfaActivated => "mfa_activated",
            EventKind::MfaVerified => "mfa_verified",
            EventKind::MfaFailed => "mfa_failed",
            EventKind::MfaRemoved => "mfa_removed",
            EventKind::BackupCodeUsed => "backup_code_used",
            EventKind::BackupCodesRegenerated => "backup_codes_regenerated",
            EventKind::Throttled => "throttled",
            EventKind::PasswordChanged => "password_changed",
            EventKind::PasswordResetRequested => "password_reset_requested",
            EventKind::PasswordReset => "password_reset",
            EventKind::EmailVerificationRequested => "email_verification_requested",
            EventKind::EmailVerified => "email_verified",
            EventKind::TokenRejected => "token_rejected",
            EventKind::AdminAction => "admin_action",
            EventKind::PasswordRehashed => "password_rehashed",
            EventKind::HashingSaturated => "hashing_saturated",
            EventKind::AuditPruned => crate::domain::audit_chain::PRUNED_KIND,
            EventKind::PasskeyCeremonyStarted => "passkey_ceremony_started",
            EventKind::PasskeyRegistered => "passkey_registered",
            EventKind::PasskeyRenamed => "passkey_renamed",
            EventKind::PasskeyRemoved => "passkey_removed",
            EventKind::PasskeyCounterRegression => "passkey_counter_regression",
        }
    }
}

/// Keeps user agents short and printable before they are stored.
pub const USER_AGENT_MAX: usize = 512;

/// Who is asking and from where, as resolved at the HTTP boundary.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    /// Client address (socket peer, or the trusted proxies' report).
    pub ip: String,
    /// User-Agent, cut to printable characters and a maximum length.
    pub user_agent: String,
}

/// Writes an event to the store and to the log.
pub async fn record(
    store: &dyn Store,
    now: time::OffsetDateTime,
    kind: EventKind,
    user: Option<UserId>,
    meta: &RequestMeta,
    detail: Value,
) -> Result<(), StoreError> {
    tracing::info!(
        event = kind.as_str(),
        user_id = user.map(|u| u.0.to_string()).unwrap_or_default(),
        ip = %meta.ip,
        detail = %detail,
        "security event"
    );
    metrics::counter!(crate::metrics::SECURITY_EVENTS, "kind" => kind.as_str()).increment(1);
    store
        .append_event(&NewEvent {
            id: Uuid::new_v4(),
            at: truncate_to_millis(now),
            kind: kind.as_str(),
            user_id: user,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            request_id: meta.request_id.clone(),
            detail,
        })
        .await
}
