//! An extra throwaway PostgreSQL cluster for one test: its own data
//! directory, port, superuser, TLS material (a test CA made at test time) and
//! `pg_hba.conf`. The suite's main cluster (`scripts/test.sh`) stays
//! untouched; tests that need to break or reconfigure the server use this.
//!
//! Binaries come from `CASTELLAN_TEST_PG_BIN`; when `CASTELLAN_TEST_PG_USER`
//! is set (the suite runs as root) every PostgreSQL tool runs as that user
//! through `runuser`. Dropping a [`PgCluster`] stops it (`-m immediate`), so a
//! failing test leaves nothing running.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sqlx::Connection;
use time::OffsetDateTime;

/// The superuser every cluster gets (password in [`PgCluster::password`]).
pub const SUPERUSER: &str = "pgadmin";

/// A certificate authority made at test time.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday to next week.
    Current,
    /// Ended yesterday.
    Expired,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "castellan tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(2);
        params.not_after = now + time::Duration::days(30);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate whose SANs are `names` (DNS names or IPs).
    pub fn server_cert(&self, names: &[&str], validity: Validity) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server cert params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(params, validity)
    }

    /// A client certificate with `cn` as its common name (PostgreSQL's
    /// `cert` authentication maps it to the role of that name).
    pub fn client_cert(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client cert params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(params, Validity::Current)
    }

    fn leaf(&self, mut params: CertificateParams, validity: Validity) -> Issued {
        let now = OffsetDateTime::now_utc();
        let (from, to) = match validity {
            Validity::Current => (now - time::Duration::days(1), now + time::Duration::days(7)),
            Validity::Expired => (
                now - time::Duration::days(10),
                now - time::Duration::days(1),
            ),
        };
        params.not_before = from;
        params.not_after = to;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// How to set a cluster up. `Default` is plaintext with password auth.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `ssl = on` with a server certificate from [`PgCluster::ca`].
    pub ssl: bool,
    /// SANs of the server certificate.
    pub server_names: Vec<String>,
    pub server_validity: Validity,
    /// `ssl_ca_file` = the client CA, so the server can verify client certs.
    pub client_ca: bool,
    pub ssl_min_protocol_version: Option<String>,
    pub ssl_max_protocol_version: Option<String>,
    /// `pg_hba.conf` lines after the fixed ones (Unix socket, and the
    /// superuser by password from 127.0.0.1). `None`: everyone by password
    /// from 127.0.0.1, with or without TLS.
    pub hba: Option<Vec<String>>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            ssl: false,
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            server_validity: Validity::Current,
            client_ca: false,
            ssl_min_protocol_version: None,
            ssl_max_protocol_version: None,
            hba: None,
        }
    }
}

impl ClusterOptions {
    /// TLS on, server certificate for `localhost` and `127.0.0.1`.
    pub fn tls() -> Self {
        Self {
            ssl: true,
            ..Self::default()
        }
    }
}

/// One throwaway PostgreSQL cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    os_user: Option<String>,
    port: u16,
    password: String,
    running: bool,
    /// Signs the server certificate.
    pub ca: TestCa,
    /// Signs client certificates (`ssl_ca_file` when `client_ca`).
    pub client_ca: TestCa,
    /// A CA that signed nothing this server uses.
    pub other_ca: TestCa,
}

impl PgCluster {
    /// Creates (initdb) and starts a cluster.
    pub fn start_new(options: ClusterOptions) -> Self {
        let mut cluster = Self::create(options);
        cluster.start();
        cluster
    }

    /// Creates the cluster (initdb, certificates, configuration) without
    /// starting it.
    pub fn create(options: ClusterOptions) -> Self {
        let bin = PathBuf::from(std::env::var("CASTELLAN_TEST_PG_BIN").unwrap_or_else(|_| {
            panic!("CASTELLAN_TEST_PG_BIN is not set: run the suite with scripts/test.sh")
        }));
        let os_user = std::env::var("CASTELLAN_TEST_PG_USER")
            .ok()
            .filter(|u| !u.is_empty());
        let dir = tempfile::Builder::new()
            .prefix("castellan-pgx.")
            .tempdir()
            .expect("tempdir");
        let password = uuid::Uuid::new_v4().simple().to_string();
        let cluster = Self {
            dir,
            bin,
            os_user,
            port: 0,
            password,
            running: false,
            ca: TestCa::new("castellan test server CA"),
            client_ca: TestCa::new("castellan test client CA"),
            other_ca: TestCa::new("castellan test unrelated CA"),
        };
        cluster.init(&options);
        cluster
    }

