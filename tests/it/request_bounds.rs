//! What a hostile or careless client can do to the request pipeline:
//! junk methods must not grow metrics, logs or memory; hanging up must not
//! leave work half-done or connections in use; a login flood must not
//! starve session checks.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, PASSWORD, TestApp, TestEnv, email, sample};
use crate::on_both_backends;

/// Log lines captured by a subscriber installed for this test process
/// (nextest runs every test in a process of its own).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this process");
    captured
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn series(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("castellan_http_"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A distinct method token of `len` letters.
fn junk_method(i: usize, len: usize) -> String {
    let mut m = format!("JUNK{i}X");
    while m.len() < len {
        m.push(char::from(
            b'A' + u8::try_from((m.len() * 7 + i) % 26).unwrap(),
        ));
    }
    m
}

/// Sends one request with a raw method and reads the status line.
async fn raw_method(addr: &str, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_methods_leave_metric_series_logs_and_memory_flat() {
    let logs = capture_logs();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.with_admin();
    let app = env.spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    // Every route and status class the junk can reach, once, so the
    // series that legitimately exist are there before counting.
    for path in ["/v1/session", "/nope"] {
        raw_method(&addr, "JUNKWARMUP", path).await;
        raw_method(&addr, "GET", path).await;
    }
    // A scrape records itself only after it is rendered: scrape once so the
    // admin listener's own `/metrics` series exist before counting.
    app.metrics().await;
    let before_series = series(&app.metrics().await);
    let before_rss = rss_kib();
    let (n, len) = (2000u32, 20 * 1024);
    let mut tasks = tokio::task::JoinSet::new();
    for batch in 0..n as usize / 50 {
        for i in batch * 50..(batch + 1) * 50 {
            let addr = addr.clone();
            let path = if i % 2 == 0 { "/v1/session" } else { "/nope" };
            tasks.spawn(async move { raw_method(&addr, &junk_method(i, len), path).await });
        }
        while let Some(status) = tasks.join_next().await {
            let status = status.unwrap();
            assert!(
                status.starts_with("HTTP/1.1 4"),
                "a junk method gets a 4xx: {status:?}"
            );
        }
    }
    let metrics = app.metrics().await;
    let after_series = series(&metrics);
    assert_eq!(
        after_series, before_series,
        "{n} distinct methods must not add metric series"
    );
    assert!(!metrics.contains("JUNK"), "no raw method in /metrics");
    assert!(
        sample(
            &metrics,
            r#"castellan_http_requests_total{route="unmatched",method="other",status="4xx"}"#
        ) >= f64::from(n / 2),
        "junk methods are counted as `other`"
    );
    let grown_mib = rss_kib().saturating_sub(before_rss) / 1024;
    // 2,000 x 20 KiB of methods is 40 MiB; kept anywhere, it would show.
    assert!(
        grown_mib < 16,
        "RSS grew by {grown_mib} MiB for {n} junk methods"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(r#""method":"other""#),
        "the access log names the method `other`"
    );
    assert!(!text.contains("JUNK"), "no raw method in the logs");
    assert!(
        text.len() < n as usize * 2048,
        "the log stays small: {} bytes",
        text.len()
    );
    app.shutdown().await;
}

/// Requests whose clients hang up: `mid_body` ones before sending the body
/// they announced, the others right after sending a complete request.
async fn hang_up(addr: &str, body: &str, path: &str, mid_body: bool, delay_us: u64) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let announced = if mid_body {
        body.len() + 100
    } else {
        body.len()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body.as_bytes()).await;
    tokio::time::sleep(Duration::from_micros(delay_us)).await;
    drop(s);
}

async fn idle_in_transaction(app: &TestApp) -> i64 {
    let url = TestEnv::database_url_of(app);
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

// covers: ASVS-1.4.3
async fn clients_hanging_up_leave_nothing_half_done(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    env.with_admin()
        .set("CASTELLAN_RATE_REGISTRATION_PER_IP", "100000/1m")
        .set("CASTELLAN_RATE_LOGIN_PER_IP", "100000/1m")
        .set("CASTELLAN_HASH_QUEUE", "1000");
    let app = env.spawn().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let idle = app.metrics_when_idle().await;
    let baseline = sample(&idle, "castellan_db_pool_in_use_connections ");
    let who = email("hangup-login");
    app.register(&who, PASSWORD).await;
    // 1,000 hang-ups mid-body.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u64 {
        let addr = addr.clone();
        let body = json!({"email": email(&format!("mid{i}")), "password": PASSWORD}).to_string();
        tasks.spawn(async move {
            hang_up(&addr, &body[..body.len() / 2], "/v1/registration", true, 0).await;
        });
        if tasks.len() >= 50 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
    // Complete registrations and logins abandoned at once or a few
    // milliseconds in: each lands somewhere between routing and COMMIT.
    let mut emails = Vec::new();
    for i in 0..120u64 {
        let address = email(&format!("cut{i}"));
        emails.push(address.clone());
        let (addr, who) = (addr.clone(), who.clone());
        tasks.spawn(async move {
            let body = json!({"email": address, "password": PASSWORD}).to_string();
            hang_up(&addr, &body, "/v1/registration", false, (i % 12) * 1500).await;
            let body = json!({"email": who, "password": PASSWORD}).to_string();
            hang_up(&addr, &body, "/v1/login", false, (i % 7) * 2000).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    // The work that had started finishes (the count of registrations stops
    // moving); then every connection is back.
    let mut last = registered(&app).await;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = registered(&app).await;
        if now == last {
            break;
        }
        last = now;
    }
    let idle = app.metrics_when_idle().await;
    assert_eq!(
        sample(&idle, "castellan_db_pool_in_use_connections "),
        baseline,
        "pool gauges back at their idle baseline"
    );
    if backend == Backend::Postgres {
        assert_eq!(
            idle_in_transaction(&app).await,
            0,
            "no pooled connection left inside a transaction"
        );
    }
    // Never half-done: every account that exists has its registration event.
    let mut existing = 0;
    for address in &emails {
        let r = app.login(address, PASSWORD).await;
        assert!(
            r.status == 200 || r.status == 401,
            "{address}: {} {}",
            r.status,
            r.text
        );
        existing += usize::from(r.status == 200);
    }
    // `who` plus the cut registrations that got through.
    assert_eq!(
        registered(&app).await,
        existing + 1,
        "as many registration events as accounts"
    );
    // The service still works.
    let r = app.login(&who, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.shutdown().await;
}

on_both_backends!(clients_hanging_up_leave_nothing_half_done);

async fn registered(app: &TestApp) -> usize {
    app.events(5000)
        .await
        .into_iter()
        .filter(|e| e.kind == "user_registered")
        .count()
}

// covers: ASVS-15.2.2
async fn a_login_flood_is_shed_and_session_checks_keep_working(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    env.set("CASTELLAN_RATE_LOGIN_PER_IP", "100000/1m")
        .set("CASTELLAN_HASH_QUEUE", "8");
    let app = Arc::new(env.spawn().await);
    let who = email("flood");
    let token = app.user_with_session(&who).await;
    let poller = {
        let (app, token) = (app.clone(), token.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                statuses.push(app.get_bearer("/v1/session", &token).await.status.as_u16());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            statuses
        })
    };
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let (app, who) = (app.clone(), who.clone());
        flood.spawn(async move {
            let r = app
                .send(
                    Method::POST,
                    "/v1/login",
                    Some(json!({"email": who, "password": "wrong password of the flood"})),
                    &[],
                )
                .await;
            (
                r.status.as_u16(),
                r.header("retry-after").map(str::to_string),
            )
        });
    }
    let mut shed = 0;
    while let Some(r) = flood.join_next().await {
        let (status, retry) = r.unwrap();
        assert!(
            matches!(status, 401 | 429 | 503),
            "a wrong password gets 401, or is shed: {status}"
        );
        if status != 401 {
            shed += 1;
            assert!(
                retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
                "{status} carries Retry-After"
            );
        }
    }
    assert!(shed > 0, "500 concurrent logins cannot all be queued");
    let statuses = poller.await.unwrap();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every session check succeeds during the flood: {statuses:?}"
    );
    Arc::try_unwrap(app).ok().unwrap().shutdown().await;
}

on_both_backends!(a_login_flood_is_shed_and_session_checks_keep_working);
