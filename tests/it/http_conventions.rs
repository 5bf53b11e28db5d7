//! Conventions every response follows: error shape, request ids, security
//! headers, methods, body limits, the API description, health.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, email, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    every_response_has_a_request_id_and_security_headers,
    request_ids_are_echoed_only_when_sane,
    unsupported_methods_and_unknown_paths_get_contract_errors,
    oversized_bodies_are_refused_on_every_route,
    health_and_readiness_answer,
    production_responses_carry_hsts_and_dev_ones_do_not,
);

/// One request of each kind the public listener serves, errors included.
async fn sample_responses(app: &TestApp) -> Vec<(String, crate::helpers::Reply)> {
    let token = app.user_with_session(&email("hdr")).await;
    let mut out = Vec::new();
    out.push((
        "live".into(),
        app.send(Method::GET, "/health/live", None, &[]).await,
    ));
    out.push((
        "ready".into(),
        app.send(Method::GET, "/health/ready", None, &[]).await,
    ));
    out.push((
        "openapi".into(),
        app.send(Method::GET, "/openapi.json", None, &[]).await,
    ));
    out.push((
        "session".into(),
        app.get_bearer("/v1/session", &token).await,
    ));
    out.push((
        "401".into(),
        app.send(Method::GET, "/v1/session", None, &[]).await,
    ));
    out.push((
        "404".into(),
        app.send(Method::GET, "/nope", None, &[]).await,
    ));
    out.push((
        "405".into(),
        app.send(Method::DELETE, "/v1/login", None, &[]).await,
    ));
    out.push((
        "400".into(),
        app.post("/v1/login", serde_json::json!({})).await,
    ));
    out.push((
        "204".into(),
        app.send_bearer(Method::POST, "/v1/logout", &token, None)
            .await,
    ));
    // Last: the server answers 413 without reading the body and may close
    // the connection, which a pooled client would otherwise reuse.
    out.push((
        "413".into(),
        app.send_raw(
            Method::POST,
            "/v1/login",
            vec![b' '; 70 * 1024],
            "application/json",
        )
        .await,
    ));
    out
}

// covers: ASVS-3.4.4, ASVS-3.4.6, ASVS-3.2.1, ASVS-4.1.1, ASVS-14.3.2, ASVS-3.4.5, ASVS-13.4.6
async fn every_response_has_a_request_id_and_security_headers(b: Backend) {
    let app = spawn_app(b).await;
    for (what, r) in sample_responses(&app).await {
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no request id"));
        assert!(
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
            "{what}: generated ids are short and plain: {id}"
        );
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{what}: {csp}"
        );
        assert!(csp.contains("sandbox"), "{what}: {csp}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
        assert!(r.header("server").is_none(), "{what}: no server header");
        // The API description states its own version; nothing else names
        // castellan's version or the components it is built on.
        if what != "openapi" {
            let headers: Vec<&str> = r.headers.values().filter_map(|v| v.to_str().ok()).collect();
            for tell in [
                env!("CARGO_PKG_VERSION"),
                "axum",
                "hyper",
                "tokio",
                "sqlx",
                "rusqlite",
                "rustls",
                "PostgreSQL",
                "SQLite",
            ] {
                assert!(
                    !r.text.contains(tell) && headers.iter().all(|v| !v.contains(tell)),
                    "{what} names {tell}: {:?} {}",
                    r.headers,
                    r.text
                );
            }
        }
        if r.status == 204 {
            assert!(r.text.is_empty(), "{what}: 204 has no body");
        } else {
            assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
            serde_json::from_str::<Value>(&r.text)
                .unwrap_or_else(|_| panic!("{what}: body is JSON"));
        }
        if r.status.as_u16() >= 400 {
            assert!(
                !r.text.contains("sqlx")
                    && !r.text.contains("SELECT")
                    && !r.text.contains("panicked")
            );
        }
    }
}

// covers: ASVS-1.2.1, ASVS-1.3.3
async fn request_ids_are_echoed_only_when_sane(b: Backend) {
    let app = spawn_app(b).await;
    let r = app
        .send(
            Method::GET,
            "/health/live",
            None,
            &[("x-request-id", "trace-abc_123")],
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("trace-abc_123"));
    let long = "a".repeat(1024);
    for bad in [long.as_str(), "a b", "<x>", "a\tb"] {
        let r = app
            .send(Method::GET, "/nope", None, &[("x-request-id", bad)])
            .await;
        let id = r.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(r.json()["error"]["request_id"], id);
    }
}

// covers: ASVS-4.1.4, ASVS-13.4.4, ASVS-3.5.3, ASVS-13.4.1, ASVS-13.4.5
async fn unsupported_methods_and_unknown_paths_get_contract_errors(b: Backend) {
    let app = spawn_app(b).await;
    for (method, path) in [
        (Method::GET, "/v1/login"),
        (Method::GET, "/v1/registration"),
        (Method::GET, "/v1/logout"),
        (Method::HEAD, "/v1/logout"),
        (Method::PUT, "/v1/session"),
        (Method::PATCH, "/v1/session"),
        (Method::POST, "/health/live"),
        (Method::TRACE, "/v1/session"),
        (Method::DELETE, "/openapi.json"),
    ] {
        let r = app
            .send(
                method.clone(),
                path,
                None,
                &[("x-echo-me", "secret-header")],
            )
            .await;
        assert_eq!(r.status, 405, "{method} {path}");
        if method != Method::HEAD {
            r.assert_error(405, "method_not_allowed");
            assert!(!r.text.contains("secret-header"), "TRACE echoes nothing");
        }
    }
    for path in [
        "/",
        "/.git/HEAD",
        "/.git/config",
        "/.svn/entries",
        "/metrics",
        "/admin/v1/users",
        "/static/",
        "/debug",
    ] {
        app.send(Method::GET, path, None, &[])
            .await
            .assert_error(404, "not_found");
    }
}

