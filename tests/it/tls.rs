//! Native TLS against real clients (openssl s_client, curl, rustls): the
//! protocol versions and suites on offer, ALPN and HTTP/2, HSTS, certificate
//! reload, the plain-HTTP redirect listener, the admin listener and the
//! production rule.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{ADMIN_TOKEN, Backend, TEST_SECRET_KEY, TestApp, TestEnv};
use crate::pg_cluster::{TestCa, Validity};

const BIN: &str = env!("CARGO_BIN_EXE_castellan");

/// A test CA and a server certificate for 127.0.0.1 and localhost, on disk.
struct Pki {
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            ca: TestCa::new("castellan native TLS test CA"),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(pki.ca_file(), &pki.ca.cert_pem).unwrap();
        pki.issue_into(&pki.cert_file(), &pki.key_file());
        pki
    }
    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    fn key_file(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    /// Writes a fresh certificate and key (new key pair, same CA).
    fn issue_into(&self, cert: &Path, key: &Path) -> String {
        let issued = self
            .ca
            .server_cert(&["127.0.0.1", "localhost"], Validity::Current);
        // Write to a temporary name and rename, as deployment tools do.
        let tmp_cert = cert.with_extension("tmp");
        let tmp_key = key.with_extension("tmpkey");
        std::fs::write(&tmp_cert, &issued.cert_pem).unwrap();
        std::fs::write(&tmp_key, &issued.key_pem).unwrap();
        std::fs::rename(&tmp_key, key).unwrap();
        std::fs::rename(&tmp_cert, cert).unwrap();
        issued.cert_pem
    }
}

fn tls_env(env: &mut TestEnv, pki: &Pki) {
    env.set("CASTELLAN_TLS_CERT_FILE", pki.cert_file().to_str().unwrap())
        .set("CASTELLAN_TLS_KEY_FILE", pki.key_file().to_str().unwrap());
}

fn production(env: &mut TestEnv) {
    env.set("CASTELLAN_PROFILE", "production")
        .set("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com");
}

fn hostport(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Runs `openssl s_client` with `args`; true when the handshake completed.
fn s_client(addr: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok =
        out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (ok, text)
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// covers: ASVS-12.1.1, N63B-23
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_1_2_and_1_3_are_offered_and_1_3_is_preferred() {
    let pki = Pki::new();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    let app = env.spawn().await;
    let addr = hostport(&app);
    // SECLEVEL=0 lets the client itself offer the old protocols, so a
    // refusal comes from castellan.
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(&addr, &[old, "-cipher", "ALL:@SECLEVEL=0"]);
        assert!(!ok, "{old} was accepted: {text}");
    }
    let (ok, text) = s_client(&addr, &["-tls1_2"]);
    assert!(ok, "TLS 1.2 refused: {text}");
    let (ok, text) = s_client(&addr, &[]);
    assert!(
        ok && text.contains("TLSv1.3"),
        "default is not TLS 1.3: {text}"
    );
    app.shutdown().await;
}

// covers: ASVS-12.1.2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_forward_secret_aead_suites_are_accepted_for_tls_1_2() {
    let pki = Pki::new();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    let app = env.spawn().await;
    let addr = hostport(&app);
    let listed = Command::new("openssl")
        .args(["ciphers", "-tls1_2", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"])
        .output()
        .expect("openssl ciphers");
    let all = String::from_utf8_lossy(&listed.stdout).trim().to_string();
    let suites: Vec<&str> = all.split(':').filter(|s| !s.is_empty()).collect();
    assert!(suites.len() > 20, "openssl lists few suites: {all}");
    let mut accepted = Vec::new();
    for suite in &suites {
        let cipher = format!("{suite}:@SECLEVEL=0");
        let (ok, _) = s_client(&addr, &["-tls1_2", "-cipher", &cipher]);
        if ok {
            accepted.push(*suite);
        }
    }
    assert!(!accepted.is_empty(), "no TLS 1.2 suite works at all");
    for suite in &accepted {
        let fs = suite.starts_with("ECDHE-");
        let aead = suite.contains("GCM") || suite.contains("CHACHA20");
        assert!(
            fs && aead,
            "weak TLS 1.2 suite accepted: {suite} (all: {accepted:?})"
        );
    }
    for weak in [
        "AES128-SHA",
        "DES-CBC3-SHA",
        "ECDHE-ECDSA-AES128-SHA",
        "AES128-GCM-SHA256",
    ] {
        assert!(!accepted.contains(&weak), "{weak}");
    }
    app.shutdown().await;
}

// covers: ASVS-12.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http11_are_negotiated_and_responses_carry_hsts() {
    let pki = Pki::new();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    let app = env.spawn().await;
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}/health/live");
    let ca = pki.ca_file();
    let ca = ca.to_str().unwrap();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (out, err) = curl(&[
            flag,
            "--cacert",
            ca,
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "version=%{http_version} status=%{http_code}",
            &url,
        ]);
        assert!(
            out.contains(&format!("version={version} status=200")),
            "{flag}: {out} {err}"
        );
        assert!(
            out.to_ascii_lowercase()
                .contains("strict-transport-security: max-age="),
            "{flag}: no HSTS: {out}"
        );
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let (out, _) = curl(&[
        "-o",
        "-",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{port}/health/live"),
    ]);
    assert!(
        !out.contains("200"),
        "plain HTTP served on the TLS port: {out}"
    );
    app.shutdown().await;
}

