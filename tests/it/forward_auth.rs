//! `GET /v1/forward-auth` for reverse proxies, on both backends.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, TestEnv, email};
use crate::on_both_backends;

const BASE: &str = "http://127.0.0.1:8080";

async fn app(b: Backend) -> crate::helpers::TestApp {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_UI_RETURN_ORIGINS", "https://app.example.com");
    env.spawn().await
}

fn forwarded<'a>(host: &'a str, uri: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", host),
        ("x-forwarded-uri", uri),
    ]
}

async fn forward_auth_reports_the_identity_of_a_live_session(b: Backend) {
    let app = app(b).await;
    let address = email("fa");
    let token = app.user_with_session(&address).await;
    let r = app.get_bearer("/v1/forward-auth", &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-castellan-email"), Some(address.as_str()));
    assert_eq!(r.header("x-castellan-email-verified"), Some("false"));
    assert_eq!(r.header("x-castellan-aal"), Some("aal1"));
    let me = app.get_bearer("/v1/session", &token).await.json();
    assert_eq!(
        r.header("x-castellan-user-id"),
        me["user"]["id"].as_str(),
        "the user id header names the session's user"
    );
    // The cookie works too (the way browsers arrive through a proxy).
    let cookie = format!("__Host-castellan_session={token}");
    let r = app
        .send(
            Method::GET,
            "/v1/forward-auth",
            None,
            &[("cookie", &cookie)],
        )
        .await;
    assert_eq!(r.status, 200);
    // After logout the same token is refused.
    app.send_bearer(Method::POST, "/v1/logout", &token, None)
        .await;
    let r = app.get_bearer("/v1/forward-auth", &token).await;
    r.assert_error(401, "unauthenticated");
    app.shutdown().await;
}

// covers: ASVS-3.7.2
async fn forward_auth_refusals_redirect_only_to_allowed_origins(b: Backend) {
    let app = app(b).await;
    let r = app
        .send(
            Method::GET,
            "/v1/forward-auth",
            None,
            &forwarded("app.example.com", "/a?b=1"),
        )
        .await;
    r.assert_error(401, "unauthenticated");
    let target = r.header("x-castellan-redirect").unwrap().to_string();
    assert!(
        target.starts_with(&format!("{BASE}/ui/sign-in?return_to=")),
        "{target}"
    );
    assert!(target.contains("app%2Eexample%2Ecom"), "{target}");
    let r = app
        .send(
            Method::GET,
            "/v1/forward-auth?redirect=1",
            None,
            &forwarded("app.example.com", "/a"),
        )
        .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(target.replace("%2Fa%3Fb%3D1", "%2Fa").as_str())
    );
    for host in [
        "evil.test",
        "app.example.com.evil.test",
        "app.example.com@evil.test",
        "evil.test\\@app.example.com",
    ] {
        let r = app
            .send(
                Method::GET,
                "/v1/forward-auth?redirect=1",
                None,
                &forwarded(host, "/x"),
            )
            .await;
        assert_eq!(r.status, 302, "{host}");
        assert_eq!(
            r.header("location"),
            Some(format!("{BASE}/ui/sign-in").as_str()),
            "{host}"
        );
    }
    let r = app
        .send(
            Method::GET,
            "/v1/forward-auth?redirect=1",
            None,
            &[("x-original-url", "//evil.test/x")],
        )
        .await;
    assert_eq!(
        r.header("location"),
        Some(format!("{BASE}/ui/sign-in").as_str())
    );
    let r = app
        .send(Method::GET, "/v1/forward-auth?require=admin", None, &[])
        .await;
    r.assert_error(400, "invalid_request");
    app.shutdown().await;
}

async fn forward_auth_applies_requirements_and_refuses_pending_sessions(b: Backend) {
    let app = app(b).await;
    let address = email("fa-mfa");
    let token = app.user_with_session(&address).await;
    // aal1 session, aal2 required: 403, or a redirect to the MFA step.
    let r = app
        .get_bearer("/v1/forward-auth?require=aal2", &token)
        .await;
    r.assert_error(403, "mfa_required");
    let auth = format!("Bearer {token}");
    let mut headers = forwarded("app.example.com", "/secure");
    headers.push(("authorization", &auth));
    let r = app
        .send(
            Method::GET,
            "/v1/forward-auth?require=aal2&redirect=1",
            None,
            &headers,
        )
        .await;
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("{BASE}/ui/mfa?return_to="))
    );
    let r = app
        .get_bearer("/v1/forward-auth?require=verified_email", &token)
        .await;
    r.assert_error(403, "forbidden");
    // With TOTP on, the activating session is aal2 and passes.
    let totp = app.enable_totp(&token).await;
    let r = app
        .get_bearer("/v1/forward-auth?require=aal2", &token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-castellan-aal"), Some("aal2"));
    // A password login waiting for its second factor counts as no session.
    let pending = app.token_for(&address, crate::helpers::PASSWORD).await;
    let r = app.get_bearer("/v1/forward-auth", &pending).await;
    r.assert_error(401, "unauthenticated");
    // After the MFA step the new token passes with aal2.
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/login/mfa",
            &pending,
            Some(json!({"backup_code": totp.backup_codes[0]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let full = r.json()["session_token"].as_str().unwrap().to_string();
    let r = app.get_bearer("/v1/forward-auth?require=aal2", &full).await;
    assert_eq!(r.status, 200);
    app.shutdown().await;
}

on_both_backends!(
    forward_auth_reports_the_identity_of_a_live_session,
    forward_auth_refusals_redirect_only_to_allowed_origins,
    forward_auth_applies_requirements_and_refuses_pending_sessions,
);
