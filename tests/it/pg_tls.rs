//! TLS to PostgreSQL, against throwaway clusters with a test CA made at test
//! time (`pg_cluster`): verify-full is the default and really verifies (CA,
//! host name, expiry), there is no plaintext fallback, client certificates
//! work as the database credential, old TLS versions are refused, and the
//! production profile refuses unverified modes to remote hosts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use castellan::store::postgres::PgStore;
use secrecy::SecretString;

use crate::helpers::{Backend, TEST_SECRET_KEY, TestEnv, email};
use crate::pg_cluster::{ClusterOptions, PgCluster, Validity};

const BIN: &str = env!("CARGO_BIN_EXE_castellan");

/// The settings the production profile needs besides the database (the
/// secret key is set separately).
const PRODUCTION: &[(&str, &str)] = &[
    ("CASTELLAN_PROFILE", "production"),
    ("CASTELLAN_BEHIND_TLS_PROXY", "true"),
    ("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1/32"),
    ("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com"),
];

/// Test settings (SQLite data dir, port 0, ...) with `url` as the database.
async fn env_for(url: &str) -> TestEnv {
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.set("CASTELLAN_DATABASE_URL", url);
    env.set("CASTELLAN_DB_ACQUIRE_TIMEOUT", "2s");
    env
}

