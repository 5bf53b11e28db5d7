//! Hostile clients (issue 13): limits that hold under concurrency and
//! across nodes, client addresses an attacker cannot multiply or hide,
//! state an anonymous client cannot grow, and answers whose timing or shape
//! does not depend on what is being probed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use castellan::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, PASSWORD, TestApp, TestEnv, email, now_code, post_at_once_over, spawn_app,
};
use crate::on_both_backends;

on_both_backends!(
    concurrent_wrong_passwords_stop_at_the_backoff_threshold,
    concurrent_wrong_passwords_stop_at_the_hard_stop,
    concurrent_wrong_codes_stop_at_the_pending_session_limit,
    ipv6_clients_share_limits_by_prefix,
    unknown_emails_leave_no_lasting_rows,
    reset_requests_take_as_long_for_unknown_emails,
    the_session_cap_applies_to_mfa_logins,
    a_never_issued_backup_code_is_a_wrong_code,
    wrong_admin_tokens_back_off_and_admin_reads_are_audited,
);

const WRONG: &str = "not the password, not even close";

/// `count` apps on one database (a fresh one per test), sharing `clock`.
async fn nodes(env: &TestEnv, count: usize, clock: &Arc<ManualClock>) -> Vec<TestApp> {
    let mut apps = Vec::new();
    for _ in 0..count {
        apps.push(env.spawn_with_clock(clock.clone()).await);
    }
    apps
}

fn frozen_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()))
}

/// `n` identical POSTs released together, spread over `apps`.
async fn at_once(
    apps: &[TestApp],
    path: &str,
    n: usize,
    bearer: Option<&str>,
    body: Value,
) -> Vec<u16> {
    let apps: Vec<&TestApp> = apps.iter().collect();
    let requests = (0..n)
        .map(|_| (bearer.map(str::to_string), body.clone()))
        .collect();
    post_at_once_over(&apps, path, requests).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

async fn backoff_threshold(b: Backend, node_count: usize) {
    let clock = frozen_clock();
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_HASH_QUEUE", "256");
    let apps = nodes(&env, node_count, &clock).await;
    let e = email("burst");
    apps[0].register(&e, PASSWORD).await;
    let statuses = at_once(
        &apps,
        "/v1/login",
        50,
        None,
        json!({"email": e, "password": WRONG}),
    )
    .await;
    // login_backoff_after = 5: the fifth failure starts the back-off, and
    // the clock stands still, so nothing after it may be evaluated.
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 45, "{statuses:?}");
    apps[0]
        .login(&e, PASSWORD)
        .await
        .assert_error(429, "rate_limited");
}

async fn concurrent_wrong_passwords_stop_at_the_backoff_threshold(b: Backend) {
    backoff_threshold(b, 1).await;
}

async fn hard_stop(b: Backend, node_count: usize) {
    let clock = frozen_clock();
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_HASH_QUEUE", "256")
        .set("CASTELLAN_LOGIN_BACKOFF_AFTER", "1000")
        .set("CASTELLAN_ACCOUNT_FAILURES_PER_HOUR", "100000")
        .set("CASTELLAN_FACTOR_HARD_STOP", "10");
    let apps = nodes(&env, node_count, &clock).await;
    let e = email("stop");
    apps[0].register(&e, PASSWORD).await;
    let statuses = at_once(
        &apps,
        "/v1/login",
        50,
        None,
        json!({"email": e, "password": WRONG}),
    )
    .await;
    assert_eq!(count(&statuses, 401), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 40, "{statuses:?}");
    let stops = apps[0]
        .events(1000)
        .await
        .into_iter()
        .filter(|ev| ev.kind == "throttled" && ev.detail["limit"] == "hard_stop")
        .count();
    assert_eq!(stops, 1, "one hard-stop event");
}

async fn concurrent_wrong_passwords_stop_at_the_hard_stop(b: Backend) {
    hard_stop(b, 1).await;
}

