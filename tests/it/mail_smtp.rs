//! Mail through a real SMTP server, and the rules of the SMTP settings.
//!
//! The server is Python's `aiosmtpd` (installed by `scripts/test.sh`) on a
//! loopback port, storing every message it accepts in a Maildir with the
//! envelope recipients in an `X-RcptTo` header.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castellan::config::{Config, SmtpTls};

use crate::helpers::{Backend, TestApp, TestEnv, email, now_code};
use crate::pg_cluster::{TestCa, Validity};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// An `aiosmtpd` process; killed when dropped.
struct SmtpSink {
    child: Child,
    maildir: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts a sink on `127.0.0.1:port`; with `tls` (certificate and key
    /// files) it offers STARTTLS and requires it.
    async fn start(port: u16, tls: Option<(&Path, &Path)>) -> Self {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status();
        assert!(
            probe.is_ok_and(|s| s.success()),
            "python3 with aiosmtpd is needed: python3 -m pip install aiosmtpd \
             (scripts/test.sh installs it)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("maildir");
        let log = dir.path().join("aiosmtpd.log");
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        cmd.args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("start aiosmtpd");
        let mut sink = Self {
            child,
            maildir,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("aiosmtpd exited ({status}): {}", sink.log_text());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return sink;
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on port {port}: {}",
                sink.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every message received so far, as text.
    fn messages(&self) -> Vec<String> {
        ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir.join(sub)).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    /// Messages with this subject, polling until at least one arrived or
    /// `timeout` passed.
    async fn wait_for_subject(&self, subject: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .messages()
                .into_iter()
                .filter(|m| headers(m, "Subject") == [subject])
                .collect();
            if !found.is_empty() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The values of the top-level header `name` (unfolded).
fn headers(message: &str, name: &str) -> Vec<String> {
    let head = message
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if let Some(c) = current.take() {
            out.push(c);
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            current = Some(v.trim().to_string());
        }
    }
    out.extend(current);
    out
}

/// castellan on SQLite, mailing through SMTP at `127.0.0.1:port`.
async fn env_with_smtp(port: u16, tls: &str) -> TestEnv {
    let mut env = TestEnv::new(Backend::Sqlite).await;
    env.set("CASTELLAN_MAIL_TRANSPORT", "smtp")
        .set("CASTELLAN_SMTP_HOST", "127.0.0.1")
        .set("CASTELLAN_SMTP_PORT", &port.to_string())
        .set("CASTELLAN_SMTP_TLS", tls);
    env
}

/// Registers a user and turns TOTP on through the API (which mails
/// `Notice::TotpEnabled`); returns the address and how long activation took.
async fn turn_on_totp(app: &TestApp) -> (String, Duration) {
    let e = email("smtp");
    let token = app.user_with_session(&e).await;
    let code = now_code(&app.enroll_totp(&token).await, 0);
    let started = Instant::now();
    let r = app.activate_totp(&token, &code).await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    (e, took)
}

const TOTP_ON: &str = "Two-factor authentication was turned on";

async fn flush(app: &TestApp, within: Duration) {
    tokio::time::timeout(within, app.auth.mailer().flush())
        .await
        .expect("the mail queue drains");
}

/// The notice as the SMTP server got it: one recipient, both parts.
fn assert_one_notice_to(message: &str, to: &str) {
    assert_eq!(
        headers(message, "X-RcptTo"),
        [to],
        "envelope: one recipient"
    );
    assert_eq!(headers(message, "To"), [to], "{message}");
    assert!(headers(message, "Cc").is_empty() && headers(message, "Bcc").is_empty());
    assert_eq!(headers(message, "From").len(), 1);
    let content_type = headers(message, "Content-Type").join(" ");
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    assert!(message.contains("Content-Type: text/plain"), "{message}");
    assert!(message.contains("Content-Type: text/html"), "{message}");
    assert!(message.contains("If this was not you"), "{message}");
    assert!(message.contains("<!DOCTYPE html>"), "{message}");
}

// covers: ASVS-1.3.11, ASVS-12.3.1, N63B-20
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_delivers_one_multipart_notice_to_the_user() {
    let port = free_port();
    let sink = SmtpSink::start(port, None).await;
    let app = env_with_smtp(port, "none").await.spawn().await;
    let (to, _) = turn_on_totp(&app).await;
    flush(&app, Duration::from_secs(30)).await;
    let got = sink.wait_for_subject(TOTP_ON, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "exactly one notice: {got:?}");
    assert_one_notice_to(&got[0], &to);
    for m in sink.messages() {
        assert_eq!(
            headers(&m, "X-RcptTo"),
            [to.as_str()],
            "every mail has one recipient"
        );
    }
    assert!(
        app.mails().is_empty(),
        "smtp transport writes no .eml files"
    );
    let stats = app.auth.mailer().stats();
    assert!(stats.sent >= 1 && stats.dropped == 0, "{stats:?}");
    app.shutdown().await;
}

// covers: ASVS-16.5.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_keeps_requests_fast_and_the_mail_is_retried() {
    let port = free_port();
    let app = env_with_smtp(port, "none").await.spawn().await;
    // Nothing listens on the port yet: the request must not wait for mail.
    let (to, took) = turn_on_totp(&app).await;
    assert!(took < Duration::from_secs(5), "activation took {took:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.auth.mailer().stats().failed_attempts == 0 {
        assert!(Instant::now() < deadline, "no delivery attempt was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.auth.mailer().stats().sent, 0);
    assert!(
        app.auth.mailer().pending() >= 1,
        "the message waits for a retry"
    );
    // The service keeps answering while the mail server is down.
    let r = app.login(&to, crate::helpers::PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sink = SmtpSink::start(port, None).await;
    let got = sink
        .wait_for_subject(TOTP_ON, Duration::from_secs(25))
        .await;
    assert_eq!(got.len(), 1, "the retried notice arrives once: {got:?}");
    assert_one_notice_to(&got[0], &to);
    flush(&app, Duration::from_secs(5)).await;
    let stats = app.auth.mailer().stats();
    assert!(
        stats.failed_attempts >= 1 && stats.sent >= 1 && stats.dropped == 0,
        "{stats:?}"
    );
    app.shutdown().await;
}

/// A CA, and a server certificate for 127.0.0.1 in `dir`.
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = TestCa::new("castellan smtp test CA");
    let server = ca.server_cert(&["127.0.0.1"], Validity::Current);
    let (ca_file, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    (ca_file, cert, key)
}

// covers: ASVS-12.3.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_verifies_the_certificate_against_smtp_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, cert, key) = tls_files(dir.path());
    let port = free_port();
    let sink = SmtpSink::start(port, Some((&cert, &key))).await;

    // Without the private CA the certificate is not trusted: nothing is sent.
    let mut env = env_with_smtp(port, "starttls").await;
    env.set("CASTELLAN_MAIL_RETRY_ATTEMPTS", "1");
    let untrusting = env.spawn().await;
    turn_on_totp(&untrusting).await;
    flush(&untrusting, Duration::from_secs(30)).await;
    let stats = untrusting.auth.mailer().stats();
    assert_eq!((stats.sent, stats.dropped), (0, 1), "{stats:?}");
    assert!(
        sink.messages().is_empty(),
        "no mail over an unverified connection"
    );
    untrusting.shutdown().await;

    // With smtp_ca_file the same server is trusted and the mail arrives.
    let mut env = env_with_smtp(port, "starttls").await;
    env.set("CASTELLAN_SMTP_CA_FILE", ca_file.to_str().unwrap());
    let app = env.spawn().await;
    let (to, _) = turn_on_totp(&app).await;
    flush(&app, Duration::from_secs(30)).await;
    let got = sink.wait_for_subject(TOTP_ON, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_one_notice_to(&got[0], &to);
    app.shutdown().await;
}

// covers: ASVS-12.3.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_never_falls_back_to_plaintext() {
    // The server offers no STARTTLS: castellan must not send in clear text.
    let port = free_port();
    let sink = SmtpSink::start(port, None).await;
    let mut env = env_with_smtp(port, "starttls").await;
    env.set("CASTELLAN_MAIL_RETRY_ATTEMPTS", "1");
    let app = env.spawn().await;
    turn_on_totp(&app).await;
    flush(&app, Duration::from_secs(30)).await;
    let stats = app.auth.mailer().stats();
    assert_eq!((stats.sent, stats.dropped), (0, 1), "{stats:?}");
    assert!(sink.messages().is_empty());
    app.shutdown().await;
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
    let env: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(None, &env).map_err(|e| e.to_string())
}

// covers: ASVS-12.3.1, ASVS-13.3.1
#[test]
fn smtp_settings_are_validated() {
    let smtp = ("CASTELLAN_MAIL_TRANSPORT", "smtp");

    let err = load(&[smtp]).unwrap_err();
    assert!(
        err.contains("smtp_host") && err.contains("required"),
        "{err}"
    );

    let c = load(&[smtp, ("CASTELLAN_SMTP_HOST", "smtp.example.com")]).unwrap();
    assert_eq!(
        (c.mail.smtp.tls, c.mail.smtp.port),
        (SmtpTls::StartTls, 587)
    );

    for host in ["smtp.example.com", "10.0.0.1", "192.0.2.1"] {
        let err = load(&[
            smtp,
            ("CASTELLAN_SMTP_HOST", host),
            ("CASTELLAN_SMTP_TLS", "none"),
        ])
        .unwrap_err();
        assert!(
            err.contains("smtp_tls") && err.contains("loopback"),
            "{host}: {err}"
        );
    }
    for host in ["127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST"] {
        let c = load(&[
            smtp,
            ("CASTELLAN_SMTP_HOST", host),
            ("CASTELLAN_SMTP_TLS", "none"),
        ]);
        assert!(c.is_ok(), "{host}: {c:?}");
    }

    let err = load(&[smtp, ("CASTELLAN_SMTP_HOST", "smtp.example.com:25")]).unwrap_err();
    assert!(err.contains("CASTELLAN_SMTP_HOST"), "{err}");
    let err = load(&[
        smtp,
        ("CASTELLAN_SMTP_HOST", "smtp.example.com"),
        ("CASTELLAN_SMTP_TLS", "ssl"),
    ])
    .unwrap_err();
    assert!(err.contains("CASTELLAN_SMTP_TLS"), "{err}");

    // A password without a user; the secret is never echoed.
    let err = load(&[
        smtp,
        ("CASTELLAN_SMTP_HOST", "smtp.example.com"),
        ("CASTELLAN_SMTP_PASSWORD", "hunter2-not-shown"),
    ])
    .unwrap_err();
    assert!(err.contains("smtp_username"), "{err}");
    assert!(!err.contains("hunter2"), "secret leaked: {err}");

    // The password may come from a file.
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("smtp_password");
    std::fs::write(&secret_file, "from-a-file\n").unwrap();
    let c = load(&[
        smtp,
        ("CASTELLAN_SMTP_HOST", "smtp.example.com"),
        ("CASTELLAN_SMTP_USERNAME", "castellan"),
        (
            "CASTELLAN_SMTP_PASSWORD_FILE",
            secret_file.to_str().unwrap(),
        ),
    ])
    .unwrap();
    let password = c.mail.smtp.password.as_ref().unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(password),
        "from-a-file"
    );
    assert!(
        !format!("{c:?}").contains("from-a-file"),
        "Debug shows the password"
    );

    // The CA file must exist and hold certificates.
    let err = load(&[
        smtp,
        ("CASTELLAN_SMTP_HOST", "smtp.example.com"),
        ("CASTELLAN_SMTP_CA_FILE", "/nonexistent/ca.pem"),
    ])
    .unwrap_err();
    assert!(err.contains("CASTELLAN_SMTP_CA_FILE"), "{err}");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err = load(&[
        smtp,
        ("CASTELLAN_SMTP_HOST", "smtp.example.com"),
        ("CASTELLAN_SMTP_CA_FILE", not_pem.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(err.contains("CASTELLAN_SMTP_CA_FILE"), "{err}");
    let (ca_file, _, _) = tls_files(dir.path());
    assert!(
        load(&[
            smtp,
            ("CASTELLAN_SMTP_HOST", "smtp.example.com"),
            ("CASTELLAN_SMTP_CA_FILE", ca_file.to_str().unwrap()),
        ])
        .is_ok()
    );

    let err = load(&[("CASTELLAN_MAIL_FROM", "not an address")]).unwrap_err();
    assert!(err.contains("CASTELLAN_MAIL_FROM"), "{err}");
    let err = load(&[("CASTELLAN_MAIL_RETRY_ATTEMPTS", "0")]).unwrap_err();
    assert!(err.contains("CASTELLAN_MAIL_RETRY_ATTEMPTS"), "{err}");
}
