//! Password change and reset, email verification, and the shared limits.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestApp, TestEnv, email, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    password_change_needs_the_current_password_and_ends_other_sessions,
    new_passwords_meet_the_whole_policy,
    reset_is_uniform_single_use_and_ends_every_session,
    reset_tokens_expire_and_a_newer_one_kills_the_older,
    reset_mails_are_capped_while_the_answer_stays_202,
    one_reset_token_sent_ten_times_at_once_succeeds_once,
    email_verification_marks_the_address_once,
    failures_back_off_per_account_and_address_and_the_right_password_waits,
    password_spraying_from_many_addresses_is_slowed_per_account,
    each_address_has_its_own_rate,
    the_hard_stop_disables_the_password_until_a_reset,
    second_factor_failures_back_off_too,
    ended_rate_windows_and_expired_tokens_are_deleted,
    reset_applies_the_whole_policy_with_the_accounts_own_words,
);

const NEW_PASSWORD: &str = "a brand new passphrase of mine";

/// The link in the newest mail whose text contains `marker`.
fn mailed_token(app: &TestApp, marker: &str) -> String {
    let mails = app.mails();
    let mail = mails
        .iter()
        .rfind(|m| m.contains(marker))
        .unwrap_or_else(|| panic!("no mail with {marker}"));
    let line = mail
        .lines()
        .find(|l| l.contains("?token="))
        .expect("a link line");
    let start = line.find("http").expect("an absolute link");
    let url = line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['>', '"', ')']);
    assert!(
        url.starts_with("http://127.0.0.1:8080/"),
        "configured public origin: {url}"
    );
    let token = url.split("?token=").nth(1).unwrap().to_string();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    token
}

async fn flush(app: &TestApp) {
    app.auth.mailer().flush().await;
}

// covers: ASVS-6.2.2, ASVS-6.2.3, ASVS-7.4.3, N63B-20, ASVS-16.3.1, ASVS-6.3.7
async fn password_change_needs_the_current_password_and_ends_other_sessions(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("change");
    let current = app.user_with_session(&e).await;
    let other = app.token_for(&e, PASSWORD).await;
    let change = |cur: &str, new: &str| json!({"current_password": cur, "new_password": new});
    app.send_bearer(
        Method::POST,
        "/v1/password/change",
        &current,
        Some(change("not my password at all", NEW_PASSWORD)),
    )
    .await
    .assert_error(400, "invalid_credentials");
    app.send_bearer(
        Method::POST,
        "/v1/password/change",
        &current,
        Some(json!({"new_password": NEW_PASSWORD})),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(
        app.get_bearer("/v1/session", &other).await.status,
        200,
        "nothing changed"
    );
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/password/change",
            &current,
            Some(change(PASSWORD, NEW_PASSWORD)),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.get_bearer("/v1/session", &other)
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(
        app.get_bearer("/v1/session", &current).await.status,
        200,
        "the current session stays"
    );
    app.login(&e, PASSWORD)
        .await
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.login(&e, NEW_PASSWORD).await.status, 200);
    flush(&app).await;
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("password") && m.contains("If this was not you"))
    );
    assert!(
        app.event_kinds()
            .await
            .contains(&"password_changed".to_string())
    );
}

// covers: ASVS-6.2.4, ASVS-6.2.11, ASVS-6.2.12, ASVS-6.2.5, N63B-05
async fn new_passwords_meet_the_whole_policy(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_PASSWORD_CONTEXT_WORDS", "Example Corp");
    let app = env.spawn().await;
    let e = format!(
        "grace.hopper.{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    for (pw, why) in [
        ("qwertyuiopasdfghjkl", "common"),
        ("castellancastellan", "service name"),
        ("examplecorp-is-my-employer", "organisation"),
        (&*format!("{}-2024!", e.split('@').next().unwrap()), "email"),
        ("zyxwzyxwzyxwzyxwzyxw", "guessable"),
    ] {
        let msg = app
            .register(&e, pw)
            .await
            .assert_error(400, "weak_password");
        assert!(!msg.is_empty(), "{why}: the message says why");
    }
    // No composition rules: lower case only, digits only, spaces, emoji, CJK, RTL.
    for ok in [
        "correct horse battery staple",
        "9283746510293847561",
        "🦀🐙🦑🐠🐡🦐🦞🐚🪼🦈🐋🐳🐬🦭🐊",
        "月曜日の朝は静かな図書館で本を読む",
        "שלום עולם זה משפט ארוך",
    ] {
        let r = app.register(&email("comp"), ok).await;
        assert_eq!(r.status, 201, "{ok}: {}", r.text);
        assert!(!r.text.contains("upper") && !r.text.contains("digit"));
    }
}

