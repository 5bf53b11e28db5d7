//! Storage for limits that must hold under concurrency and across nodes.
//!
//! Attempt reservations: the check and the count of a guessing limit are one
//! atomic step, taken before the secret is verified, so concurrent attempts
//! (also on other nodes) cannot all pass a check that none has counted yet.
//!
//! The rule itself ([`decide`]) is plain Rust shared by both backends; each
//! backend runs it inside one transaction that holds the rows it reads.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;
use crate::domain::TokenHash;
use crate::domain::{Email, UserId};

/// One counter an attempt is charged to.
#[derive(Debug, Clone)]
pub struct AttemptCounter {
    pub key: String,
    /// Fixed window: a count whose window started this long ago restarts.
    pub window: Duration,
    /// From this count on, each charged attempt blocks the key for
    /// 1 s, 2 s, 4 s, ... (at most the reservation's `backoff_max`).
    pub backoff_after: Option<u64>,
    /// While the count is at least this, attempts are refused for good.
    pub stop_at: Option<u64>,
}

/// A stored counter row as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterRow {
    pub count: u64,
    pub window_start: OffsetDateTime,
    pub blocked_until: Option<OffsetDateTime>,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// Charged: the counts after this attempt, in the order asked, and the
    /// back-off each charge started (zero when none).
    Granted {
        counts: Vec<u64>,
        blocks: Vec<Duration>,
    },
    /// A key is blocked until then; nothing was charged.
    Blocked(OffsetDateTime),
    /// A counter is at its stop; nothing was charged.
    Stopped,
}

/// 1 s, 2 s, 4 s, ... for the `over`-th count past the threshold, capped.
pub fn backoff(over: u64, max: Duration) -> Duration {
    let secs = 1u64
        .checked_shl(u32::try_from(over).unwrap_or(63))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(max)
}

/// Decides a reservation from the current rows (`None`: absent) and
/// returns the answer and the rows to write (only when granted).
pub fn decide(
    counters: &[AttemptCounter],
    rows: &[Option<CounterRow>],
    backoff_max: Duration,
    now: OffsetDateTime,
) -> (Reserved, Vec<CounterRow>) {
    let mut blocked: Option<OffsetDateTime> = None;
    for (c, row) in counters.iter().zip(rows) {
        let Some(row) = row else { continue };
        if let Some(until) = row.blocked_until.filter(|u| *u > now) {
            blocked = Some(blocked.map_or(until, |b| b.max(until)));
        }
        if c.stop_at.is_some_and(|stop| row.count >= stop) {
            return (Reserved::Stopped, Vec::new());
        }
    }
    if let Some(until) = blocked {
        return (Reserved::Blocked(until), Vec::new());
    }
    let mut counts = Vec::with_capacity(counters.len());
    let mut blocks = Vec::with_capacity(counters.len());
    let mut writes = Vec::with_capacity(counters.len());
    for (c, row) in counters.iter().zip(rows) {
        let fresh = row.is_none_or(|r| r.window_start <= now - c.window);
        let (count, window_start) = match row {
            Some(r) if !fresh => (r.count.saturating_add(1), r.window_start),
            _ => (1, now),
        };
        let block = match c.backoff_after {
            Some(after) if count >= after => backoff(count - after, backoff_max),
            _ => Duration::ZERO,
        };
        let old_block = row.and_then(|r| r.blocked_until);
        let blocked_until = if block.is_zero() {
            old_block
        } else {
            Some(old_block.map_or(now + block, |b| b.max(now + block)))
        };
        counts.push(count);
        blocks.push(block);
        writes.push(CounterRow {
            count,
            window_start,
            blocked_until,
        });
    }
    (Reserved::Granted { counts, blocks }, writes)
}

/// Storage for reservations, the session cap after a rotation, and the
/// cleanup of counters nobody owns.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Charges one attempt to every counter, unless one of them blocks or
    /// stops it; atomic across connections and processes.
    async fn reserve_attempt(
        &self,
        counters: &[AttemptCounter],
        backoff_max: Duration,
        now: OffsetDateTime,
    ) -> Result<Reserved, StoreError>;

    /// Charges one second-factor attempt to a pending session unless it
    /// already has `max`; returns the new count, or `None` when the session
    /// is gone, not pending, or at `max`.
    async fn reserve_mfa_attempt(&self, session: Uuid, max: u32)
    -> Result<Option<u32>, StoreError>;

    /// Ends the user's oldest full sessions beyond `max` (after a pending
    /// session became a full one); serialised with logins of the same user
    /// like `create_session`. Returns the ended sessions.
    async fn enforce_session_cap(&self, user: UserId, max: usize) -> Result<Vec<Uuid>, StoreError>;

    /// The email of the account an unused, unexpired reset token belongs
    /// to, without spending it (the new password is checked against it
    /// first).
    async fn reset_token_owner(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<Email>, StoreError>;

    /// Deletes back-off streaks and hard-stop counters (keys under the
    /// given prefixes, e.g. `pw:consec:`) whose email is no account's, that
    /// started before `idle_since` and block nothing since then.
    async fn purge_unowned_throttles(
        &self,
        prefixes: &[String],
        idle_since: OffsetDateTime,
    ) -> Result<u64, StoreError>;
}

/// The keys in a fixed order: backends lock rows in this order, so two
/// reservations that share keys cannot deadlock.
pub fn sorted_unique(counters: &[AttemptCounter]) -> Vec<String> {
    let mut keys: Vec<String> = counters.iter().map(|c| c.key.clone()).collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(after: Option<u64>, stop: Option<u64>) -> AttemptCounter {
        AttemptCounter {
            key: "k".into(),
            window: Duration::from_secs(3600),
            backoff_after: after,
            stop_at: stop,
        }
    }

    #[test]
    fn the_threshold_attempt_blocks_the_next_one() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = Duration::from_secs(900);
        let counters = [c(Some(3), None)];
        let mut row = None;
        let mut granted = 0;
        for _ in 0..10 {
            match decide(&counters, &[row], max, now) {
                (Reserved::Granted { counts, .. }, w) => {
                    granted += 1;
                    assert_eq!(counts[0], granted);
                    row = Some(w[0]);
                }
                (Reserved::Blocked(until), w) => {
                    assert!(w.is_empty());
                    assert_eq!(until, now + Duration::from_secs(1));
                }
                (Reserved::Stopped, _) => panic!("no stop configured"),
            }
        }
        assert_eq!(granted, 3);
    }

    #[test]
    fn a_stop_refuses_without_counting_and_an_ended_window_restarts() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = Duration::from_secs(900);
        let at_stop = CounterRow {
            count: 4,
            window_start: now - Duration::from_secs(7200),
            blocked_until: None,
        };
        assert_eq!(
            decide(&[c(None, Some(4))], &[Some(at_stop)], max, now).0,
            Reserved::Stopped
        );
        let (r, w) = decide(&[c(None, None)], &[Some(at_stop)], max, now);
        assert_eq!(
            r,
            Reserved::Granted {
                counts: vec![1],
                blocks: vec![Duration::ZERO]
            }
        );
        assert_eq!(w[0].window_start, now);
    }
}
