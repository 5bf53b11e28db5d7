//! The tamper-evident audit log: the hash chain under real traffic,
//! tampering in SQL caught by `castellan audit verify`, the optional HMAC,
//! retention with a checkpoint, export, several writers in several
//! processes, and the `castellan admin` commands.

use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use castellan::audit::{self, EventKind, RequestMeta, chain};
use castellan::clock::{Clock, ManualClock};
use castellan::domain::audit_chain::{ChainedContent, Digest32, chain_hash};
use castellan::store::{self, EventFilter, Store};
use serde_json::{Value, json};
use sqlx::Connection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::black_box::{castellan, free_port, run, terminate, wait_ready};
use crate::helpers::{ADMIN_TOKEN, Backend, PASSWORD, TestEnv, email};
use crate::on_both_backends;

on_both_backends!(
    real_traffic_builds_a_chain_that_verifies,
    an_edited_event_is_detected,
    a_deleted_event_is_detected,
    an_event_forged_after_the_newest_is_detected,
    an_event_replaced_in_the_middle_is_detected,
    the_hmac_detects_a_forger_who_also_moves_the_head,
    pruning_keeps_the_chain_verifiable,
    deleting_old_events_by_hand_is_detected,
    export_writes_one_json_line_per_event,
    four_writers_in_two_processes_keep_one_chain,
    admin_commands_act_like_the_admin_api,
);

/// base64 of 32 bytes.
const AUDIT_KEY: &str = "YXVkaXQta2V5LWF1ZGl0LWtleS1hdWRpdC1rZXktMDE=";

/// Runs the castellan binary with the test's settings, minus `without`.
fn cli_without(env: &TestEnv, without: &[&str], args: &[&str]) -> Output {
    let mut cmd = castellan(env.dir.path());
    cmd.args(args).envs(
        env.vars
            .iter()
            .filter(|(k, _)| !without.contains(&k.as_str())),
    );
    run(&mut cmd)
}

