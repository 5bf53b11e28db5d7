//! TOTP enrolment and login, backup codes, replay and race protection.

use std::sync::Arc;
use std::time::Duration;

use base32::Alphabet;
use castellan::clock::ManualClock;
use castellan::domain::TotpSecret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, EnabledTotp, PASSWORD, TEST_SECRET_KEY, TestApp, TestEnv, email, now_code, secret_of,
    spawn_app,
};
use crate::on_both_backends;

on_both_backends!(
    enrolment_gives_a_160_bit_secret_uri_and_qr_and_activation_issues_codes,
    mfa_login_is_a_separate_state_and_rotates_the_token,
    totp_codes_are_accepted_once,
    five_wrong_codes_end_the_pending_session,
    backup_codes_work_once_and_report_what_remains,
    one_backup_code_sent_twenty_times_at_once_succeeds_once,
    removing_totp_needs_aal2_and_a_fresh_reauthentication,
    regenerating_backup_codes_invalidates_the_old_ones,
    secrets_and_codes_are_never_stored_in_clear,
    a_tampered_secret_fails_closed,
    the_drift_window_is_one_step_each_side,
    require_mfa_lets_users_enrol_then_everything_opens,
    a_new_secret_key_with_the_previous_one_keeps_every_second_factor,
);

/// Registers a user with TOTP enabled; returns (email, secret, backup codes, aal2 token).
async fn mfa_user(app: &TestApp) -> (String, TotpSecret, Vec<String>, String) {
    let (e, secret, codes, token, _) = mfa_user_with_activation_code(app).await;
    (e, secret, codes, token)
}

/// [`mfa_user`] plus the code that activated TOTP.
async fn mfa_user_with_activation_code(
    app: &TestApp,
) -> (String, TotpSecret, Vec<String>, String, String) {
    let e = email("mfa");
    let token = app.user_with_session(&e).await;
    let EnabledTotp {
        secret,
        backup_codes: codes,
        activation_code,
    } = app.enable_totp(&token).await;
    (e, secret, codes, token, activation_code)
}

async fn mfa_step(app: &TestApp, pending: &str, body: Value) -> crate::helpers::Reply {
    app.send_bearer(Method::POST, "/v1/login/mfa", pending, Some(body))
        .await
}

