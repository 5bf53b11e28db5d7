//! Operator actions: lock and unlock accounts, end sessions, clear a lost
//! second factor. Every action is a security event (`admin_action`).

use serde_json::json;

use super::throttle::Throttled;
use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Email, User, UserId};
use crate::mail::Notice;
use crate::store::{Event, EventFilter, StoreError};

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

service_failures!(AdminError: StoreError);

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

    /// The user with this email address, as an administrator sees it (the
    /// password hash is never loaded).
    pub async fn admin_find_user(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.store.find_user(email.key()).await
    }

    /// One user, as an administrator sees it.
    pub async fn admin_get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.store.get_user(id).await
    }

    /// Audit events, newest first, filtered.
    pub async fn audit_events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        self.store.list_events(filter).await
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

    /// Checks a presented admin token. Wrong tokens are counted per client
    /// address in this process ([`admin_guard`](super::admin_guard)), never
    /// in the database, so the admin listener and `/metrics` keep working
    /// when the pool is exhausted or the database is down: from the
    /// `admin_token_backoff_after`-th wrong token in a row on, that address
    /// backs off (1 s, 2 s, ... up to `login_backoff_max`) and gets 429
    /// even with the right token. The audit log gets one `access_denied`
    /// per wrong token only up to that threshold, then one `throttled` per
    /// back-off started (with the count), not one row per request.
    pub async fn check_admin_token(
        &self,
        presented: &str,
        meta: &RequestMeta,
    ) -> Result<bool, Throttled> {
        let limits = self.config.limits;
        let client = self.limit_client_key(meta);
        let now = self.clock.now();
        if let Some(wait) = self.admin_guard.blocked(&client, now) {
            metrics::counter!(crate::metrics::RATE_LIMITED, "limit" => "admin_token").increment(1);
            return Err(Throttled::RetryAfter(wait.as_secs().max(1)));
        }
        let expected = self
            .config
            .admin_token
            .as_ref()
            .map(|t| secrecy::ExposeSecret::expose_secret(t).as_bytes())
            .unwrap_or_default();
        let ok =
            !expected.is_empty() && crate::crypto::constant_time_eq(presented.as_bytes(), expected);
        if ok {
            self.admin_guard.succeeded(&client);
            return Ok(true);
        }
        let failure = self.admin_guard.failed(
            &client,
            limits.admin_token_backoff_after,
            limits.backoff_max,
            now,
        );
        if failure.failures <= limits.admin_token_backoff_after {
            self.record_event(
                EventKind::AccessDenied,
                None,
                meta,
                json!({"reason": "admin_token", "failures": failure.failures}),
            )
            .await?;
        }
        if !failure.block.is_zero() {
            self.record_event(
                EventKind::Throttled,
                None,
                meta,
                json!({"limit": "admin_token", "failures": failure.failures, "retry_after": failure.block.as_secs()}),
            )
            .await?;
        }
        Ok(false)
    }

    async fn admin_read_event(
        &self,
        read: &str,
        user: Option<UserId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut detail = detail;
        detail["action"] = json!(read);
        detail["by"] = json!("admin");
        self.record_event(EventKind::AdminAction, user, meta, detail)
            .await
    }

    /// [`Auth::admin_find_user`] for the admin listener, audited (without
    /// the email).
    pub async fn admin_read_users(
        &self,
        email: &Email,
        meta: &RequestMeta,
    ) -> Result<Vec<User>, AdminError> {
        let found: Vec<User> = self.admin_find_user(email).await?.into_iter().collect();
        self.admin_read_event(
            "find_users",
            found.first().map(|u| u.id),
            meta,
            json!({"found": found.len()}),
        )
        .await?;
        Ok(found)
    }

    /// [`Auth::admin_get_user`] for the admin listener, audited.
    pub async fn admin_read_user(
        &self,
        id: UserId,
        meta: &RequestMeta,
    ) -> Result<User, AdminError> {
        let user = self.existing_user(id).await?;
        self.admin_read_event("read_user", Some(id), meta, json!({}))
            .await?;
        Ok(user)
    }

    /// [`Auth::audit_events`] for the admin listener, audited with the
    /// filter.
    pub async fn admin_read_events(
        &self,
        filter: &EventFilter,
        meta: &RequestMeta,
    ) -> Result<Vec<Event>, AdminError> {
        let events = self.audit_events(filter).await?;
        self.admin_read_event(
            "read_audit",
            filter.user,
            meta,
            json!({"kind": filter.kind, "limit": filter.limit, "returned": events.len()}),
        )
        .await?;
        Ok(events)
    }
}
