//! Server-side sessions and the rules for when they end.

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::UserId;

/// Authenticator assurance level the session has proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aal {
    /// Password only.
    Aal1,
    /// Password and a second factor.
    Aal2,
}

impl Aal {
    pub fn as_str(self) -> &'static str {
        match self {
            Aal::Aal1 => "aal1",
            Aal::Aal2 => "aal2",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aal1" => Some(Aal::Aal1),
            "aal2" => Some(Aal::Aal2),
            _ => None,
        }
    }
}

/// A stored session (the token itself is never stored).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: Uuid,
    pub user_id: UserId,
    pub aal: Aal,
    pub mfa_pending: bool,
    pub created_at: OffsetDateTime,
    pub authenticated_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: String,
    pub ip: String,
}

impl Session {
    /// When the session ends if it stays unused.
    pub fn idle_expires_at(&self, idle_timeout: Duration) -> OffsetDateTime {
        (self.last_seen_at + idle_timeout).min(self.expires_at)
    }

    /// Whether the session is still alive at `now`.
    pub fn is_alive(&self, now: OffsetDateTime, idle_timeout: Duration) -> bool {
        now < self.idle_expires_at(idle_timeout)
    }

    /// How often `last_seen_at` is written: at most once a minute, and often
    /// enough that short idle timeouts stay accurate to a quarter of
    /// themselves. Writing on every request would make every check a write.
    pub fn touch_interval(idle_timeout: Duration) -> Duration {
        (idle_timeout / 4).min(Duration::from_secs(60))
    }

    /// Whether a request at `now` should record activity.
    pub fn needs_touch(&self, now: OffsetDateTime, idle_timeout: Duration) -> bool {
        now - self.last_seen_at >= Self::touch_interval(idle_timeout)
    }

    /// Whether the re-authentication window is open at `now`.
    pub fn in_reauth_window(&self, now: OffsetDateTime, window: Duration) -> bool {
        now - self.authenticated_at < window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: OffsetDateTime) -> Session {
        Session {
            id: Uuid::new_v4(),
            user_id: UserId(Uuid::new_v4()),
            aal: Aal::Aal1,
            mfa_pending: false,
            created_at: now,
            authenticated_at: now,
            last_seen_at: now,
            expires_at: now + Duration::from_secs(3600),
            user_agent: String::new(),
            ip: String::new(),
        }
    }

    // covers: ASVS-7.3.1, ASVS-7.3.2
    #[test]
    fn idle_and_absolute_expiry() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let idle = Duration::from_secs(1800);
        let s = session(now);
        assert!(s.is_alive(now + Duration::from_secs(1799), idle));
        assert!(!s.is_alive(now + Duration::from_secs(1800), idle));
        let mut active = s.clone();
        active.last_seen_at = now + Duration::from_secs(3500);
        // Activity never extends past the absolute lifetime.
        assert_eq!(active.idle_expires_at(idle), active.expires_at);
        assert!(!active.is_alive(now + Duration::from_secs(3600), idle));
    }

    #[test]
    fn touch_interval_is_bounded() {
        assert_eq!(
            Session::touch_interval(Duration::from_secs(1800)),
            Duration::from_secs(60)
        );
        assert_eq!(
            Session::touch_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }
}
