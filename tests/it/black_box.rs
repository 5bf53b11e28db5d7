//! The built binary, driven from outside: CLI behaviour, zero-setup start on
//! SQLite, graceful shutdown, and what the logs contain.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TEST_SECRET_KEY, email, fresh_pg_database};

pub const BIN: &str = env!("CARGO_BIN_EXE_castellan");

pub fn castellan(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CASTELLAN_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("castellan runs")
}

/// Waits until the server answers, or panics with its output.
pub async fn wait_ready(base: &str, child: &mut Child) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = client.get(format!("{base}/health/live")).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("castellan exited early ({status}): {err}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("castellan did not become ready");
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    child.wait().unwrap()
}

#[test]
fn help_and_version_work_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(castellan(dir.path()).arg("--version"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("castellan "));
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["audit", "--help"],
        &["audit", "verify", "--help"],
        &["audit", "export", "--help"],
        &["audit", "prune", "--help"],
        &["admin", "--help"],
        &["admin", "lock", "--help"],
        &["admin", "revoke-all-sessions", "--help"],
        &["doctor", "--help"],
    ] {
        let out = run(castellan(dir.path()).args(args));
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let help = run(castellan(dir.path()).arg("--help"));
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("doctor"),
        "doctor is listed in --help"
    );
    let out = run(castellan(dir.path()).arg("frobnicate"));
    assert!(!out.status.success());
}

// covers: ASVS-13.4.2
#[test]
fn bad_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(castellan(dir.path())
        .arg("serve")
        .env("CASTELLAN_SESSION_LIFETIME", "99999999999h")
        .env("CASTELLAN_PASSWORD_MIN_LENGTH", "4"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("CASTELLAN_SESSION_LIFETIME") && err.contains("CASTELLAN_PASSWORD_MIN_LENGTH"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let out = run(castellan(dir.path()).args(["--config", "missing.toml", "serve"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_with_no_setup_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = castellan(dir.path())
        .arg("serve")
        .env("CASTELLAN_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut child).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/registration"))
        .json(&json!({"email": "first@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        dir.path().join("data/castellan.db").exists(),
        "SQLite in ./data by default"
    );
    assert!(
        dir.path().join("data/secret.key").exists(),
        "dev key generated in ./data"
    );
    let status = terminate(&mut child);
    assert!(status.success(), "SIGTERM ends with exit 0: {status}");
}

/// A login over a raw connection with `user_agent` as the header's bytes;
/// returns the status line (the server may refuse the request).
async fn raw_login(port: u16, user_agent: &[u8], who: &str, password: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({"email": who, "password": password}).to_string();
    let mut req =
        format!("POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ").into_bytes();
    req.extend_from_slice(user_agent);
    req.extend_from_slice(
        format!(
            "\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(&req).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

// covers: ASVS-16.2.5, ASVS-16.2.4, ASVS-16.2.2, ASVS-16.4.1, ASVS-16.2.1, N63B-16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_secrets_and_are_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log_path = dir.path().join("out.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let admin_port = free_port();
    let admin_token = "log-test-admin-token-0123456789abcdefghijkl";
    let mut child = castellan(dir.path())
        .arg("serve")
        .env("CASTELLAN_LISTEN", format!("127.0.0.1:{port}"))
        .env("CASTELLAN_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("CASTELLAN_ADMIN_TOKEN", admin_token)
        .env("CASTELLAN_LOG_LEVEL", "debug")
        .env("CASTELLAN_LOG_FORMAT", "json")
        .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut child).await;
    let client = reqwest::Client::new();
    let who = email("logs");
    let wrong = "a wrong password for the log test";
    let forged_ua = "x\n{\"level\":\"INFO\",\"message\":\"forged\"}\u{1b}[31m";
    let r = client
        .post(format!("{base}/v1/registration"))
        .json(&json!({"email": who, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{base}/v1/login"))
        .json(&json!({"email": who, "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The forged User-Agent as raw bytes: HTTP clients refuse CR/LF and
    // ESC in headers, a raw socket does not. The server must not turn it
    // into a second log entry, whatever it answers.
    for ua in [forged_ua.as_bytes(), b"x\x1b[31mred\x1b[0m".as_slice()] {
        let status = raw_login(port, ua, &who, PASSWORD).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    }
    // obs-text is legal in a header: a C1 control (U+009B, CSI) arrives.
    let r = client
        .post(format!("{base}/v1/login"))
        .header(
            "user-agent",
            reqwest::header::HeaderValue::from_bytes(b"x\xc2\x9b[31m ua").unwrap(),
        )
        .json(&json!({"email": who, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let token = r.json::<Value>().await.unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let session: Value = client
        .get(format!("{base}/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = session["csrf_token"].as_str().unwrap().to_string();
    let r = client
        .post(format!("{base}/v1/logout"))
        .header("cookie", format!("__Host-castellan_session={token}"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // An operator looks the user up: the email in the query string stays
    // out of access logs and spans (ASVS 16.2.5, issue 7).
    let encoded = who.replace('@', "%40");
    for query in [who.clone(), encoded.clone()] {
        let r = client
            .get(format!(
                "http://127.0.0.1:{admin_port}/admin/v1/users?email={query}"
            ))
            .bearer_auth(admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(terminate(&mut child).success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("/admin/v1/users"),
        "admin requests were logged"
    );
    assert!(!text.contains(&encoded), "an encoded email reached the log");
    assert!(
        !text.contains(admin_token),
        "the admin token reached the log"
    );
    assert!(text.contains("request finished"), "the log was captured");
    for secret in [
        PASSWORD,
        wrong,
        token.as_str(),
        &token[4..],
        csrf.as_str(),
        TEST_SECRET_KEY,
    ] {
        assert!(!text.contains(secret), "a secret reached the log: {secret}");
    }
    assert!(
        !text.contains(&who),
        "emails are personal data and stay out of logs"
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r'),
        "raw control characters reached the log"
    );
    for line in text.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_ne!(v["message"], "forged", "a forged entry: {line}");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "UTC timestamps: {ts}");
        for key in ["level", "target"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        if v["message"] == "request finished" {
            assert!(
                v["span"]["request_id"].is_string(),
                "request id on every request line: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrate_processes_at_once_both_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let pg = fresh_pg_database().await;
    let sqlite = format!("sqlite://{}", dir.path().join("m.db").display());
    for url in [sqlite, pg.url.clone()] {
        let spawn = || {
            castellan(dir.path())
                .arg("migrate")
                .env("CASTELLAN_DATABASE_URL", &url)
                .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
