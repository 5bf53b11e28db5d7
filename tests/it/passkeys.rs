//! Passkeys through the API, with a software authenticator and WebAuthn
//! client (1Password's `passkey` crates) standing in for the browser: they
//! build `clientDataJSON` from the origin they are given and sign like a
//! real authenticator, so every check castellan relies on is exercised.

use std::sync::Arc;
use std::time::Duration;

use castellan::clock::ManualClock;
use passkey::authenticator::{Authenticator, UiHint, UserCheck, UserValidationMethod};
use passkey::client::{Client, DefaultClientData};
use passkey::types::Passkey;
use passkey::types::ctap2::{Aaguid, Ctap2Error};
use passkey::types::webauthn::{CredentialCreationOptions, CredentialRequestOptions};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use webauthn_rs::prelude::Url;

use crate::helpers::{Backend, PASSWORD, TestApp, TestEnv, email};
use crate::on_both_backends;

/// The relying party the tests configure, and its one allowed origin.
const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://login.example.com";

/// A user who is present and verified (PIN or biometric) every time.
struct AlwaysVerified;

#[async_trait::async_trait]
impl UserValidationMethod for AlwaysVerified {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Passkey>,
        presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck {
            presence,
            verification,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

type SoftClient = Client<
    Option<Passkey>,
    AlwaysVerified,
    passkey::crypto::rust_crypto::RustCryptoBackend,
    public_suffix::PublicSuffixList,
    (),
>;

/// One authenticator holding one discoverable credential, with a counter.
struct SoftKey {
    client: SoftClient,
}

/// Keeps only what the software client understands of castellan's options.
fn client_options(options: &Value) -> Value {
    let mut o = options.clone();
    if let Some(pk) = o["publicKey"].as_object_mut() {
        pk.remove("extensions");
        pk.remove("hints");
        pk.remove("attestationFormats");
    }
    o
}

impl SoftKey {
    fn new() -> Self {
        let mut authenticator = Authenticator::new(
            Aaguid::new_empty(),
            None,
            AlwaysVerified,
            passkey::crypto::rust_crypto::RustCryptoBackend,
        );
        authenticator.set_make_credentials_with_signature_counter(true);
        Self {
            client: Client::new(authenticator),
        }
    }

    /// `navigator.credentials.create` at `origin`, as the JSON a page sends.
    async fn create(&mut self, origin: &str, options: &Value) -> Value {
        let request: CredentialCreationOptions =
            serde_json::from_value(client_options(options)).expect("creation options");
        let origin = Url::parse(origin).unwrap();
        let created = self
            .client
            .register(&origin, request, DefaultClientData)
            .await
            .expect("the authenticator creates a credential");
        serde_json::to_value(&created).unwrap()
    }

    /// `navigator.credentials.get` at `origin`.
    async fn get(&mut self, origin: &str, options: &Value) -> Value {
        let request: CredentialRequestOptions =
            serde_json::from_value(client_options(options)).expect("request options");
        let origin = Url::parse(origin).unwrap();
        let asserted = self
            .client
            .authenticate(&origin, request, DefaultClientData)
            .await
            .expect("the authenticator signs");
        serde_json::to_value(&asserted).unwrap()
    }

    /// Sets the authenticator's signature counter (a cloned key's view).
    fn set_counter(&mut self, value: u32) {
        let store = self.client.authenticator_mut().store_mut();
        store.as_mut().expect("a credential").counter = Some(value);
    }
}

fn env_with_passkeys(env: &mut TestEnv) -> &mut TestEnv {
    env.set("CASTELLAN_PASSKEY_RP_ID", RP_ID)
        .set("CASTELLAN_PASSKEY_ORIGINS", ORIGIN)
}

async fn passkey_app(b: Backend) -> TestApp {
    let mut env = TestEnv::new(b).await;
    env_with_passkeys(&mut env);
    env.spawn().await
}

fn token_of(r: &crate::helpers::Reply) -> String {
    r.json()["session_token"].as_str().unwrap().to_string()
}

async fn post_bearer(app: &TestApp, path: &str, token: &str, body: Value) -> crate::helpers::Reply {
    app.send_bearer(Method::POST, path, token, Some(body)).await
}

/// Registers a passkey on `token`'s session with `key` at `origin`;
/// returns the finish reply.
async fn register_at(
    app: &TestApp,
    token: &str,
    key: &mut SoftKey,
    origin: &str,
    tweak: impl FnOnce(&mut Value),
) -> crate::helpers::Reply {
    let start = app
        .send_bearer(Method::POST, "/v1/passkeys/registration/start", token, None)
        .await;
    assert_eq!(start.status, 200, "{}", start.text);
    let start = start.json();
    let mut options = start["options"].clone();
    tweak(&mut options);
    let credential = key.create(origin, &options).await;
    post_bearer(
        app,
        "/v1/passkeys/registration/finish",
        token,
        json!({"ceremony_id": start["ceremony_id"], "name": "Laptop", "credential": credential}),
    )
    .await
}

/// A user with a password session and one registered passkey.
async fn user_with_passkey(app: &TestApp, tag: &str) -> (String, String, SoftKey) {
    let e = email(tag);
    let token = app.user_with_session(&e).await;
    let mut key = SoftKey::new();
    let r = register_at(app, &token, &mut key, ORIGIN, |_| {}).await;
    assert_eq!(r.status, 201, "{}", r.text);
    (e, token, key)
}

/// Starts a passwordless sign-in; returns `(ceremony_id, options)`.
async fn login_start(app: &TestApp) -> (Value, Value) {
    let r = app.post("/v1/login/passkey/start", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    (v["ceremony_id"].clone(), v["options"].clone())
}

async fn login_finish(
    app: &TestApp,
    ceremony: &Value,
    credential: &Value,
) -> crate::helpers::Reply {
    app.post(
        "/v1/login/passkey/finish",
        json!({"ceremony_id": ceremony, "credential": credential}),
    )
    .await
}

/// A full passwordless sign-in with `key`.
async fn passkey_login(app: &TestApp, key: &mut SoftKey) -> crate::helpers::Reply {
    let (ceremony, options) = login_start(app).await;
    let credential = key.get(ORIGIN, &options).await;
    login_finish(app, &ceremony, &credential).await
}

async fn aal_of(app: &TestApp, token: &str) -> String {
    let r = app.get_bearer("/v1/session", token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["session"]["aal"].as_str().unwrap().to_string()
}

async fn passkeys_of(app: &TestApp, token: &str) -> Vec<Value> {
    let r = app.get_bearer("/v1/passkeys", token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["passkeys"].as_array().unwrap().clone()
}

// covers: N63B-19, N63B-20, N63B-16
async fn a_passkey_is_registered_and_signs_in_without_a_password(b: Backend) {
    let app = passkey_app(b).await;
    let e = email("passwordless");
    let token = app.user_with_session(&e).await;
    assert_eq!(aal_of(&app, &token).await, "aal1");
    let mut key = SoftKey::new();
    let r = register_at(&app, &token, &mut key, ORIGIN, |_| {}).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let view = r.json();
    assert_eq!(view["name"], "Laptop");
    assert_eq!(view["flagged"], false);
    assert!(view.get("credential").is_none() && view.get("public_key").is_none());
    // Password plus a verified possession factor: the session is aal2 now.
    assert_eq!(aal_of(&app, &token).await, "aal2");
    assert!(
        app.has_event(
            "passkey_registered",
            "passkey_id",
            view["id"].as_str().unwrap()
        )
        .await
    );
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("A passkey was added") && m.contains("If this was not you")),
        "no notice mail"
    );
    let listed = passkeys_of(&app, &token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], view["id"]);

    let r = passkey_login(&app, &mut key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let signed_in = token_of(&r);
    assert_eq!(r.json()["session"]["aal"], "aal2");
    assert_eq!(aal_of(&app, &signed_in).await, "aal2");
    let me = app.get_bearer("/v1/session", &signed_in).await.json();
    assert_eq!(me["user"]["email"], e.to_lowercase());
    assert!(
        r.set_cookies()
            .iter()
            .any(|c| c.starts_with("__Host-castellan_session="))
    );
    assert!(app.has_event("login_succeeded", "factor", "passkey").await);
    let used = passkeys_of(&app, &signed_in).await;
    assert!(used[0]["last_used_at"].is_string());
    assert!(used[0]["sign_count"].as_u64().unwrap() >= 1);
}

// covers: ASVS-6.3.4, ASVS-7.2.4
async fn a_passkey_completes_a_pending_password_login(b: Backend) {
    let app = passkey_app(b).await;
    let (e, _, mut key) = user_with_passkey(&app, "second").await;
    let r = app.login(&e, PASSWORD).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["session"]["mfa_pending"], true);
    let pending = token_of(&r);
    app.get_bearer("/v1/sessions", &pending)
        .await
        .assert_error(403, "mfa_required");
    let start = post_bearer(&app, "/v1/login/passkey/mfa/start", &pending, json!({})).await;
    assert_eq!(start.status, 200, "{}", start.text);
    let start = start.json();
    // Only this account's passkeys are offered.
    assert_eq!(
        start["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let credential = key.get(ORIGIN, &start["options"]).await;
    let r = post_bearer(
        &app,
        "/v1/login/passkey/mfa/finish",
        &pending,
        json!({"ceremony_id": start["ceremony_id"], "credential": credential}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let full = token_of(&r);
    assert_eq!(aal_of(&app, &full).await, "aal2");
    // The pending token ended with the rotation.
    assert_eq!(app.get_bearer("/v1/session", &pending).await.status, 401);
    assert!(app.has_event("mfa_verified", "factor", "passkey").await);
}

// covers: ASVS-7.5.1, ASVS-7.2.4
async fn re_authentication_accepts_a_passkey_and_guards_deletion(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env_with_passkeys(&mut env);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = env.spawn_with_clock(clock.clone()).await;
    let (_, token, mut key) = user_with_passkey(&app, "reauth").await;
    let id = passkeys_of(&app, &token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Outside the 10-minute window, deleting needs re-authentication first.
    clock.advance(Duration::from_secs(11 * 60));
    app.send_bearer(Method::DELETE, &format!("/v1/passkeys/{id}"), &token, None)
        .await
        .assert_error(403, "reauthentication_required");
    let start = post_bearer(
        &app,
        "/v1/login/passkey/reauthenticate/start",
        &token,
        json!({}),
    )
    .await;
    assert_eq!(start.status, 200, "{}", start.text);
    let start = start.json();
    let credential = key.get(ORIGIN, &start["options"]).await;
    let r = post_bearer(
        &app,
        "/v1/login/passkey/reauthenticate/finish",
        &token,
        json!({"ceremony_id": start["ceremony_id"], "credential": credential}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = token_of(&r);
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 401);
    assert!(app.has_event("reauthenticated", "factor", "passkey").await);
    let r = app
        .send_bearer(Method::DELETE, &format!("/v1/passkeys/{id}"), &fresh, None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(passkeys_of(&app, &fresh).await.is_empty());
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("A passkey was removed"))
    );
    assert!(app.has_event("passkey_removed", "passkey_id", &id).await);
    // The deleted passkey no longer signs in.
    let r = passkey_login(&app, &mut key).await;
    r.assert_error(401, "invalid_credentials");
}

// covers: N63B-19
async fn a_wrong_origin_or_rp_id_is_refused(b: Backend) {
    let app = passkey_app(b).await;
    let token = app.user_with_session(&email("phish")).await;
    // A look-alike page on a sibling host: the client accepts it (same
    // registrable domain), castellan does not (not an allowed origin).
    let mut key = SoftKey::new();
    let r = register_at(&app, &token, &mut key, "https://evil.example.com", |_| {}).await;
    r.assert_error(400, "invalid_credentials");
    // A credential scoped to another RP id (login.example.com).
    let mut key = SoftKey::new();
    let r = register_at(&app, &token, &mut key, ORIGIN, |o| {
        o["publicKey"]["rp"]["id"] = json!("login.example.com");
    })
    .await;
    r.assert_error(400, "invalid_credentials");
    assert!(passkeys_of(&app, &token).await.is_empty());
    assert!(app.has_event("mfa_failed", "reason", "wrong_origin").await);
    assert!(app.has_event("mfa_failed", "reason", "wrong_rp_id").await);

    // Signing in from a wrong origin with a properly registered passkey.
    let (_, _, mut key) = user_with_passkey(&app, "phish-login").await;
    let (ceremony, options) = login_start(&app).await;
    let credential = key.get("https://evil.example.com", &options).await;
    login_finish(&app, &ceremony, &credential)
        .await
        .assert_error(401, "invalid_credentials");
    assert!(
        app.has_event("login_failed", "reason", "wrong_origin")
            .await
    );
}

async fn a_replayed_assertion_is_refused(b: Backend) {
    let app = passkey_app(b).await;
    let (_, _, mut key) = user_with_passkey(&app, "replay").await;
    let (ceremony, options) = login_start(&app).await;
    let credential = key.get(ORIGIN, &options).await;
    assert_eq!(login_finish(&app, &ceremony, &credential).await.status, 200);
    // The same ceremony again: it was spent.
    login_finish(&app, &ceremony, &credential)
        .await
        .assert_error(400, "invalid_request");
    // The same assertion against a fresh ceremony: wrong challenge.
    let (fresh, _) = login_start(&app).await;
    login_finish(&app, &fresh, &credential)
        .await
        .assert_error(401, "invalid_credentials");
    assert!(
        app.has_event("login_failed", "reason", "wrong_challenge")
            .await
    );
}

async fn an_expired_or_reused_challenge_is_refused(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env_with_passkeys(&mut env);
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = env.spawn_with_clock(clock.clone()).await;
    let (_, token, mut key) = user_with_passkey(&app, "expiry").await;
    let (ceremony, options) = login_start(&app).await;
    let credential = key.get(ORIGIN, &options).await;
    clock.advance(Duration::from_secs(5 * 60 + 1));
    login_finish(&app, &ceremony, &credential)
        .await
        .assert_error(400, "invalid_request");
    assert!(
        app.has_event("login_failed", "reason", "ceremony_expired")
            .await
    );
    // A registration ceremony is single use too (a fresh sign-in is inside
    // the re-authentication window).
    let fresh = token_of(&passkey_login(&app, &mut key).await);
    let start = app
        .send_bearer(
            Method::POST,
            "/v1/passkeys/registration/start",
            &fresh,
            None,
        )
        .await
        .json();
    let mut second = SoftKey::new();
    let created = second.create(ORIGIN, &start["options"]).await;
    let body = json!({"ceremony_id": start["ceremony_id"], "name": "Phone", "credential": created});
    let r = post_bearer(
        &app,
        "/v1/passkeys/registration/finish",
        &fresh,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    post_bearer(&app, "/v1/passkeys/registration/finish", &fresh, body)
        .await
        .assert_error(400, "invalid_request");
    // A ceremony started by one session cannot be finished by another.
    let start = app
        .send_bearer(
            Method::POST,
            "/v1/passkeys/registration/start",
            &fresh,
            None,
        )
        .await
        .json();
    let mut third = SoftKey::new();
    let created = third.create(ORIGIN, &start["options"]).await;
    let other = token_of(&passkey_login(&app, &mut key).await);
    post_bearer(
        &app,
        "/v1/passkeys/registration/finish",
        &other,
        json!({"ceremony_id": start["ceremony_id"], "name": "x", "credential": created}),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(passkeys_of(&app, &token).await.len(), 2);
}

async fn a_counter_regression_is_flagged_and_the_passkey_blocked(b: Backend) {
    let app = passkey_app(b).await;
    let (_, token, mut key) = user_with_passkey(&app, "clone").await;
    assert_eq!(passkey_login(&app, &mut key).await.status, 200);
    assert_eq!(passkey_login(&app, &mut key).await.status, 200);
    // A copy of the key that has signed less often than the original.
    key.set_counter(0);
    passkey_login(&app, &mut key)
        .await
        .assert_error(401, "invalid_credentials");
    assert!(
        app.has_event("passkey_counter_regression", "action", "passkey_flagged")
            .await
    );
    let listed = passkeys_of(&app, &token).await;
    assert_eq!(listed[0]["flagged"], true);
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("passkey of your account was blocked"))
    );
    // Policy: the flagged passkey stays refused even with a higher counter.
    key.set_counter(1000);
    passkey_login(&app, &mut key)
        .await
        .assert_error(401, "invalid_credentials");
    assert!(
        app.has_event("login_failed", "reason", "passkey_flagged")
            .await
    );
}

async fn a_credential_of_one_account_cannot_sign_in_to_another(b: Backend) {
    let app = passkey_app(b).await;
    let (_, _, mut alice_key) = user_with_passkey(&app, "alice").await;
    let (bob, bob_token, _) = user_with_passkey(&app, "bob").await;
    let bob_id = {
        app.get_bearer("/v1/session", &bob_token).await.json()["user"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Passwordless: Alice's credential presented with Bob's user handle.
    let (ceremony, options) = login_start(&app).await;
    let mut credential = alice_key.get(ORIGIN, &options).await;
    let handle = uuid::Uuid::parse_str(&bob_id).unwrap();
    credential["response"]["userHandle"] = json!(base64url(handle.as_bytes()));
    login_finish(&app, &ceremony, &credential)
        .await
        .assert_error(401, "invalid_credentials");
    // Second factor of Bob's pending login signed with Alice's passkey.
    let pending = token_of(&app.login(&bob, PASSWORD).await);
    let start = post_bearer(&app, "/v1/login/passkey/mfa/start", &pending, json!({}))
        .await
        .json();
    let mut options = start["options"].clone();
    options["publicKey"]
        .as_object_mut()
        .unwrap()
        .remove("allowCredentials");
    let credential = alice_key.get(ORIGIN, &options).await;
    post_bearer(
        &app,
        "/v1/login/passkey/mfa/finish",
        &pending,
        json!({"ceremony_id": start["ceremony_id"], "credential": credential}),
    )
    .await
    .assert_error(401, "invalid_credentials");
    assert!(
        app.has_event("mfa_failed", "reason", "unknown_credential")
            .await
    );
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// covers: ASVS-2.3.4
async fn concurrent_use_of_one_challenge_succeeds_once(b: Backend) {
    let app = passkey_app(b).await;
    let (_, _, mut key) = user_with_passkey(&app, "race").await;
    let (ceremony, options) = login_start(&app).await;
    let credential = key.get(ORIGIN, &options).await;
    let body = json!({"ceremony_id": ceremony, "credential": credential});
    let statuses = app
        .post_at_once("/v1/login/passkey/finish", vec![(None, body); 10])
        .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
}

// covers: ASVS-6.3.3
async fn require_mfa_is_satisfied_by_a_passkey_and_keeps_the_last_one(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env_with_passkeys(&mut env).set("CASTELLAN_REQUIRE_MFA", "true");
    let app = env.spawn().await;
    let token = app.user_with_session(&email("mustpasskey")).await;
    app.get_bearer("/v1/sessions", &token)
        .await
        .assert_error(403, "mfa_required");
    let mut key = SoftKey::new();
    let r = register_at(&app, &token, &mut key, ORIGIN, |_| {}).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(app.get_bearer("/v1/sessions", &token).await.status, 200);
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The only second factor of an account that must have one stays.
    app.send_bearer(Method::DELETE, &format!("/v1/passkeys/{id}"), &token, None)
        .await
        .assert_error(409, "conflict");
    assert_eq!(passkeys_of(&app, &token).await.len(), 1);
    // A passwordless sign-in is a full session under require_mfa.
    let signed_in = token_of(&passkey_login(&app, &mut key).await);
    assert_eq!(app.get_bearer("/v1/sessions", &signed_in).await.status, 200);
}

async fn passkeys_are_renamed_and_an_admin_mfa_reset_removes_them(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env_with_passkeys(&mut env).with_admin();
    let app = env.spawn().await;
    let (e, token, mut key) = user_with_passkey(&app, "reset").await;
    let id = passkeys_of(&app, &token).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .send_bearer(
            Method::PATCH,
            &format!("/v1/passkeys/{id}"),
            &token,
            Some(json!({"name": "  Work key  "})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(passkeys_of(&app, &token).await[0]["name"], "Work key");
    app.send_bearer(
        Method::PATCH,
        &format!("/v1/passkeys/{id}"),
        &token,
        Some(json!({"name": "x".repeat(65)})),
    )
    .await
    .assert_error(400, "invalid_request");
    app.send_bearer(
        Method::PATCH,
        &format!("/v1/passkeys/{}", uuid::Uuid::new_v4()),
        &token,
        Some(json!({"name": "other"})),
    )
    .await
    .assert_error(404, "not_found");
    let user_id = app.get_bearer("/v1/session", &token).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = app.admin_base.as_ref().expect("admin listener");
    let status = app
        .client
        .delete(format!("{base}/admin/v1/users/{user_id}/mfa"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    passkey_login(&app, &mut key)
        .await
        .assert_error(401, "invalid_credentials");
    // Without a second factor, the password alone gives a full session again.
    let t = app.token_for(&e, PASSWORD).await;
    assert!(passkeys_of(&app, &t).await.is_empty());
    assert!(
        app.mails()
            .iter()
            .any(|m| m.contains("backup codes and passkeys no longer work"))
    );
}

async fn passwordless_sign_in_starts_count_against_the_login_rate(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env_with_passkeys(&mut env).set("CASTELLAN_RATE_LOGIN_PER_IP", "3/1m");
    let app = env.spawn().await;
    for _ in 0..3 {
        assert_eq!(
            app.post("/v1/login/passkey/start", json!({})).await.status,
            200
        );
    }
    let r = app.post("/v1/login/passkey/start", json!({})).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
}

async fn credential_ids_are_unique_across_accounts(b: Backend) {
    use castellan::store::NewPasskey;
    let app = passkey_app(b).await;
    let a = app.register(&email("ua"), PASSWORD).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_id = app.register(&email("ub"), PASSWORD).await.json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let new = |user: &str| NewPasskey {
        id: uuid::Uuid::new_v4(),
        user_id: castellan::domain::UserId(uuid::Uuid::parse_str(user).unwrap()),
        credential_id: b"same-credential-id".to_vec(),
        name: "k".into(),
        credential: "{}".into(),
        sign_count: 0,
        backup_eligible: false,
        backup_state: false,
        now: OffsetDateTime::now_utc(),
    };
    let store = app.auth.store();
    store.insert_passkey(&new(&a), None).await.unwrap();
    assert!(matches!(
        store.insert_passkey(&new(&b_id), None).await,
        Err(castellan::store::StoreError::Conflict)
    ));
}

/// The hosted sign-in and account pages offer passkeys only when they are
/// configured: with an IP-address base URL (no relying-party id) a passkey
/// button could only ever answer "forbidden".
async fn the_hosted_pages_offer_passkeys_only_when_configured(b: Backend) {
    for (configured, app) in [
        (false, TestEnv::new(b).await.spawn().await),
        (true, passkey_app(b).await),
    ] {
        let sign_in = app.send(Method::GET, "/ui/sign-in", None, &[]).await;
        assert_eq!(sign_in.status, 200);
        assert_eq!(
            sign_in.text.contains("passkey-sign-in"),
            configured,
            "sign-in page, passkeys configured: {configured}"
        );
        let address = email("pages");
        let token = app.user_with_session(&address).await;
        let cookie = format!("__Host-castellan_session={token}");
        let account = app
            .send(Method::GET, "/ui/account", None, &[("cookie", &cookie)])
            .await;
        assert_eq!(account.status, 200, "{}", account.text);
        assert!(account.text.contains(&address));
        assert_eq!(
            account.text.contains("/ui/static/passkeys.js"),
            configured,
            "account page, passkeys configured: {configured}"
        );
        app.shutdown().await;
    }
}

on_both_backends!(
    the_hosted_pages_offer_passkeys_only_when_configured,
    a_passkey_is_registered_and_signs_in_without_a_password,
    a_passkey_completes_a_pending_password_login,
    re_authentication_accepts_a_passkey_and_guards_deletion,
    a_wrong_origin_or_rp_id_is_refused,
    a_replayed_assertion_is_refused,
    an_expired_or_reused_challenge_is_refused,
    a_counter_regression_is_flagged_and_the_passkey_blocked,
    a_credential_of_one_account_cannot_sign_in_to_another,
    concurrent_use_of_one_challenge_succeeds_once,
    require_mfa_is_satisfied_by_a_passkey_and_keeps_the_last_one,
    passkeys_are_renamed_and_an_admin_mfa_reset_removes_them,
    passwordless_sign_in_starts_count_against_the_login_rate,
    credential_ids_are_unique_across_accounts,
);
