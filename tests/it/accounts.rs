//! Registration and password login.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, TestEnv, email, spawn_app};
use crate::on_both_backends;

on_both_backends!(
    registration_creates_a_user_with_exactly_the_contract_fields,
    registration_refuses_taken_emails_case_insensitively,
    registration_validates_email_and_password,
    registration_refuses_mass_assignment_and_bad_json,
    login_issues_a_session_token_and_cookie,
    login_failures_look_the_same_for_unknown_and_wrong,
    login_verifies_the_whole_password_exactly,
    stored_hash_is_upgraded_at_next_login,
    saturated_hashing_answers_503_and_session_checks_go_on,
);

// covers: ASVS-15.3.1, ASVS-2.2.1
async fn registration_creates_a_user_with_exactly_the_contract_fields(b: Backend) {
    let app = spawn_app(b).await;
    let r = app.register("  Ada.Lovelace@Example.com ", PASSWORD).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let user = &r.json()["user"];
    let mut keys: Vec<_> = user.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["created_at", "email", "email_verified", "id", "mfa_enabled"]
    );
    assert_eq!(
        user["email"], "Ada.Lovelace@Example.com",
        "trimmed, case kept"
    );
    assert_eq!(user["email_verified"], false);
    assert_eq!(user["mfa_enabled"], false);
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    let created = user["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z'), "UTC RFC 3339: {created}");
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert!(!r.text.contains("argon2"), "no hash in responses");
    assert_eq!(app.event_kinds().await, ["user_registered"]);
}

// covers: ASVS-6.3.8
async fn registration_refuses_taken_emails_case_insensitively(b: Backend) {
    let app = spawn_app(b).await;
    assert_eq!(app.register("bob@example.com", PASSWORD).await.status, 201);
    for again in ["bob@example.com", "BOB@Example.COM", " bob@example.com "] {
        app.register(again, PASSWORD)
            .await
            .assert_error(409, "conflict");
    }
}

// covers: ASVS-6.2.1, ASVS-6.2.9, ASVS-2.2.1, ASVS-1.3.11, N63B-01, N63B-02
async fn registration_validates_email_and_password(b: Backend) {
    let app = spawn_app(b).await;
    for bad in [
        "",
        "no-at-sign",
        "a@b",
        "a@example.com\r\nBcc: x@evil.test",
        "a%40example.com",
        &format!("{}@example.com", "a".repeat(250)),
    ] {
        let msg = app
            .register(bad, PASSWORD)
            .await
            .assert_error(400, "invalid_request");
        assert!(msg.contains("email"), "message names the field: {msg}");
    }
    let msg = app
        .register(&email("short"), &"a1 b".repeat(3))
        .await
        .assert_error(400, "weak_password");
    assert!(msg.contains("at least 15"), "{msg}");
    app.register(&email("seven"), "abcdefg")
        .await
        .assert_error(400, "weak_password");
    app.register(&email("long"), &"x".repeat(1025))
        .await
        .assert_error(400, "weak_password");
    // 14 characters refused, 15 and 64 and 256 accepted; emoji count once.
    app.register(&email("p14"), "abcdefghijklmn")
        .await
        .assert_error(400, "weak_password");
    for ok in [
        random_password(15),
        random_password(64),
        random_password(256),
        "🦀🐙🦑🐠🐡🦐🦞🐚🪼🦈🐋🐳🐬🦭🐊".to_string(),
    ] {
        let r = app.register(&email("ok"), &ok).await;
        assert_eq!(r.status, 201, "{ok}: {}", r.text);
    }
    let taken_before = app.event_kinds().await.len();
    assert_eq!(
        taken_before, 4,
        "only the four accepted registrations were recorded"
    );
}