    fn init(&self, options: &ClusterOptions) {
        let root = self.dir.path();
        std::fs::create_dir(root.join("sock")).expect("socket dir");
        write_private(&root.join("pwfile"), &format!("{}\n", self.password));

        // TLS material: the server's files for PostgreSQL, the rest for the
        // test process (it reads them as the owner or as root).
        let names: Vec<&str> = options.server_names.iter().map(String::as_str).collect();
        let server = self.ca.server_cert(&names, options.server_validity);
        std::fs::write(root.join("server.crt"), &server.cert_pem).expect("server.crt");
        write_private(&root.join("server.key"), &server.key_pem);
        std::fs::write(self.ca_file(), &self.ca.cert_pem).expect("ca.pem");
        std::fs::write(root.join("client-ca.pem"), &self.client_ca.cert_pem)
            .expect("client-ca.pem");
        std::fs::write(self.other_ca_file(), &self.other_ca.cert_pem).expect("other-ca.pem");

        self.chown_all();
        let out = self
            .pg_tool("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .arg(format!("--username={SUPERUSER}"))
            .arg(format!("--pwfile={}", root.join("pwfile").display()))
            .args([
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        std::fs::remove_file(root.join("pwfile")).expect("remove pwfile");

        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_string(),
            format!(
                "unix_socket_directories = '{}'",
                root.join("sock").display()
            ),
            "max_connections = 50".into(),
            "fsync = off".into(),
            "synchronous_commit = off".into(),
            "full_page_writes = off".into(),
            "password_encryption = 'scram-sha-256'".into(),
        ];
        if options.ssl {
            conf.push("ssl = on".into());
            conf.push(format!(
                "ssl_cert_file = '{}'",
                root.join("server.crt").display()
            ));
            conf.push(format!(
                "ssl_key_file = '{}'",
                root.join("server.key").display()
            ));
            if options.client_ca {
                conf.push(format!(
                    "ssl_ca_file = '{}'",
                    root.join("client-ca.pem").display()
                ));
            }
        }
        if let Some(v) = &options.ssl_min_protocol_version {
            conf.push(format!("ssl_min_protocol_version = '{v}'"));
        }
        if let Some(v) = &options.ssl_max_protocol_version {
            conf.push(format!("ssl_max_protocol_version = '{v}'"));
        }
        let conf_path = self.data_dir().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        all.push_str("\n# castellan test cluster\n");
        all.push_str(&conf.join("\n"));
        all.push('\n');
        std::fs::write(&conf_path, all).expect("write postgresql.conf");

        let mut hba = vec![
            "local all all scram-sha-256".to_string(),
            format!("host all {SUPERUSER} 127.0.0.1/32 scram-sha-256"),
        ];
        match &options.hba {
            Some(lines) => hba.extend(lines.iter().cloned()),
            None => hba.push("host all all 127.0.0.1/32 scram-sha-256".into()),
        }
        write_private(
            &self.data_dir().join("pg_hba.conf"),
            &(hba.join("\n") + "\n"),
        );
        self.chown_all();
    }

    /// Starts the server; the first start picks a free port, later ones
    /// reuse it.
    pub fn start(&mut self) {
        assert!(!self.running, "already running");
        let first = self.port == 0;
        let mut last = String::new();
        for _ in 0..5 {
            if first {
                self.port = free_port();
            }
            let out = self
                .pg_tool("pg_ctl")
                .args(["-w", "-t", "30", "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-o", &format!("-p {}", self.port), "start"])
                .output()
                .expect("pg_ctl runs");
            if out.status.success() {
                self.running = true;
                return;
            }
            last = format!("{}\n{}", text(&out), self.log_tail());
            if !last.contains("in use") {
                break;
            }
            if !first {
                // Our port was taken while we were down: wait for it.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// Stops the server (`pg_ctl -m fast`): sessions are ended, data kept.
    pub fn stop(&mut self) {
        let out = self.pg_ctl_stop("fast");
        assert!(out.status.success(), "pg_ctl stop failed: {}", text(&out));
        self.running = false;
    }

    /// Stops and starts again on the same port with the same data.
    pub fn restart(&mut self) {
        if self.running {
            self.stop();
        }
        self.start();
    }

    /// Replaces the server certificate (takes effect at the next start).
    pub fn replace_server_cert(
        &self,
        names: &[&str],
        validity: Validity,
        signed_by_other_ca: bool,
    ) {
        let ca = if signed_by_other_ca {
            &self.other_ca
        } else {
            &self.ca
        };
        let server = ca.server_cert(names, validity);
        std::fs::write(self.dir.path().join("server.crt"), &server.cert_pem).expect("server.crt");
        write_private(&self.dir.path().join("server.key"), &server.key_pem);
        self.chown_all();
    }

    /// Appends settings to `postgresql.conf` (later lines win; takes effect
    /// at the next start).
    pub fn append_conf(&self, lines: &[&str]) {
        let conf_path = self.data_dir().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        for line in lines {
            all.push_str(line);
            all.push('\n');
        }
        std::fs::write(&conf_path, all).expect("write postgresql.conf");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://pgadmin:PASSWORD@localhost:PORT/db?params`.
    pub fn url(&self, db: &str, params: &str) -> String {
        self.url_for("localhost", db, params)
    }

    /// Like [`url`](Self::url), with another host (e.g. `127.0.0.1`).
    pub fn url_for(&self, host: &str, db: &str, params: &str) -> String {
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!(
            "postgres://{SUPERUSER}:{}@{host}:{}/{db}{query}",
            self.password, self.port
        )
    }

    /// A URL for `user` with no password (client-certificate auth).
    pub fn url_without_password(&self, user: &str, db: &str, params: &str) -> String {
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!("postgres://{user}@localhost:{}/{db}{query}", self.port)
    }

    /// The CA that signed the server certificate (for `sslrootcert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not sign the server certificate.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// Writes a client certificate and key for role `cn`, signed by the
    /// client CA (or by an unrelated CA when `trusted` is false); returns
    /// the (cert, key) paths.
    pub fn write_client_cert(&self, cn: &str, trusted: bool) -> (PathBuf, PathBuf) {
        let ca = if trusted {
            &self.client_ca
        } else {
            &self.other_ca
        };
        let issued = ca.client_cert(cn);
        let tag = if trusted {
            "client"
        } else {
            "untrusted-client"
        };
        let cert = self.dir.path().join(format!("{tag}-{cn}.crt"));
        let key = self.dir.path().join(format!("{tag}-{cn}.key"));
        std::fs::write(&cert, issued.cert_pem).expect("client cert");
        write_private(&key, &issued.key_pem);
        (cert, key)
    }

    /// Runs SQL as the superuser over a plaintext loopback connection
    /// (the fixed `host ... pgadmin` line allows it whatever the options).
    pub async fn exec(&self, sql: &str) {
        let url = self.url_for("127.0.0.1", "postgres", "sslmode=disable");
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .expect("superuser connects");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }

    /// The server log so far (for assertion messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        self.pg_tool("pg_ctl")
            .args(["-w", "-t", "30", "-D"])
            .arg(self.data_dir())
            .args(["-m", mode, "stop"])
            .output()
            .expect("pg_ctl runs")
    }

    /// A PostgreSQL tool, run as the cluster's OS user from its directory.
    fn pg_tool(&self, name: &str) -> Command {
        let tool = self.bin.join(name);
        let mut cmd = match &self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(tool);
                c
            }
            None => Command::new(tool),
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    fn chown_all(&self) {
        if let Some(user) = &self.os_user {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(self.dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown to {user} failed");
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running || self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
            self.running = false;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(contents.as_bytes()).expect("write");
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
