//! `castellan doctor`, driven as a binary: a weak deployment scores low and
//! names every fix, a hardened one on PostgreSQL over TLS scores 100, and a
//! broken audit chain or pending migrations are reported.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::black_box::{castellan, free_port, run, terminate, wait_ready};
use crate::helpers::{PASSWORD, TEST_SECRET_KEY, email};
use crate::pg_cluster::{ClusterOptions, PgCluster, TestCa, Validity};

/// Runs `castellan doctor --format json` with `env`; returns the exit
/// status and the parsed report.
fn doctor(dir: &std::path::Path, env: &[(&str, String)], extra: &[&str]) -> (Output, Value) {
    let mut cmd = castellan(dir);
    cmd.args(["doctor", "--format", "json"]).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

// covers: ASVS-13.2.3, ASVS-16.4.3
#[test]
fn a_weak_production_deployment_scores_low_and_names_every_fix() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CASTELLAN_PROFILE", "production".to_string()),
        (
            "CASTELLAN_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        (
            "CASTELLAN_PUBLIC_BASE_URL",
            "http://auth.example.com".into(),
        ),
        ("CASTELLAN_ARGON2_MEMORY_KIB", "8192".into()),
        ("CASTELLAN_ARGON2_ITERATIONS", "1".into()),
        ("CASTELLAN_SESSION_IDLE_TIMEOUT", "2h".into()),
        ("CASTELLAN_SESSION_LIFETIME", "48h".into()),
        ("CASTELLAN_LOG_FORMAT", "pretty".into()),
    ];
    let (out, report) = doctor(dir.path(), &env, &[]);
    assert!(!out.status.success(), "below the default minimum of 80");
    assert!(String::from_utf8_lossy(&out.stderr).contains("below the minimum 80"));
    let score = report["score"].as_u64().unwrap();
    assert!(score < 50, "score {score}: {report:#}");
    assert_eq!(report["profile"], "production");
    for (id, status) in [
        ("production_profile", "fail"),
        ("secret_key", "fail"),
        ("tls", "fail"),
        ("cookies_secure", "fail"),
        ("argon2", "fail"),
        ("session_timeouts", "fail"),
        ("mail", "fail"),
        ("log_format", "fail"),
        ("log_shipping", "warn"),
        ("audit_key", "warn"),
        ("migrations", "fail"),
    ] {
        let c = check(&report, id);
        assert_eq!(c["status"], status, "{c:#}");
        assert!(
            c["fix"].as_str().unwrap().len() > 10 && c["why"].as_str().unwrap().len() > 10,
            "{c:#}"
        );
    }
    // Each fix names the setting to change.
    for (id, setting) in [
        ("secret_key", "CASTELLAN_SECRET_KEY_FILE"),
        ("tls", "CASTELLAN_TRUSTED_PROXIES"),
        ("cookies_secure", "CASTELLAN_PUBLIC_BASE_URL"),
        ("argon2", "argon2_memory_kib"),
        ("mail", "CASTELLAN_SMTP_HOST"),
        ("log_shipping", "CASTELLAN_LOG_SHIPPING"),
    ] {
        assert!(
            check(&report, id)["fix"]
                .as_str()
                .unwrap()
                .contains(setting),
            "{id}"
        );
    }
    // Doctor looks without touching: no database was created.
    assert!(!dir.path().join("data/castellan.db").exists());

    // 13.2.3: the production profile itself refuses default database
    // credentials, and doctor says so.
    let defaults = [
        ("CASTELLAN_PROFILE", "production".to_string()),
        (
            "CASTELLAN_DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:1/castellan?sslmode=disable".into(),
        ),
        ("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY.into()),
    ];
    let out = run(castellan(dir.path())
        .arg("serve")
        .envs(defaults.iter().map(|(k, v)| (*k, v))));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("well-known"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, report) = doctor(dir.path(), &defaults, &["--min-score", "0"]);
    assert_eq!(check(&report, "database_credentials")["status"], "fail");
    assert!(
        check(&report, "production_profile")["summary"]
            .as_str()
            .unwrap()
            .contains("database_url")
    );
}

