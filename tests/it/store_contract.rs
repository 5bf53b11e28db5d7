//! Every store method, on both backends, through the role traits (each
//! trait method is called at least once here or in `store_contract/`, not
//! only through HTTP; `every_store_trait_method_is_called_here` checks it).

use std::sync::Arc;
use std::time::Duration;

use castellan::domain::TokenHash;
use castellan::domain::{Aal, Email, UserId};
use castellan::store::{
    self, BackupCodeHash, EventFilter, NewEvent, NewSession, NewUser, Store, StoreError,
    TokenPurpose,
};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{Backend, TestEnv};
use crate::on_both_backends;

mod limits;
mod passkeys;

on_both_backends!(
    users_are_unique_by_case_folded_email,
    sessions_round_trip_touch_list_and_delete,
    the_session_cap_evicts_the_oldest_full_sessions_only,
    purge_removes_expired_and_idle_sessions_only,
    events_are_appended_and_listed_newest_first,
    purges_remove_only_ended_counters_and_expired_tokens,
    migrations_are_idempotent,
);

async fn open(b: Backend) -> (Arc<dyn Store>, TestEnv) {
    let env = TestEnv::new(b).await;
    (
        store::open(&castellan::app::store_options(&env.config()))
            .await
            .expect("store opens"),
        env,
    )
}

fn now() -> OffsetDateTime {
    // Whole milliseconds, as both backends store at least that precision.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap()
}

async fn user(s: &dyn Store, mail: &str) -> UserId {
    let id = UserId(Uuid::new_v4());
    s.create_user(&NewUser {
        id,
        email: Email::parse(mail).unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA".into(),
        now: now(),
    })
    .await
    .unwrap();
    id
}

/// The ids of the user's sessions, newest first.
async fn session_ids(s: &dyn Store, user: UserId) -> Vec<Uuid> {
    s.list_sessions(user)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id)
        .collect()
}

fn session(user: UserId, at: OffsetDateTime, pending: bool) -> NewSession {
    NewSession {
        id: Uuid::new_v4(),
        token_hash: TokenHash(castellan::crypto::random_bytes::<32>().unwrap()),
        user_id: user,
        aal: Aal::Aal1,
        mfa_pending: pending,
        now: at,
        expires_at: at + Duration::from_secs(3600),
        user_agent: "ua".into(),
        ip: "127.0.0.1".into(),
    }
}

