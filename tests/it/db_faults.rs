//! PostgreSQL going away under a running castellan: liveness stays up,
//! readiness and the API answer 503 `unavailable` with `Retry-After` (never a
//! hang, never a 401 or an authenticated 200), and castellan recovers by
//! itself when the database is back, with nothing lost.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{Backend, PASSWORD, Reply, TestApp, TestEnv, email, sample};
use crate::pg_cluster::{ClusterOptions, PgCluster};

/// Any single request must answer within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

async fn within(what: &str, request: impl std::future::Future<Output = Reply>) -> Reply {
    tokio::time::timeout(ANSWER_WITHIN, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?} (hang)"))
}

/// castellan in-process on its own cluster (TLS, verify-full, like production).
async fn app_on(cluster: &PgCluster) -> TestApp {
    let url = cluster.url(
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            cluster.ca_file().display()
        ),
    );
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.set("CASTELLAN_DATABASE_URL", &url);
    env.set("CASTELLAN_DB_ACQUIRE_TIMEOUT", "1s");
    env.spawn().await
}

/// The 503 of the contract, with `Retry-After` and no internals.
fn assert_unavailable(r: &Reply, what: &str) {
    assert_eq!(
        r.status, 503,
        "{what}: fail closed with 503, got {} {}",
        r.status, r.text
    );
    r.assert_error(503, "unavailable");
    let retry = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After missing"));
    assert!(
        retry.parse::<u64>().is_ok_and(|s| s >= 1),
        "{what}: Retry-After in seconds: {retry}"
    );
    let lower = r.text.to_lowercase();
    for leak in [
        "sqlx",
        "select",
        "postgres",
        "panicked",
        "/tmp",
        "i/o error",
        "tls",
        "pool",
    ] {
        assert!(
            !lower.contains(leak),
            "{what}: internals in the body ({leak}): {}",
            r.text
        );
    }
}