// covers: ASVS-6.4.1, ASVS-6.4.3, ASVS-6.3.8, ASVS-2.3.1, ASVS-1.2.2, ASVS-14.2.1, N63B-21, ASVS-16.3.3, ASVS-6.3.7
async fn reset_is_uniform_single_use_and_ends_every_session(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("reset");
    let token = app.user_with_session(&e).await;
    let unknown = app
        .post(
            "/v1/password/reset/request",
            json!({"email": email("nobody")}),
        )
        .await;
    let known = app
        .post("/v1/password/reset/request", json!({"email": e}))
        .await;
    assert_eq!((unknown.status.as_u16(), known.status.as_u16()), (202, 202));
    assert_eq!(unknown.text, known.text, "identical answers");
    flush(&app).await;
    assert_eq!(
        app.mails().len(),
        1,
        "nothing is sent for an unknown address"
    );
    let reset = mailed_token(&app, "?token=");
    // A never-issued token, a tampered one and a weak password change nothing.
    let never = "A".repeat(43);
    let confirm = |t: &str, pw: &str| json!({"token": t, "new_password": pw});
    app.post("/v1/password/reset/confirm", confirm(&never, NEW_PASSWORD))
        .await
        .assert_error(400, "invalid_request");
    let mut tampered = reset.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    app.post(
        "/v1/password/reset/confirm",
        confirm(&String::from_utf8(tampered).unwrap(), NEW_PASSWORD),
    )
    .await
    .assert_error(400, "invalid_request");
    app.post(
        "/v1/password/reset/confirm",
        confirm(&reset, "qwertyuiopasdfghjkl"),
    )
    .await
    .assert_error(400, "weak_password");
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    let r = app
        .post("/v1/password/reset/confirm", confirm(&reset, NEW_PASSWORD))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    app.get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
    app.post(
        "/v1/password/reset/confirm",
        confirm(&reset, "another passphrase entirely"),
    )
    .await
    .assert_error(400, "invalid_request");
    app.login(&e, PASSWORD)
        .await
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.login(&e, NEW_PASSWORD).await.status, 200);
    // Tokens travel only in bodies: a query string is ignored.
    app.send(
        Method::POST,
        &format!("/v1/password/reset/confirm?token={reset}"),
        Some(json!({"new_password": NEW_PASSWORD})),
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
    flush(&app).await;
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("If this was not you") && !m.contains("?token=")),
        "a reset notice follows"
    );
    let kinds = app.event_kinds().await;
    assert!(
        kinds.contains(&"password_reset".to_string())
            && kinds.contains(&"token_rejected".to_string())
    );
}

// covers: ASVS-6.4.1, N63B-21
async fn reset_tokens_expire_and_a_newer_one_kills_the_older(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_RESET_TOKEN_TTL", "1s");
    let app = env.spawn().await;
    let e = email("ttl");
    app.register(&e, PASSWORD).await;
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    let expired = mailed_token(&app, "?token=");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.post(
        "/v1/password/reset/confirm",
        json!({"token": expired, "new_password": NEW_PASSWORD}),
    )
    .await
    .assert_error(400, "invalid_request");
    app.shutdown().await;
    let app = TestEnv {
        vars: {
            let mut v = env.vars.clone();
            v.remove("CASTELLAN_RESET_TOKEN_TTL");
            v
        },
        dir: env.dir.clone(),
        backend: b,
    }
    .spawn()
    .await;
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    let older = mailed_token(&app, "?token=");
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    let newer = mailed_token(&app, "?token=");
    assert_ne!(older, newer);
    app.post(
        "/v1/password/reset/confirm",
        json!({"token": older, "new_password": NEW_PASSWORD}),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(
        app.post(
            "/v1/password/reset/confirm",
            json!({"token": newer, "new_password": NEW_PASSWORD})
        )
        .await
        .status,
        204
    );
}

// covers: ASVS-2.4.1, ASVS-2.3.2
async fn reset_mails_are_capped_while_the_answer_stays_202(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_RESET_MAILS_PER_ACCOUNT", "2/1h");
    let app = env.spawn().await;
    let e = email("cap");
    app.register(&e, PASSWORD).await;
    for _ in 0..6 {
        assert_eq!(
            app.post("/v1/password/reset/request", json!({"email": e}))
                .await
                .status,
            202
        );
    }
    flush(&app).await;
    assert_eq!(app.mails().len(), 2);
}

// covers: ASVS-2.3.4, ASVS-15.4.2
async fn one_reset_token_sent_ten_times_at_once_succeeds_once(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("race");
    app.register(&e, PASSWORD).await;
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    let token = mailed_token(&app, "?token=");
    let requests = (0..10)
        .map(|i| {
            (
                None,
                json!({"token": token, "new_password": format!("{NEW_PASSWORD} number {i}")}),
            )
        })
        .collect();
    let statuses = app
        .post_at_once("/v1/password/reset/confirm", requests)
        .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
}

// covers: ASVS-6.4.1, ASVS-2.3.4, N63B-22
async fn email_verification_marks_the_address_once(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("verify");
    let token = app.user_with_session(&e).await;
    app.post("/v1/email/verification/request", json!({}))
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(
        app.send_bearer(Method::POST, "/v1/email/verification/request", &token, None)
            .await
            .status,
        202
    );
    flush(&app).await;
    let t = mailed_token(&app, "?token=");
    let requests = (0..5).map(|_| (None, json!({"token": t}))).collect();
    let statuses = app
        .post_at_once("/v1/email/verification/confirm", requests)
        .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        app.get_bearer("/v1/session", &token).await.json()["user"]["email_verified"],
        true
    );
    assert!(
        app.event_kinds()
            .await
            .contains(&"email_verified".to_string())
    );
}

