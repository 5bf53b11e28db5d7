//! Operator actions: lock and unlock accounts, end sessions, clear a lost
//! second factor. Every action is a security event (`admin_action`).

use serde_json::json;

use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{User, UserId};
use crate::mail::Notice;
use crate::store::StoreError;

/// What an administrator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    Lock,
    Unlock,
    RevokeUserSessions,
    ResetMfa,
    RevokeAllSessions,
}

impl AdminAction {
    pub fn name(self) -> &'static str {
        match self {
            AdminAction::Lock => "lock",
            AdminAction::Unlock => "unlock",
            AdminAction::RevokeUserSessions => "revoke_user_sessions",
            AdminAction::ResetMfa => "reset_mfa",
            AdminAction::RevokeAllSessions => "revoke_all_sessions",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such user")]
    NotFound,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Service(e.into())
    }
}

impl Auth {
    async fn admin_event(
        &self,
        action: AdminAction,
        user: Option<UserId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut detail = detail;
        detail["action"] = json!(action.name());
        detail["by"] = json!("admin");
        self.record_event(EventKind::AdminAction, user, meta, detail)
            .await
    }

    async fn existing_user(&self, id: UserId) -> Result<User, AdminError> {
        self.store.get_user(id).await?.ok_or(AdminError::NotFound)
    }

    /// Runs one action on one user.
    pub async fn admin_act(
        &self,
        action: AdminAction,
        id: UserId,
        meta: &RequestMeta,
    ) -> Result<(), AdminError> {
        let user = self.existing_user(id).await?;
        let now = self.clock.now();
        let ended = match action {
            AdminAction::Lock => {
                self.store.set_locked(id, true, now).await?;
                self.store.delete_user_sessions(id, None).await?
            }
            AdminAction::Unlock => {
                self.store.set_locked(id, false, now).await?;
                0
            }
            AdminAction::RevokeUserSessions => self.store.delete_user_sessions(id, None).await?,
            AdminAction::ResetMfa => {
                self.store.remove_mfa(id).await?;
                self.store.remove_passkeys(id).await?;
                self.clear_factor(super::throttle::Factor::SecondFactor, user.email.key())
                    .await?;
                let n = self.store.delete_user_sessions(id, None).await?;
                self.mailer
                    .notify(&user.email, Notice::TotpRemoved { by_admin: true })
                    .await;
                n
            }
            AdminAction::RevokeAllSessions => 0,
        };
        self.admin_event(action, Some(id), meta, json!({"sessions_ended": ended}))
            .await?;
        Ok(())
    }

    /// Ends every session of every user (incident response).
    pub async fn admin_revoke_all(&self, meta: &RequestMeta) -> Result<u64, AdminError> {
        let n = self.store.delete_all_sessions().await?;
        self.admin_event(
            AdminAction::RevokeAllSessions,
            None,
            meta,
            json!({"sessions_ended": n}),
        )
        .await?;
        Ok(n)
    }
}