// covers: ASVS-16.5.2, ASVS-16.5.3, ASVS-16.5.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_fails_closed_and_recovers_without_restart() {
    let mut cluster = PgCluster::start_new(ClusterOptions::tls());
    let app = app_on(&cluster).await;
    let who = email("outage");
    let token = app.user_with_session(&who).await;
    assert_eq!(app.get_bearer("/v1/session", &token).await.status, 200);
    let get = |path: &'static str| app.send(Method::GET, path, None, &[]);
    assert_eq!(get("/health/ready").await.status, 200);

    cluster.stop();

    let live = within("liveness", get("/health/live")).await;
    assert_eq!(
        live.status, 200,
        "liveness does not depend on the database: {}",
        live.text
    );
    assert_unavailable(
        &within("readiness", get("/health/ready")).await,
        "readiness",
    );
    let during = email("during");
    let r = within("session lookup", app.get_bearer("/v1/session", &token)).await;
    assert_ne!(
        r.status, 401,
        "a valid session must not look revoked: {}",
        r.text
    );
    assert_unavailable(&r, "session lookup");
    let r = within("login", app.login(&who, PASSWORD)).await;
    assert_unavailable(&r, "login");
    let r = within("registration", app.register(&during, PASSWORD)).await;
    assert_unavailable(&r, "registration");
    let r = within(
        "sessions list",
        app.send_bearer(Method::GET, "/v1/sessions", &token, None),
    )
    .await;
    assert_unavailable(&r, "sessions list");
    // Again, now that every pooled connection is known to be dead.
    let r = within("session lookup", app.get_bearer("/v1/session", &token)).await;
    assert_unavailable(&r, "session lookup, second time");
    assert_eq!(within("liveness", get("/health/live")).await.status, 200);

    cluster.restart();

    let started = Instant::now();
    loop {
        let r = within("readiness", get("/health/ready")).await;
        if r.status == 200 {
            break;
        }
        assert_unavailable(&r, "readiness while recovering");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "castellan did not recover within 15 s of the database coming back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nothing written before the outage is lost; the old token still works.
    let r = within("session lookup", app.get_bearer("/v1/session", &token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body: Value = r.json();
    assert_eq!(body["user"]["email"], who.as_str());
    let r = within("login", app.login(&who, PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The registration refused during the outage left nothing behind.
    let r = within("registration", app.register(&during, PASSWORD)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    app.shutdown().await;
}

// covers: ASVS-16.5.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_by_the_server_are_replaced() {
    let cluster = PgCluster::start_new(ClusterOptions::tls());
    let app = app_on(&cluster).await;
    let who = email("killed");
    let token = app.user_with_session(&who).await;

    // The server ends every castellan connection (e.g. a failover or an
    // administrator's pg_terminate_backend): the next requests reconnect.
    cluster
        .exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .await;
    let r = within("session lookup", app.get_bearer("/v1/session", &token)).await;
    assert_ne!(
        r.status, 401,
        "a valid session must not look revoked: {}",
        r.text
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = within("login", app.login(&who, PASSWORD)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.shutdown().await;
}

// covers: ASVS-15.2.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_larger_than_the_server_allows_is_refused_at_start() {
    let mut cluster = PgCluster::start_new(ClusterOptions::default());
    cluster.append_conf(&["max_connections = 12", "superuser_reserved_connections = 3"]);
    cluster.restart();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.set(
        "CASTELLAN_DATABASE_URL",
        &cluster.url("postgres", "sslmode=disable"),
    );
    env.set("CASTELLAN_DB_MAX_CONNECTIONS", "10");
    let opened = castellan::store::open(&castellan::app::store_options(&env.config())).await;
    let err = match opened {
        Ok(s) => panic!("refused; pool stats {:?}", s.pool_stats()),
        Err(e) => e,
    };
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot fit")
            && text.contains("max_connections 12")
            && text.contains("allows 9"),
        "{text}"
    );
    env.set("CASTELLAN_DB_MAX_CONNECTIONS", "9");
    assert!(
        castellan::store::open(&castellan::app::store_options(&env.config()))
            .await
            .is_ok(),
        "a pool that fits starts"
    );
}

// covers: ASVS-15.2.2, ASVS-16.5.2, ASVS-16.5.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_503_after_the_acquire_timeout_and_recovers() {
    let mut env = TestEnv::new(Backend::Postgres).await;
    env.with_admin()
        .set("CASTELLAN_DB_MAX_CONNECTIONS", "1")
        .set("CASTELLAN_DB_ACQUIRE_TIMEOUT", "500ms")
        .set("CASTELLAN_SESSION_CLEANUP_INTERVAL", "24h");
    let app = env.spawn().await;
    let who = email("exhausted");
    let token = app.user_with_session(&who).await;

    // Another client locks the user's row, so the next login holds the
    // pool's only connection while it waits for that lock.
    let mut locker = sqlx::PgConnection::connect(&TestEnv::database_url_of(&app))
        .await
        .unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("SELECT id FROM users FOR UPDATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let login = tokio::spawn(
        app.client
            .post(format!("{}/v1/login", app.base))
            .json(&json!({"email": who, "password": PASSWORD}))
            .send(),
    );
    let waiting = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&mut *lock)
        .await
        .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            waiting.elapsed() < ANSWER_WITHIN,
            "the login never blocked on the row lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = app.metrics().await;
    for (gauge, value) in [
        ("castellan_db_pool_connections ", 1.0),
        ("castellan_db_pool_idle_connections ", 0.0),
        ("castellan_db_pool_in_use_connections ", 1.0),
        ("castellan_db_pool_max_connections ", 1.0),
    ] {
        assert_eq!(sample(&before, gauge), value, "{gauge}: {before}");
    }

    // The pool is exhausted: a session check waits the acquire timeout,
    // then fails closed with 503 and Retry-After.
    let r = within("session lookup", app.get_bearer("/v1/session", &token)).await;
    assert_unavailable(&r, "session lookup on an exhausted pool");
    let after = app.metrics().await;
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(delta("castellan_db_pool_acquire_timeouts_total"), 1.0);
    assert_eq!(delta("castellan_db_pool_acquire_wait_seconds_count"), 1.0);
    assert!(
        delta("castellan_db_pool_acquire_wait_seconds_sum") >= 0.5,
        "the wait lasted the acquire timeout: {after}"
    );
    assert_eq!(
        delta(r#"castellan_db_query_duration_seconds_count{op="find_session"}"#),
        0.0,
        "no lookup ran without a connection"
    );

    // The lock goes away: the held login finishes and the pool serves again.
    lock.rollback().await.unwrap();
    let status = tokio::time::timeout(ANSWER_WITHIN, login)
        .await
        .expect("the held login finishes")
        .unwrap()
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let r = within("session lookup", app.get_bearer("/v1/session", &token)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The pool gauges return to idle.
    app.metrics_when_idle().await;
    app.shutdown().await;
}