/// `castellan doctor` run as an unprivileged user when the tests run as
/// root, as a production service would be (doctor fails a root process).
fn doctor_unprivileged(env: &[(&str, String)], extra: &[&str]) -> (Output, Value) {
    let user = std::env::var("CASTELLAN_TEST_PG_USER").unwrap_or_default();
    let mut cmd = castellan(std::path::Path::new("/"));
    if is_root() && !user.is_empty() {
        let inner = std::mem::replace(&mut cmd, Command::new("runuser"));
        cmd.args(["-u", &user, "--"])
            .arg(inner.get_program())
            .current_dir("/");
        for (k, v) in inner.get_envs() {
            if v.is_none() {
                cmd.env_remove(k);
            }
        }
    }
    cmd.args(["doctor", "--format", "json"]).args(extra);
    cmd.envs(env.iter().map(|(k, v)| (*k, v)));
    let out = run(&mut cmd);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

/// 32 random bytes, base64: a production-grade key for the test.
fn random_key() -> String {
    use base64::Engine;
    let bytes = [
        *uuid::Uuid::new_v4().as_bytes(),
        *uuid::Uuid::new_v4().as_bytes(),
    ]
    .concat();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn is_root() -> bool {
    castellan::commands::running_as_root()
}

// covers: ASVS-13.2.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardened_deployment_on_postgresql_over_tls_scores_100() {
    let cluster = PgCluster::start_new(ClusterOptions::tls());
    // The schema belongs to an owner role; the service runs as a role with
    // data privileges only.
    for statement in [
        "CREATE ROLE castellan_owner LOGIN PASSWORD 'owner-9f2c1d7e4b'",
        "CREATE ROLE castellan_app LOGIN PASSWORD 'app-3a8e6c0f5d71'",
        "CREATE DATABASE castellan OWNER castellan_owner",
    ] {
        cluster.exec(statement).await;
    }
    let ca = cluster.ca_file().display().to_string();
    let params = format!("sslmode=verify-full&sslrootcert={ca}");
    let owner_url = cluster.url("castellan", &params).replacen(
        &format!("pgadmin:{}", cluster.password()),
        "castellan_owner:owner-9f2c1d7e4b",
        1,
    );
    let app_url = owner_url.replacen(
        "castellan_owner:owner-9f2c1d7e4b",
        "castellan_app:app-3a8e6c0f5d71",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let key = random_key();
    let base = |url: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CASTELLAN_DATABASE_URL", url.to_string()),
            ("CASTELLAN_SECRET_KEY", key.clone()),
        ]
    };
    let migrate = run(castellan(dir.path())
        .arg("migrate")
        .envs(base(&owner_url).iter().map(|(k, v)| (*k, v))));
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    // pg_cluster's exec runs in the postgres database; grant in castellan's.
    let admin_url = cluster.url_for("127.0.0.1", "castellan", "sslmode=disable");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::raw_sql(
        "GRANT USAGE ON SCHEMA public TO castellan_app; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO castellan_app; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO castellan_app;",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let mut env = base(&app_url);
    env.extend([
        ("CASTELLAN_PROFILE", "production".to_string()),
        (
            "CASTELLAN_AUDIT_KEY",
            "YXVkaXQta2V5LWZvci10aGUtZG9jdG9yLXRlc3QtMDEyMzQ1Njc4OQ==".into(),
        ),
        ("CASTELLAN_BEHIND_TLS_PROXY", "true".into()),
        ("CASTELLAN_TRUSTED_PROXIES", "10.0.0.0/8".into()),
        (
            "CASTELLAN_PUBLIC_BASE_URL",
            "https://auth.example.com".into(),
        ),
        ("CASTELLAN_MAIL_TRANSPORT", "smtp".into()),
        ("CASTELLAN_SMTP_HOST", "smtp.example.com".into()),
        ("CASTELLAN_REQUIRE_MFA", "true".into()),
        ("CASTELLAN_LOG_SHIPPING", "journald to the SIEM".into()),
    ]);
    let (out, report) = doctor_unprivileged(&env, &["--min-score", "100"]);
    let not_passing: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "pass")
        .collect();
    assert!(not_passing.is_empty(), "{not_passing:#?}");
    assert_eq!(report["score"], 100);
    assert!(out.status.success());
    assert_eq!(check(&report, "database_role")["status"], "pass");
    assert!(
        check(&report, "database_ca")["summary"]
            .as_str()
            .unwrap()
            .contains(&ca)
    );

    // The same database seen through the owner role fails the role check;
    // through the superuser it fails too.
    let mut owner_env = env.clone();
    owner_env[0].1 = owner_url.clone();
    let (_, report) = doctor(dir.path(), &owner_env, &["--min-score", "0"]);
    assert_eq!(check(&report, "database_role")["status"], "fail");
    let mut super_env = env.clone();
    super_env[0].1 = cluster.url("castellan", &params);
    let (_, report) = doctor(dir.path(), &super_env, &["--min-score", "0"]);
    let role = check(&report, "database_role");
    assert_eq!(role["status"], "fail");
    assert!(role["summary"].as_str().unwrap().contains("superuser"));

    // The service itself runs with the data-only role: it becomes ready,
    // registers and signs in without any schema privilege.
    let port = free_port();
    let mut child = castellan(dir.path())
        .arg("serve")
        .envs(base(&app_url).iter().map(|(k, v)| (*k, v)))
        .env("CASTELLAN_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url, &mut child).await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{url}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let user = email("dml");
    let body = serde_json::json!({"email": user, "password": PASSWORD});
    let r = client
        .post(format!("{url}/v1/registration"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{url}/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(terminate(&mut child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_migrations_and_a_broken_audit_chain_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        (
            "CASTELLAN_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY.to_string()),
    ];
    // Nothing migrated yet: every migration is pending.
    let (_, report) = doctor(dir.path(), &env, &["--min-score", "0"]);
    let migrations = check(&report, "migrations");
    assert_eq!(migrations["status"], "fail");
    assert!(
        migrations["summary"]
            .as_str()
            .unwrap()
            .contains("0001_init"),
        "{migrations:#}"
    );
    assert_eq!(check(&report, "audit_chain")["status"], "warn");

    // Migrated, with a few chained events (admin actions record them).
    let out = run(castellan(dir.path())
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (*k, v))));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..3 {
        let out = run(castellan(dir.path())
            .args(["admin", "revoke-all-sessions", "--yes"])
            .envs(env.iter().map(|(k, v)| (*k, v))));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, report) = doctor(dir.path(), &env, &["--min-score", "0"]);
    assert_eq!(check(&report, "migrations")["status"], "pass");
    let chain = check(&report, "audit_chain");
    assert_eq!(chain["status"], "pass", "{chain:#}");
    assert!(
        chain["summary"].as_str().unwrap().contains("3 events"),
        "{chain:#}"
    );

    // Someone edits an event in the database.
    let conn = rusqlite::Connection::open(dir.path().join("data/castellan.db")).unwrap();
    conn.execute(
        "UPDATE security_events SET ip = '203.0.113.7' WHERE seq = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let (out, report) = doctor(dir.path(), &env, &[]);
    let chain = check(&report, "audit_chain");
    assert_eq!(chain["status"], "fail", "{chain:#}");
    assert!(
        chain["summary"].as_str().unwrap().contains("event 2"),
        "{chain:#}"
    );
    assert!(chain["fix"].as_str().unwrap().contains("audit verify"));
    // The text report carries the same verdicts.
    let text = run(castellan(dir.path())
        .args(["doctor", "--min-score", "0"])
        .envs(env.iter().map(|(k, v)| (*k, v))));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("castellan doctor: "), "{text}");
    assert!(text.contains("FAIL  audit_chain"), "{text}");
    assert!(text.contains("fix: "), "{text}");
    let _ = out;
}

/// The check `id`, asserted to have `status` and a summary naming `summary_has`.
fn expect<'a>(report: &'a Value, id: &str, status: &str, summary_has: &str) -> &'a Value {
    let found = check(report, id);
    assert_eq!(found["status"], status, "{found:#}");
    assert!(
        found["summary"].as_str().unwrap().contains(summary_has),
        "{found:#}"
    );
    found
}

/// Writes a certificate and key made by `openssl req` with `key_args`.
fn openssl_self_signed(dir: &std::path::Path, name: &str, key_args: &[&str]) -> (String, String) {
    let cert = dir.join(format!("{name}.pem")).display().to_string();
    let key = dir.join(format!("{name}.key")).display().to_string();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "2"])
        .args(key_args)
        .args(["-keyout", &key, "-out", &cert])
        .args(["-subj", "/CN=auth.example.com"])
        .args(["-addext", "subjectAltName=DNS:auth.example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

// covers: ASVS-12.2.2, ASVS-11.2.3
#[test]
fn the_served_certificate_is_graded_for_public_trust_and_key_strength() {
    let dir = tempfile::tempdir().unwrap();
    let grade = |cert: &str, key: &str| {
        let env = [
            (
                "CASTELLAN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY.to_string()),
            (
                "CASTELLAN_PUBLIC_BASE_URL",
                "https://auth.example.com".into(),
            ),
            ("CASTELLAN_TLS_CERT_FILE", cert.to_string()),
            ("CASTELLAN_TLS_KEY_FILE", key.to_string()),
        ];
        doctor(dir.path(), &env, &["--min-score", "0"]).1
    };

    // A P-256 certificate from a private CA: a strong key, but no public
    // root vouches for it, so clients on the internet would refuse it.
    let ca = TestCa::new("castellan doctor test CA");
    let issued = ca.server_cert(&["auth.example.com"], Validity::Current);
    let (cert, key) = (
        dir.path().join("ca-issued.pem"),
        dir.path().join("ca-issued.key"),
    );
    std::fs::write(&cert, format!("{}{}", issued.cert_pem, ca.cert_pem)).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let report = grade(cert.to_str().unwrap(), key.to_str().unwrap());
    expect(&report, "tls", "pass", "terminates TLS itself");
    expect(&report, "tls_key_strength", "pass", "ECDSA P-256");
    let trust = expect(&report, "tls_certificate_trust", "warn", "auth.example.com");
    assert!(
        trust["summary"].as_str().unwrap().contains("UnknownIssuer"),
        "{trust:#}"
    );
    assert!(
        trust["fix"]
            .as_str()
            .unwrap()
            .contains("CASTELLAN_TLS_CERT_FILE")
    );

    // A self-signed RSA-2048 certificate: under 128-bit strength, a failure.
    let (cert, key) = openssl_self_signed(dir.path(), "rsa2048", &["-newkey", "rsa:2048"]);
    let report = grade(&cert, &key);
    let strength = expect(&report, "tls_key_strength", "fail", "RSA 2048 bits");
    assert!(strength["fix"].as_str().unwrap().contains("P-256"));
    assert_eq!(check(&report, "tls_certificate_trust")["status"], "warn");

    // RSA-3072 is enough.
    let (cert, key) = openssl_self_signed(dir.path(), "rsa3072", &["-newkey", "rsa:3072"]);
    let report = grade(&cert, &key);
    expect(&report, "tls_key_strength", "pass", "RSA 3072 bits");
}
