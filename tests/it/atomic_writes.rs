//! Operations that write several rows are all or nothing (ASVS 2.3.3). A
//! database trigger makes one write of an operation fail part-way, as a
//! full disk or a killed connection would; afterwards nothing of the
//! operation is visible, and once the trigger is gone it works again.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, PASSWORD, Reply, TestApp, TestEnv, email, now_code, sql};
use crate::on_both_backends;

on_both_backends!(
    a_failed_totp_activation_enables_nothing,
    a_failed_backup_code_regeneration_keeps_the_old_codes,
    a_failed_password_change_keeps_the_password_and_the_sessions,
);

/// Makes every `event` (INSERT, DELETE, ...) on `table` fail until
/// [`heal`] drops the trigger.
async fn break_writes(env: &TestEnv, table: &str, event: &str) {
    match env.backend {
        Backend::Sqlite => {
            sql(
                env,
                &format!(
                    "CREATE TRIGGER injected_fault BEFORE {event} ON {table}
                     BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
                ),
            )
            .await
        }
        Backend::Postgres => {
            sql(
                env,
                "CREATE OR REPLACE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
            )
            .await;
            sql(
                env,
                &format!(
                    "CREATE TRIGGER injected_fault BEFORE {event} ON {table}
                     FOR EACH ROW EXECUTE FUNCTION injected_fault()"
                ),
            )
            .await
        }
    }
}

async fn heal(env: &TestEnv, table: &str) {
    match env.backend {
        Backend::Sqlite => sql(env, "DROP TRIGGER injected_fault").await,
        Backend::Postgres => sql(env, &format!("DROP TRIGGER injected_fault ON {table}")).await,
    }
}

/// `mfa_enabled` of the session's user, and the session's level.
async fn mfa_state(app: &TestApp, token: &str) -> (bool, String) {
    let r = app.get_bearer("/v1/session", token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = r.json();
    (
        body["user"]["mfa_enabled"].as_bool().expect("mfa_enabled"),
        body["session"]["aal"].as_str().expect("aal").to_string(),
    )
}

// covers: ASVS-2.3.3
/// Activation enables TOTP, claims the code's time step, stores ten backup
/// codes and raises the session to aal2: the last insert fails, so none of
/// it may stay.
async fn a_failed_totp_activation_enables_nothing(b: Backend) {
    let env = TestEnv::new(b).await;
    let app = env.spawn().await;
    let e = email("atomic");
    let token = app.user_with_session(&e).await;
    let code = now_code(&app.enroll_totp(&token).await, 0);

    break_writes(&env, "backup_codes", "INSERT").await;
    let r = app.activate_totp(&token, &code).await;
    assert!(!r.status.is_success(), "{} {}", r.status, r.text);
    assert!(!r.text.contains("injected fault"), "{}", r.text);
    assert_eq!(mfa_state(&app, &token).await, (false, "aal1".into()));
    let login = app.login(&e, PASSWORD).await;
    assert_eq!(
        login.json()["session"]["mfa_pending"],
        false,
        "{}",
        login.text
    );

    heal(&env, "backup_codes").await;
    // The same code activates now: its time step was not claimed either.
    let r = app.activate_totp(&token, &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(mfa_state(&app, &token).await, (true, "aal2".into()));
    app.shutdown().await;
}

// covers: ASVS-2.3.3
/// Regeneration deletes the old codes and inserts new ones: when the
/// inserts fail, the old codes must still work.
async fn a_failed_backup_code_regeneration_keeps_the_old_codes(b: Backend) {
    let env = TestEnv::new(b).await;
    let app = env.spawn().await;
    let e = email("atomic");
    let token = app.user_with_session(&e).await;
    let enabled = app.enable_totp(&token).await;
    assert_eq!(mfa_state(&app, &token).await, (true, "aal2".into()));

    break_writes(&env, "backup_codes", "INSERT").await;
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/mfa/backup-codes/regenerate",
            &token,
            None,
        )
        .await;
    assert!(!r.status.is_success(), "{} {}", r.status, r.text);
    heal(&env, "backup_codes").await;

    let status = app.get_bearer("/v1/mfa/backup-codes", &token).await;
    assert_eq!(status.json()["remaining"], 10, "{}", status.text);
    let pending = app.pending_login(&e).await;
    let r = app
        .send_bearer(
            Method::POST,
            "/v1/login/mfa",
            &pending,
            Some(json!({ "backup_code": enabled.backup_codes[0] })),
        )
        .await;
    assert_eq!(r.status, 200, "an old code still works: {}", r.text);
    app.shutdown().await;
}

async fn change_password(app: &TestApp, token: &str, new_password: &str) -> Reply {
    app.send_bearer(
        Method::POST,
        "/v1/password/change",
        token,
        Some(json!({ "current_password": PASSWORD, "new_password": new_password })),
    )
    .await
}

// covers: ASVS-2.3.3
/// A password change stores the new hash, then ends the other sessions:
/// when ending them fails, the old password and the sessions must stay.
async fn a_failed_password_change_keeps_the_password_and_the_sessions(b: Backend) {
    let env = TestEnv::new(b).await;
    let app = env.spawn().await;
    let e = email("atomic");
    let token = app.user_with_session(&e).await;
    let other = app.token_for(&e, PASSWORD).await;
    let new_password = "a wholly different passphrase 4 atomicity";

    break_writes(&env, "sessions", "DELETE").await;
    let r = change_password(&app, &token, new_password).await;
    assert!(!r.status.is_success(), "{} {}", r.status, r.text);
    heal(&env, "sessions").await;

    assert_eq!(app.get_bearer("/v1/session", &other).await.status, 200);
    assert_eq!(app.login(&e, PASSWORD).await.status, 200);
    assert_eq!(app.login(&e, new_password).await.status, 401);

    // Without the fault the same change goes through and ends `other`.
    let r = change_password(&app, &token, new_password).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.get_bearer("/v1/session", &other).await.status, 401);
    assert_eq!(app.login(&e, new_password).await.status, 200);
    app.shutdown().await;
}