async fn users_are_unique_by_case_folded_email(b: Backend) {
    let (s, _env) = open(b).await;
    let id = user(&*s, "Carol@Example.com").await;
    let dup = s
        .create_user(&NewUser {
            id: UserId(Uuid::new_v4()),
            email: Email::parse("carol@EXAMPLE.com").unwrap(),
            password_hash: "x".into(),
            now: now(),
        })
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict)));
    let found = s
        .find_credentials("carol@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user.id, id);
    assert_eq!(found.user.email.as_str(), "Carol@Example.com");
    assert!(
        s.find_credentials("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );
    s.set_password_hash(id, "new-hash").await.unwrap();
    assert_eq!(
        s.find_credentials("carol@example.com")
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        "new-hash"
    );
    let at = now();
    s.record_login(id, at).await.unwrap();
    let u = s.get_user(id).await.unwrap().unwrap();
    assert_eq!(u.last_login_at, Some(at));
    assert!(!u.locked && !u.mfa_enabled && !u.email_verified);
    assert!(s.get_user(UserId(Uuid::new_v4())).await.unwrap().is_none());
}

async fn sessions_round_trip_touch_list_and_delete(b: Backend) {
    let (s, _env) = open(b).await;
    let u = user(&*s, "dave@example.com").await;
    let other = user(&*s, "erin@example.com").await;
    let t0 = now();
    let a = session(u, t0, false);
    let b2 = session(u, t0 + Duration::from_secs(1), false);
    let c = session(other, t0, false);
    for n in [&a, &b2, &c] {
        assert!(s.create_session(n, 20).await.unwrap().is_empty());
    }
    let (found, found_user) = s.find_session(&a.token_hash).await.unwrap().unwrap();
    assert_eq!(found.id, a.id);
    assert_eq!(found.created_at, t0);
    assert_eq!(found_user.id, u);
    assert!(s.find_session(&TokenHash([7; 32])).await.unwrap().is_none());
    // touch only writes when the stored value is older than the threshold
    let t1 = t0 + Duration::from_secs(30);
    s.touch_session(a.id, t1, t0).await.unwrap();
    assert_eq!(
        s.find_session(&a.token_hash)
            .await
            .unwrap()
            .unwrap()
            .0
            .last_seen_at,
        t0,
        "not older than t0"
    );
    s.touch_session(a.id, t1, t1).await.unwrap();
    assert_eq!(
        s.find_session(&a.token_hash)
            .await
            .unwrap()
            .unwrap()
            .0
            .last_seen_at,
        t1
    );
    let listed = s.list_sessions(u).await.unwrap();
    assert_eq!(
        listed.iter().map(|x| x.id).collect::<Vec<_>>(),
        [b2.id, a.id],
        "newest first"
    );
    assert!(s.delete_session(a.id).await.unwrap());
    assert!(!s.delete_session(a.id).await.unwrap());
    let keep = session(u, t0, false);
    s.create_session(&keep, 20).await.unwrap();
    assert_eq!(s.delete_user_sessions(u, Some(keep.id)).await.unwrap(), 1);
    assert_eq!(s.list_sessions(u).await.unwrap().len(), 1);
    assert_eq!(
        s.list_sessions(other).await.unwrap().len(),
        1,
        "other users untouched"
    );
    assert_eq!(s.delete_user_sessions(u, None).await.unwrap(), 1);
    // Rotation replaces a session atomically, and only a live one.
    let rotated = session(other, t0, false);
    assert!(s.rotate_session(c.id, &rotated).await.unwrap());
    assert!(s.find_session(&c.token_hash).await.unwrap().is_none());
    assert!(s.find_session(&rotated.token_hash).await.unwrap().is_some());
    let never = session(other, t0, false);
    assert!(
        !s.rotate_session(c.id, &never).await.unwrap(),
        "the old one is gone"
    );
    assert!(
        s.find_session(&never.token_hash).await.unwrap().is_none(),
        "nothing written"
    );
    assert_eq!(s.delete_all_sessions().await.unwrap(), 1);
    assert!(s.find_session(&rotated.token_hash).await.unwrap().is_none());
}

// covers: ASVS-7.1.2
async fn the_session_cap_evicts_the_oldest_full_sessions_only(b: Backend) {
    let (s, _env) = open(b).await;
    let u = user(&*s, "frank@example.com").await;
    let t0 = now();
    let mut full = Vec::new();
    for i in 0..3 {
        let n = session(u, t0 + Duration::from_secs(i), false);
        assert!(s.create_session(&n, 3).await.unwrap().is_empty());
        full.push(n.id);
    }
    // A pending session never evicts and never counts.
    let pending = session(u, t0 + Duration::from_secs(10), true);
    assert!(s.create_session(&pending, 3).await.unwrap().is_empty());
    let newest = session(u, t0 + Duration::from_secs(20), false);
    assert_eq!(s.create_session(&newest, 3).await.unwrap(), [full[0]]);
    let ids = session_ids(&*s, u).await;
    assert_eq!(ids.len(), 4);
    assert!(ids.contains(&pending.id) && !ids.contains(&full[0]));
}

async fn purge_removes_expired_and_idle_sessions_only(b: Backend) {
    let (s, _env) = open(b).await;
    let u = user(&*s, "gina@example.com").await;
    let t0 = now();
    let mut expired = session(u, t0 - Duration::from_secs(7200), false);
    expired.expires_at = t0 - Duration::from_secs(1);
    let idle = session(u, t0 - Duration::from_secs(600), false);
    let fresh = session(u, t0, false);
    for n in [&expired, &idle, &fresh] {
        s.create_session(n, 20).await.unwrap();
    }
    let idle_cutoff = t0 - Duration::from_secs(300);
    let first = s.purge_expired_sessions(t0, idle_cutoff, 1).await.unwrap();
    assert_eq!(first.len(), 1, "batch size holds");
    let second = s
        .purge_expired_sessions(t0, idle_cutoff, 100)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    let mut purged = vec![first[0].0, second[0].0];
    purged.sort();
    let mut expected = vec![expired.id, idle.id];
    expected.sort();
    assert_eq!(purged, expected);
    assert!(first.iter().chain(&second).all(|(_, owner)| *owner == u));
    assert!(
        s.purge_expired_sessions(t0, idle_cutoff, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let left = session_ids(&*s, u).await;
    assert_eq!(left, [fresh.id]);
}

async fn events_are_appended_and_listed_newest_first(b: Backend) {
    let (s, _env) = open(b).await;
    let u = UserId(Uuid::new_v4());
    for (i, kind) in ["login_failed", "login_succeeded", "logout"]
        .into_iter()
        .enumerate()
    {
        s.append_event(&NewEvent {
            id: Uuid::new_v4(),
            at: now(),
            kind,
            user_id: if i == 0 { None } else { Some(u) },
            ip: "10.0.0.1".into(),
            user_agent: "ua".into(),
            request_id: format!("req-{i}"),
            detail: json!({"n": i}),
        })
        .await
        .unwrap();
    }
    let all = s.list_events(&EventFilter::newest(10)).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["logout", "login_succeeded", "login_failed"]
    );
    assert_eq!(all[0].detail, json!({"n": 2}));
    assert_eq!(all[0].request_id, "req-2");
    let mine = s
        .list_events(&EventFilter {
            user: Some(u),
            ..EventFilter::newest(1)
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].kind, "logout");
    let failed = s
        .list_events(&EventFilter {
            kind: Some("login_failed".into()),
            ..EventFilter::newest(10)
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    let older = s
        .list_events(&EventFilter {
            before_seq: Some(all[0].seq),
            ..EventFilter::newest(10)
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 2);
    // The chain: consecutive sequence numbers, each linked to the one before.
    let chain = s.chain_events(0, 10).await.unwrap();
    assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(chain[0].prev_hash.as_deref(), Some(&[0u8; 32][..]));
    assert_eq!(chain[1].prev_hash, chain[0].hash);
    assert_eq!(chain[2].prev_hash, chain[1].hash);
    let head = s.chain_head().await.unwrap();
    assert_eq!(head.last_seq, 3);
    assert_eq!(Some(&head.last_hash[..]), chain[2].hash.as_deref());
    assert_eq!(s.chain_events(2, 10).await.unwrap().len(), 1);
}

async fn purges_remove_only_ended_counters_and_expired_tokens(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let hour = Duration::from_secs(3600);
    let ago = |d: Duration| t - d;
    // Ended window; live window; ended window but blocking; another prefix.
    s.throttle_hit("ip:login:192.0.2.1", ago(2 * hour), hour)
        .await
        .unwrap();
    s.throttle_hit("ip:login:192.0.2.2", t, hour).await.unwrap();
    s.throttle_hit("ip:login:192.0.2.3", ago(2 * hour), hour)
        .await
        .unwrap();
    s.throttle_block("ip:login:192.0.2.3", t + hour, ago(2 * hour))
        .await
        .unwrap();
    s.throttle_hit("pw:consec:a@example.com", ago(2 * hour), hour)
        .await
        .unwrap();
    assert_eq!(
        s.purge_throttles("ip:login:", ago(hour), t).await.unwrap(),
        1
    );
    for (key, left) in [
        ("ip:login:192.0.2.1", 0),
        ("ip:login:192.0.2.2", 1),
        ("ip:login:192.0.2.3", 1),
        ("pw:consec:a@example.com", 1),
    ] {
        assert_eq!(s.throttle_count(key).await.unwrap(), left, "{key}");
    }
    // Tokens: only the expired one goes, used or not.
    let u = user(&*s, "tokens@example.com").await;
    let expired = TokenHash(castellan::crypto::random_bytes::<32>().unwrap());
    let live = TokenHash(castellan::crypto::random_bytes::<32>().unwrap());
    s.issue_token(
        &expired,
        u,
        TokenPurpose::PasswordReset,
        ago(2 * hour),
        ago(hour),
    )
    .await
    .unwrap();
    s.issue_token(&live, u, TokenPurpose::EmailVerification, t, t + hour)
        .await
        .unwrap();
    assert_eq!(s.purge_account_tokens(t).await.unwrap(), 1);
    assert_eq!(s.purge_account_tokens(t).await.unwrap(), 0);
    assert_eq!(
        s.claim_token(&live, TokenPurpose::EmailVerification, t)
            .await
            .unwrap(),
        Some(u)
    );
}

/// Events appended at once are grouped into shared transactions on
/// PostgreSQL; one that the database refuses (a NUL character, which JSONB
/// cannot hold) fails alone, and the chain stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_fails_alone_among_concurrent_appends() {
    let (s, env) = open(Backend::Postgres).await;
    let appends = (0..20).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            let detail = if i == 7 {
                json!({"note": "nul \u{0} here"})
            } else {
                json!({"n": i})
            };
            s.append_event(&NewEvent {
                id: Uuid::new_v4(),
                at: now(),
                kind: "login_failed",
                user_id: None,
                ip: "10.0.0.1".into(),
                user_agent: "ua".into(),
                request_id: format!("req-{i}"),
                detail,
            })
            .await
        })
    });
    let outcomes: Vec<bool> = outcomes_of(appends).await;
    assert_eq!(
        outcomes.iter().filter(|ok| !**ok).count(),
        1,
        "{outcomes:?}"
    );
    assert!(!outcomes[7]);
    assert_eq!(s.chain_events(0, 100).await.unwrap().len(), 19);
    let report = castellan::audit::chain::verify(&*s, castellan::app::audit_sealer(&env.config()))
        .await
        .unwrap();
    assert_eq!(report.unwrap().events, 19);
}

async fn outcomes_of(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<Result<(), StoreError>>>,
) -> Vec<bool> {
    let mut out = Vec::new();
    for t in tasks.collect::<Vec<_>>() {
        out.push(t.await.unwrap().is_ok());
    }
    out
}

async fn migrations_are_idempotent(b: Backend) {
    let env = TestEnv::new(b).await;
    let options = castellan::app::store_options(&env.config());
    // Two opens at the same moment, then a third: each applies or skips cleanly.
    let (a, c) = tokio::join!(store::open(&options), store::open(&options));
    a.unwrap();
    c.unwrap();
    store::migrate(&options).await.unwrap();
}

#[test]
fn both_backends_have_the_same_migration_files() {
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let sqlite = names("migrations/sqlite");
    assert_eq!(sqlite, names("migrations/postgres"));
    let embedded: Vec<String> = castellan::store::sqlite::MIGRATIONS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(sqlite, embedded, "every SQLite migration file is embedded");
}

// The role methods the tests above do not reach (before, only the HTTP
// tests called them): one test per role, each on both backends.

on_both_backends!(
    users_are_found_without_the_hash_locked_and_verified,
    totp_is_enrolled_activated_replay_guarded_and_removed,
    backup_codes_are_spent_once_and_replaced_together,
    mfa_failures_count_per_session,
    password_change_and_reset_end_sessions_and_tokens,
    blocks_keep_the_latest_and_clear_forgets_keys,
    prune_moves_the_checkpoint_and_records_itself,
    ping_answers_and_names_the_backend,
);

fn key_of(mail: &str) -> String {
    Email::parse(mail).unwrap().key().to_string()
}

async fn users_are_found_without_the_hash_locked_and_verified(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "Dora@Example.com").await;
    let found = s.find_user(&key_of("dora@example.com")).await.unwrap();
    assert_eq!(found.map(|f| f.id), Some(u));
    assert!(
        s.find_user(&key_of("nobody@example.com"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.set_locked(u, true, t).await.unwrap());
    assert!(s.get_user(u).await.unwrap().unwrap().locked);
    assert!(s.set_locked(u, false, t).await.unwrap());
    assert!(!s.get_user(u).await.unwrap().unwrap().locked);
    assert!(!s.set_locked(UserId(Uuid::new_v4()), true, t).await.unwrap());
    assert!(!s.get_user(u).await.unwrap().unwrap().email_verified);
    s.mark_email_verified(u).await.unwrap();
    assert!(s.get_user(u).await.unwrap().unwrap().email_verified);
}

fn codes(n: u8) -> Vec<BackupCodeHash> {
    (0..n)
        .map(|slot| BackupCodeHash {
            slot,
            code_hash: format!("hash-{slot}"),
        })
        .collect()
}

async fn totp_is_enrolled_activated_replay_guarded_and_removed(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "totp@example.com").await;
    let sess = session(u, t, false);
    s.create_session(&sess, 10).await.unwrap();
    s.put_pending_totp(u, b"sealed-1", t).await.unwrap();
    s.put_pending_totp(u, b"sealed-2", t).await.unwrap();
    let pending = s.get_totp(u).await.unwrap().unwrap();
    assert_eq!(pending.sealed_secret, b"sealed-2");
    assert!(!pending.enabled);
    assert_eq!(pending.last_used_step, None);
    // A pending credential accepts no code.
    assert!(!s.claim_totp_step(u, 5).await.unwrap());
    assert!(
        s.activate_totp(u, 100, &codes(10), sess.id, t)
            .await
            .unwrap()
    );
    assert!(
        !s.activate_totp(u, 101, &codes(10), sess.id, t)
            .await
            .unwrap()
    );
    assert!(s.get_user(u).await.unwrap().unwrap().mfa_enabled);
    let (raised, _) = s.find_session(&sess.token_hash).await.unwrap().unwrap();
    assert_eq!(raised.aal, Aal::Aal2);
    assert_eq!(s.backup_code_counts(u).await.unwrap(), (10, 10));
    assert!(matches!(
        s.put_pending_totp(u, b"sealed-3", t).await,
        Err(StoreError::Conflict)
    ));
    // Only a later step than the last accepted one passes, once.
    assert!(!s.claim_totp_step(u, 100).await.unwrap());
    assert!(s.claim_totp_step(u, 101).await.unwrap());
    assert!(!s.claim_totp_step(u, 101).await.unwrap());
    s.reseal_totp(u, b"resealed").await.unwrap();
    let active = s.get_totp(u).await.unwrap().unwrap();
    assert_eq!(active.sealed_secret, b"resealed");
    assert!(active.enabled);
    assert_eq!(active.last_used_step, Some(101));
    assert!(s.remove_mfa(u).await.unwrap());
    assert!(s.get_totp(u).await.unwrap().is_none());
    assert_eq!(s.backup_code_counts(u).await.unwrap(), (0, 0));
    assert!(!s.get_user(u).await.unwrap().unwrap().mfa_enabled);
    assert!(!s.remove_mfa(u).await.unwrap());
}

async fn backup_codes_are_spent_once_and_replaced_together(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let u = user(&*s, "codes@example.com").await;
    s.replace_backup_codes(u, &codes(2)).await.unwrap();
    assert_eq!(s.backup_code_counts(u).await.unwrap(), (2, 2));
    assert_eq!(
        s.unused_backup_code(u, 0).await.unwrap().as_deref(),
        Some("hash-0")
    );
    assert!(!s.claim_backup_code(u, 0, "another", t).await.unwrap());
    assert!(s.claim_backup_code(u, 0, "hash-0", t).await.unwrap());
    assert!(!s.claim_backup_code(u, 0, "hash-0", t).await.unwrap());
    assert!(s.unused_backup_code(u, 0).await.unwrap().is_none());
    assert_eq!(s.backup_code_counts(u).await.unwrap(), (1, 2));
    s.replace_backup_codes(u, &codes(3)).await.unwrap();
    assert_eq!(s.backup_code_counts(u).await.unwrap(), (3, 3));
    assert_eq!(
        s.unused_backup_code(u, 0).await.unwrap().as_deref(),
        Some("hash-0")
    );
}

async fn mfa_failures_count_per_session(b: Backend) {
    let (s, _env) = open(b).await;
    let u = user(&*s, "failures@example.com").await;
    let (one, two) = (session(u, now(), true), session(u, now(), true));
    s.create_session(&one, 10).await.unwrap();
    s.create_session(&two, 10).await.unwrap();
    assert_eq!(s.record_mfa_failure(one.id).await.unwrap(), 1);
    assert_eq!(s.record_mfa_failure(one.id).await.unwrap(), 2);
    assert_eq!(s.record_mfa_failure(two.id).await.unwrap(), 1);
}

async fn password_change_and_reset_end_sessions_and_tokens(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let hour = Duration::from_secs(3600);
    let u = user(&*s, "change@example.com").await;
    let (kept, other) = (session(u, t, false), session(u, t, false));
    s.create_session(&kept, 10).await.unwrap();
    s.create_session(&other, 10).await.unwrap();
    let early = TokenHash([1; 32]);
    s.issue_token(&early, u, TokenPurpose::PasswordReset, t, t + hour)
        .await
        .unwrap();
    s.change_password(u, "phc-2", kept.id, t).await.unwrap();
    assert!(s.find_session(&kept.token_hash).await.unwrap().is_some());
    assert!(s.find_session(&other.token_hash).await.unwrap().is_none());
    let key = key_of("change@example.com");
    let creds = s.find_credentials(&key).await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "phc-2");
    // The change deleted the unused reset token.
    assert_eq!(s.reset_password(&early, "phc-x", t).await.unwrap(), None);
    let reset = TokenHash([2; 32]);
    s.issue_token(&reset, u, TokenPurpose::PasswordReset, t, t + hour)
        .await
        .unwrap();
    assert_eq!(s.reset_password(&reset, "phc-3", t).await.unwrap(), Some(u));
    assert_eq!(s.reset_password(&reset, "phc-4", t).await.unwrap(), None);
    assert!(s.find_session(&kept.token_hash).await.unwrap().is_none());
    let creds = s.find_credentials(&key).await.unwrap().unwrap();
    assert_eq!(creds.password_hash, "phc-3");
}

