//! Sessions: opening one, the per-request check (the hot path), and ending.

use serde_json::json;
use uuid::Uuid;

use super::{Auth, ServiceError};
use crate::audit::{EventKind, RequestMeta};
use crate::domain::{Aal, Session, SessionToken, User, UserId};
use crate::store::{NewSession, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No such session, or it ended: the client must log in again.
    #[error("unauthenticated")]
    Unauthenticated,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Auth {
    /// Creates and stores a session with a fresh token. Full sessions count
    /// towards the per-user cap; pending ones never evict a full one.
    pub async fn open_session(
        &self,
        user: UserId,
        aal: Aal,
        mfa_pending: bool,
        meta: &RequestMeta,
    ) -> Result<(SessionToken, Session), ServiceError> {
        let token = SessionToken::generate()?;
        let now = self.clock.now();
        let lifetime = if mfa_pending {
            self.config.session.pending_lifetime
        } else {
            self.config.session.lifetime
        };
        let new = NewSession {
            id: Uuid::new_v4(),
            token_hash: self.keys.hash_token(&token),
            user_id: user,
            aal,
            mfa_pending,
            now,
            expires_at: now + lifetime,
            user_agent: meta.user_agent.clone(),
            ip: meta.ip.clone(),
        };
        let evicted = self
            .store
            .create_session(&new, self.config.session.max_per_user)
            .await?;
        self.record_event_at(
            now,
            EventKind::SessionCreated,
            Some(user),
            meta,
            json!({"session_id": new.id, "aal": aal.as_str(), "mfa_pending": mfa_pending}),
        )
        .await?;
        self.record_evictions(user, evicted, meta).await?;
        Ok((token, new.into_session()))
    }

    /// The session check: one indexed lookup by keyed token hash, expiry
    /// checked against the clock, and a write at most once per touch
    /// interval to record activity.
    pub async fn check_session(&self, token: &SessionToken) -> Result<(Session, User), CheckError> {
        let hash = self.keys.hash_token(token);
        let (mut session, user) = self
            .store
            .find_session(&hash)
            .await?
            .ok_or(CheckError::Unauthenticated)?;
        let now = self.clock.now();
        let idle = self.config.session.idle_timeout;
        if !session.is_alive(now, idle) || user.locked {
            return Err(CheckError::Unauthenticated);
        }
        if session.needs_touch(now, idle) {
            let older_than = now - Session::touch_interval(idle);
            self.store
                .touch_session(session.id, now, older_than)
                .await?;
            session.last_seen_at = now;
        }
        Ok((session, user))
    }

    /// Ends the caller's session at once.
    pub async fn logout(&self, session: &Session, meta: &RequestMeta) -> Result<(), ServiceError> {
        self.store.delete_session(session.id).await?;
        self.record_event(
            EventKind::Logout,
            Some(session.user_id),
            meta,
            json!({"session_id": session.id}),
        )
        .await?;
        Ok(())
    }
}

/// Why ending a session was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No such session among the caller's own (another user's id included).
    #[error("not found")]
    NotFound,
    /// Ending other sessions needs a recent re-authentication.
    #[error("re-authentication required")]
    ReauthenticationRequired,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

service_failures!(RevokeError: StoreError);

impl Auth {
    /// The user's live sessions, newest first.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let now = self.clock.now();
        let idle = self.config.session.idle_timeout;
        let sessions = self.store.list_sessions(user).await?;
        Ok(sessions
            .into_iter()
            .filter(|s| s.is_alive(now, idle))
            .collect())
    }

    /// Ends one of the caller's sessions. Ending another one than the
    /// current needs the re-authentication window.
    pub async fn revoke_session(
        &self,
        current: &Session,
        target: Uuid,
        meta: &RequestMeta,
    ) -> Result<(), RevokeError> {
        let now = self.clock.now();
        let owned = self
            .store
            .list_sessions(current.user_id)
            .await?
            .iter()
            .any(|s| s.id == target);
        if !owned {
            self.deny(current.user_id, meta, "session_not_owned")
                .await?;
            return Err(RevokeError::NotFound);
        }
        if target != current.id && !current.in_reauth_window(now, self.config.session.reauth_window)
        {
            self.deny(current.user_id, meta, "reauthentication_required")
                .await?;
            return Err(RevokeError::ReauthenticationRequired);
        }
        self.store.delete_session(target).await?;
        self.record_event_at(
            now,
            EventKind::SessionRevoked,
            Some(current.user_id),
            meta,
            json!({"session_id": target, "by": "user"}),
        )
        .await?;
        Ok(())
    }

    /// Ends every session of the caller except the current one.
    pub async fn revoke_other_sessions(
        &self,
        current: &Session,
        meta: &RequestMeta,
    ) -> Result<u64, RevokeError> {
        let now = self.clock.now();
        if !current.in_reauth_window(now, self.config.session.reauth_window) {
            self.deny(current.user_id, meta, "reauthentication_required")
                .await?;
            return Err(RevokeError::ReauthenticationRequired);
        }
        let count = self
            .store
            .delete_user_sessions(current.user_id, Some(current.id))
            .await?;
        self.record_event_at(
            now,
            EventKind::SessionRevoked,
            Some(current.user_id),
            meta,
            json!({"scope": "others", "count": count, "by": "user"}),
        )
        .await?;
        Ok(count)
    }

    /// Records a refused action (authorization failure).
    pub async fn deny(
        &self,
        user: UserId,
        meta: &RequestMeta,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.record_event(
            EventKind::AccessDenied,
            Some(user),
            meta,
            json!({"reason": reason}),
        )
        .await
    }

    /// One `session_revoked` event (`by: session_cap`) per session the
    /// per-user cap ended.
    async fn record_evictions(
        &self,
        user: UserId,
        evicted: Vec<Uuid>,
        meta: &RequestMeta,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        for id in evicted {
            self.record_event_at(
                now,
                EventKind::SessionRevoked,
                Some(user),
                meta,
                json!({"session_id": id, "by": "session_cap"}),
            )
            .await?;
        }
        Ok(())
    }

    /// Replaces the session with a fresh one (new id and token, both timers
    /// restarted, `authenticated_at` now). The old token stops working in
    /// the same transaction.
    pub async fn rotate_session(
        &self,
        old: &Session,
        aal: Aal,
        meta: &RequestMeta,
        reason: &str,
    ) -> Result<(SessionToken, Session), CheckError> {
        let token = SessionToken::generate()
            .map_err(|e| CheckError::Store(StoreError::Unexpected(e.into())))?;
        let now = self.clock.now();
        let new = NewSession {
            id: Uuid::new_v4(),
            token_hash: self.keys.hash_token(&token),
            user_id: old.user_id,
            aal,
            mfa_pending: false,
            now,
            expires_at: now + self.config.session.lifetime,
            user_agent: meta.user_agent.clone(),
            ip: meta.ip.clone(),
        };
        if !self.store.rotate_session(old.id, &new).await? {
            // Revoked meanwhile: the caller's credential is dead.
            return Err(CheckError::Unauthenticated);
        }
        self.record_event_at(
            now,
            EventKind::SessionRotated,
            Some(old.user_id),
            meta,
            json!({"from": old.id, "to": new.id, "aal": aal.as_str(), "reason": reason}),
        )
        .await?;
        if old.mfa_pending {
            // A pending session just became a full one: the per-user cap
            // applies as to a password-only login.
            let evicted = self
                .store
                .enforce_session_cap(old.user_id, self.config.session.max_per_user)
                .await?;
            self.record_evictions(old.user_id, evicted, meta).await?;
        }
        Ok((token, new.into_session()))
    }
}
