//! What the API returns: only the fields the contract names, never whole
//! internal objects.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Aal, Session, User};

/// Contract `User` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.0,
            email: u.email.as_str().to_string(),
            email_verified: u.email_verified,
            mfa_enabled: u.mfa_enabled,
            created_at: u.created_at,
        }
    }
}

/// `aal1` (password) or `aal2` (password and a second factor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AalView {
    Aal1,
    Aal2,
}

impl From<Aal> for AalView {
    fn from(a: Aal) -> Self {
        match a {
            Aal::Aal1 => Self::Aal1,
            Aal::Aal2 => Self::Aal2,
        }
    }
}

/// Contract `Session` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub aal: AalView,
    pub mfa_pending: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub authenticated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub idle_expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    pub user_agent: String,
    pub ip: String,
    /// Whether this is the session making the request.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: &Session, idle_timeout: std::time::Duration, current: bool) -> Self {
        Self {
            id: s.id,
            aal: s.aal.into(),
            mfa_pending: s.mfa_pending,
            created_at: s.created_at,
            authenticated_at: s.authenticated_at,
            last_seen_at: s.last_seen_at,
            idle_expires_at: s.idle_expires_at(idle_timeout),
            expires_at: s.expires_at,
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            current,
        }
    }
}

/// `{"user": User}`
#[derive(Debug, Serialize, ToSchema)]
pub struct UserEnvelope {
    pub user: UserView,
}

/// `{"session_token", "session"}`: the token is shown only here.
#[derive(Serialize, ToSchema)]
pub struct SessionIssued {
    #[schema(example = "cst_...")]
    pub session_token: String,
    pub session: SessionView,
    /// Only after a backup code was used: how many unused codes remain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_codes_remaining: Option<u32>,
}

/// `GET /v1/session`
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentSession {
    pub session: SessionView,
    pub user: UserView,
    /// Send as `X-CSRF-Token` on cookie-authenticated writes.
    pub csrf_token: String,
}

/// The contract's error object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = "invalid_request")]
    pub code: String,
    pub message: String,
    pub request_id: String,
}