async fn blocks_keep_the_latest_and_clear_forgets_keys(b: Backend) {
    let (s, _env) = open(b).await;
    let t = now();
    let hour = Duration::from_secs(3600);
    let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(
        s.throttle_blocked_until(&keys(&["a", "b"]), t)
            .await
            .unwrap(),
        None
    );
    s.throttle_block("a", t + hour, t).await.unwrap();
    s.throttle_block("a", t + hour / 2, t).await.unwrap();
    assert_eq!(
        s.throttle_blocked_until(&keys(&["a"]), t).await.unwrap(),
        Some(t + hour)
    );
    s.throttle_block("b", t + 2 * hour, t).await.unwrap();
    assert_eq!(
        s.throttle_blocked_until(&keys(&["a", "b", "c"]), t)
            .await
            .unwrap(),
        Some(t + 2 * hour)
    );
    assert_eq!(
        s.throttle_blocked_until(&keys(&["a", "b"]), t + 3 * hour)
            .await
            .unwrap(),
        None
    );
    s.throttle_hit("c", t, hour).await.unwrap();
    s.throttle_clear(&keys(&["a", "c"])).await.unwrap();
    assert_eq!(s.throttle_count("c").await.unwrap(), 0);
    assert_eq!(
        s.throttle_blocked_until(&keys(&["a", "b"]), t)
            .await
            .unwrap(),
        Some(t + 2 * hour)
    );
    assert_eq!(
        s.throttle_blocked_until(&keys(&["a"]), t).await.unwrap(),
        None
    );
}

