//! The limit role on both backends: attempt reservations (also many at
//! once), the second-factor count of a pending session, the session cap
//! after a rotation, the owner of a reset token, and counters nobody owns.

use std::time::Duration;

use castellan::domain::TokenHash;
use castellan::store::TokenPurpose;
use castellan::store::limits::{AttemptCounter, Reserved};
use uuid::Uuid;

use super::{key_of, now, open, session, session_ids, user};
use crate::helpers::Backend;
use crate::on_both_backends;

on_both_backends!(
    a_reservation_counts_backs_off_and_stops,
    concurrent_reservations_never_pass_the_stop,
    a_pending_session_is_charged_up_to_its_maximum_also_at_once,
    the_session_cap_ends_the_oldest_full_sessions_only,
    a_reset_token_names_its_owner_until_spent_or_expired,
    only_idle_counters_of_unknown_emails_are_purged,
);

const SEC: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

fn counter(key: &str, backoff_after: Option<u64>, stop_at: Option<u64>) -> AttemptCounter {
    AttemptCounter {
        key: key.into(),
        window: HOUR,
        backoff_after,
        stop_at,
    }
}

fn granted(counts: &[u64], blocks: &[Duration]) -> Reserved {
    Reserved::Granted {
        counts: counts.to_vec(),
        blocks: blocks.to_vec(),
    }
}

async fn a_reservation_counts_backs_off_and_stops(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let a = [counter("limit:a", Some(2), Some(4))];
    let reserve = |c: &[AttemptCounter], at| {
        let s = s.clone();
        let c = c.to_vec();
        async move { s.reserve_attempt(&c, BACKOFF_MAX, at).await.unwrap() }
    };
    assert_eq!(reserve(&a, t).await, granted(&[1], &[Duration::ZERO]));
    // The threshold attempt starts a 1 s back-off...
    assert_eq!(reserve(&a, t).await, granted(&[2], &[SEC]));
    // ...which refuses the next attempt without counting it, also one
    // that shares the key with another counter (nothing is charged there).
    assert_eq!(reserve(&a, t).await, Reserved::Blocked(t + SEC));
    let both = [counter("limit:b", None, None), a[0].clone()];
    assert_eq!(reserve(&both, t).await, Reserved::Blocked(t + SEC));
    assert_eq!(s.throttle_count("limit:b").await.unwrap(), 0);
    assert_eq!(s.throttle_count("limit:a").await.unwrap(), 2);
    // After the back-off each attempt doubles it, up to the stop.
    assert_eq!(reserve(&a, t + 2 * SEC).await, granted(&[3], &[2 * SEC]));
    assert_eq!(reserve(&a, t + 10 * SEC).await, granted(&[4], &[4 * SEC]));
    assert_eq!(reserve(&a, t + 100 * SEC).await, Reserved::Stopped);
    assert_eq!(reserve(&both, t + 100 * SEC).await, Reserved::Stopped);
    assert_eq!(s.throttle_count("limit:a").await.unwrap(), 4);
    assert_eq!(s.throttle_count("limit:b").await.unwrap(), 0);
    // A counter without a stop restarts once its window has ended.
    let b_only = [counter("limit:b", None, None)];
    assert_eq!(reserve(&b_only, t).await, granted(&[1], &[Duration::ZERO]));
    assert_eq!(reserve(&b_only, t).await, granted(&[2], &[Duration::ZERO]));
    assert_eq!(
        reserve(&b_only, t + 2 * HOUR).await,
        granted(&[1], &[Duration::ZERO])
    );
}

// covers: ASVS-6.3.1
async fn concurrent_reservations_never_pass_the_stop(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let c = vec![counter("limit:race", None, Some(5))];
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move { s.reserve_attempt(&c, BACKOFF_MAX, t).await })
        })
        .collect();
    let mut counts = Vec::new();
    let mut stopped = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Reserved::Granted { counts: c, .. } => counts.push(c[0]),
            Reserved::Stopped => stopped += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 3, 4, 5], "each count granted once");
    assert_eq!(stopped, 15);
    assert_eq!(s.throttle_count("limit:race").await.unwrap(), 5);
}