/// Connects the way castellan does (`PgStore::connect` is what
/// `store::open` runs for a postgres:// URL), within a bounded time.
async fn connect(url: &str) -> anyhow::Result<PgStore> {
    let config = env_for(url).await.config();
    let secret = SecretString::from(url.to_string());
    tokio::time::timeout(
        Duration::from_secs(20),
        PgStore::connect(&secret, &castellan::app::store_options(&config)),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {url} hung"))
}

/// `(ssl, version, client_dn)` of a connection taken from castellan's pool.
async fn tls_of(store: &PgStore) -> (bool, Option<String>, Option<String>) {
    sqlx::query_as("SELECT ssl, version, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl")
}

/// Asserts that castellan connects over TLS 1.2 or 1.3; returns the version.
async fn assert_tls(url: &str) -> String {
    let store = connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url} should connect: {e:#}"));
    let (ssl, version, _) = tls_of(&store).await;
    assert!(
        ssl,
        "{url}: pg_stat_ssl says the connection is not encrypted"
    );
    let version = version.unwrap_or_default();
    assert!(
        version == "TLSv1.2" || version == "TLSv1.3",
        "{url}: {version}"
    );
    store.pool().close().await;
    version
}

/// Asserts that castellan refuses to connect (`castellan::store::open`, as
/// at start-up) and that the error names one of `expect`; returns it.
async fn assert_refused(cluster: &PgCluster, url: &str, why: &str, expect: &[&str]) -> String {
    let config = env_for(url).await.config();
    let opened = tokio::time::timeout(
        Duration::from_secs(20),
        castellan::store::open(&castellan::app::store_options(&config)),
    )
    .await
    .unwrap_or_else(|_| panic!("{why}: connecting to {url} hung"));
    let err = match opened {
        Ok(_) => panic!("{why}: castellan connected to {url}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        expect
            .iter()
            .any(|w| err.to_lowercase().contains(&w.to_lowercase())),
        "{why}: the error should mention one of {expect:?}: {err}"
    );
    assert!(
        !err.contains(cluster.password()),
        "{why}: the password leaked into the error: {err}"
    );
    err
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

// covers: ASVS-12.3.1, ASVS-12.3.2, ASVS-12.1.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_configured_ca_connects_over_tls() {
    let cluster = PgCluster::start_new(ClusterOptions::tls());
    let ca = path(&cluster.ca_file());

    // Explicit verify-full, by name and by IP (both are in the certificate).
    let url = cluster.url("postgres", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_tls(&url).await;
    assert_tls(&cluster.url_for(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;

    // Every connection of the pool is encrypted, not just the first one.
    let store = connect(&url).await.expect("connects");
    let conns = futures_acquire(&store, 3).await;
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.backend_type = 'client backend' AND NOT s.ssl",
    )
    .fetch_one(store.pool())
    .await
    .expect("count");
    assert_eq!(plain, 0, "a castellan connection without TLS");
    drop(conns);
    store.pool().close().await;

    // No sslmode at all means verify-full: with the right CA it works.
    assert_tls(&cluster.url("postgres", &format!("sslrootcert={ca}"))).await;

    // The whole service runs on it.
    let app = env_for(&url).await.spawn().await;
    let who = email("tls");
    let token = app.user_with_session(&who).await;
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    assert_eq!(
        app.send(reqwest::Method::GET, "/health/ready", None, &[])
            .await
            .status,
        200
    );
    app.shutdown().await;
}

/// Holds `n` pool connections at once, so the pool opens that many.
async fn futures_acquire(
    store: &PgStore,
    n: usize,
) -> Vec<sqlx::pool::PoolConnection<sqlx::Postgres>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(store.pool().acquire().await.expect("acquire"));
    }
    held
}

// covers: ASVS-12.3.2, ASVS-16.3.4
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_ca_wrong_host_name_and_expired_certificate_are_refused() {
    // The certificate names only `localhost`.
    let mut cluster = PgCluster::start_new(ClusterOptions {
        server_names: vec!["localhost".into()],
        ..ClusterOptions::tls()
    });
    let ca = path(&cluster.ca_file());
    let other = path(&cluster.other_ca_file());
    let cert_words = ["certificate", "UnknownIssuer"];

    // Control: the right CA and the right name work.
    assert_tls(&cluster.url("postgres", &format!("sslmode=verify-full&sslrootcert={ca}"))).await;

    // Untrusted CA: no sslmode and no sslrootcert (verify-full against the
    // built-in public roots, which do not include the test CA).
    assert_refused(
        &cluster,
        &cluster.url("postgres", ""),
        "default mode, test CA not trusted",
        &cert_words,
    )
    .await;
    // A configured CA that did not sign the server certificate.
    assert_refused(
        &cluster,
        &cluster.url(
            "postgres",
            &format!("sslmode=verify-full&sslrootcert={other}"),
        ),
        "verify-full with another CA",
        &cert_words,
    )
    .await;
    assert_refused(
        &cluster,
        &cluster.url("postgres", &format!("sslrootcert={other}")),
        "default mode with another CA",
        &cert_words,
    )
    .await;

    // The right CA, but a host name the certificate does not carry.
    for params in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslrootcert={ca}"),
    ] {
        assert_refused(
            &cluster,
            &cluster.url_for("127.0.0.1", "postgres", &params),
            "host name not in the certificate",
            &["certificate", "NotValidForName"],
        )
        .await;
    }
    // ... and only the name was wrong: verify-ca (no name check) accepts it.
    assert_tls(&cluster.url_for(
        "127.0.0.1",
        "postgres",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    ))
    .await;

    // The failure reaches the operator: `castellan migrate` exits 1 with one
    // line naming the certificate problem, without the password.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("migrate")
        .env(
            "CASTELLAN_DATABASE_URL",
            cluster.url(
                "postgres",
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
        )
        .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
        .env("CASTELLAN_DATA_DIR", dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("castellan runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error") && stderr.contains("certificate"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(cluster.password()) && !stdout.contains(cluster.password()),
        "password leaked"
    );

    // An expired certificate from the right CA, for the right name.
    cluster.stop();
    cluster.replace_server_cert(&["localhost", "127.0.0.1"], Validity::Expired, false);
    cluster.start();
    let err = assert_refused(
        &cluster,
        &cluster.url("postgres", &format!("sslmode=verify-full&sslrootcert={ca}")),
        "expired server certificate",
        &["expired"],
    )
    .await;
    assert!(err.contains("certificate"), "{err}");
}

// covers: ASVS-12.3.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_is_refused_with_no_plaintext_fallback() {
    let cluster = PgCluster::start_new(ClusterOptions::default());
    let ca = path(&cluster.ca_file());
    // sqlx's own refusal, or castellan's sslrootcert-only check before it.
    let words = ["does not support TLS", "does not offer TLS"];

    // Control: the server is up and takes plaintext when asked for it.
    let store = connect(&cluster.url("postgres", "sslmode=disable"))
        .await
        .expect("plaintext control");
    assert!(!tls_of(&store).await.0);
    store.pool().close().await;

    assert_refused(
        &cluster,
        &cluster.url("postgres", ""),
        "no sslmode (verify-full)",
        &words,
    )
    .await;
    assert_refused(
        &cluster,
        &cluster.url("postgres", &format!("sslrootcert={ca}")),
        "no sslmode, with CA",
        &words,
    )
    .await;
    assert_refused(
        &cluster,
        &cluster.url("postgres", &format!("sslmode=verify-full&sslrootcert={ca}")),
        "verify-full",
        &words,
    )
    .await;
    assert_refused(
        &cluster,
        &cluster.url("postgres", "sslmode=require"),
        "require",
        &words,
    )
    .await;

    // The production profile with the default mode: the same refusal.
    let mut env = env_for(&cluster.url("postgres", "")).await;
    for (k, v) in PRODUCTION {
        env.set(k, v);
    }
    let err = match castellan::store::open(&castellan::app::store_options(&env.config())).await {
        Ok(_) => panic!("production connected to a server without TLS"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("does not support TLS") || err.contains("does not offer TLS"),
        "{err}"
    );
}

// covers: ASVS-13.2.1, ASVS-12.3.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_authenticates_castellan_without_a_password() {
    let cluster = PgCluster::start_new(ClusterOptions {
        client_ca: true,
        hba: Some(vec![
            "hostssl all all 127.0.0.1/32 cert clientcert=verify-full".into(),
        ]),
        ..ClusterOptions::tls()
    });
    // The role has no password at all: the certificate is its credential.
    cluster.exec("CREATE ROLE castellan_svc LOGIN").await;
    cluster
        .exec("CREATE DATABASE castellan OWNER castellan_svc")
        .await;
    let ca = path(&cluster.ca_file());
    let (cert, key) = cluster.write_client_cert("castellan_svc", true);
    let (cert, key) = (path(&cert), path(&key));
    let tls = format!("sslmode=verify-full&sslrootcert={ca}");
    let url = cluster.url_without_password(
        "castellan_svc",
        "castellan",
        &format!("{tls}&sslcert={cert}&sslkey={key}"),
    );

    let store = connect(&url)
        .await
        .unwrap_or_else(|e| panic!("client cert login: {e:#}"));
    let (ssl, _, client_dn) = tls_of(&store).await;
    assert!(ssl);
    assert!(
        client_dn.unwrap_or_default().contains("castellan_svc"),
        "the server saw the client certificate"
    );
    store.pool().close().await;

    let app = env_for(&url).await.spawn().await;
    let token = app.user_with_session(&email("mtls")).await;
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    app.shutdown().await;

    // Without a certificate: refused.
    assert_refused(
        &cluster,
        &cluster.url_without_password("castellan_svc", "castellan", &tls),
        "no client certificate",
        &["requires a valid client certificate"],
    )
    .await;
    // A certificate from a CA the server does not trust: refused.
    let (bad_cert, bad_key) = cluster.write_client_cert("castellan_svc", false);
    assert_refused(
        &cluster,
        &cluster.url_without_password(
            "castellan_svc",
            "castellan",
            &format!(
                "{tls}&sslcert={}&sslkey={}",
                path(&bad_cert),
                path(&bad_key)
            ),
        ),
        "client certificate from an untrusted CA",
        &[
            "certificate",
            "alert",
            "unknown",
            "server said",
            "I/O error",
        ],
    )
    .await;
    // A trusted certificate for another role: refused.
    let (other_cert, other_key) = cluster.write_client_cert("someone_else", true);
    assert_refused(
        &cluster,
        &cluster.url_without_password(
            "castellan_svc",
            "castellan",
            &format!(
                "{tls}&sslcert={}&sslkey={}",
                path(&other_cert),
                path(&other_key)
            ),
        ),
        "client certificate for another role",
        &["certificate authentication failed"],
    )
    .await;
}

/// Runs `castellan migrate` in the production profile with `url`.
fn production_migrate(url: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("migrate")
        .envs(PRODUCTION.iter().copied())
        .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
        .env("CASTELLAN_DATA_DIR", dir.path().join("data"))
        .env("CASTELLAN_DB_ACQUIRE_TIMEOUT", "1s")
        .env("CASTELLAN_DATABASE_URL", url)
        .stdin(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("castellan runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// covers: ASVS-12.3.1, ASVS-12.3.2
#[test]
fn production_refuses_an_unverified_sslmode_to_a_remote_host() {
    let secret = "db-password-for-the-policy-test";
    for mode in ["disable", "allow", "prefer", "require"] {
        let url = format!("postgres://castellan:{secret}@db.invalid:5432/castellan?sslmode={mode}");
        let (code, err) = production_migrate(&url, &[]);
        assert_eq!(code, Some(1), "sslmode={mode}: {err}");
        assert!(
            err.contains("sslmode"),
            "sslmode={mode}: the error names sslmode: {err}"
        );
        assert!(
            err.contains("verify-full"),
            "sslmode={mode}: the error says what to use: {err}"
        );
        assert!(
            !err.contains("cannot connect"),
            "sslmode={mode}: refused before connecting: {err}"
        );
        assert!(!err.contains(secret), "the password leaked: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }

    // The operator's override gets past the policy; the start then fails on
    // the connection itself (db.invalid does not resolve).
    let url = format!("postgres://castellan:{secret}@db.invalid:5432/castellan?sslmode=require");
    let (code, err) =
        production_migrate(&url, &[("CASTELLAN_DATABASE_ALLOW_UNVERIFIED_TLS", "true")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot connect"),
        "the error is about connecting: {err}"
    );
    assert!(!err.contains("sslmode"), "not about sslmode: {err}");
    assert!(!err.contains(secret), "the password leaked: {err}");

    // verify-full (explicit or by default) needs no override.
    for url in [
        format!("postgres://castellan:{secret}@db.invalid:5432/castellan?sslmode=verify-full"),
        format!("postgres://castellan:{secret}@db.invalid:5432/castellan"),
    ] {
        let (code, err) = production_migrate(&url, &[]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("cannot connect") && !err.contains("sslmode"),
            "{err}"
        );
    }

    // Loopback never leaves the machine: the policy lets it through (and
    // the connection then fails, nothing listens on port 1).
    let (code, err) = production_migrate(
        "postgres://castellan:x@127.0.0.1:1/castellan?sslmode=disable",
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("cannot connect") && !err.contains("sslmode"),
        "{err}"
    );
}

// covers: ASVS-12.1.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_1_3_only_server_works_and_a_tls_1_1_server_is_refused() {
    let mut cluster = PgCluster::start_new(ClusterOptions {
        ssl_min_protocol_version: Some("TLSv1.3".into()),
        ..ClusterOptions::tls()
    });
    let ca = path(&cluster.ca_file());
    let url = cluster.url("postgres", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(assert_tls(&url).await, "TLSv1.3");

    // TLS 1.0 to 1.1 only.
    cluster.stop();
    cluster.append_conf(&[
        "ssl_min_protocol_version = 'TLSv1'",
        "ssl_max_protocol_version = 'TLSv1.1'",
    ]);
    cluster.start();
    // Control: the server is up (plaintext superuser line).
    cluster.exec("SELECT 1").await;
    assert_refused(
        &cluster,
        &url,
        "server offers at most TLS 1.1",
        &["protocol", "version", "alert", "I/O error"],
    )
    .await;
    assert_refused(
        &cluster,
        &cluster.url("postgres", &format!("sslrootcert={ca}")),
        "default mode, TLS 1.1 server",
        &["protocol", "version", "alert", "I/O error"],
    )
    .await;
}

/// A child process that is killed if the test fails before it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

// covers: ASVS-16.3.4, ASVS-12.3.2, ASVS-16.5.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_that_stops_verifying_at_runtime_is_refused_and_logged() {
    let mut cluster = PgCluster::start_new(ClusterOptions::tls());
    let url = cluster.url(
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            path(&cluster.ca_file())
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let log_path = dir.path().join("out.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Child(
        Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("serve")
            .env("CASTELLAN_LISTEN", format!("127.0.0.1:{port}"))
            .env("CASTELLAN_LOG_FORMAT", "json")
            .env("CASTELLAN_DATABASE_URL", &url)
            .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
            .env("CASTELLAN_DATA_DIR", dir.path().join("data"))
            .env("CASTELLAN_DB_ACQUIRE_TIMEOUT", "1s")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("castellan starts"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "castellan exited ({status}): {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "castellan did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let who = email("rotated");
    let body = serde_json::json!({"email": who, "password": crate::helpers::PASSWORD});
    let r = client
        .post(format!("{base}/v1/registration"))
        .json(&body)
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/v1/login"))
        .json(&body)
        .send()
        .await
        .expect("login");
    let login: serde_json::Value = r.json().await.expect("login body");
    let token = login["session_token"].as_str().expect("token").to_string();

    // The server comes back with a certificate from a CA castellan does not
    // trust (a swapped or intercepted server).
    cluster.stop();
    cluster.replace_server_cert(&["localhost", "127.0.0.1"], Validity::Current, true);
    cluster.start();

    for _ in 0..2 {
        let r = client
            .get(format!("{base}/v1/session"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(
            status, 503,
            "fail closed while the server does not verify: {text}"
        );
        assert!(text.contains("\"unavailable\""), "{text}");
    }
    let r = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 503);

    let pid = child.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.0.wait();
    let text = std::fs::read_to_string(&log_path).expect("log");
    let entries: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("invalid peer certificate"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!entries.is_empty(), "the TLS failure is logged: {text}");
    for entry in &entries {
        let level = entry["level"].as_str().unwrap_or_default();
        assert!(
            level == "WARN" || level == "ERROR",
            "logged as a problem, not {level}: {entry}"
        );
    }
    assert!(
        text.contains("UnknownIssuer"),
        "the log names the cause: {text}"
    );
    for secret in [cluster.password(), token.as_str()] {
        assert!(!text.contains(secret), "a secret reached the log");
    }
}
