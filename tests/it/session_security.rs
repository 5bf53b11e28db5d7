//! Session lifecycle: listing, ending, re-authentication and rotation, the
//! per-user cap, client addresses, several nodes, cleanup.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestEnv, email, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    users_list_their_own_sessions_with_one_current,
    another_users_session_is_not_found_and_untouched,
    ending_other_sessions_needs_the_reauthentication_window,
    reauthentication_rotates_the_token_and_kills_the_old_one,
    the_session_cap_ends_the_oldest_session,
    client_ip_comes_from_the_socket_unless_a_proxy_is_trusted,
    the_cleanup_job_deletes_ended_sessions_only,
    require_mfa_confines_users_without_totp,
);

async fn session_id(app: &crate::helpers::TestApp, token: &str) -> String {
    app.get_bearer("/v1/session", token).await.json()["session"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

// covers: ASVS-7.5.2
async fn users_list_their_own_sessions_with_one_current(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("list");
    let first = app.user_with_session(&e).await;
    let r = app
        .send(
            Method::POST,
            "/v1/login",
            Some(json!({"email": e, "password": PASSWORD})),
            &[("user-agent", "second-device/1.0")],
        )
        .await;
    let second = r.json()["session_token"].as_str().unwrap().to_string();
    app.user_with_session(&email("stranger")).await;
    let listed = app.get_bearer("/v1/sessions", &second).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let sessions = listed.json()["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "only the caller's own sessions");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], session_id(&app, &second).await);
    assert_eq!(current[0]["user_agent"], "second-device/1.0");
    for s in &sessions {
        assert_eq!(s["ip"], "127.0.0.1");
        assert!(s["last_seen_at"].is_string() && s["idle_expires_at"].is_string());
    }
    assert_eq!(
        app.get_bearer("/v1/sessions", &first).await.json()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

// covers: ASVS-8.2.2, ASVS-16.3.2, ASVS-1.1.1
async fn another_users_session_is_not_found_and_untouched(b: Backend) {
    let app = spawn_app(b).await;
    let mine = app.user_with_session(&email("a")).await;
    let theirs = app.user_with_session(&email("b")).await;
    let their_id = session_id(&app, &theirs).await;
    app.send_bearer(
        Method::DELETE,
        &format!("/v1/sessions/{their_id}"),
        &mine,
        None,
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(
        app.get_bearer("/v1/session", &theirs).await.status,
        200,
        "their session still works"
    );
    let unknown = uuid::Uuid::new_v4();
    app.send_bearer(
        Method::DELETE,
        &format!("/v1/sessions/{unknown}"),
        &mine,
        None,
    )
    .await
    .assert_error(404, "not_found");
    for bad in ["not-a-uuid", "%2561bc", "123"] {
        let msg = app
            .send_bearer(Method::DELETE, &format!("/v1/sessions/{bad}"), &mine, None)
            .await
            .assert_error(400, "invalid_request");
        assert!(msg.contains("id"), "{msg}");
    }
    assert!(
        app.has_event("access_denied", "reason", "session_not_owned")
            .await
    );
}

// covers: ASVS-7.5.2, ASVS-7.5.1, ASVS-7.4.3, ASVS-2.3.1
async fn ending_other_sessions_needs_the_reauthentication_window(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_REAUTH_WINDOW", "1s");
    let app = env.spawn().await;
    let e = email("window");
    let current = app.user_with_session(&e).await;
    let other = app.token_for(&e, PASSWORD).await;
    let third = app.token_for(&e, PASSWORD).await;
    let other_id = session_id(&app, &other).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    app.send_bearer(
        Method::DELETE,
        &format!("/v1/sessions/{other_id}"),
        &current,
        None,
    )
    .await
    .assert_error(403, "reauthentication_required");
    app.send_bearer(Method::DELETE, "/v1/sessions", &current, None)
        .await
        .assert_error(403, "reauthentication_required");
    assert_eq!(
        app.get_bearer("/v1/session", &other).await.status,
        200,
        "nothing ended"
    );
    // Ending one's own current session needs no window.
    let own_id = session_id(&app, &third).await;
    assert_eq!(
        app.send_bearer(
            Method::DELETE,
            &format!("/v1/sessions/{own_id}"),
            &third,
            None
        )
        .await
        .status,
        204
    );
    app.get_bearer("/v1/session", &third)
        .await
        .assert_error(401, "unauthenticated");
    // Wrong password: 400 (the caller's session is fine), nothing rotates.
    app.send_bearer(
        Method::POST,
        "/v1/reauthenticate",
        &current,
        Some(json!({"password": "not my password at all"})),
    )
    .await
    .assert_error(400, "invalid_credentials");
    assert_eq!(app.get_bearer("/v1/session", &current).await.status, 200);
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/reauthenticate",
            &current,
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = r.json()["session_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.send_bearer(
            Method::DELETE,
            &format!("/v1/sessions/{other_id}"),
            &fresh,
            None
        )
        .await
        .status,
        204
    );
    app.get_bearer("/v1/session", &other)
        .await
        .assert_error(401, "unauthenticated");
    let fourth = app.token_for(&e, PASSWORD).await;
    assert_eq!(
        app.send_bearer(Method::DELETE, "/v1/sessions", &fresh, None)
            .await
            .status,
        204
    );
    app.get_bearer("/v1/session", &fourth)
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(
        app.get_bearer("/v1/session", &fresh).await.status,
        200,
        "the current one stays"
    );
    let kinds = app.event_kinds().await;
    assert!(kinds.contains(&"reauthentication_failed".to_string()));
    assert!(kinds.contains(&"reauthenticated".to_string()));
}

// covers: ASVS-7.2.4, N63B-18
async fn reauthentication_rotates_the_token_and_kills_the_old_one(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("rotate");
    let old = app.user_with_session(&e).await;
    let before = app.get_bearer("/v1/session", &old).await.json();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/reauthenticate",
            &old,
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    let new = body["session_token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_ne!(
        body["session"]["id"], before["session"]["id"],
        "a new session id"
    );
    assert_eq!(body["session"]["aal"], "aal1");
    assert!(r.set_cookies()[0].starts_with(&format!("__Host-castellan_session={new};")));
    app.get_bearer("/v1/session", &old)
        .await
        .assert_error(401, "unauthenticated");
    let after = app.get_bearer("/v1/session", &new).await.json();
    assert_ne!(
        after["csrf_token"], before["csrf_token"],
        "the CSRF token changes with the session"
    );
    // Documented: re-authentication restarts both timers (NIST rev 4).
    assert!(
        after["session"]["expires_at"].as_str().unwrap()
            > before["session"]["expires_at"].as_str().unwrap()
    );
    assert!(
        after["session"]["authenticated_at"].as_str().unwrap()
            > before["session"]["authenticated_at"].as_str().unwrap()
    );
    // The old token cannot re-authenticate either.
    app.send_bearer(
        Method::POST,
        "/v1/reauthenticate",
        &old,
        Some(json!({"password": PASSWORD})),
    )
    .await
    .assert_error(401, "unauthenticated");
    assert!(
        app.event_kinds()
            .await
            .contains(&"session_rotated".to_string())
    );
}

// covers: ASVS-7.1.2
async fn the_session_cap_ends_the_oldest_session(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_SESSION_MAX_PER_USER", "3");
    let app = env.spawn().await;
    let e = email("cap");
    let mut tokens = vec![app.user_with_session(&e).await];
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokens.push(app.token_for(&e, PASSWORD).await);
    }
    app.get_bearer("/v1/session", &tokens[0])
        .await
        .assert_error(401, "unauthenticated");
    for t in &tokens[1..] {
        assert_eq!(app.get_bearer("/v1/session", t).await.status, 200);
    }
    assert_eq!(
        app.get_bearer("/v1/sessions", &tokens[3]).await.json()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(app.has_event("session_revoked", "by", "session_cap").await);
}

// covers: ASVS-4.1.3, ASVS-15.3.4
async fn client_ip_comes_from_the_socket_unless_a_proxy_is_trusted(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("xff");
    app.register(&e, PASSWORD).await;
    let body = json!({"email": e, "password": PASSWORD});
    let r = app
        .send(
            Method::POST,
            "/v1/login",
            Some(body.clone()),
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(
        r.json()["session"]["ip"],
        "127.0.0.1",
        "no trusted proxy: the header is ignored"
    );
    app.shutdown().await;
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1/32");
    let app = env.spawn().await;
    app.register(&e, PASSWORD).await;
    let r = app
        .send(
            Method::POST,
            "/v1/login",
            Some(body),
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7")],
        )
        .await;
    assert_eq!(
        r.json()["session"]["ip"],
        "198.51.100.7",
        "right-most untrusted hop"
    );
    let events = app.events(10).await;
    assert!(
        events
            .iter()
            .filter(|ev| ev.kind == "login_succeeded")
            .all(|ev| ev.ip == "198.51.100.7")
    );
}

async fn the_cleanup_job_deletes_ended_sessions_only(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_SESSION_LIFETIME", "1s")
        .set("CASTELLAN_SESSION_IDLE_TIMEOUT", "1s")
        .set("CASTELLAN_SESSION_CLEANUP_INTERVAL", "1h");
    let app = env.spawn().await;
    let e = email("cleanup");
    let old = app.user_with_session(&e).await;
    app.token_for(&e, PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = app.token_for(&e, PASSWORD).await;
    let removed = castellan::jobs::session_cleanup::run_once(&app.auth)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    app.get_bearer("/v1/session", &old)
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(app.get_bearer("/v1/session", &fresh).await.status, 200);
    assert_eq!(
        castellan::jobs::session_cleanup::run_once(&app.auth)
            .await
            .unwrap(),
        0
    );
    let expired = app
        .event_kinds()
        .await
        .iter()
        .filter(|k| *k == "session_expired")
        .count();
    assert_eq!(expired, 2);
}

// covers: ASVS-6.3.3
async fn require_mfa_confines_users_without_totp(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_REQUIRE_MFA", "true");
    let app = env.spawn().await;
    let token = app.user_with_session(&email("mustenrol")).await;
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    app.get_bearer("/v1/sessions", &token)
        .await
        .assert_error(403, "mfa_required");
    app.send_bearer(Method::DELETE, "/v1/sessions", &token, None)
        .await
        .assert_error(403, "mfa_required");
    app.send_bearer(
        Method::POST,
        "/v1/reauthenticate",
        &token,
        Some(json!({"password": PASSWORD})),
    )
    .await
    .assert_error(403, "mfa_required");
    assert_eq!(
        app.send_bearer(Method::POST, "/v1/logout", &token, None)
            .await
            .status,
        204
    );
}

// covers: ASVS-14.2.2, ASVS-7.4.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_node_is_refused_on_another_at_once() {
    let env = TestEnv::new(Backend::Postgres).await;
    let node_a = env.spawn().await;
    let node_b = env.spawn().await;
    let token = node_a.user_with_session(&email("nodes")).await;
    assert_eq!(node_b.get_bearer("/v1/session", &token).await.status, 200);
    assert_eq!(
        node_a
            .send_bearer(Method::POST, "/v1/logout", &token, None)
            .await
            .status,
        204
    );
    node_b
        .get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
}
