//! Wrong admin tokens per client address, kept in this process.
//!
//! The admin listener belongs to one node, and checking its token must not
//! need the database: `/metrics` has to answer while the pool is exhausted
//! or the database is down, and a scrape must not hold pooled connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

/// Addresses tracked at most; beyond it, addresses that block nothing are
/// forgotten first, so no client can grow the map without bound.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Default)]
struct Streak {
    failures: u64,
    blocked_until: Option<OffsetDateTime>,
}

/// The outcome of one wrong token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Wrong tokens in a row from this address, this one included.
    pub failures: u64,
    /// The back-off this failure started (zero: none).
    pub block: Duration,
}

/// Per-address streaks of wrong admin tokens with exponential back-off.
#[derive(Debug, Default)]
pub struct AdminTokenGuard {
    streaks: Mutex<HashMap<String, Streak>>,
}

impl AdminTokenGuard {
    /// `Some(wait)` while `client` is backing off.
    pub fn blocked(&self, client: &str, now: OffsetDateTime) -> Option<Duration> {
        let streaks = self.streaks.lock().unwrap_or_else(|p| p.into_inner());
        streaks
            .get(client)
            .and_then(|s| s.blocked_until)
            .filter(|until| *until > now)
            .and_then(|until| Duration::try_from(until - now).ok())
            .filter(|wait| !wait.is_zero())
    }

    /// A right token ends the streak.
    pub fn succeeded(&self, client: &str) {
        let mut streaks = self.streaks.lock().unwrap_or_else(|p| p.into_inner());
        streaks.remove(client);
    }

    /// Counts a wrong token; from the `backoff_after`-th in a row on, the
    /// address backs off for 1 s, 2 s, 4 s, ... at most `max`.
    pub fn failed(
        &self,
        client: &str,
        backoff_after: u64,
        max: Duration,
        now: OffsetDateTime,
    ) -> Failure {
        let mut streaks = self.streaks.lock().unwrap_or_else(|p| p.into_inner());
        if streaks.len() >= MAX_TRACKED && !streaks.contains_key(client) {
            streaks.retain(|_, s| s.blocked_until.is_some_and(|u| u > now));
            if streaks.len() >= MAX_TRACKED {
                streaks.clear();
            }
        }
        let streak = streaks.entry(client.to_string()).or_default();
        streak.failures += 1;
        let mut block = Duration::ZERO;
        if streak.failures >= backoff_after {
            let doublings = u32::try_from(streak.failures - backoff_after).unwrap_or(u32::MAX);
            block = Duration::from_secs(1u64.checked_shl(doublings.min(63)).unwrap_or(u64::MAX))
                .min(max);
            streak.blocked_until = Some(now + block);
        }
        Failure {
            failures: streak.failures,
            block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_tokens_back_off_exponentially_and_a_right_one_resets() {
        let guard = AdminTokenGuard::default();
        let now = OffsetDateTime::now_utc();
        let max = Duration::from_secs(60);
        for i in 1..5 {
            assert_eq!(guard.failed("a", 5, max, now).block, Duration::ZERO, "{i}");
        }
        assert_eq!(guard.failed("a", 5, max, now).block, Duration::from_secs(1));
        assert!(guard.blocked("a", now).is_some());
        assert!(guard.blocked("b", now).is_none());
        assert_eq!(guard.failed("a", 5, max, now).block, Duration::from_secs(2));
        for _ in 0..20 {
            guard.failed("a", 5, max, now);
        }
        assert_eq!(guard.blocked("a", now), Some(max));
        guard.succeeded("a");
        assert!(guard.blocked("a", now).is_none());
    }

    #[test]
    fn the_map_stays_bounded() {
        let guard = AdminTokenGuard::default();
        let now = OffsetDateTime::now_utc();
        for i in 0..(MAX_TRACKED * 3) {
            guard.failed(
                &format!("10.0.{}.{}", i / 256, i % 256),
                5,
                Duration::from_secs(1),
                now,
            );
        }
        assert!(guard.streaks.lock().unwrap().len() <= MAX_TRACKED);
    }
}