// covers: ASVS-15.2.2
async fn oversized_bodies_are_refused_on_every_route(b: Backend) {
    let app = spawn_app(b).await;
    for path in ["/v1/registration", "/v1/login", "/v1/logout"] {
        app.send_raw(
            Method::POST,
            path,
            vec![b'{'; 100 * 1024],
            "application/json",
        )
        .await
        .assert_error(413, "payload_too_large");
    }
}

// covers: ASVS-13.4.5
async fn health_and_readiness_answer(b: Backend) {
    let app = spawn_app(b).await;
    let live = app.send(Method::GET, "/health/live", None, &[]).await;
    assert_eq!(live.status, 200);
    let ready = app.send(Method::GET, "/health/ready", None, &[]).await;
    assert_eq!(ready.status, 200);
    for r in [live, ready] {
        assert_eq!(
            r.json(),
            serde_json::json!({"status": "ok"}),
            "no versions, hosts or DB details"
        );
    }
}

/// The routes of the contract that this build serves.
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/registration"),
    ("post", "/v1/login"),
    ("post", "/v1/logout"),
    ("get", "/v1/session"),
    ("get", "/v1/sessions"),
    ("delete", "/v1/sessions"),
    ("delete", "/v1/sessions/{id}"),
    ("post", "/v1/reauthenticate"),
    ("post", "/v1/login/mfa"),
    ("post", "/v1/mfa/totp/enroll"),
    ("post", "/v1/mfa/totp/activate"),
    ("delete", "/v1/mfa/totp"),
    ("get", "/v1/mfa/backup-codes"),
    ("post", "/v1/mfa/backup-codes/regenerate"),
    ("post", "/v1/password/change"),
    ("post", "/v1/password/reset/request"),
    ("post", "/v1/password/reset/confirm"),
    ("post", "/v1/email/verification/request"),
    ("post", "/v1/email/verification/confirm"),
    ("get", "/v1/forward-auth"),
    ("post", "/v1/passkeys/registration/start"),
    ("post", "/v1/passkeys/registration/finish"),
    ("get", "/v1/passkeys"),
    ("patch", "/v1/passkeys/{id}"),
    ("delete", "/v1/passkeys/{id}"),
    ("post", "/v1/login/passkey/start"),
    ("post", "/v1/login/passkey/finish"),
    ("post", "/v1/login/passkey/mfa/start"),
    ("post", "/v1/login/passkey/mfa/finish"),
    ("post", "/v1/login/passkey/reauthenticate/start"),
    ("post", "/v1/login/passkey/reauthenticate/finish"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
];

// covers: ASVS-2.1.1, ASVS-6.4.2
#[tokio::test]
async fn openapi_describes_every_route_and_constrains_every_input() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app.send(Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in CONTRACT_ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from openapi.json"
        );
    }
    let described: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        CONTRACT_ROUTES.len(),
        "no undocumented or extra routes"
    );
    // Every request property says what a valid value looks like.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let used_as_body = r.text.contains(&format!("\"requestBody\":{{\"content\":{{\"application/json\":{{\"schema\":{{\"$ref\":\"#/components/schemas/{name}\""));
        if !used_as_body {
            continue;
        }
        for (prop, spec) in schema["properties"].as_object().unwrap() {
            let constrained = [
                "maxLength",
                "pattern",
                "format",
                "enum",
                "minimum",
                "maximum",
                "maxProperties",
            ]
            .iter()
            .any(|k| spec.get(*k).is_some());
            assert!(constrained, "{name}.{prop} has no constraint: {spec}");
            assert!(!prop.contains("hint") && !prop.contains("question"));
        }
    }
}

// covers: ASVS-3.4.1
async fn production_responses_carry_hsts_and_dev_ones_do_not(b: Backend) {
    let mut env = crate::helpers::TestEnv::new(b).await;
    env.set("CASTELLAN_PROFILE", "production")
        .set("CASTELLAN_BEHIND_TLS_PROXY", "true")
        .set("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1/32")
        .set("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com");
    let production = env.spawn().await;
    for (what, r) in sample_responses(&production).await {
        let hsts = r
            .header("strict-transport-security")
            .unwrap_or_else(|| panic!("{what} ({}): no HSTS", r.status));
        let max_age: u64 = hsts
            .split(';')
            .find_map(|part| part.trim().strip_prefix("max-age="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {hsts}"));
        assert!(max_age >= 31_536_000, "{what}: {hsts}");
        assert!(hsts.contains("includeSubDomains"), "{what}: {hsts}");
    }
    // In dev castellan usually runs on plain http://127.0.0.1: no HSTS.
    let dev = spawn_app(b).await;
    for (what, r) in sample_responses(&dev).await {
        assert!(r.header("strict-transport-security").is_none(), "{what}");
    }
}
