//! The session check, logout, cookies and CSRF, expiry.

use std::time::Duration;

use reqwest::Method;

use crate::helpers::{Backend, TestEnv, email, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    session_reports_user_session_and_csrf_token,
    bearer_and_cookie_both_work_and_queries_never_do,
    garbage_and_unknown_tokens_are_unauthenticated,
    logout_kills_the_token_at_once_and_clears_the_cookie,
    cookie_writes_need_the_session_csrf_token,
    idle_timeout_ends_unused_sessions_and_activity_keeps_them,
    absolute_lifetime_ends_sessions_regardless_of_activity,
);

// covers: ASVS-7.2.1, ASVS-3.2.1
async fn session_reports_user_session_and_csrf_token(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("me");
    let token = app.user_with_session(&e).await;
    let r = app
        .send(
            Method::GET,
            "/v1/session",
            None,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("accept", "text/html"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "JSON even when HTML is asked for"
    );
    let body = r.json();
    assert_eq!(body["user"]["email"], e);
    assert_eq!(body["session"]["current"], true);
    let csrf = body["csrf_token"].as_str().unwrap();
    assert!(csrf.len() >= 43, "at least 256 bits: {csrf}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

// covers: ASVS-14.2.1, ASVS-7.2.1
async fn bearer_and_cookie_both_work_and_queries_never_do(b: Backend) {
    let app = spawn_app(b).await;
    let token = app.user_with_session(&email("both")).await;
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    let cookie = format!("__Host-castellan_session={token}");
    assert_eq!(
        app.send(Method::GET, "/v1/session", None, &[("cookie", &cookie)])
            .await
            .status,
        200
    );
    for q in ["token", "session_token", "access_token"] {
        app.send(Method::GET, &format!("/v1/session?{q}={token}"), None, &[])
            .await
            .assert_error(401, "unauthenticated");
    }
    // A non-bearer Authorization header is refused even with a good cookie.
    app.send(
        Method::GET,
        "/v1/session",
        None,
        &[
            ("authorization", &format!("Basic {token}")),
            ("cookie", &cookie),
        ],
    )
    .await
    .assert_error(401, "unauthenticated");
}

// covers: ASVS-7.2.1, ASVS-11.5.1
async fn garbage_and_unknown_tokens_are_unauthenticated(b: Backend) {
    let app = spawn_app(b).await;
    let token = app.user_with_session(&email("garbage")).await;
    let session_id = app.get_bearer("/v1/session", &token).await.json()["session"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let never_issued = format!("cst_{}", "A".repeat(43));
    let other_instance = castellan::domain::SessionToken::generate()
        .unwrap()
        .expose()
        .to_string();
    for bad in [
        String::new(),
        "cst_".into(),
        flipped,
        never_issued,
        other_instance,
        session_id,
        "x".repeat(8 * 1024),
        format!("{token} {token}"),
    ] {
        app.get_bearer("/v1/session", &bad)
            .await
            .assert_error(401, "unauthenticated");
    }
    app.send(Method::GET, "/v1/session", None, &[])
        .await
        .assert_error(401, "unauthenticated");
}

// covers: ASVS-7.4.1, ASVS-14.3.1, N63B-16
async fn logout_kills_the_token_at_once_and_clears_the_cookie(b: Backend) {
    let app = spawn_app(b).await;
    let token = app.user_with_session(&email("bye")).await;
    let r = app
        .send_bearer(Method::POST, "/v1/logout", &token, None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty());
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1);
    assert!(
        cookies[0].starts_with("__Host-castellan_session=;") && cookies[0].contains("Max-Age=0"),
        "{cookies:?}"
    );
    assert_eq!(
        r.header("clear-site-data"),
        Some("\"cache\", \"cookies\", \"storage\"")
    );
    app.get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
    let cookie = format!("__Host-castellan_session={token}");
    app.send(Method::GET, "/v1/session", None, &[("cookie", &cookie)])
        .await
        .assert_error(401, "unauthenticated");
    app.send_bearer(Method::POST, "/v1/logout", &token, None)
        .await
        .assert_error(401, "unauthenticated");
    assert!(app.event_kinds().await.contains(&"logout".to_string()));
    // The row is gone, not just flagged.
    let user = app
        .auth
        .store()
        .find_credentials(&app_user_key(&app).await)
        .await
        .unwrap();
    assert!(user.is_some());
}

async fn app_user_key(app: &crate::helpers::TestApp) -> String {
    let events = app.events(100).await;
    let id = events.iter().find_map(|e| e.user_id).unwrap();
    let user = app.auth.store().get_user(id).await.unwrap().unwrap();
    assert!(
        app.auth.store().list_sessions(id).await.unwrap().is_empty(),
        "logout deleted the row"
    );
    user.email.key().to_string()
}

// covers: ASVS-3.5.1, N63B-16
async fn cookie_writes_need_the_session_csrf_token(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("csrf");
    let token = app.user_with_session(&e).await;
    let other = app.token_for(&e, crate::helpers::PASSWORD).await;
    let cookie = format!("__Host-castellan_session={token}");
    let csrf = app.get_bearer("/v1/session", &token).await.json()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let other_csrf = app.get_bearer("/v1/session", &other).await.json()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(csrf, other_csrf);
    for bad in [None, Some(""), Some(other_csrf.as_str()), Some("x")] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(v) = bad {
            headers.push(("x-csrf-token", v));
        }
        app.send(Method::POST, "/v1/logout", None, &headers)
            .await
            .assert_error(403, "forbidden");
        assert_eq!(
            app.get_bearer("/v1/session", &token).await.status,
            200,
            "nothing changed"
        );
    }
    // Reads with a cookie need no token; writes with a bearer need none.
    assert_eq!(
        app.send(Method::GET, "/v1/session", None, &[("cookie", &cookie)])
            .await
            .status,
        200
    );
    let r = app
        .send(
            Method::POST,
            "/v1/logout",
            None,
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        app.send_bearer(Method::POST, "/v1/logout", &other, None)
            .await
            .status,
        204
    );
}

// covers: ASVS-7.3.1, N63B-18
async fn idle_timeout_ends_unused_sessions_and_activity_keeps_them(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_SESSION_IDLE_TIMEOUT", "2s");
    let app = env.spawn().await;
    let e = email("idle");
    let active = app.user_with_session(&e).await;
    let idle = app.token_for(&e, crate::helpers::PASSWORD).await;
    let first =
        app.get_bearer("/v1/session", &active).await.json()["session"]["idle_expires_at"].clone();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            app.get_bearer("/v1/session", &active).await.status,
            200,
            "activity keeps it alive"
        );
    }
    let later =
        app.get_bearer("/v1/session", &active).await.json()["session"]["idle_expires_at"].clone();
    assert_ne!(first, later, "idle_expires_at moves forward with activity");
    app.get_bearer("/v1/session", &idle)
        .await
        .assert_error(401, "unauthenticated");
}

// covers: ASVS-7.3.2, N63B-18
async fn absolute_lifetime_ends_sessions_regardless_of_activity(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_SESSION_LIFETIME", "3s")
        .set("CASTELLAN_SESSION_IDLE_TIMEOUT", "2s");
    let app = env.spawn().await;
    let token = app.user_with_session(&email("life")).await;
    let first = app.get_bearer("/v1/session", &token).await.json()["session"]["expires_at"].clone();
    let mut ended = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = app.get_bearer("/v1/session", &token).await;
        if r.status == 401 {
            ended = true;
            break;
        }
        assert_eq!(
            r.json()["session"]["expires_at"],
            first,
            "expires_at never moves"
        );
    }
    assert!(
        ended,
        "the session ended at its absolute lifetime despite activity"
    );
    app.get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
}