// covers: ASVS-6.3.1
async fn a_pending_session_is_charged_up_to_its_maximum_also_at_once(b: Backend) {
    let (s, _env) = open(b).await;
    let u = user(&*s, "charged@example.com").await;
    let (pending, full) = (session(u, now(), true), session(u, now(), false));
    s.create_session(&pending, 10).await.unwrap();
    s.create_session(&full, 10).await.unwrap();
    assert_eq!(s.reserve_mfa_attempt(pending.id, 5).await.unwrap(), Some(1));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.reserve_mfa_attempt(pending.id, 5).await })
        })
        .collect();
    let mut charged = Vec::new();
    for task in tasks {
        charged.extend(task.await.unwrap().unwrap());
    }
    charged.sort_unstable();
    assert_eq!(charged, [2, 3, 4, 5], "each count granted once");
    assert_eq!(s.reserve_mfa_attempt(pending.id, 5).await.unwrap(), None);
    assert_eq!(
        s.reserve_mfa_attempt(full.id, 5).await.unwrap(),
        None,
        "only a pending session is charged"
    );
    assert_eq!(
        s.reserve_mfa_attempt(Uuid::new_v4(), 5).await.unwrap(),
        None
    );
}

// covers: ASVS-7.1.2
async fn the_session_cap_ends_the_oldest_full_sessions_only(b: Backend) {
    let (s, _env) = open(b).await;
    let u = user(&*s, "capped@example.com").await;
    let other = user(&*s, "uncapped@example.com").await;
    let t0 = now();
    let full: Vec<_> = (0..3).map(|i| session(u, t0 + i * SEC, false)).collect();
    let pending = session(u, t0 + 10 * SEC, true);
    let others = session(other, t0, false);
    for n in full.iter().chain([&pending, &others]) {
        s.create_session(n, 10).await.unwrap();
    }
    assert_eq!(s.enforce_session_cap(u, 2).await.unwrap(), [full[0].id]);
    assert!(s.enforce_session_cap(u, 2).await.unwrap().is_empty());
    let mut ended = s.enforce_session_cap(u, 0).await.unwrap();
    ended.sort_unstable();
    let mut expected = [full[1].id, full[2].id];
    expected.sort_unstable();
    assert_eq!(ended, expected);
    let left = session_ids(&*s, u).await;
    assert_eq!(left, [pending.id], "a pending session never counts");
    assert_eq!(s.list_sessions(other).await.unwrap().len(), 1);
}

async fn a_reset_token_names_its_owner_until_spent_or_expired(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "Owner@Example.com").await;
    let (reset, verify) = (TokenHash([3; 32]), TokenHash([4; 32]));
    s.issue_token(&reset, u, TokenPurpose::PasswordReset, t, t + HOUR)
        .await
        .unwrap();
    s.issue_token(&verify, u, TokenPurpose::EmailVerification, t, t + HOUR)
        .await
        .unwrap();
    let owner = |hash, at| {
        let s = s.clone();
        async move {
            s.reset_token_owner(&hash, at)
                .await
                .unwrap()
                .map(|e| e.as_str().to_string())
        }
    };
    // Looking the owner up does not spend the token.
    for _ in 0..2 {
        assert_eq!(owner(reset, t).await.as_deref(), Some("Owner@Example.com"));
    }
    assert_eq!(owner(verify, t).await, None, "a verification token");
    assert_eq!(owner(TokenHash([5; 32]), t).await, None, "an unknown token");
    assert_eq!(owner(reset, t + HOUR).await, None, "expired");
    assert_eq!(
        s.reset_password(&reset, "phc-new", t).await.unwrap(),
        Some(u)
    );
    assert_eq!(owner(reset, t).await, None, "spent");
}

async fn only_idle_counters_of_unknown_emails_are_purged(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    user(&*s, "known@example.com").await;
    let known = key_of("known@example.com");
    let long_ago = t - 2 * HOUR;
    // key, window start, blocked until, kept
    let rows = [
        (format!("t:consec:{known}"), long_ago, None, true),
        (
            "t:consec:ghost@example.com".to_string(),
            long_ago,
            None,
            false,
        ),
        ("t:consec:recent@example.com".to_string(), t, None, true),
        (
            "t:consec:blocked@example.com".to_string(),
            long_ago,
            Some(t + HOUR),
            true,
        ),
        (format!("t:pair:{known}:192.0.2.1"), long_ago, None, true),
        (
            "t:pair:ghost@example.com:192.0.2.1".to_string(),
            long_ago,
            None,
            false,
        ),
        (
            "t:other:ghost@example.com".to_string(),
            long_ago,
            None,
            true,
        ),
    ];
    for (key, start, until, _) in &rows {
        s.throttle_hit(key, *start, 3 * HOUR).await.unwrap();
        if let Some(until) = until {
            s.throttle_block(key, *until, *start).await.unwrap();
        }
    }
    let prefixes = ["t:consec:".to_string(), "t:pair:".to_string()];
    assert_eq!(
        s.purge_unowned_throttles(&prefixes, t - HOUR)
            .await
            .unwrap(),
        2
    );
    for (key, _, _, kept) in &rows {
        assert_eq!(
            s.throttle_count(key).await.unwrap(),
            u64::from(*kept),
            "{key}"
        );
    }
}
