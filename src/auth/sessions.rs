//! Sessions: opening one, the per-request check (the hot path), and ending.

use serde_json::json;
use uuid::Uuid;

use super::{Auth, ServiceError};
use crate::audit::{self, EventKind, RequestMeta};
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
        let evicted = self.store.create_session(&new, self.config.session.max_per_user).await?;
        audit::record(
            &*self.store,
            now,
            EventKind::SessionCreated,
            Some(user),
            meta,
            json!({"session_id": new.id, "aal": aal.as_str(), "mfa_pending": mfa_pending}),
        )
        .await?;
        for id in evicted {
            audit::record(
                &*self.store,
                now,
                EventKind::SessionRevoked,
                Some(user),
                meta,
                json!({"session_id": id, "by": "session_cap"}),
            )
            .await?;
        }
        Ok((token, new.into_session()))
    }

    /// The session check: one indexed lookup by keyed token hash, expiry
    /// checked against the clock, and a write at most once per touch
    /// interval to record activity.
    pub async fn check_session(&self, token: &SessionToken) -> Result<(Session, User), CheckError> {
        let hash = self.keys.hash_token(token);
        let (mut session, user) = self.store.find_session(&hash).await?.ok_or(CheckError::Unauthenticated)?;
        let now = self.clock.now();
        let idle = self.config.session.idle_timeout;
        if !session.is_alive(now, idle) || user.locked {
            return Err(CheckError::Unauthenticated);
        }
        if session.needs_touch(now, idle) {
            let older_than = now - Session::touch_interval(idle);
            self.store.touch_session(session.id, now, older_than).await?;
            session.last_seen_at = now;
        }
        Ok((session, user))
    }

    /// Ends the caller's session at once.
    pub async fn logout(&self, session: &Session, meta: &RequestMeta) -> Result<(), ServiceError> {
        self.store.delete_session(session.id).await?;
        audit::record(
            &*self.store,
            self.clock.now(),
            EventKind::Logout,
            Some(session.user_id),
            meta,
            json!({"session_id": session.id}),
        )
        .await?;
        Ok(())
    }
}