fn event(kind: &'static str, at: OffsetDateTime) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        at,
        kind,
        user_id: None,
        ip: "10.0.0.1".into(),
        user_agent: "ua".into(),
        request_id: "req".into(),
        detail: json!({}),
    }
}

async fn prune_moves_the_checkpoint_and_records_itself(b: Backend) {
    let (s, env) = open(b).await;
    let t = now();
    let hour = Duration::from_secs(3600);
    for at in [t - 3 * hour, t - 2 * hour, t] {
        s.append_event(&event("login_failed", at)).await.unwrap();
    }
    let record = event("audit_pruned", t);
    assert_eq!(
        s.prune_events(t - 4 * hour, &record).await.unwrap(),
        None,
        "nothing is old enough"
    );
    let outcome = s.prune_events(t - hour, &record).await.unwrap().unwrap();
    assert_eq!(outcome.removed, 2);
    assert_eq!(outcome.through_seq, 2);
    let left = s.chain_events(0, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(left[1].kind, "audit_pruned");
    assert_eq!(left[1].detail["events_removed"], json!(2));
    assert_eq!(left[1].detail["through_seq"], json!(2));
    let head = s.chain_head().await.unwrap();
    assert_eq!(head.last_seq, 4);
    assert_eq!(head.checkpoint_seq, 2);
    let sealer = castellan::app::audit_sealer(&env.config());
    assert!(
        castellan::audit::chain::verify(&*s, sealer)
            .await
            .unwrap()
            .is_ok(),
        "the chain verifies after the prune"
    );
}

async fn ping_answers_and_names_the_backend(b: Backend) {
    let (s, env) = open(b).await;
    s.ping().await.unwrap();
    let expected = match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(s.backend(), expected);
    // Only PostgreSQL has a pool: at most the configured size, and the
    // ping above opened at least one connection.
    let configured = castellan::app::store_options(&env.config())
        .pool
        .max_connections;
    match (b, s.pool_stats()) {
        (Backend::Sqlite, stats) => assert_eq!(stats, None),
        (Backend::Postgres, Some((open, idle, max))) => {
            assert_eq!(max, configured);
            assert!((1..=max).contains(&open), "{open} open of {max}");
            assert!(idle <= open as usize, "{idle} idle of {open}");
        }
        (Backend::Postgres, None) => panic!("PostgreSQL reports no pool"),
    }
}

/// Names of the methods declared by the store's role traits.
fn store_trait_methods() -> Vec<String> {
    let mut methods = Vec::new();
    for file in [
        "src/store/mod.rs",
        "src/store/limits.rs",
        "src/store/passkeys.rs",
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        let mut in_trait = false;
        for line in text.lines() {
            if line.starts_with("pub trait ") {
                in_trait = true;
            } else if in_trait && line == "}" {
                in_trait = false;
            } else if in_trait {
                let decl = line.trim_start();
                let name = decl
                    .strip_prefix("async fn ")
                    .or_else(|| decl.strip_prefix("fn "));
                if let Some(name) = name {
                    methods.push(name.split(['(', '<']).next().unwrap().to_string());
                }
            }
        }
    }
    methods
}

#[test]
fn every_store_trait_method_is_called_here() {
    let mut tests = std::fs::read_to_string("tests/it/store_contract.rs").unwrap();
    for entry in std::fs::read_dir("tests/it/store_contract").unwrap() {
        tests += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    let methods = store_trait_methods();
    // The eight role traits and Store itself declare 64 methods today;
    // far fewer means the parsing above went wrong, not that all is well.
    assert!(methods.len() > 60, "found only {methods:?}");
    let missing: Vec<_> = methods
        .iter()
        .filter(|m| !tests.contains(&format!(".{m}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "store trait methods no contract test calls: {missing:?}"
    );
}
