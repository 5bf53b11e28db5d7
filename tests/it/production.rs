//! The built binary in the production profile, seen from outside.

use std::io::Read;
use std::process::Stdio;

use serde_json::json;

use crate::black_box::{castellan, free_port, terminate, wait_ready};
use crate::helpers::{PASSWORD, TEST_SECRET_KEY, email};

/// Every file below `dir`, relative to it.
fn files_below(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// `castellan serve` in production behind a trusted local proxy on `port`.
fn production_serve(dir: &std::path::Path, port: u16) -> std::process::Command {
    let mut cmd = castellan(dir);
    cmd.arg("serve")
        .env("CASTELLAN_PROFILE", "production")
        .env("CASTELLAN_LISTEN", format!("127.0.0.1:{port}"))
        .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
        .env("CASTELLAN_BEHIND_TLS_PROXY", "true")
        .env("CASTELLAN_TRUSTED_PROXIES", "127.0.0.1/32")
        .env("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com");
    cmd
}

// covers: ASVS-16.2.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_logs_go_to_stdout_and_the_audit_table_only() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = production_serve(dir.path(), port)
        .env("CASTELLAN_MAIL_DIR", dir.path().join("data/mail"))
        // The tests may run as root (CI does); production refuses root without this.
        .env("CASTELLAN_ALLOW_ROOT", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut child).await;
    let client = reqwest::Client::new();
    let user = email("dest");
    let r = client
        .post(format!("{base}/v1/registration"))
        .json(&json!({"email": user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for password in [PASSWORD, "wrong password, certainly wrong"] {
        client
            .post(format!("{base}/v1/login"))
            .json(&json!({"email": user, "password": password}))
            .send()
            .await
            .unwrap();
    }
    assert!(terminate(&mut child).success());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 3, "the log went to stdout: {stdout}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    // Only the database (and its WAL files) and mail were written: no log file, in
    // the working directory or the data directory.
    let written = files_below(dir.path());
    for file in &written {
        assert!(
            file.starts_with("data/castellan.db") || file.starts_with("data/mail/"),
            "castellan wrote {file} besides its database: {written:?}"
        );
    }
    // The security events are in the audit table.
    let conn = rusqlite::Connection::open(dir.path().join("data/castellan.db")).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM security_events ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(kinds.contains(&"login_failed".to_string()), "{kinds:?}");
}

// covers: ASVS-13.2.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_to_run_as_root() {
    if !castellan::commands::running_as_root() {
        // Only root can show the refusal; an unprivileged run has nothing to refuse.
        eprintln!("not root: the refusal cannot be observed here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let serve = |allow_root: &str| {
        production_serve(dir.path(), port)
            .env("CASTELLAN_ALLOW_ROOT", allow_root)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = serve("false").wait_with_output().unwrap();
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("refusing to run as root") && text.contains("CASTELLAN_ALLOW_ROOT"),
        "{text}"
    );
    // The explicit override is the only way past it: the same command serves.
    let mut allowed = serve("true");
    wait_ready(&format!("http://127.0.0.1:{port}"), &mut allowed).await;
    assert!(terminate(&mut allowed).success());
}