// covers: RFC-03, RFC-04, ASVS-6.5.3, ASVS-6.5.4, ASVS-1.2.2, ASVS-2.3.1, N63B-12, N63B-14, N63B-20, ASVS-1.3.4, ASVS-6.3.7
async fn enrolment_gives_a_160_bit_secret_uri_and_qr_and_activation_issues_codes(b: Backend) {
    let app = spawn_app(b).await;
    let e = format!(
        "o'hara+{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let token = app.user_with_session(&e).await;
    app.send_bearer(
        Method::POST,
        "/v1/mfa/totp/activate",
        &token,
        Some(json!({"code": "123456"})),
    )
    .await
    .assert_error(400, "invalid_request");
    let first = app
        .send_bearer(Method::POST, "/v1/mfa/totp/enroll", &token, None)
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let first = first.json();
    let second = app
        .send_bearer(Method::POST, "/v1/mfa/totp/enroll", &token, None)
        .await
        .json();
    let (s1, s2) = (secret_of(&first), secret_of(&second));
    assert_eq!(s2.expose_bytes().len(), 20, "160 bits");
    assert_ne!(s1.expose_bytes(), s2.expose_bytes(), "unique per enrolment");
    let uri = second["otpauth_uri"].as_str().unwrap();
    let (label, query) = uri
        .strip_prefix("otpauth://totp/")
        .unwrap()
        .split_once('?')
        .unwrap();
    let decode = |s: &str| percent_decode(s);
    assert_eq!(decode(label), format!("castellan:{e}"), "label round-trips");
    let params: std::collections::HashMap<_, _> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    assert_eq!(params["issuer"], "castellan");
    assert_eq!(params["algorithm"], "SHA1");
    assert_eq!(params["digits"], "6");
    assert_eq!(params["period"], "30");
    assert_eq!(params["secret"], second["secret"].as_str().unwrap());
    let svg = second["qr_svg"].as_str().unwrap();
    assert!(
        svg.contains("<svg") && !svg.contains(&e),
        "QR has no text node with user data"
    );
    // Enrolling again replaced the first secret: its codes do not activate.
    app.send_bearer(
        Method::POST,
        "/v1/mfa/totp/activate",
        &token,
        Some(json!({"code": now_code(&s1, 0)})),
    )
    .await
    .assert_error(400, "invalid_credentials");
    for bad in ["12345", "1234567", "12 345", "abcdef"] {
        app.send_bearer(
            Method::POST,
            "/v1/mfa/totp/activate",
            &token,
            Some(json!({"code": bad})),
        )
        .await
        .assert_error(400, "invalid_request");
    }
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/mfa/totp/activate",
            &token,
            Some(json!({"code": now_code(&s2, 0)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let codes: Vec<String> = r.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    for c in &codes {
        assert_eq!(c.len(), 19, "{c}");
        assert!(
            c.chars()
                .all(|ch| ch == '-' || "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".contains(ch)),
            "{c}"
        );
    }
    // 15 random base32 characters per code: 75 bits >= 64.
    let me = app.get_bearer("/v1/session", &token).await.json();
    assert_eq!(
        me["session"]["aal"], "aal2",
        "the activating session proved a second factor"
    );
    assert_eq!(me["user"]["mfa_enabled"], true);
    app.send_bearer(Method::POST, "/v1/mfa/totp/enroll", &token, None)
        .await
        .assert_error(409, "conflict");
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("Two-factor authentication was turned on")
                && m.contains("If this was not you"))
    );
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

// covers: ASVS-2.3.1, ASVS-7.2.4, ASVS-2.2.3, N63B-16, N63B-19, ASVS-6.3.4
async fn mfa_login_is_a_separate_state_and_rotates_the_token(b: Backend) {
    let app = spawn_app(b).await;
    let (e, secret, _codes, _) = mfa_user(&app).await;
    let pending_token = app.pending_login(&e).await;
    for (method, path) in [
        (Method::GET, "/v1/session"),
        (Method::GET, "/v1/sessions"),
        (Method::DELETE, "/v1/sessions"),
        (Method::POST, "/v1/mfa/totp/enroll"),
        (Method::GET, "/v1/mfa/backup-codes"),
        (Method::POST, "/v1/mfa/backup-codes/regenerate"),
        (Method::DELETE, "/v1/mfa/totp"),
    ] {
        app.send_bearer(method.clone(), path, &pending_token, None)
            .await
            .assert_error(403, "mfa_required");
    }
    app.send_bearer(
        Method::POST,
        "/v1/reauthenticate",
        &pending_token,
        Some(json!({"password": PASSWORD})),
    )
    .await
    .assert_error(403, "mfa_required");
    mfa_step(&app, &pending_token, json!({}))
        .await
        .assert_error(400, "invalid_request");
    mfa_step(
        &app,
        &pending_token,
        json!({"totp_code": "123456", "backup_code": "ABCD-EFGH-IJKL-MNOP"}),
    )
    .await
    .assert_error(400, "invalid_request");
    mfa_step(&app, &pending_token, json!({"totp_code": 123456}))
        .await
        .assert_error(400, "invalid_request");
    mfa_step(
        &app,
        &pending_token,
        json!({"totp_code": "123456", "time": 0}),
    )
    .await
    .assert_error(400, "invalid_request");
    let r = mfa_step(
        &app,
        &pending_token,
        json!({"totp_code": now_code(&secret, 1)}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let full = r.json()["session_token"].as_str().unwrap().to_string();
    assert_ne!(full, pending_token);
    assert_eq!(r.json()["session"]["aal"], "aal2");
    assert_eq!(r.json()["session"]["mfa_pending"], false);
    assert!(r.set_cookies()[0].starts_with(&format!("__Host-castellan_session={full};")));
    app.get_bearer("/v1/session", &pending_token)
        .await
        .assert_error(401, "unauthenticated");
    assert_eq!(
        app.get_bearer("/v1/session", &full).await.json()["session"]["aal"],
        "aal2"
    );
    // A full session has nothing pending.
    mfa_step(&app, &full, json!({"totp_code": now_code(&secret, 0)}))
        .await
        .assert_error(400, "invalid_request");
    // Pending sessions may log out.
    let another = app.pending_login(&e).await;
    assert_eq!(
        app.send_bearer(Method::POST, "/v1/logout", &another, None)
            .await
            .status,
        204
    );
    let kinds = app.event_kinds().await;
    assert!(kinds.contains(&"mfa_verified".to_string()));
}

// covers: RFC-06, ASVS-6.5.1, N63B-14, ASVS-16.3.3
async fn totp_codes_are_accepted_once(b: Backend) {
    let app = spawn_app(b).await;
    let (e, secret, _codes, _, used_at_activation) = mfa_user_with_activation_code(&app).await;
    // The activation code already counts as used.
    let p = app.pending_login(&e).await;
    let r = mfa_step(&app, &p, json!({"totp_code": used_at_activation})).await;
    r.assert_error(401, "invalid_credentials");
    // T+1 works once; then the same code and the earlier step T are refused.
    let next = now_code(&secret, 1);
    assert_eq!(
        mfa_step(&app, &p, json!({"totp_code": next})).await.status,
        200
    );
    let p2 = app.pending_login(&e).await;
    mfa_step(&app, &p2, json!({"totp_code": next}))
        .await
        .assert_error(401, "invalid_credentials");
    mfa_step(&app, &p2, json!({"totp_code": now_code(&secret, 0)}))
        .await
        .assert_error(401, "invalid_credentials");
    assert!(app.has_event("mfa_failed", "reason", "replay").await);
}

// covers: RFC-07, ASVS-2.3.1, ASVS-6.3.5
async fn five_wrong_codes_end_the_pending_session(b: Backend) {
    let app = spawn_app(b).await;
    let (e, secret, _codes, _) = mfa_user(&app).await;
    let p = app.pending_login(&e).await;
    let wrong = if now_code(&secret, 1) == "000000" {
        "000001"
    } else {
        "000000"
    };
    let stopped = |app: &TestApp| {
        app.mails()
            .iter()
            .filter(|m| m.contains("A sign-in to your account was stopped"))
            .count()
    };
    for attempt in 1..=5 {
        mfa_step(&app, &p, json!({"totp_code": wrong}))
            .await
            .assert_error(401, "invalid_credentials");
        if attempt < 5 {
            assert_eq!(stopped(&app), 0, "no notice before the limit");
        }
    }
    mfa_step(&app, &p, json!({"totp_code": now_code(&secret, 1)}))
        .await
        .assert_error(401, "unauthenticated");
    assert!(app.has_event("session_revoked", "by", "mfa_failures").await);
    // The user learns that someone had the password (ASVS 6.3.5), once.
    assert_eq!(stopped(&app), 1);
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("correct password") && m.contains("If this was not you"))
    );
}

// covers: ASVS-6.5.1, N63B-13, N63B-20, ASVS-16.3.3, ASVS-6.3.7
async fn backup_codes_work_once_and_report_what_remains(b: Backend) {
    let app = spawn_app(b).await;
    let (e, _secret, codes, _) = mfa_user(&app).await;
    let p = app.pending_login(&e).await;
    // Any case, with spaces instead of dashes.
    let typed = codes[3].to_lowercase().replace('-', " ");
    let r = mfa_step(&app, &p, json!({"backup_code": typed})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["backup_codes_remaining"], 9);
    assert_eq!(r.json()["session"]["aal"], "aal2");
    let full = r.json()["session_token"].as_str().unwrap().to_string();
    let status = app.get_bearer("/v1/mfa/backup-codes", &full).await;
    assert_eq!(status.json(), json!({"remaining": 9, "total": 10}));
    let p2 = app.pending_login(&e).await;
    mfa_step(&app, &p2, json!({"backup_code": codes[3]}))
        .await
        .assert_error(401, "invalid_credentials");
    mfa_step(&app, &p2, json!({"backup_code": "ABCD-EFGH-IJKL-MN01"}))
        .await
        .assert_error(400, "invalid_request");
    let mail = app
        .mails()
        .into_iter()
        .find(|m| m.contains("A backup code was used"))
        .expect("a notice was mailed");
    assert!(mail.contains("9 unused codes remain") && mail.contains("If this was not you"));
    assert!(!mail.contains(&codes[3]), "the code itself is never mailed");
}

// covers: ASVS-2.3.4, ASVS-6.5.1, ASVS-15.4.2
async fn one_backup_code_sent_twenty_times_at_once_succeeds_once(b: Backend) {
    let app = spawn_app(b).await;
    let (e, _secret, codes, _) = mfa_user(&app).await;
    let mut pendings = Vec::new();
    for _ in 0..20 {
        pendings.push(app.pending_login(&e).await);
    }
    let requests = pendings
        .into_iter()
        .map(|p| (Some(p), json!({"backup_code": codes[0]})))
        .collect();
    let statuses = app.post_at_once("/v1/login/mfa", requests).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    // The losers are refused: 401, or 429 once their failures start the back-off.
    assert!(
        statuses.iter().all(|s| [200, 401, 429].contains(s)),
        "{statuses:?}"
    );
}

// covers: ASVS-7.5.1, ASVS-6.4.4, ASVS-6.5.6, ASVS-2.1.2, ASVS-2.2.3, ASVS-7.5.3, N63B-20, ASVS-6.3.7
async fn removing_totp_needs_aal2_and_a_fresh_reauthentication(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_REAUTH_WINDOW", "1s");
    let app = env.spawn().await;
    let (e, secret, codes, _) = mfa_user(&app).await;
    let p = app.pending_login(&e).await;
    let full = mfa_step(&app, &p, json!({"totp_code": now_code(&secret, 1)}))
        .await
        .json()["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    app.send_bearer(Method::DELETE, "/v1/mfa/totp", &full, None)
        .await
        .assert_error(403, "reauthentication_required");
    app.send_bearer(Method::POST, "/v1/mfa/backup-codes/regenerate", &full, None)
        .await
        .assert_error(403, "reauthentication_required");
    // Re-authentication of an MFA user needs the second factor too.
    let msg = app
        .send_bearer(
            Method::POST,
            "/v1/reauthenticate",
            &full,
            Some(json!({"password": PASSWORD})),
        )
        .await
        .assert_error(400, "invalid_request");
    assert!(msg.contains("totp_code or backup_code"), "{msg}");
    app.send_bearer(
        Method::POST,
        "/v1/reauthenticate",
        &full,
        Some(json!({"password": "wrong password entirely", "backup_code": codes[0]})),
    )
    .await
    .assert_error(400, "invalid_credentials");
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/reauthenticate",
            &full,
            Some(json!({"password": PASSWORD, "backup_code": codes[1]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["session"]["aal"], "aal2");
    let fresh = r.json()["session_token"].as_str().unwrap().to_string();
    assert_eq!(
        app.send_bearer(Method::DELETE, "/v1/mfa/totp", &fresh, None)
            .await
            .status,
        204
    );
    let me = app.get_bearer("/v1/session", &fresh).await.json();
    assert_eq!(me["user"]["mfa_enabled"], false);
    assert_eq!(
        app.get_bearer("/v1/mfa/backup-codes", &fresh).await.json(),
        json!({"remaining": 0, "total": 0})
    );
    let r = app.login(&e, PASSWORD).await;
    assert_eq!(
        r.json()["session"]["mfa_pending"],
        false,
        "no second factor any more"
    );
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("Two-factor authentication was turned off"))
    );
    // covers: ASVS-16.3.1 (each step of the factor's life is an audit event, in order)
    let kinds = app.event_kinds().await;
    let mut from = 0;
    for kind in [
        "mfa_enrolled",
        "mfa_activated",
        "mfa_verified",
        "backup_code_used",
        "reauthenticated",
        "mfa_removed",
    ] {
        from += kinds[from..]
            .iter()
            .position(|k| k == kind)
            .unwrap_or_else(|| panic!("{kind} after position {from} in {kinds:?}"))
            + 1;
    }
}

// covers: ASVS-6.5.1, N63B-20, ASVS-6.3.7
async fn regenerating_backup_codes_invalidates_the_old_ones(b: Backend) {
    let app = spawn_app(b).await;
    let (e, _secret, old_codes, token) = mfa_user(&app).await;
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/mfa/backup-codes/regenerate",
            &token,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_codes: Vec<String> = r.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new_codes.len(), 10);
    let p = app.pending_login(&e).await;
    mfa_step(&app, &p, json!({"backup_code": old_codes[2]}))
        .await
        .assert_error(401, "invalid_credentials");
    assert_eq!(
        mfa_step(&app, &p, json!({"backup_code": new_codes[2]}))
            .await
            .status,
        200
    );
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("New backup codes were created"))
    );
    assert!(
        app.event_kinds()
            .await
            .contains(&"backup_codes_regenerated".to_string())
    );
}

// covers: RFC-08, ASVS-14.2.4, ASVS-6.5.2, ASVS-11.3.2
async fn secrets_and_codes_are_never_stored_in_clear(b: Backend) {
    let app = spawn_app(b).await;
    let (_e, secret, codes, _) = mfa_user(&app).await;
    let b32 = base32::encode(Alphabet::Rfc4648 { padding: false }, secret.expose_bytes());
    let needles: Vec<Vec<u8>> = std::iter::once(b32.into_bytes())
        .chain(std::iter::once(secret.expose_bytes().to_vec()))
        .chain(
            codes
                .iter()
                .flat_map(|c| [c.clone().into_bytes(), c.replace('-', "").into_bytes()]),
        )
        .collect();
    let dump = match b {
        Backend::Sqlite => {
            // Checkpoint-independent: read the database and its WAL.
            let db = app.dir.path().join("castellan.db");
            let mut bytes = std::fs::read(&db).unwrap();
            if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
                bytes.extend(wal);
            }
            bytes
        }
        Backend::Postgres => {
            let url = crate::helpers::TestEnv::database_url_of(&app);
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            let rows: Vec<(Vec<u8>,)> =
                sqlx::query_as("SELECT sealed_secret FROM totp_credentials")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            let hashes: Vec<(String,)> = sqlx::query_as("SELECT code_hash FROM backup_codes")
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert_eq!(hashes.len(), 10);
            for (h,) in &hashes {
                assert!(h.starts_with("$argon2id$"), "{h}");
            }
            let mut bytes: Vec<u8> = rows.into_iter().flat_map(|(r,)| r).collect();
            bytes.extend(hashes.into_iter().flat_map(|(h,)| h.into_bytes()));
            bytes
        }
    };
    for needle in &needles {
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle.as_slice()),
            "a secret is stored in clear"
        );
    }
}