// covers: ASVS-15.3.3, ASVS-1.5.2, ASVS-15.3.5, ASVS-6.4.2, ASVS-3.5.2
async fn registration_refuses_mass_assignment_and_bad_json(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("mass");
    for extra in [
        json!({"email": e, "password": PASSWORD, "email_verified": true}),
        json!({"email": e, "password": PASSWORD, "mfa_enabled": true}),
        json!({"email": e, "password": PASSWORD, "id": "00000000-0000-0000-0000-000000000000"}),
        json!({"email": e, "password": PASSWORD, "password_hint": "my cat"}),
    ] {
        let msg = app
            .post("/v1/registration", extra)
            .await
            .assert_error(400, "invalid_request");
        assert!(msg.contains("unknown field"), "{msg}");
    }
    for wrong_type in [
        json!({"email": null, "password": PASSWORD}),
        json!({"email": e, "password": ["x"]}),
        json!({"email": 12, "password": PASSWORD}),
        json!({"email": e}),
        json!([]),
    ] {
        app.post("/v1/registration", wrong_type)
            .await
            .assert_error(400, "invalid_request");
    }
    let raw = |body: &'static str, ct: &'static str| {
        let app = &app;
        async move {
            app.send_raw(
                Method::POST,
                "/v1/registration",
                body.as_bytes().to_vec(),
                ct,
            )
            .await
        }
    };
    raw("{\"email\": ", "application/json")
        .await
        .assert_error(400, "invalid_request");
    raw(
        "{\"email\":\"a@example.com\",\"email\":\"b@example.com\",\"password\":\"correct horse battery\"}",
        "application/json",
    )
    .await
    .assert_error(400, "invalid_request");
    raw(
        "{\"email\":\"a@example.com\",\"password\":\"correct horse battery\"}",
        "text/plain",
    )
    .await
    .assert_error(415, "unsupported_media_type");
    raw(
        "email=a@example.com&password=x",
        "application/x-www-form-urlencoded",
    )
    .await
    .assert_error(415, "unsupported_media_type");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    app.send_raw(
        Method::POST,
        "/v1/registration",
        deep.into_bytes(),
        "application/json",
    )
    .await
    .assert_error(400, "invalid_request");
    let big = format!(
        "{{\"email\":\"{}\",\"password\":\"x\"}}",
        "a".repeat(100 * 1024)
    );
    app.send_raw(
        Method::POST,
        "/v1/registration",
        big.into_bytes(),
        "application/json",
    )
    .await
    .assert_error(413, "payload_too_large");
    assert!(app.event_kinds().await.is_empty(), "nothing was stored");
}

