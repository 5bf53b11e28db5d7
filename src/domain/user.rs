//! Accounts.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Email;

/// A user's id (a UUID, public).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

/// A user as the rest of castellan sees it; the password hash lives only in
/// [`crate::store::Credentials`].
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    pub created_at: OffsetDateTime,
    pub locked: bool,
    pub last_login_at: Option<OffsetDateTime>,
}
