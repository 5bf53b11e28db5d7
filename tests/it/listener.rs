//! The listener against hostile clients, over raw sockets: slow headers,
//! slow bodies, idle keep-alive connections, the connection cap, request
//! smuggling, clients that hang up mid-body, and cross-origin probes.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Backend, PASSWORD, TestApp, TestEnv, email, sample};

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection or `limit` passes.
/// Returns what was read and whether the server closed it.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

/// Reads one response head (and whatever body came with it) or times out.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into());
            }
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        return Some(text);
                    }
                }
            }
        }
    }
}

const LIVE: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: castellan\r\n\r\n";

async fn app_with(settings: &[(&str, &str)]) -> TestApp {
    let mut env = TestEnv::new(Backend::Sqlite).await;
    for (k, v) in settings {
        env.set(k, v);
    }
    env.spawn().await
}

// covers: ASVS-4.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_while_others_are_served() {
    let app = app_with(&[("CASTELLAN_HTTP_HEADER_READ_TIMEOUT", "1s")]).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = connect(&app).await;
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: castellan\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // A well-behaved client is served while the slow ones hang.
    let ok = app.send(Method::GET, "/health/live", None, &[]).await;
    assert_eq!(ok.status.as_u16(), 200);
    let started = Instant::now();
    for s in &mut slow {
        // One more header byte now and then does not extend the deadline.
        let _ = s.write_all(b"a").await;
        let (_, closed) = read_until_closed(s, Duration::from_secs(5)).await;
        assert!(closed, "a connection with unfinished headers stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    app.shutdown().await;
}

// covers: ASVS-4.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_and_a_dribbled_body_both_end_the_request() {
    let app = app_with(&[
        ("CASTELLAN_HTTP_BODY_READ_TIMEOUT", "1s"),
        ("CASTELLAN_HTTP_REQUEST_TIMEOUT", "3s"),
    ])
    .await;
    // Stalled: half the announced body, then nothing.
    let mut s = connect(&app).await;
    s.write_all(
        b"POST /v1/login HTTP/1.1\r\nHost: castellan\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (text, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    assert!(closed, "a stalled body kept the connection open: {text:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 4"),
        "a stalled body gets a 4xx or a closed connection: {text:?}"
    );

    // Dribbled: one byte every 400 ms never trips the per-read timeout, so
    // the whole-request timeout must end it.
    let mut s = connect(&app).await;
    s.write_all(
        b"POST /v1/login HTTP/1.1\r\nHost: castellan\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(8) {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        if let Some(text) = read_response(&mut s, Duration::from_millis(400)).await {
            answer = text;
            break;
        }
    }
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a dribbled body ends with 408 after the request timeout: {answer:?}"
    );
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let app = app_with(&[("CASTELLAN_HTTP_IDLE_TIMEOUT", "1s")]).await;
    let mut s = connect(&app).await;
    s.write_all(LIVE).await.unwrap();
    let first = read_response(&mut s, Duration::from_secs(2)).await.unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Still usable right away (keep-alive works) ...
    s.write_all(LIVE).await.unwrap();
    let second = read_response(&mut s, Duration::from_secs(2)).await.unwrap();
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // ... and closed once idle for the timeout.
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(800));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_wait_and_established_ones_are_served() {
    let app = app_with(&[("CASTELLAN_HTTP_MAX_CONNECTIONS", "3")]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&app).await;
        s.write_all(LIVE).await.unwrap();
        let r = read_response(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        open.push(s);
    }
    // The fourth client is not served while three are open.
    let mut waiting = connect(&app).await;
    waiting.write_all(LIVE).await.unwrap();
    assert_eq!(
        read_response(&mut waiting, Duration::from_secs(1)).await,
        None,
        "a connection beyond the cap was served"
    );
    // The established connections are unaffected.
    for s in &mut open {
        s.write_all(LIVE).await.unwrap();
        let r = read_response(s, Duration::from_secs(2)).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    // When one closes, the waiting client gets its answer.
    drop(open.pop());
    let r = read_response(&mut waiting, Duration::from_secs(3)).await;
    assert!(
        r.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "{r:?}"
    );
    app.shutdown().await;
}

// covers: ASVS-4.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_probes_get_400_and_the_smuggled_request_never_runs() {
    let app = app_with(&[]).await;
    let smuggled_email = email("smuggled");
    let smuggled_body = json!({"email": smuggled_email, "password": PASSWORD}).to_string();
    let smuggled = format!(
        "POST /v1/register HTTP/1.1\r\nHost: castellan\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        smuggled_body.len(),
        smuggled_body
    );
    let chunked_prefix = "0\r\n\r\n";
    let probes: Vec<(&str, String)> = vec![
        // CL.TE: a front end using Content-Length would forward everything.
        (
            "CL.TE",
            format!(
                "POST /health/live HTTP/1.1\r\nHost: castellan\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_prefix}{smuggled}",
                chunked_prefix.len() + smuggled.len()
            ),
        ),
        // TE.CL: a front end using Transfer-Encoding would forward the chunk.
        (
            "TE.CL",
            format!(
                "POST /health/live HTTP/1.1\r\nHost: castellan\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                smuggled.len()
            ),
        ),
        (
            "obfuscated TE",
            format!(
                "POST /health/live HTTP/1.1\r\nHost: castellan\r\nContent-Length: {}\r\nTransfer-Encoding: xchunked\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "TE with a space before the colon",
            format!(
                "POST /health/live HTTP/1.1\r\nHost: castellan\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two Content-Length values",
            format!(
                "POST /health/live HTTP/1.1\r\nHost: castellan\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "chunked, then identity",
            format!(
                "POST /health/live HTTP/1.1\r\nHost: castellan\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
    ];
    for (name, probe) in probes {
        let mut s = connect(&app).await;
        s.write_all(probe.as_bytes()).await.unwrap();
        let (text, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{name}: expected 400, got {text:?}"
        );
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "{name}: a second response means a second request was parsed: {text:?}"
        );
        assert!(closed, "{name}: the connection must close after the 400");
    }
    // The smuggled registration never reached a handler: the address is free.
    let r = app.register(&smuggled_email, PASSWORD).await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    app.shutdown().await;
}

// covers: ASVS-1.4.3
async fn clients_hanging_up_mid_body_leave_the_pool_idle(backend: Backend) {
    let mut env = TestEnv::new(backend).await;
    env.with_admin();
    let app = env.spawn().await;
    // Warm up: one real login attempt uses the pool.
    let _ = app.login(&email("warm"), PASSWORD).await;
    let baseline = app.metrics_when_idle().await;
    let size = sample(&baseline, "castellan_db_pool_connections ");
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(50));
    for i in 0..1000 {
        let addr = addr.clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let _permit = permit;
            let Ok(mut s) = TcpStream::connect(&addr).await else {
                return;
            };
            let path = if i % 2 == 0 { "/v1/login" } else { "/v1/register" };
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: castellan\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n{{\"email\":\"x{i}@example.com\",\"password\":"
            );
            let _ = s.write_all(head.as_bytes()).await;
            // Hang up mid-body.
            drop(s);
        });
    }
    while tasks.join_next().await.is_some() {}
    let after = app.metrics_when_idle().await;
    assert_eq!(sample(&after, "castellan_db_pool_in_use_connections "), 0.0);
    assert_eq!(
        sample(&after, "castellan_db_pool_idle_connections "),
        sample(&after, "castellan_db_pool_connections "),
        "{after}"
    );
    assert!(sample(&after, "castellan_db_pool_connections ") <= size.max(1.0) + 1.0);
    // The server still answers.
    let ok = app.send(Method::GET, "/health/ready", None, &[]).await;
    assert_eq!(ok.status.as_u16(), 200);
    app.shutdown().await;
}

crate::on_both_backends!(clients_hanging_up_mid_body_leave_the_pool_idle);

// covers: ASVS-3.4.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_requests_and_preflights_get_no_allow_origin() {
    let app = app_with(&[]).await;
    for origin in [
        "https://evil.test",
        "null",
        "https://allowed.test.evil.test",
    ] {
        let preflight = app
            .send(
                Method::OPTIONS,
                "/v1/session",
                None,
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "DELETE"),
                    ("Access-Control-Request-Headers", "authorization"),
                ],
            )
            .await;
        let login = app
            .send(
                Method::POST,
                "/v1/login",
                Some(json!({"email": email("cors"), "password": PASSWORD})),
                &[("Origin", origin)],
            )
            .await;
        for reply in [&preflight, &login] {
            assert_eq!(
                reply.header("access-control-allow-origin"),
                None,
                "{origin}"
            );
            assert_eq!(reply.header("access-control-allow-credentials"), None);
        }
        assert!(
            !preflight.status.is_success(),
            "{origin}: {}",
            preflight.status
        );
    }
    app.shutdown().await;
}