// covers: ASVS-6.3.1, N63B-11, ASVS-16.3.3
async fn failures_back_off_per_account_and_address_and_the_right_password_waits(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_LOGIN_BACKOFF_AFTER", "3");
    // A manual clock: the back-off window (1 s after the third failure)
    // must not pass while a busy machine hashes the next attempt.
    let clock = std::sync::Arc::new(castellan::clock::ManualClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let app = env.spawn_with_clock(clock.clone()).await;
    let e = email("backoff");
    app.register(&e, PASSWORD).await;
    for _ in 0..3 {
        app.login(&e, "wrong wrong wrong wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    let r = app.login(&e, PASSWORD).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // An unknown account is throttled the same way (no enumeration).
    let nobody = email("nobody");
    for _ in 0..3 {
        app.login(&nobody, "wrong wrong wrong wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    app.login(&nobody, PASSWORD)
        .await
        .assert_error(429, "rate_limited");
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        app.login(&e, PASSWORD).await.status,
        200,
        "after the wait the owner gets in: no permanent lockout"
    );
    let kinds = app.event_kinds().await;
    assert!(kinds.contains(&"throttled".to_string()));
}

// covers: ASVS-6.3.1, ASVS-4.1.3, N63B-11
async fn password_spraying_from_many_addresses_is_slowed_per_account(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1")
        .set("CASTELLAN_ACCOUNT_FAILURES_PER_HOUR", "5");
    let app = env.spawn().await;
    let e = email("spray");
    app.register(&e, PASSWORD).await;
    let body = json!({"email": e, "password": "wrong wrong wrong wrong"});
    for i in 0..5 {
        let ip = format!("198.51.100.{i}");
        app.send(
            Method::POST,
            "/v1/login",
            Some(body.clone()),
            &[("x-forwarded-for", &ip)],
        )
        .await
        .assert_error(401, "invalid_credentials");
    }
    let good = json!({"email": e, "password": PASSWORD});
    app.send(
        Method::POST,
        "/v1/login",
        Some(good),
        &[("x-forwarded-for", "203.0.113.50")],
    )
    .await
    .assert_error(429, "rate_limited");
}

// covers: ASVS-2.4.1, ASVS-2.3.2, ASVS-6.3.1
async fn each_address_has_its_own_rate(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_RATE_LOGIN_PER_IP", "5/1m")
        .set("CASTELLAN_RATE_REGISTRATION_PER_IP", "3/1m");
    let app = env.spawn().await;
    for i in 0..3 {
        assert_eq!(
            app.register(&email(&format!("r{i}")), PASSWORD)
                .await
                .status,
            201
        );
    }
    let r = app.register(&email("r4"), PASSWORD).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    for i in 0..5 {
        app.login(&email(&format!("l{i}")), PASSWORD)
            .await
            .assert_error(401, "invalid_credentials");
    }
    app.login(&email("l6"), PASSWORD)
        .await
        .assert_error(429, "rate_limited");
}

// covers: N63B-11, ASVS-6.3.1
async fn the_hard_stop_disables_the_password_until_a_reset(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_FACTOR_HARD_STOP", "4")
        .set("CASTELLAN_LOGIN_BACKOFF_AFTER", "100");
    let app = env.spawn().await;
    let e = email("stop");
    app.register(&e, PASSWORD).await;
    for _ in 0..4 {
        app.login(&e, "wrong wrong wrong wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    app.login(&e, PASSWORD)
        .await
        .assert_error(429, "rate_limited");
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    let t = mailed_token(&app, "?token=");
    assert_eq!(
        app.post(
            "/v1/password/reset/confirm",
            json!({"token": t, "new_password": NEW_PASSWORD})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        app.login(&e, NEW_PASSWORD).await.status,
        200,
        "the reset re-enabled the password"
    );
}

// covers: RFC-07, N63B-14
async fn second_factor_failures_back_off_too(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_LOGIN_BACKOFF_AFTER", "2");
    let app = env.spawn().await;
    let e = email("mfaback");
    let token = app.user_with_session(&e).await;
    let secret = app.enable_totp(&token).await.secret;
    let now = || time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let pending = app.login(&e, PASSWORD).await.json()["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let right = secret.code_at(now() + 30, 6).unwrap();
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    for _ in 0..2 {
        app.send_bearer(
            Method::POST,
            "/v1/login/mfa",
            &pending,
            Some(json!({"totp_code": wrong})),
        )
        .await
        .assert_error(401, "invalid_credentials");
    }
    app.send_bearer(
        Method::POST,
        "/v1/login/mfa",
        &pending,
        Some(json!({"totp_code": right})),
    )
    .await
    .assert_error(429, "rate_limited");
}

// covers: ASVS-6.3.1, N63B-11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_the_failure_counters() {
    let mut env = TestEnv::new(Backend::Postgres).await;
    env.set("CASTELLAN_LOGIN_BACKOFF_AFTER", "3");
    let a = env.spawn().await;
    let b = env.spawn().await;
    let e = email("shared");
    a.register(&e, PASSWORD).await;
    for _ in 0..3 {
        a.login(&e, "wrong wrong wrong wrong")
            .await
            .assert_error(401, "invalid_credentials");
    }
    b.login(&e, PASSWORD)
        .await
        .assert_error(429, "rate_limited");
}

// covers: ASVS-14.2.4 (the retention job deletes expired tokens and counters)
async fn ended_rate_windows_and_expired_tokens_are_deleted(b: Backend) {
    use castellan::jobs::expired_state::{Purged, run_once};
    let env = TestEnv::new(b).await;
    let clock = std::sync::Arc::new(castellan::clock::ManualClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let app = env.spawn_with_clock(clock.clone()).await;
    let e = email("purged");
    app.register(&e, PASSWORD).await;
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    app.login(&e, "a wrong password, not the real one").await;
    assert_eq!(run_once(&app.auth).await.unwrap(), Purged::default());
    // A day later every fixed window (at most 1h by default) has ended and
    // the reset token (30 min) has expired.
    clock.advance(Duration::from_secs(24 * 3600));
    let purged = run_once(&app.auth).await.unwrap();
    // ip:registration, ip:reset, mail:reset, ip:login and pw:acct.
    assert_eq!(
        purged,
        Purged {
            throttles: 5,
            account_tokens: 1,
            passkey_ceremonies: 0,
        }
    );
    // The failure streak and the hard-stop count never expire by age.
    let key = e.to_lowercase();
    let store = &app.auth.store();
    assert_eq!(
        store
            .throttle_count(&format!("pw:consec:{key}"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .throttle_count(&format!("pw:acct_ip:{key}:127.0.0.1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(run_once(&app.auth).await.unwrap(), Purged::default());
}

async fn reset_applies_the_whole_policy_with_the_accounts_own_words(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("ownwords");
    let session = app.user_with_session(&e).await;
    app.post("/v1/password/reset/request", json!({"email": e}))
        .await;
    flush(&app).await;
    let token = mailed_token(&app, "?token=");
    let local = e.split('@').next().unwrap().to_string();
    // The account's own email, as at change, and its local part padded.
    for own in [e.clone(), format!("{local} is my passphrase")] {
        app.post(
            "/v1/password/reset/confirm",
            json!({"token": token, "new_password": own}),
        )
        .await
        .assert_error(400, "weak_password");
    }
    // Nothing changed and the token is still good.
    assert_eq!(app.get_bearer("/v1/session", &session).await.status, 200);
    assert_eq!(
        app.post(
            "/v1/password/reset/confirm",
            json!({"token": token, "new_password": NEW_PASSWORD})
        )
        .await
        .status,
        204
    );
}