// covers: ASVS-11.3.3, ASVS-16.5.3
async fn a_tampered_secret_fails_closed(b: Backend) {
    let app = spawn_app(b).await;
    let (e, secret, _codes, _) = mfa_user(&app).await;
    let user = app
        .auth
        .store()
        .find_credentials(&e.to_lowercase())
        .await
        .unwrap()
        .unwrap()
        .user
        .id;
    let mut record = app.auth.store().get_totp(user).await.unwrap().unwrap();
    let last = record.sealed_secret.len() - 1;
    record.sealed_secret[last] ^= 0x01;
    app.auth
        .store()
        .reseal_totp(user, &record.sealed_secret)
        .await
        .unwrap();
    let p = app.pending_login(&e).await;
    mfa_step(&app, &p, json!({"totp_code": now_code(&secret, 1)}))
        .await
        .assert_error(401, "invalid_credentials");
    assert!(
        app.has_event("mfa_failed", "reason", "secret_unreadable")
            .await
    );
}

// covers: ASVS-6.5.5, RFC-05, ASVS-6.5.8
async fn the_drift_window_is_one_step_each_side(b: Backend) {
    let env = TestEnv::new(b).await;
    let start = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(start));
    let app = env.spawn_with_clock(clock.clone()).await;
    let (e, secret, _codes, _) = {
        // Activate at the server's (manual) time.
        let e = email("clock");
        let token = app.user_with_session(&e).await;
        let enrolment = app
            .send_bearer(Method::POST, "/v1/mfa/totp/enroll", &token, None)
            .await
            .json();
        let secret = secret_of(&enrolment);
        let t = start.unix_timestamp() as u64;
        let r = app
            .send_bearer(
                Method::POST,
                "/v1/mfa/totp/activate",
                &token,
                Some(json!({"code": secret.code_at(t, 6).unwrap()})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        (e, secret, (), token)
    };
    // Ten minutes later, with a fresh step counter.
    clock.advance(Duration::from_secs(600));
    let t = clock_now(&clock);
    let code = |offset: i64| secret.code_at((t as i64 + offset * 30) as u64, 6).unwrap();
    let p = app.pending_login(&e).await;
    mfa_step(&app, &p, json!({"totp_code": code(-2)}))
        .await
        .assert_error(401, "invalid_credentials");
    mfa_step(&app, &p, json!({"totp_code": code(2)}))
        .await
        .assert_error(401, "invalid_credentials");
    assert_eq!(
        mfa_step(&app, &p, json!({"totp_code": code(-1)}))
            .await
            .status,
        200,
        "T-1 accepted"
    );
    let p = app.pending_login(&e).await;
    assert_eq!(
        mfa_step(&app, &p, json!({"totp_code": code(0)}))
            .await
            .status,
        200,
        "T accepted"
    );
    let p = app.pending_login(&e).await;
    assert_eq!(
        mfa_step(&app, &p, json!({"totp_code": code(1)}))
            .await
            .status,
        200,
        "T+1 accepted"
    );
}

fn clock_now(clock: &ManualClock) -> u64 {
    use castellan::clock::Clock;
    clock.now().unix_timestamp() as u64
}

// covers: ASVS-6.3.3
async fn require_mfa_lets_users_enrol_then_everything_opens(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_REQUIRE_MFA", "true");
    let app = env.spawn().await;
    let token = app.user_with_session(&email("forced")).await;
    app.get_bearer("/v1/sessions", &token)
        .await
        .assert_error(403, "mfa_required");
    let enrolment = app
        .send_bearer(Method::POST, "/v1/mfa/totp/enroll", &token, None)
        .await;
    assert_eq!(enrolment.status, 200);
    let secret = secret_of(&enrolment.json());
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/mfa/totp/activate",
            &token,
            Some(json!({"code": now_code(&secret, 0)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get_bearer("/v1/sessions", &token).await.status, 200);
}

// covers: ASVS-6.5.1, ASVS-2.3.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_totp_code_on_two_nodes_at_once_succeeds_once() {
    let env = TestEnv::new(Backend::Postgres).await;
    let a = env.spawn().await;
    let b = env.spawn().await;
    let (e, secret, _codes, _) = mfa_user(&a).await;
    let pa = a.pending_login(&e).await;
    let pb = b.pending_login(&e).await;
    let code = now_code(&secret, 1);
    let (ra, rb) = tokio::join!(
        mfa_step(&a, &pa, json!({"totp_code": code})),
        mfa_step(&b, &pb, json!({"totp_code": code}))
    );
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 401]);
}