// covers: ASVS-7.2.2, ASVS-7.2.3, ASVS-3.3.1, ASVS-3.3.3, ASVS-3.3.4, ASVS-14.3.2, N63B-16, N63B-17
async fn login_issues_a_session_token_and_cookie(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("login");
    app.register(&e, PASSWORD).await;
    let r = app.login(&e, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    let token = body["session_token"].as_str().unwrap();
    assert!(token.starts_with("cst_") && token.len() == 47, "{token}");
    assert!(
        token[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    let session = &body["session"];
    for field in [
        "id",
        "aal",
        "mfa_pending",
        "created_at",
        "authenticated_at",
        "last_seen_at",
        "idle_expires_at",
        "expires_at",
        "user_agent",
        "ip",
        "current",
    ] {
        assert!(session.get(field).is_some(), "session.{field} missing");
    }
    assert_eq!(session.as_object().unwrap().len(), 11);
    assert_eq!(session["aal"], "aal1");
    assert_eq!(session["mfa_pending"], false);
    assert_eq!(session["current"], true);
    assert_eq!(session["ip"], "127.0.0.1");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let c = &cookies[0];
    assert!(
        c.starts_with(&format!("__Host-castellan_session={token};")),
        "{c}"
    );
    for attr in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=43200",
    ] {
        assert!(c.split("; ").any(|a| a == attr), "{attr} missing in {c}");
    }
    assert!(!c.contains("Domain"), "{c}");
    // A second login gives a different token.
    let again = app.login(&e, PASSWORD).await.json()["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(again, token);
    let kinds = app.event_kinds().await;
    assert_eq!(
        kinds,
        [
            "user_registered",
            "session_created",
            "login_succeeded",
            "session_created",
            "login_succeeded"
        ]
    );
}

// covers: ASVS-6.3.8, ASVS-16.3.1, ASVS-6.3.2
async fn login_failures_look_the_same_for_unknown_and_wrong(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("enum");
    app.register(&e, PASSWORD).await;
    let wrong = app.login(&e, "not the right password at all").await;
    let unknown = app.login(&email("nobody"), PASSWORD).await;
    wrong.assert_error(401, "invalid_credentials");
    unknown.assert_error(401, "invalid_credentials");
    let strip = |r: &crate::helpers::Reply| {
        let mut v = r.json();
        v["error"]["request_id"] = json!("");
        v
    };
    assert_eq!(strip(&wrong), strip(&unknown));
    let names = |r: &crate::helpers::Reply| {
        let mut n: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.to_string())
            .filter(|k| k != "date")
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&wrong), names(&unknown));
    assert!(wrong.set_cookies().is_empty());
    for default_account in ["admin@example.com", "root@example.com"] {
        app.login(default_account, "admin")
            .await
            .assert_error(401, "invalid_credentials");
    }
    let events = app.events(10).await;
    let failed: Vec<_> = events.iter().filter(|e| e.kind == "login_failed").collect();
    assert_eq!(failed.len(), 4);
    let reasons: Vec<_> = failed
        .iter()
        .map(|e| e.detail["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons.contains(&"wrong_password".to_string()));
    assert!(reasons.contains(&"unknown_user".to_string()));
}

// covers: ASVS-6.2.8, N63B-09, N63B-03
async fn login_verifies_the_whole_password_exactly(b: Backend) {
    let app = spawn_app(b).await;
    let e = email("exact");
    let long = random_password(100);
    assert_eq!(app.register(&e, &long).await.status, 201);
    for variant in [
        long[..72].to_string(),
        long.to_uppercase(),
        format!("{long} "),
        long[..99].to_string(),
    ] {
        app.login(&e, &variant)
            .await
            .assert_error(401, "invalid_credentials");
    }
    assert_eq!(app.login(&e, &long).await.status, 200);
    // One documented normalisation (NFC): composed and decomposed forms match.
    let e2 = email("nfc");
    let decomposed = "cafe\u{301} cre\u{300}me brule\u{301}e au the\u{301}";
    let composed = "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e au th\u{e9}".replace('\u{fb}', "u");
    assert_eq!(app.register(&e2, decomposed).await.status, 201);
    assert_eq!(app.login(&e2, &composed).await.status, 200);
}

// covers: ASVS-11.2.2, ASVS-11.4.2, N63B-10
async fn stored_hash_is_upgraded_at_next_login(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_ARGON2_MEMORY_KIB", "8192")
        .set("CASTELLAN_ARGON2_ITERATIONS", "1");
    let app = env.spawn().await;
    let e = email("rehash");
    app.register(&e, PASSWORD).await;
    let key = e.to_lowercase();
    let before = app
        .auth
        .store()
        .find_credentials(&key)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(
        before.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"),
        "{before}"
    );
    app.shutdown().await;
    let mut env2 = TestEnv {
        vars: env.vars.clone(),
        dir: env.dir.clone(),
        backend: b,
    };
    env2.vars.remove("CASTELLAN_ARGON2_MEMORY_KIB");
    env2.vars.remove("CASTELLAN_ARGON2_ITERATIONS");
    let app = env2.spawn().await;
    assert_eq!(app.login(&e, PASSWORD).await.status, 200);
    let after = app
        .auth
        .store()
        .find_credentials(&key)
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert!(
        after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{after}"
    );
    assert_eq!(
        app.login(&e, PASSWORD).await.status,
        200,
        "the new hash verifies"
    );
}

// covers: ASVS-15.2.2, ASVS-15.1.3
async fn saturated_hashing_answers_503_and_session_checks_go_on(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_HASH_THREADS", "1")
        .set("CASTELLAN_HASH_QUEUE", "1");
    let app = env.spawn().await;
    let e = email("flood");
    let token = app.user_with_session(&e).await;
    let mut logins = Vec::new();
    for _ in 0..24 {
        let client = app.client.clone();
        let url = format!("{}/v1/login", app.base);
        let body = json!({"email": e, "password": "wrong password, over and over"});
        logins.push(tokio::spawn(async move {
            client.post(url).json(&body).send().await.unwrap()
        }));
    }
    // Session checks keep answering while the hasher is saturated.
    for _ in 0..5 {
        assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    }
    let mut unavailable = 0;
    for l in logins {
        let res = l.await.unwrap();
        match res.status().as_u16() {
            401 => {}
            503 => {
                unavailable += 1;
                assert_eq!(res.headers().get("retry-after").unwrap(), "1");
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unavailable");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        unavailable > 0,
        "with one thread and a queue of one, 24 parallel logins must overflow"
    );
    assert!(
        app.event_kinds()
            .await
            .iter()
            .any(|k| k == "hashing_saturated")
    );
}

/// A random password of `len` characters from letters, digits and a few symbols.
fn random_password(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!%+=?";
    let bytes = castellan::crypto::random_bytes::<1024>().unwrap();
    bytes[..len]
        .iter()
        .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
        .collect()
}