async fn pending_session_limit(b: Backend, node_count: usize) {
    let mut env = TestEnv::new(b).await;
    // Only the pending session's own limit binds here.
    env.set("CASTELLAN_LOGIN_BACKOFF_AFTER", "1000")
        .set("CASTELLAN_ACCOUNT_FAILURES_PER_HOUR", "100000");
    let mut apps = Vec::new();
    for _ in 0..node_count {
        apps.push(env.spawn().await);
    }
    let e = email("codes");
    let token = apps[0].user_with_session(&e).await;
    let totp = apps[0].enable_totp(&token).await;
    let r = apps[0].login(&e, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let pending = r.json()["session_token"].as_str().unwrap().to_string();
    let near: Vec<String> = (-2..=2).map(|o| now_code(&totp.secret, o)).collect();
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap();
    let statuses = at_once(
        &apps,
        "/v1/login/mfa",
        50,
        Some(&pending),
        json!({"totp_code": wrong}),
    )
    .await;
    assert_eq!(count(&statuses, 200), 0, "{statuses:?}");
    let evaluated = apps[0]
        .events(1000)
        .await
        .into_iter()
        .filter(|ev| ev.kind == "mfa_failed")
        .count();
    assert_eq!(
        evaluated, 5,
        "at most five codes per pending session are checked"
    );
    assert!(
        apps[0]
            .has_event("session_revoked", "by", "mfa_failures")
            .await
    );
    apps[0]
        .send_bearer(Method::GET, "/v1/session", &pending, None)
        .await
        .assert_error(401, "unauthenticated");
    let notices = apps[0]
        .mails()
        .iter()
        .filter(|m| m.contains("A sign-in to your account was stopped"))
        .count();
    assert_eq!(notices, 1, "one notice, however many codes arrive at once");
}

async fn concurrent_wrong_codes_stop_at_the_pending_session_limit(b: Backend) {
    pending_session_limit(b, 1).await;
}

mod two_nodes {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backoff_threshold_holds_across_nodes() {
        backoff_threshold(Backend::Postgres, 2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hard_stop_holds_across_nodes() {
        hard_stop(Backend::Postgres, 2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_session_limit_holds_across_nodes() {
        pending_session_limit(Backend::Postgres, 2).await;
    }
}

/// A login through the trusted proxy (the test client on 127.0.0.1) for
/// the client `xff`.
async fn login_via(app: &TestApp, header: &str, value: &str, e: &str) -> u16 {
    app.send(
        Method::POST,
        "/v1/login",
        Some(json!({"email": e, "password": WRONG})),
        &[(header, value)],
    )
    .await
    .status
    .as_u16()
}

async fn ipv6_clients_share_limits_by_prefix(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1/32")
        .set("CASTELLAN_RATE_LOGIN_PER_IP", "3/1m");
    let app = env.spawn().await;
    let e = email("v6");
    for n in 1..=3 {
        let addr = format!("2001:db8:1:2::{n:x}");
        assert_eq!(login_via(&app, "x-forwarded-for", &addr, &e).await, 401);
    }
    // A fourth address of the same /64 is the same client.
    assert_eq!(
        login_via(
            &app,
            "x-forwarded-for",
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
            &e
        )
        .await,
        429
    );
    // The next /64 is another client.
    assert_eq!(
        login_via(&app, "x-forwarded-for", "2001:db8:1:3::1", &e).await,
        401
    );
}

/// The client address of the newest security event.
async fn last_ip(app: &TestApp) -> String {
    app.events(1)
        .await
        .into_iter()
        .next()
        .map(|ev| ev.ip)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_walked_from_the_right() {
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.set("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1/32");
    let app = env.spawn().await;
    let e = email("xff");
    login_via(&app, "x-forwarded-for", "unknown, 203.0.113.9", &e).await;
    assert_eq!(last_ip(&app).await, "203.0.113.9");
    login_via(&app, "x-forwarded-for", "203.0.113.10:4444", &e).await;
    assert_eq!(last_ip(&app).await, "203.0.113.10");
    login_via(&app, "x-forwarded-for", "[2001:db8::5]:443", &e).await;
    assert_eq!(last_ip(&app).await, "2001:db8::5");
    drop(app);

    env.set("CASTELLAN_FORWARDED_HEADER", "forwarded");
    let app = env.spawn().await;
    login_via(
        &app,
        "forwarded",
        r#"for=unknown, for="[2001:db8:cafe::17]:4711";proto=https"#,
        &e,
    )
    .await;
    assert_eq!(last_ip(&app).await, "2001:db8:cafe::17");
    // With `forwarded` configured, X-Forwarded-For is not believed.
    login_via(&app, "x-forwarded-for", "203.0.113.11", &e).await;
    assert_eq!(last_ip(&app).await, "127.0.0.1");
}

async fn unknown_emails_leave_no_lasting_rows(b: Backend) {
    use castellan::jobs::expired_state::run_once;
    let clock = frozen_clock();
    let env = TestEnv::new(b).await;
    let app = env.spawn_with_clock(clock.clone()).await;
    let known = email("known");
    app.register(&known, PASSWORD).await;
    app.login(&known, WRONG)
        .await
        .assert_error(401, "invalid_credentials");
    let unknown: Vec<String> = (0..30).map(|i| email(&format!("nobody{i}"))).collect();
    for e in &unknown {
        app.login(e, WRONG)
            .await
            .assert_error(401, "invalid_credentials");
    }
    let store = &app.auth.store();
    let rows = |e: &str| {
        let key = e.to_lowercase();
        [
            format!("pw:consec:{key}"),
            format!("pw:acct_ip:{key}:127.0.0.1"),
        ]
    };
    // Within the longest back-off nothing is dropped.
    clock.advance(Duration::from_secs(60));
    run_once(&app.auth).await.unwrap();
    for key in rows(&unknown[0]) {
        assert_eq!(store.throttle_count(&key).await.unwrap(), 1, "{key}");
    }
    // After login_backoff_max (15 min) and the hourly windows: every row of
    // an unknown email is gone; the account's streak is kept.
    clock.advance(Duration::from_secs(2 * 3600));
    let purged = run_once(&app.auth).await.unwrap();
    assert!(purged.throttles >= 60, "{purged:?}");
    for e in &unknown {
        for key in rows(e) {
            assert_eq!(store.throttle_count(&key).await.unwrap(), 0, "{key}");
        }
    }
    for key in rows(&known) {
        assert_eq!(store.throttle_count(&key).await.unwrap(), 1, "{key}");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median absolute deviation.
fn mad(v: &[f64]) -> f64 {
    let mut c = v.to_vec();
    let m = median(&mut c);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    median(&mut dev)
}

async fn reset_requests_take_as_long_for_unknown_emails(b: Backend) {
    let mut env = TestEnv::new(b).await;
    // Every request would issue a token and build a mail.
    env.set("CASTELLAN_RATE_RESET_PER_IP", "100000/1h")
        .set("CASTELLAN_RESET_MAILS_PER_ACCOUNT", "100000/1h");
    let app = env.spawn().await;
    let known = email("timed");
    app.register(&known, PASSWORD).await;
    let unknown = email("untimed");
    let sample = |e: String| {
        let app = &app;
        async move {
            let started = Instant::now();
            let r = app
                .post("/v1/password/reset/request", json!({"email": e}))
                .await;
            let took = started.elapsed().as_secs_f64() * 1e3;
            assert_eq!(r.status, 202, "{}", r.text);
            // Background work of one request must not slow the next sample.
            app.auth.mailer().flush().await;
            took
        }
    };
    for _ in 0..10 {
        sample(known.clone()).await;
        sample(unknown.clone()).await;
    }
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for _ in 0..150 {
        k.push(sample(known.clone()).await);
        u.push(sample(unknown.clone()).await);
    }
    let spread = (mad(&k) + mad(&u)) / 2.0;
    let (mk, mu) = (median(&mut k.clone()), median(&mut u.clone()));
    // A clear separation (the old code: 1.01 ms against 0.65 ms, with a
    // spread of a few hundredths) fails; noise widens the spread and so
    // the tolerance, so a loaded machine does not make this flaky.
    assert!(
        (mk - mu).abs() <= 3.0 * spread.max(0.02),
        "known {mk:.3} ms, unknown {mu:.3} ms, spread {spread:.3} ms"
    );
    assert!(!app.mails().is_empty(), "the known email got its mails");

    assert!(
        app.has_event("password_reset_requested", "reason", "unknown_email")
            .await
    );
}

// covers: ASVS-7.1.2, ASVS-2.3.2
async fn the_session_cap_applies_to_mfa_logins(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_SESSION_MAX_PER_USER", "2");
    let app = env.spawn().await;
    let e = email("capped");
    let token = app.user_with_session(&e).await;
    let totp = app.enable_totp(&token).await;
    let mut last = String::new();
    for code in totp.backup_codes.iter().take(4) {
        let r = app.login(&e, PASSWORD).await;
        let pending = r.json()["session_token"].as_str().unwrap().to_string();
        let r = app
            .send_bearer(
                Method::POST,
                "/v1/login/mfa",
                &pending,
                Some(json!({"backup_code": code})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        last = r.json()["session_token"].as_str().unwrap().to_string();
    }
    let sessions = app.get_bearer("/v1/sessions", &last).await;
    assert_eq!(sessions.status, 200, "{}", sessions.text);
    let live = sessions.json()["sessions"].as_array().unwrap().len();
    assert_eq!(live, 2, "{}", sessions.text);
    assert!(app.has_event("session_revoked", "by", "session_cap").await);
}

async fn a_never_issued_backup_code_is_a_wrong_code(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("unissued");
    let token = app.user_with_session(&e).await;
    app.enable_totp(&token).await;
    for code in [
        "ZZZZ-ZZZZ-ZZZZ-ZZZZ",
        "K234-5672-3456-7234",
        "abcd-efgh-ijkl-mnop",
    ] {
        let r = app.login(&e, PASSWORD).await;
        let pending = r.json()["session_token"].as_str().unwrap().to_string();
        app.send_bearer(
            Method::POST,
            "/v1/login/mfa",
            &pending,
            Some(json!({"backup_code": code})),
        )
        .await
        .assert_error(401, "invalid_credentials");
    }
}

async fn admin_get(app: &TestApp, path: &str, token: &str) -> crate::helpers::Reply {
    let base = app.admin_base.as_ref().expect("admin listener");
    let res = app
        .client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin request");
    crate::helpers::Reply {
        status: res.status(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap_or_default(),
    }
}

async fn wrong_admin_tokens_back_off_and_admin_reads_are_audited(b: Backend) {
    let clock = frozen_clock();
    let mut env = TestEnv::new(b).await;
    env.with_admin();
    let app = env.spawn_with_clock(clock.clone()).await;
    let e = email("audited");
    app.register(&e, PASSWORD).await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(
            admin_get(&app, "/admin/v1/audit", "wrong-token")
                .await
                .status
                .as_u16(),
        );
    }
    // admin_token_backoff_after = 5; the clock stands still.
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 25, "{statuses:?}");
    // The right token waits out the back-off too.
    admin_get(&app, "/admin/v1/audit", crate::helpers::ADMIN_TOKEN)
        .await
        .assert_error(429, "rate_limited");
    let events = app.events(1000).await;
    let denied = events
        .iter()
        .filter(|ev| ev.kind == "access_denied")
        .count();
    let throttled = events
        .iter()
        .filter(|ev| ev.kind == "throttled" && ev.detail["limit"] == "admin_token")
        .count();
    assert_eq!(
        (denied, throttled),
        (5, 1),
        "aggregated, not one row per request"
    );

    clock.advance(Duration::from_secs(2));
    let id = app
        .events(1000)
        .await
        .into_iter()
        .find_map(|ev| ev.user_id)
        .unwrap();
    let r = admin_get(
        &app,
        &format!("/admin/v1/users/{}", id.0),
        crate::helpers::ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = admin_get(
        &app,
        &format!("/admin/v1/users?email={e}"),
        crate::helpers::ADMIN_TOKEN,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = admin_get(&app, "/admin/v1/audit?limit=5", crate::helpers::ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for action in ["read_user", "find_users", "read_audit"] {
        assert!(
            app.has_event("admin_action", "action", action).await,
            "{action}"
        );
    }
    // A success ends the streak: the next wrong token is a first one again.
    assert_eq!(
        admin_get(&app, "/admin/v1/audit", "wrong-token")
            .await
            .status,
        401
    );
}