// covers: RFC-02, N63B-14
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_authenticator_completes_enrolment_and_login() {
    let app = spawn_app(Backend::Sqlite).await;
    let e = email("pyotp");
    let token = app.user_with_session(&e).await;
    let enrolment = app
        .send_bearer(Method::POST, "/v1/mfa/totp/enroll", &token, None)
        .await
        .json();
    let uri = enrolment["otpauth_uri"].as_str().unwrap().to_string();
    // pyotp parses the URI itself and computes the codes.
    let code_at = |offset: i64| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys, time, pyotp; t = pyotp.parse_uri(sys.argv[1]); print(t.at(int(time.time()) + int(sys.argv[2]) * 30))", &uri, &offset.to_string()])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "pyotp is installed by scripts/test.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/mfa/totp/activate",
            &token,
            Some(json!({"code": code_at(0)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let p = app.pending_login(&e).await;
    let r = mfa_step(&app, &p, json!({"totp_code": code_at(1)})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["session"]["aal"], "aal2");
}

/// Base64 of 32 bytes: the key an operator rotates to.
const ROTATED_SECRET_KEY: &str = "cm90YXRlZC1rZXktcm90YXRlZC1rZXktcm90YXRlZCE=";

// covers: ASVS-11.1.1, ASVS-11.2.2
async fn a_new_secret_key_with_the_previous_one_keeps_every_second_factor(b: Backend) {
    let mut env = TestEnv::new(b).await;
    // One server clock for the three runs, so each TOTP use has a step of
    // its own (a step is accepted once).
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let app = env.spawn_with_clock(clock.clone()).await;
    let (e, secret, codes, token) = mfa_user(&app).await;
    app.shutdown().await;
    let totp_now = || secret.code_at(clock_now(&clock), 6).unwrap();

    // The documented rotation: the new key, the old one as previous.
    env.set("CASTELLAN_SECRET_KEY", ROTATED_SECRET_KEY)
        .set("CASTELLAN_PREVIOUS_SECRET_KEY", TEST_SECRET_KEY);
    let app = env.spawn_with_clock(clock.clone()).await;
    app.get_bearer("/v1/session", &token)
        .await
        .assert_error(401, "unauthenticated");
    // A backup code issued under the old key still completes a login ...
    let p = app.pending_login(&e).await;
    let r = mfa_step(&app, &p, json!({"backup_code": codes[0]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // ... and so does TOTP, whose secret is then sealed under the new key.
    clock.advance(Duration::from_secs(120));
    let p = app.pending_login(&e).await;
    let r = mfa_step(&app, &p, json!({"totp_code": totp_now()})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.shutdown().await;

    // Without the previous key: the re-sealed TOTP secret opens, and the
    // codes issued under the old key are gone (as docs/configuration.md says).
    env.vars.remove("CASTELLAN_PREVIOUS_SECRET_KEY");
    let app = env.spawn_with_clock(clock.clone()).await;
    clock.advance(Duration::from_secs(120));
    let p = app.pending_login(&e).await;
    mfa_step(&app, &p, json!({"backup_code": codes[1]}))
        .await
        .assert_error(401, "invalid_credentials");
    let r = mfa_step(&app, &p, json!({"totp_code": totp_now()})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !app.has_event("mfa_failed", "reason", "secret_unreadable")
            .await
    );
}