/// A rustls client that trusts `ca_pem`.
fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn open(addr: &str, ca_pem: &str) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector(ca_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn leaf_of(tls: &Tls) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    <CertificateDer as rustls_pki_types::pem::PemObject>::from_pem_slice(pem.as_bytes()).unwrap()
}

async fn live(tls: &mut Tls) -> String {
    tls.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Opens connections until one presents `want`, for up to 10 s.
async fn wait_for_cert(addr: &str, ca_pem: &str, want: &CertificateDer<'static>) {
    let started = Instant::now();
    loop {
        let tls = open(addr, ca_pem).await;
        if &leaf_of(&tls) == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_certificate_is_picked_up_without_dropping_connections() {
    let pki = Pki::new();
    let first = der_of(&std::fs::read_to_string(pki.cert_file()).unwrap());
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    env.set("CASTELLAN_TLS_RELOAD_INTERVAL", "200ms");
    let app = env.spawn().await;
    let addr = hostport(&app);
    let mut old = open(&addr, &pki.ca.cert_pem).await;
    assert_eq!(leaf_of(&old), first);
    assert!(live(&mut old).await.starts_with("HTTP/1.1 200"));

    let second = der_of(&pki.issue_into(&pki.cert_file(), &pki.key_file()));
    assert_ne!(first, second);
    wait_for_cert(&addr, &pki.ca.cert_pem, &second).await;
    // The connection opened before the reload still works.
    assert!(live(&mut old).await.starts_with("HTTP/1.1 200"));

    // A broken file is refused and the current certificate stays.
    std::fs::write(pki.cert_file(), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let tls = open(&addr, &pki.ca.cert_pem).await;
    assert_eq!(leaf_of(&tls), second);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_at_once() {
    let pki = Pki::new();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    env.set("CASTELLAN_TLS_RELOAD_INTERVAL", "1h");
    let app = env.spawn().await;
    let addr = hostport(&app);
    let second = der_of(&pki.issue_into(&pki.cert_file(), &pki.key_file()));
    // nextest runs each test in its own process: the signal reaches only this app.
    let status = Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for_cert(&addr, &pki.ca.cert_pem, &second).await;
    app.shutdown().await;
}

// covers: ASVS-4.1.2, ASVS-12.2.1
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_redirects_pages_and_refuses_api_calls() {
    let pki = Pki::new();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    production(&mut env);
    env.set("CASTELLAN_TLS_REDIRECT_LISTEN", "127.0.0.1:0");
    let config = env.config();
    let running = castellan::app::start(config).await.unwrap();
    let plain = format!(
        "http://{}",
        running.redirect_addr.expect("redirect listener")
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client.get(format!("{plain}/?next=1")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 301);
    assert_eq!(
        page.headers()["location"],
        "https://auth.example.com/?next=1"
    );
    // The Host header never chooses the target.
    let page = client
        .get(format!("{plain}/account"))
        .header("Host", "evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["location"],
        "https://auth.example.com/account"
    );
    for (method, path) in [
        (reqwest::Method::POST, "/v1/login"),
        (reqwest::Method::GET, "/v1/session"),
        (reqwest::Method::GET, "/health/ready"),
        (reqwest::Method::POST, "/"),
    ] {
        let r = client
            .request(method.clone(), format!("{plain}{path}"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            !(300..400).contains(&status),
            "{method} {path} over plain HTTP was redirected ({status})"
        );
        assert_eq!(status, 403, "{method} {path}");
        assert!(r.headers().get("location").is_none());
    }
    running.shutdown().await.unwrap();
}

// covers: ASVS-12.3.3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_production_with_tls_the_admin_listener_serves_tls_only() {
    let pki = Pki::new();
    let mut env = TestEnv::new(Backend::Sqlite).await;
    tls_env(&mut env, &pki);
    production(&mut env);
    env.with_admin();
    let running = castellan::app::start(env.config()).await.unwrap();
    let admin = running.admin_addr.unwrap();
    let (out, _) = curl(&[
        "-o",
        "-",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        &format!("http://127.0.0.1:{}/metrics", admin.port()),
    ]);
    assert!(
        !out.ends_with("200"),
        "plain HTTP reached the admin listener: {out}"
    );
    let (out, err) = curl(&[
        "--cacert",
        pki.ca_file().to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        &format!("https://localhost:{}/metrics", admin.port()),
    ]);
    assert_eq!(out, "200", "{err}");
    running.shutdown().await.unwrap();

    // Beyond loopback without TLS, production refuses to start.
    let mut env = TestEnv::new(Backend::Sqlite).await;
    production(&mut env);
    env.with_admin()
        .set("CASTELLAN_ADMIN_LISTEN", "0.0.0.0:0")
        .set("CASTELLAN_BEHIND_TLS_PROXY", "true")
        .set("CASTELLAN_TRUSTED_PROXIES", "10.0.0.5/32");
    let err = castellan::config::Config::load(None, &env.vars)
        .unwrap_err()
        .to_string();
    assert!(err.contains("admin_listen") && err.contains("TLS"), "{err}");
}

/// Runs `castellan serve` in production with `extra`; it must exit.
fn production_serve(extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("serve")
        .env("CASTELLAN_PROFILE", "production")
        .env("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com")
        .env("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY)
        .env("CASTELLAN_DATA_DIR", dir.path().join("data"))
        .env("CASTELLAN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("castellan kept running with {extra:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// covers: ASVS-12.2.1, N63B-23
#[test]
fn production_refuses_to_start_without_tls_or_known_proxies() {
    // Neither native TLS nor a TLS proxy.
    let (code, text) = production_serve(&[]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("CASTELLAN_TLS_CERT_FILE"), "{text}");
    // A TLS proxy without its addresses: every client would share one
    // address, so one attacker could lock everybody out.
    let (code, text) = production_serve(&[("CASTELLAN_BEHIND_TLS_PROXY", "true")]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("CASTELLAN_TRUSTED_PROXIES"), "{text}");
    // Either fix is accepted by the configuration.
    let base = [
        ("CASTELLAN_PROFILE", "production"),
        ("CASTELLAN_PUBLIC_BASE_URL", "https://auth.example.com"),
        ("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY),
    ];
    let load = |extra: &[(&str, &str)]| {
        let vars = base
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        castellan::config::Config::load(None, &vars)
    };
    load(&[
        ("CASTELLAN_BEHIND_TLS_PROXY", "true"),
        ("CASTELLAN_TRUSTED_PROXIES", "10.0.0.5/32"),
    ])
    .expect("a TLS proxy with known addresses is accepted");
    let pki = Pki::new();
    load(&[
        ("CASTELLAN_TLS_CERT_FILE", pki.cert_file().to_str().unwrap()),
        ("CASTELLAN_TLS_KEY_FILE", pki.key_file().to_str().unwrap()),
    ])
    .expect("native TLS is accepted");
}