fn cli(env: &TestEnv, args: &[&str]) -> Output {
    cli_without(env, &[], args)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Asserts `castellan audit verify` fails and names the problem.
fn assert_verify_fails(env: &TestEnv, problem: &str) {
    let out = cli(env, &["audit", "verify"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("audit chain broken: {problem}")),
        "expected {problem:?} in: {stderr}"
    );
}

fn assert_verify_passes(env: &TestEnv, expected: &str) -> String {
    let out = cli(env, &["audit", "verify"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(expected),
        "expected {expected:?} in: {stdout}"
    );
    stdout
}

fn meta(i: usize) -> RequestMeta {
    RequestMeta {
        request_id: format!("req-{i}"),
        ip: "192.0.2.7".into(),
        user_agent: "audit-test".into(),
    }
}

/// Appends `n` events at `at` through the function every flow uses.
async fn record_events(store: &dyn Store, at: OffsetDateTime, n: usize) {
    for i in 0..n {
        audit::record(
            store,
            at,
            EventKind::LoginFailed,
            Some(castellan::domain::UserId(Uuid::new_v4())),
            &meta(i),
            json!({"reason": "invalid_credentials", "n": i, "nested": {"b": 1, "a": [true]}}),
        )
        .await
        .unwrap();
    }
}

/// A fresh database holding a chain of `n` events.
async fn chain_of(env: &TestEnv, n: usize) -> Arc<dyn Store> {
    let s = store::open(&castellan::app::store_options(&env.config()))
        .await
        .unwrap();
    record_events(&*s, OffsetDateTime::now_utc(), n).await;
    s
}

/// Runs one statement on the test's database, as someone with direct
/// database access would.
async fn sql(env: &TestEnv, statement: &str) {
    let url = &env.vars["CASTELLAN_DATABASE_URL"];
    match env.backend {
        Backend::Sqlite => {
            let path = url.strip_prefix("sqlite://").unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch(statement).unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// A byte string as an SQL literal.
fn blob(b: Backend, bytes: &[u8]) -> String {
    match b {
        Backend::Sqlite => format!("X'{}'", hex::encode(bytes)),
        Backend::Postgres => format!("'\\x{}'::bytea", hex::encode(bytes)),
    }
}

/// Forges an event the way someone who knows the hashing rules would: a
/// copy of event `template` with another kind and id, at `seq`, linked to
/// `prev` with a correct hash (but no HMAC). Returns its hash.
async fn forge(env: &TestEnv, s: &dyn Store, template: i64, seq: i64, prev: Digest32) -> Digest32 {
    let t = s.chain_events(template - 1, 1).await.unwrap().remove(0);
    assert_eq!(t.seq, template);
    let id = Uuid::new_v4();
    let content = ChainedContent {
        seq,
        id,
        kind: "login_succeeded",
        ..t.as_link().content
    };
    let hash = chain_hash(&prev, &content);
    sql(
        env,
        &format!(
            "INSERT INTO security_events
                 (seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac)
             SELECT {seq}, '{id}', at, 'login_succeeded', user_id, ip, user_agent, request_id,
                    detail, {}, {}, NULL
             FROM security_events WHERE seq = {template}",
            blob(env.backend, &prev),
            blob(env.backend, &hash)
        ),
    )
    .await;
    hash
}

// covers: ASVS-16.4.2 (hash chain), ASVS-11.4.3, ASVS-16.2.1
async fn real_traffic_builds_a_chain_that_verifies(b: Backend) {
    let env = TestEnv::new(b).await;
    let app = env.spawn().await;
    let e = email("chained");
    let token = app.user_with_session(&e).await;
    app.login(&e, "a wrong password, not the real one").await;
    app.send_bearer(reqwest::Method::POST, "/v1/logout", &token, None)
        .await;
    let events = app.auth.store().chain_events(0, 1000).await.unwrap();
    assert!(events.len() >= 5, "{events:?}");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    for pair in events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "linked");
        assert!(pair[1].mac.is_none(), "no key configured, no HMAC");
    }
    let report = chain::verify(
        &**app.auth.store(),
        castellan::app::audit_sealer(app.auth.config()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.events, events.len() as u64);
    assert_eq!(report.authenticated, None);
    assert_verify_passes(
        &env,
        &format!(
            "audit chain intact: {} events, 1 to {}",
            events.len(),
            events.len()
        ),
    );
}

// covers: ASVS-16.4.2
async fn an_edited_event_is_detected(b: Backend) {
    let env = TestEnv::new(b).await;
    chain_of(&env, 6).await;
    assert_verify_passes(&env, "6 events");
    sql(
        &env,
        "UPDATE security_events SET ip = '203.0.113.66' WHERE seq = 3",
    )
    .await;
    assert_verify_fails(&env, "event 3 was altered");
}

// covers: ASVS-16.4.2
async fn a_deleted_event_is_detected(b: Backend) {
    let env = TestEnv::new(b).await;
    chain_of(&env, 6).await;
    sql(&env, "DELETE FROM security_events WHERE seq = 3").await;
    assert_verify_fails(&env, "events 3 to 3 were removed");
    // Removing the newest ones is seen against the head row.
    let env2 = TestEnv::new(b).await;
    chain_of(&env2, 6).await;
    sql(&env2, "DELETE FROM security_events WHERE seq >= 5").await;
    assert_verify_fails(&env2, "events 5 to 6 were removed");
}

// covers: ASVS-16.4.2
async fn an_event_forged_after_the_newest_is_detected(b: Backend) {
    let env = TestEnv::new(b).await;
    let s = chain_of(&env, 6).await;
    let head = s.chain_head().await.unwrap();
    forge(&env, &*s, 6, 7, head.last_hash).await;
    assert_verify_fails(
        &env,
        "event 7 was inserted after the newest recorded event (6)",
    );
}

// covers: ASVS-16.4.2
async fn an_event_replaced_in_the_middle_is_detected(b: Backend) {
    let env = TestEnv::new(b).await;
    let s = chain_of(&env, 6).await;
    let before = s.chain_events(1, 1).await.unwrap().remove(0);
    let prev: Digest32 = before.hash.clone().unwrap().try_into().unwrap();
    sql(&env, "DELETE FROM security_events WHERE seq = 3").await;
    forge(&env, &*s, 2, 3, prev).await;
    assert_verify_fails(
        &env,
        "event 4 does not follow event 3: event 3 was inserted, replaced or rewritten",
    );
}

// covers: ASVS-16.4.2
async fn the_hmac_detects_a_forger_who_also_moves_the_head(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_AUDIT_KEY", AUDIT_KEY);
    let s = chain_of(&env, 6).await;
    assert!(
        s.chain_events(0, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.mac.as_ref().is_some_and(|m| m.len() == 32))
    );
    assert_verify_passes(&env, "HMAC verified on 6 events");
    let head = s.chain_head().await.unwrap();
    let forged = forge(&env, &*s, 6, 7, head.last_hash).await;
    sql(
        &env,
        &format!(
            "UPDATE audit_chain SET last_seq = 7, last_hash = {} WHERE id = 1",
            blob(b, &forged)
        ),
    )
    .await;
    // Hashes alone cannot tell: the forger followed the rules...
    let out = cli_without(&env, &["CASTELLAN_AUDIT_KEY"], &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("HMAC not checked"));
    // ...but could not compute the HMAC without the key.
    assert_verify_fails(&env, "event 7 has no HMAC");
}

// covers: ASVS-16.4.2, ASVS-14.1.2 (retention)
async fn pruning_keeps_the_chain_verifiable(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_AUDIT_RETENTION", "30d");
    let clock = Arc::new(ManualClock::new(OffsetDateTime::now_utc()));
    let app = env.spawn_with_clock(clock.clone()).await;
    let store = &**app.auth.store();
    record_events(store, clock.now(), 3).await;
    let job = castellan::jobs::audit_retention::run_once;
    assert_eq!(job(&app.auth).await.unwrap(), None, "nothing is old yet");
    clock.advance(Duration::from_secs(31 * 86_400));
    record_events(store, clock.now(), 2).await;
    let pruned = job(&app.auth).await.unwrap().expect("old events pruned");
    assert_eq!((pruned.through_seq, pruned.removed), (3, 3));
    let left = store.chain_events(0, 100).await.unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(left[2].kind, "audit_pruned");
    assert_eq!(left[2].detail["through_seq"], 3);
    assert_eq!(left[2].detail["events_removed"], 3);
    let head = store.chain_head().await.unwrap();
    assert_eq!(head.checkpoint_seq, 3);
    let report = chain::verify(store, castellan::app::audit_sealer(app.auth.config()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.events, report.checkpoint_seq), (3, 3));
    assert_verify_passes(&env, "3 events, 4 to 6; checkpoint at event 3");
    assert_eq!(job(&app.auth).await.unwrap(), None, "nothing more to prune");
    // The CLI prunes on demand too; events of the last 31 days stay.
    let out = cli(&env, &["audit", "prune", "--older-than", "1d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no events older than 1d"));
    // A gap right after the checkpoint is still a removal.
    sql(&env, "DELETE FROM security_events WHERE seq = 4").await;
    assert_verify_fails(&env, "events 4 to 4 were removed");
}

// covers: ASVS-16.4.2
async fn deleting_old_events_by_hand_is_detected(b: Backend) {
    let env = TestEnv::new(b).await;
    let s = chain_of(&env, 5).await;
    let second = s.chain_events(1, 1).await.unwrap().remove(0);
    // Made to look like a prune, but without the record a prune leaves.
    sql(&env, "DELETE FROM security_events WHERE seq <= 2").await;
    sql(
        &env,
        &format!(
            "UPDATE audit_chain SET checkpoint_seq = 2, checkpoint_hash = {} WHERE id = 1",
            blob(b, second.hash.as_ref().unwrap())
        ),
    )
    .await;
    assert_verify_fails(
        &env,
        "the checkpoint (event 2) does not match the last recorded prune",
    );
}

async fn export_writes_one_json_line_per_event(b: Backend) {
    let env = TestEnv::new(b).await;
    chain_of(&env, 5).await;
    let out = cli(&env, &["audit", "export"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is one JSON event"))
        .collect();
    assert_eq!(lines.len(), 5);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as i64 + 1);
        assert_eq!(line["kind"], "login_failed");
        assert_eq!(line["detail"]["n"], i);
        assert_eq!(line["request_id"], format!("req-{i}"));
        assert!(line["at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(line["hash"].as_str().unwrap().len(), 64);
        if i > 0 {
            assert_eq!(line["prev_hash"], lines[i - 1]["hash"]);
        }
    }
    let out = cli(&env, &["audit", "export", "--after-seq", "3"]);
    let seqs: Vec<i64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [4, 5]);
}

// covers: ASVS-16.4.2 (appends serialised in the database)
async fn four_writers_in_two_processes_keep_one_chain(b: Backend) {
    let mut env = TestEnv::new(b).await;
    env.set("CASTELLAN_ADMIN_TOKEN", ADMIN_TOKEN);
    store::migrate(&castellan::app::store_options(&env.config()))
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let (port, admin_port) = (free_port(), free_port());
        let mut child = castellan(env.dir.path())
            .arg("serve")
            .envs(&env.vars)
            .env("CASTELLAN_LISTEN", format!("127.0.0.1:{port}"))
            .env("CASTELLAN_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(&format!("http://127.0.0.1:{port}"), &mut child).await;
        nodes.push((child, format!("http://127.0.0.1:{admin_port}")));
    }
    // Each refused admin request is one `access_denied` event: two writers
    // per process, all at once.
    let client = reqwest::Client::new();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let base = nodes[w % 2].1.clone();
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let r = client
                        .get(format!("{base}/admin/v1/audit"))
                        .bearer_auth("not-the-admin-token")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 401);
                }
            })
        })
        .collect();
    // Meanwhile, verification runs against the growing chain and passes.
    let reader = store::open(&castellan::app::store_options(&env.config()))
        .await
        .unwrap();
    let sealer = castellan::app::audit_sealer(&env.config());
    loop {
        let report = chain::verify(&*reader, sealer.clone()).await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        if writers.iter().all(|w| w.is_finished()) {
            break;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    for (mut child, _) in nodes {
        assert!(terminate(&mut child).success());
    }
    assert_verify_passes(&env, "audit chain intact: 100 events, 1 to 100");
    let s = store::open(&castellan::app::store_options(&env.config()))
        .await
        .unwrap();
    let events = s.chain_events(0, 1000).await.unwrap();
    assert_eq!(events.len(), 100);
    assert!(events.iter().all(|e| e.kind == "access_denied"));
}

/// The `admin_action` events the CLI recorded.
async fn cli_actions(s: &dyn Store) -> Vec<String> {
    s.list_events(&EventFilter {
        kind: Some("admin_action".into()),
        ..EventFilter::newest(100)
    })
    .await
    .unwrap()
    .into_iter()
    .filter(|e| e.user_agent.starts_with("castellan-cli/") && e.ip == "local")
    .map(|e| e.detail["action"].as_str().unwrap_or_default().to_string())
    .collect()
}

async fn admin_commands_act_like_the_admin_api(b: Backend) {
    let env = TestEnv::new(b).await;
    let app = env.spawn().await;
    let e = email("cli-admin");
    let token = app.user_with_session(&e).await;
    let ok = |out: Output| {
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    // Lock by email: sessions end, the right password is refused.
    ok(cli(&env, &["admin", "lock", &e]));
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 401);
    app.login(&e, PASSWORD)
        .await
        .assert_error(403, "account_locked");
    let found = ok(cli(&env, &["admin", "find-user", &e.to_uppercase()]));
    assert!(found.contains("locked=true"), "{found}");
    let id = found
        .split_whitespace()
        .find_map(|w| w.strip_prefix("id="))
        .unwrap()
        .to_string();
    // Unlock by id.
    ok(cli(&env, &["admin", "unlock", &id]));
    assert_eq!(app.login(&e, PASSWORD).await.status, 200);
    let token = app.token_for(&e, PASSWORD).await;
    ok(cli(&env, &["admin", "revoke-sessions", &e]));
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 401);
    let mails_before = app.mails().len();
    ok(cli(&env, &["admin", "reset-mfa", &id]));
    assert_eq!(app.mails().len(), mails_before + 1, "the user is told");
    // Everyone out, only when confirmed.
    let token = app.token_for(&e, PASSWORD).await;
    let refused = cli(&env, &["admin", "revoke-all-sessions"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("--yes"));
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    ok(cli(&env, &["admin", "revoke-all-sessions", "--yes"]));
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 401);
    // Unknown users are an error that changes nothing.
    let missing = cli(&env, &["admin", "lock", &email("nobody")]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no user"));
    assert_eq!(
        cli_actions(&**app.auth.store()).await,
        [
            "revoke_all_sessions",
            "reset_mfa",
            "revoke_user_sessions",
            "unlock",
            "lock"
        ]
    );
    assert_verify_passes(&env, "audit chain intact");
}
