//! The admin listener: token checks, account actions, the audit record and
//! metrics.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{
    ADMIN_TOKEN, Backend, PASSWORD, Reply, TestApp, TestEnv, email, sample, spawn_app,
};
use crate::on_both_backends;

on_both_backends!(
    admin_routes_need_the_token_and_are_not_on_the_public_listener,
    lock_ends_sessions_and_refuses_the_right_password,
    admins_end_sessions_of_one_user_or_of_everyone,
    admin_mfa_reset_clears_the_second_factor_and_tells_the_user,
    the_audit_record_is_queryable_and_inputs_are_checked,
    audit_queries_filter_by_kind_and_time_and_page,
    metrics_move_with_the_traffic,
    database_metrics_move_with_the_traffic,
);

async fn admin_app(b: Backend) -> TestApp {
    TestEnv::new(b).await.with_admin().spawn().await
}

async fn admin(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> Reply {
    let base = app.admin_base.as_ref().expect("admin listener");
    let mut req = app.client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    Reply {
        status: res.status(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap(),
    }
}

async fn user_id(app: &TestApp, token: &str) -> String {
    app.get_bearer("/v1/session", token).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

// covers: ASVS-8.2.1, ASVS-6.3.2, ASVS-3.5.4, ASVS-13.4.5, ASVS-16.3.2
async fn admin_routes_need_the_token_and_are_not_on_the_public_listener(b: Backend) {
    let plain = spawn_app(b).await;
    assert!(
        plain.admin_base.is_none(),
        "no admin token, no admin listener"
    );
    // Every refusal below must be a 401 (not the back-off's 429, which
    // `wrong_admin_tokens_back_off_and_admin_reads_are_audited` covers).
    let app = TestEnv::new(b)
        .await
        .with_admin()
        .set("CASTELLAN_ADMIN_TOKEN_BACKOFF_AFTER", "1000")
        .spawn()
        .await;
    let token = app.user_with_session(&email("victim")).await;
    let id = user_id(&app, &token).await;
    let cookie = format!("__Host-castellan_session={token}");
    let routes = [
        (
            Method::GET,
            format!("/admin/v1/users?email={}", "a@example.com"),
        ),
        (Method::GET, format!("/admin/v1/users/{id}")),
        (Method::POST, format!("/admin/v1/users/{id}/lock")),
        (Method::POST, format!("/admin/v1/users/{id}/unlock")),
        (Method::DELETE, format!("/admin/v1/users/{id}/sessions")),
        (Method::DELETE, format!("/admin/v1/users/{id}/mfa")),
        (Method::DELETE, "/admin/v1/sessions".to_string()),
        (Method::GET, "/admin/v1/audit".to_string()),
        (Method::GET, "/metrics".to_string()),
    ];
    for (method, path) in &routes {
        for bad in [
            None,
            Some("wrong"),
            Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
            Some(token.as_str()),
        ] {
            admin(&app, method.clone(), path, bad, &[])
                .await
                .assert_error(401, "unauthenticated");
        }
        admin(&app, method.clone(), path, None, &[("cookie", &cookie)])
            .await
            .assert_error(401, "unauthenticated");
        app.send_bearer(
            method.clone(),
            path.split('?').next().unwrap(),
            ADMIN_TOKEN,
            None,
        )
        .await
        .assert_error(404, "not_found");
    }
    assert_eq!(
        app.get_bearer("/v1/session", &token).await.status,
        200,
        "nothing happened to the user"
    );
    assert!(
        app.has_event("access_denied", "reason", "admin_token")
            .await
    );
}

// covers: ASVS-7.4.2, ASVS-6.3.4
async fn lock_ends_sessions_and_refuses_the_right_password(b: Backend) {
    let app = admin_app(b).await;
    let e = email("lock");
    let token = app.user_with_session(&e).await;
    let id = user_id(&app, &token).await;
    assert_eq!(
        admin(
            &app,
            Method::POST,
            &format!("/admin/v1/users/{id}/lock"),
            Some(ADMIN_TOKEN),
            &[]
        )
        .await
        .status,
        204
    );
    app.get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
    app.login(&e, PASSWORD)
        .await
        .assert_error(403, "account_locked");
    app.login(&e, "a wrong password, not the real one")
        .await
        .assert_error(401, "invalid_credentials");
    let u = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/users/{id}"),
        Some(ADMIN_TOKEN),
        &[],
    )
    .await
    .json();
    assert_eq!(u["user"]["locked"], true);
    assert_eq!(
        admin(
            &app,
            Method::POST,
            &format!("/admin/v1/users/{id}/unlock"),
            Some(ADMIN_TOKEN),
            &[]
        )
        .await
        .status,
        204
    );
    assert_eq!(app.login(&e, PASSWORD).await.status, 200);
    let missing = uuid::Uuid::new_v4();
    admin(
        &app,
        Method::POST,
        &format!("/admin/v1/users/{missing}/lock"),
        Some(ADMIN_TOKEN),
        &[],
    )
    .await
    .assert_error(404, "not_found");
    admin(
        &app,
        Method::POST,
        "/admin/v1/users/not-a-uuid/lock",
        Some(ADMIN_TOKEN),
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
}

// covers: ASVS-7.4.5
async fn admins_end_sessions_of_one_user_or_of_everyone(b: Backend) {
    let app = admin_app(b).await;
    let a = app.user_with_session(&email("a")).await;
    let b2 = app.user_with_session(&email("b")).await;
    let id = user_id(&app, &a).await;
    assert_eq!(
        admin(
            &app,
            Method::DELETE,
            &format!("/admin/v1/users/{id}/sessions"),
            Some(ADMIN_TOKEN),
            &[]
        )
        .await
        .status,
        204
    );
    app.get_bearer("/v1/session", &a)
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(app.get_bearer("/v1/session", &b2).await.status, 200);
    assert_eq!(
        admin(
            &app,
            Method::DELETE,
            "/admin/v1/sessions",
            Some(ADMIN_TOKEN),
            &[]
        )
        .await
        .status,
        204
    );
    app.get_bearer("/v1/session", &b2)
        .await
        .assert_error(401, "unauthenticated");
}

// covers: ASVS-6.4.4, ASVS-6.5.6, N63B-20
async fn admin_mfa_reset_clears_the_second_factor_and_tells_the_user(b: Backend) {
    let app = admin_app(b).await;
    let e = email("lostphone");
    let token = app.user_with_session(&e).await;
    app.enable_totp(&token).await;
    let id = user_id(&app, &token).await;
    assert_eq!(
        admin(
            &app,
            Method::DELETE,
            &format!("/admin/v1/users/{id}/mfa"),
            Some(ADMIN_TOKEN),
            &[]
        )
        .await
        .status,
        204
    );
    app.get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
    let r = app.login(&e, PASSWORD).await;
    assert_eq!(r.json()["session"]["mfa_pending"], false);
    app.auth.mailer().flush().await;
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("by an administrator"))
    );
    assert!(app.has_event("admin_action", "action", "reset_mfa").await);
}

// covers: ASVS-16.3.1, ASVS-1.4.2, ASVS-15.3.7, ASVS-1.2.4, ASVS-14.2.6, ASVS-1.1.1
async fn the_audit_record_is_queryable_and_inputs_are_checked(b: Backend) {
    let app = admin_app(b).await;
    let e = email("audited");
    let token = app.user_with_session(&e).await;
    app.login(&e, "a wrong password, not the real one").await;
    app.send_bearer(Method::POST, "/v1/logout", &token, None)
        .await;
    let r = admin(
        &app,
        Method::GET,
        "/admin/v1/audit?limit=50",
        Some(ADMIN_TOKEN),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let events: Vec<Value> = r.json()["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "logout", "newest first: {kinds:?}");
    for k in [
        "user_registered",
        "login_succeeded",
        "login_failed",
        "session_created",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    for ev in &events {
        for field in ["id", "at", "kind", "user_id", "ip", "user_agent", "detail"] {
            assert!(ev.get(field).is_some(), "{field}");
        }
        assert!(ev["at"].as_str().unwrap().ends_with('Z'));
    }
    let uid = events[0]["user_id"].as_str().unwrap();
    let mine = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/audit?user_id={uid}&limit=2"),
        Some(ADMIN_TOKEN),
        &[],
    )
    .await
    .json();
    assert_eq!(mine["events"].as_array().unwrap().len(), 2);
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=99999999999999999999",
        "limit=10abc",
        "limit=5&limit=6",
        "user_id=%2561bc",
        "nope=1",
    ] {
        admin(
            &app,
            Method::GET,
            &format!("/admin/v1/audit?{bad}"),
            Some(ADMIN_TOKEN),
            &[],
        )
        .await
        .assert_error(400, "invalid_request");
    }
    let found = admin(
        &app,
        Method::GET,
        &format!("/admin/v1/users?email={}", e.to_uppercase()),
        Some(ADMIN_TOKEN),
        &[],
    )
    .await
    .json();
    let users = found["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["locked"], false);
    assert!(users[0]["last_login_at"].is_string());
    assert!(
        !found.to_string().contains("argon2"),
        "no hashes or secrets"
    );
    for bad in [
        "email=%25",
        "email=%27%20OR%20%271%27%3D%271",
        "email=a@x.test&email=b@y.test",
        "email=%2540x.test",
    ] {
        admin(
            &app,
            Method::GET,
            &format!("/admin/v1/users?{bad}"),
            Some(ADMIN_TOKEN),
            &[],
        )
        .await
        .assert_error(400, "invalid_request");
    }
}

// covers: ASVS-4.1.1, ASVS-3.4.4
async fn metrics_move_with_the_traffic(b: Backend) {
    let app = admin_app(b).await;
    let before = admin(&app, Method::GET, "/metrics", Some(ADMIN_TOKEN), &[]).await;
    assert_eq!(
        before.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(before.header("x-content-type-options"), Some("nosniff"));
    let e = email("metrics");
    app.register(&e, PASSWORD).await;
    for _ in 0..3 {
        app.login(&e, PASSWORD).await;
    }
    app.login(&e, "a wrong password, not the real one").await;
    let after = admin(&app, Method::GET, "/metrics", Some(ADMIN_TOKEN), &[])
        .await
        .text;
    let delta = |name: &str| sample(&after, name) - sample(&before.text, name);
    assert_eq!(
        delta(r#"castellan_security_events_total{kind="login_succeeded"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"castellan_security_events_total{kind="login_failed"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"castellan_security_events_total{kind="user_registered"}"#),
        1.0
    );
    assert!(after.contains("castellan_http_requests_total{route=\"/v1/login\""));
    assert!(after.contains("castellan_password_hash_duration_seconds"));
    assert!(after.contains("castellan_password_hash_queue_depth"));
    if b == Backend::Postgres {
        assert!(sample(&after, "castellan_db_pool_max_connections") >= 1.0);
    }
    assert!(
        !after.contains(PASSWORD) && !after.contains(&e),
        "no secrets or personal data in metrics"
    );
}

/// The events of one audit query, and its `next_before`.
async fn audit_page(app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    let r = admin(
        app,
        Method::GET,
        &format!("/admin/v1/audit?{query}"),
        Some(ADMIN_TOKEN),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    let body = r.json();
    (
        body["events"].as_array().unwrap().clone(),
        body["next_before"].clone(),
    )
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

// covers: ASVS-16.2.1, ASVS-16.3.1
async fn audit_queries_filter_by_kind_and_time_and_page(b: Backend) {
    use castellan::clock::Clock;
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_ADMIN_TOKEN", ADMIN_TOKEN)
        .set("CASTELLAN_ADMIN_LISTEN", "127.0.0.1:0");
    // Whole seconds: events keep milliseconds, the filters compare exactly.
    let t0 = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let clock = std::sync::Arc::new(castellan::clock::ManualClock::new(t0));
    let app = env.spawn_with_clock(clock.clone()).await;
    // Hour 0: an account; hour 1: three refused admin calls; hour 2: a failed login.
    let e = email("filtered");
    app.register(&e, PASSWORD).await;
    clock.advance(std::time::Duration::from_secs(3600));
    for _ in 0..3 {
        admin(&app, Method::GET, "/admin/v1/audit", Some("wrong"), &[]).await;
    }
    clock.advance(std::time::Duration::from_secs(3600));
    app.login(&e, "a wrong password, not the real one").await;
    let t1 = clock.now() - std::time::Duration::from_secs(3600);
    let t2 = clock.now();

    let (all, next) = audit_page(&app, "limit=1000").await;
    assert_eq!(next, Value::Null, "one page holds everything");
    let (denied, _) = audit_page(&app, "kind=access_denied").await;
    assert_eq!(denied.len(), 3);
    assert!(denied.iter().all(|e| e["kind"] == "access_denied"));
    let (hour1, _) = audit_page(
        &app,
        &format!("since={}&until={}", rfc3339(t1), rfc3339(t2)),
    )
    .await;
    assert_eq!(
        hour1.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>(),
        denied.iter().map(|e| e["seq"].clone()).collect::<Vec<_>>(),
        "the hour of the refused calls holds exactly them"
    );
    let (hour0, _) = audit_page(&app, &format!("until={}", rfc3339(t1))).await;
    assert!(hour0.iter().any(|e| e["kind"] == "user_registered"));
    assert!(
        hour0
            .iter()
            .all(|e| e["kind"] != "access_denied" && e["kind"] != "login_failed")
    );
    let (later, _) = audit_page(&app, &format!("since={}", rfc3339(t2))).await;
    assert!(later.iter().any(|e| e["kind"] == "login_failed"));
    assert!(later.iter().all(|e| e["kind"] != "access_denied"));

    // Pages of two, newest first, follow `next_before` to the end.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let (page, next) = audit_page(&app, &query).await;
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|e| e["seq"].as_i64().unwrap()));
        match next.as_i64() {
            Some(before) => query = format!("limit=2&before={before}"),
            None => break,
        }
    }
    let expected: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    // Each page read is itself audited (`read_audit`): those newer events
    // are not part of what was listed first.
    seen.retain(|s| *s <= expected[0]);
    assert_eq!(seen, expected, "every event once, newest first");
    assert!(expected.windows(2).all(|w| w[0] > w[1]));
    for ev in &all {
        assert!(ev["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    }

    for bad in [
        "kind=nope",
        "kind=",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        &format!("since={}&until={}", rfc3339(t2), rfc3339(t1)),
        "before=0",
        "before=abc",
        "before=1&before=2",
    ] {
        admin(
            &app,
            Method::GET,
            &format!("/admin/v1/audit?{}", bad.replace('+', "%2B")),
            Some(ADMIN_TOKEN),
            &[],
        )
        .await
        .assert_error(400, "invalid_request");
    }
}

/// The count of one operation's query-duration histogram.
fn op_count(text: &str, op: &str) -> f64 {
    sample(
        text,
        &format!("castellan_db_query_duration_seconds_count{{op=\"{op}\"}}"),
    )
}

/// The sum of the query-duration counts over every operation.
fn all_ops_count(text: &str) -> f64 {
    castellan::store::Op::ALL
        .iter()
        .map(|op| op_count(text, op.as_str()))
        .sum()
}

// covers: ASVS-16.2.5
async fn database_metrics_move_with_the_traffic(b: Backend) {
    let mut env = TestEnv::new(b).await;
    // No cleanup pass during the test: only the requests below touch the database.
    env.with_admin()
        .set("CASTELLAN_SESSION_CLEANUP_INTERVAL", "24h");
    let app = env.spawn().await;
    let token = app.user_with_session(&email("dbmetrics")).await;
    let before = app.metrics_when_idle().await;

    const CHECKS: usize = 5;
    for _ in 0..CHECKS {
        assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    }
    let after = app.metrics().await;
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    let n = CHECKS as f64;
    // One indexed lookup per check; the session was just created, so no
    // activity write is due.
    assert_eq!(
        op_count(&after, "find_session") - op_count(&before, "find_session"),
        n
    );
    assert_eq!(
        op_count(&after, "touch_session") - op_count(&before, "touch_session"),
        0.0
    );
    // The scrape itself reserves and clears its admin-token attempt.
    let limiter = |t: &str| op_count(t, "reserve_attempt") + op_count(t, "throttle_clear");
    assert_eq!(
        all_ops_count(&after) - all_ops_count(&before) - (limiter(&after) - limiter(&before)),
        n,
        "only lookups ran"
    );
    // Each operation waited for its connection exactly once, and never in vain.
    assert_eq!(
        delta("castellan_db_pool_acquire_wait_seconds_count")
            - (limiter(&after) - limiter(&before)),
        n
    );
    assert_eq!(delta("castellan_db_pool_acquire_timeouts_total"), 0.0);
    assert!(
        delta("castellan_db_query_duration_seconds_sum{op=\"find_session\"}") > 0.0,
        "durations are measured"
    );
    // Every store operation of the setup is counted under its own name.
    for op in [
        "create_user",
        "find_credentials",
        "create_session",
        "record_login",
    ] {
        assert!(op_count(&before, op) >= 1.0, "{op} counted: {before}");
    }
    if b == Backend::Postgres {
        // Nothing is in flight once the released connections are back.
        let idle = app.metrics_when_idle().await;
        let size = sample(&idle, "castellan_db_pool_connections ");
        assert!(size >= 1.0, "{idle}");
        assert_eq!(sample(&idle, "castellan_db_pool_idle_connections "), size);
    }
    assert!(!after.contains(&token), "no session token in metrics");
}

/// The recorder keeps each histogram sample until an upkeep pass or a
/// scrape folds it in, so a serving node must run upkeep on its own: a node
/// nobody scrapes grew by about 0.7 MiB a minute under load
/// (docs/operations/scaling.md, soak). nextest runs each test in its own
/// process, so the passes counted here are this node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_nobody_scrapes_folds_its_histogram_samples() {
    let app = admin_app(Backend::Sqlite).await;
    let before = castellan::metrics::upkeep_passes();
    for _ in 0..3 {
        assert_eq!(
            app.send(Method::GET, "/health/live", None, &[])
                .await
                .status,
            200
        );
    }
    // Waits for the first pass; the deadline only bounds a failing run.
    let deadline = std::time::Instant::now() + castellan::metrics::UPKEEP_INTERVAL * 6;
    while castellan::metrics::upkeep_passes() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no upkeep pass within six intervals of serving"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Folded, not dropped: the samples are in the histogram.
    let text = admin(&app, Method::GET, "/metrics", Some(ADMIN_TOKEN), &[])
        .await
        .text;
    assert!(
        sample(
            &text,
            r#"castellan_http_request_duration_seconds_count{route="/health/live",status="2xx"}"#
        ) >= 3.0,
        "{text}"
    );
}
