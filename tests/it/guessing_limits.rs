//! Guessing limits on the routes beyond the login form: a second factor
//! given at re-authentication, codes tried at TOTP activation, and tokens
//! tried at reset and verification confirmation. Each is counted by the
//! limiters of docs/security/brute-force.md, so a session holder cannot
//! guess there without the limits the login steps have.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, TestApp, TestEnv, email, now_code};
use crate::on_both_backends;

on_both_backends!(
    second_factors_at_reauthentication_count_toward_the_hard_stop,
    totp_activation_codes_count_toward_the_address_rate,
    token_confirmations_count_toward_the_address_rates,
);

/// A six-digit code that is none of the codes valid now (the window is one
/// step each side), so it is wrong without being malformed.
fn wrong_code(secret: &castellan::domain::TotpSecret) -> String {
    let valid: Vec<String> = (-1..=1).map(|step| now_code(secret, step)).collect();
    (0..4)
        .map(|i| format!("{:06}", 123_456 + i))
        .find(|c| !valid.contains(c))
        .expect("one of four candidates is not valid now")
}

async fn reauthenticate(app: &TestApp, token: &str, body: Value) -> crate::helpers::Reply {
    app.send_bearer(Method::POST, "/v1/reauthenticate", token, Some(body))
        .await
}

// covers: ASVS-6.3.1, ASVS-2.4.1, N63B-11
async fn second_factors_at_reauthentication_count_toward_the_hard_stop(b: Backend) {
    let mut env = TestEnv::new(b).await;
    // Only the hard stop can trip here, so nothing depends on timing.
    env.set("CASTELLAN_FACTOR_HARD_STOP", "3")
        .set("CASTELLAN_LOGIN_BACKOFF_AFTER", "100")
        .set("CASTELLAN_ACCOUNT_FAILURES_PER_HOUR", "100");
    let app = env.spawn().await;
    let e = email("reauth-stop");
    let token = app.user_with_session(&e).await;
    let totp = app.enable_totp(&token).await;
    let wrong = wrong_code(&totp.secret);

    for _ in 0..3 {
        reauthenticate(
            &app,
            &token,
            json!({"password": PASSWORD, "totp_code": wrong}),
        )
        .await
        .assert_error(400, "invalid_credentials");
    }
    assert!(
        app.has_event("throttled", "limit", "hard_stop").await,
        "the third wrong code reached the hard stop"
    );
    // The right password and the right code no longer get through here,
    // and no backup code is checked at re-authentication either.
    let right = reauthenticate(
        &app,
        &token,
        json!({"password": PASSWORD, "totp_code": now_code(&totp.secret, 1)}),
    )
    .await;
    right.assert_error(429, "rate_limited");
    assert!(right.header("retry-after").is_some());
    reauthenticate(
        &app,
        &token,
        json!({"password": PASSWORD, "backup_code": totp.backup_codes[0]}),
    )
    .await
    .assert_error(429, "rate_limited");

    // The counters are the login step's: TOTP is refused there too, while a
    // backup code still completes a login (the way back to the account).
    let pending = app.pending_login(&e).await;
    app.send_bearer(
        Method::POST,
        "/v1/login/mfa",
        &pending,
        Some(json!({"totp_code": now_code(&totp.secret, 1)})),
    )
    .await
    .assert_error(429, "rate_limited");
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/login/mfa",
            &pending,
            Some(json!({"backup_code": totp.backup_codes[0]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

// covers: ASVS-2.4.1, ASVS-6.3.1
async fn totp_activation_codes_count_toward_the_address_rate(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_RATE_MFA_PER_IP", "3/1h");
    let app = env.spawn().await;
    let token = app.user_with_session(&email("activate-rate")).await;
    let secret = app.enroll_totp(&token).await;
    let wrong = wrong_code(&secret);
    for _ in 0..3 {
        app.activate_totp(&token, &wrong)
            .await
            .assert_error(400, "invalid_credentials");
    }
    let r = app.activate_totp(&token, &now_code(&secret, 0)).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    let current = app.get_bearer("/v1/session", &token).await.json();
    assert_eq!(current["session"]["aal"], "aal1", "{current}");
    assert_eq!(
        current["user"]["mfa_enabled"], false,
        "nothing was activated"
    );
}

// covers: ASVS-2.4.1
async fn token_confirmations_count_toward_the_address_rates(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_RATE_RESET_PER_IP", "2/1h")
        .set("CASTELLAN_RATE_VERIFICATION_PER_IP", "2/1h");
    let app = env.spawn().await;
    // Well-formed tokens that were never issued.
    let never = |c: char| c.to_string().repeat(43);
    for (route, body, wrong) in [
        (
            "/v1/password/reset/confirm",
            json!({"token": never('A'), "new_password": "a brand new passphrase of mine"}),
            "invalid_request",
        ),
        (
            "/v1/email/verification/confirm",
            json!({"token": never('B')}),
            "invalid_request",
        ),
    ] {
        for _ in 0..2 {
            app.post(route, body.clone()).await.assert_error(400, wrong);
        }
        let r = app.post(route, body.clone()).await;
        r.assert_error(429, "rate_limited");
        assert!(r.header("retry-after").is_some(), "{route}");
    }
}
