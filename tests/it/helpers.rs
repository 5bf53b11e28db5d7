//! `spawn_app(backend)`: the real application on port 0 with a fresh
//! database, plus small helpers to speak the contract.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use castellan::app::{self, Running};
use castellan::auth::Auth;
use castellan::config::Config;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

/// Which storage a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed
/// `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )+
    };
}

/// The admin URL of the test cluster (a role that may create databases).
pub fn pg_admin_url() -> String {
    std::env::var("CASTELLAN_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "CASTELLAN_TEST_PG_URL is not set: run the suite with scripts/test.sh, \
             which starts a throwaway PostgreSQL cluster"
        )
    })
}

/// A database of its own on the test cluster, dropped with this value.
///
/// Every PostgreSQL test makes one. Kept, they would fill the cluster's disk
/// (about 8 MB each, several hundred per run), which is how a CI run once
/// ended in "No space left on device".
pub struct PgDatabase {
    pub url: String,
    name: String,
}

/// Creates a fresh database on the test cluster.
pub async fn fresh_pg_database() -> PgDatabase {
    let admin = pg_admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
    PgDatabase {
        url: format!("{base}/{name}?{query}"),
        name,
    }
}

impl Drop for PgDatabase {
    /// Best effort: a test that failed must not also fail here, and the
    /// cluster is thrown away at the end of the run anyway. `Drop` may run on
    /// a runtime worker, where blocking on a future is not allowed, so the
    /// statement runs on a thread with a runtime of its own.
    #[expect(
        clippy::print_stderr,
        reason = "a test's own output, shown when it fails"
    )]
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("test database {} was not dropped", self.name);
        }
    }
}

/// What one test writes outside its process: a temp dir (the SQLite file,
/// the mail folder) and, on PostgreSQL, a database. Both go when the last
/// holder (the settings or an app started from them) lets go.
pub struct Scratch {
    dir: tempfile::TempDir,
    database: Option<PgDatabase>,
}

impl Scratch {
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A fixed test key (base64 of 32 bytes).
pub const TEST_SECRET_KEY: &str = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0=";

/// Settings for one test: a temp data dir, port 0, a fresh database.
pub struct TestEnv {
    pub vars: BTreeMap<String, String>,
    pub dir: Arc<Scratch>,
    pub backend: Backend,
}

impl TestEnv {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(fresh_pg_database().await),
        };
        let mut vars = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            vars.insert(k.to_string(), v);
        };
        set("CASTELLAN_LISTEN", "127.0.0.1:0".into());
        set(
            "CASTELLAN_DATA_DIR",
            dir.path().join("data").display().to_string(),
        );
        set(
            "CASTELLAN_MAIL_DIR",
            dir.path().join("mail").display().to_string(),
        );
        set("CASTELLAN_SECRET_KEY", TEST_SECRET_KEY.into());
        set("CASTELLAN_SHUTDOWN_TIMEOUT", "1s".into());
        match &database {
            None => set(
                "CASTELLAN_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("castellan.db").display()),
            ),
            Some(pg) => set("CASTELLAN_DATABASE_URL", pg.url.clone()),
        }
        let dir = Arc::new(Scratch { dir, database });
        Self { vars, dir, backend }
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.insert(key.to_string(), value.to_string());
        self
    }

    /// The database URL an app of this test runs on.
    pub fn database_url_of(app: &TestApp) -> String {
        match &app.auth.config().database.location {
            castellan::config::DatabaseLocation::Postgres { url } => {
                secrecy::ExposeSecret::expose_secret(url).to_string()
            }
            castellan::config::DatabaseLocation::Sqlite { path } => {
                format!("sqlite://{}", path.display())
            }
        }
    }

    pub fn config(&self) -> Config {
        Config::load(None, &self.vars).expect("valid test configuration")
    }

    pub async fn spawn(&self) -> TestApp {
        let running = app::start(self.config()).await.expect("castellan starts");
        TestApp::new(running, self.dir.clone())
    }

    /// Starts castellan with a clock the test moves.
    pub async fn spawn_with_clock(&self, clock: Arc<castellan::clock::ManualClock>) -> TestApp {
        let running = app::start_with_clock(self.config(), clock)
            .await
            .expect("castellan starts");
        TestApp::new(running, self.dir.clone())
    }
}

/// A running castellan and an HTTP client for it.
pub struct TestApp {
    pub base: String,
    /// The admin listener, when the test configured an admin token.
    pub admin_base: Option<String>,
    pub client: reqwest::Client,
    pub auth: Auth,
    pub dir: Arc<Scratch>,
    running: Option<Running>,
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the contract's error shape and code and returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "body: {}", self.text);
        let request_id = body["error"]["request_id"].as_str().expect("request_id");
        assert_eq!(
            Some(request_id),
            self.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            "error body and header carry the same request id"
        );
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(1),
            "only `error` at the top"
        );
        assert_eq!(
            body["error"].as_object().map(|o| o.len()),
            Some(3),
            "code, message, request_id"
        );
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// A password that meets the default policy.
pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    pub fn new(running: Running, dir: Arc<Scratch>) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            base: format!("http://{}", running.public_addr),
            admin_base: running.admin_addr.map(|a| format!("http://{a}")),
            client,
            auth: running.auth.clone(),
            dir,
            running: Some(running),
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Sends a request; `headers` are extra (name, value) pairs.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        Reply {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap_or_default(),
        }
    }

    /// Sends raw bytes with the given content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Reply {
        let res = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .header("content-type", content_type)
            // A fresh connection each time: the server may answer before
            // reading a large body and then close the connection.
            .header("connection", "close")
            .body(body)
            .send()
            .await
            .expect("request sent");
        Reply {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap_or_default(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(Method::GET, path, None, &[("authorization", &auth)])
            .await
    }

    pub async fn send_bearer(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let auth = format!("Bearer {token}");
        self.send(method, path, body, &[("authorization", &auth)])
            .await
    }

    pub async fn register(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/v1/registration",
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post("/v1/login", json!({"email": email, "password": password}))
            .await
    }

    /// Registers a user and logs in; returns the session token.
    pub async fn user_with_session(&self, email: &str) -> String {
        let r = self.register(email, PASSWORD).await;
        assert_eq!(r.status, 201, "{}", r.text);
        self.token_for(email, PASSWORD).await
    }

    pub async fn token_for(&self, email: &str, password: &str) -> String {
        let r = self.login(email, password).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["session_token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Sends the POSTs at the same moment (a barrier releases them
    /// together) and returns their statuses in order. Each request is an
    /// optional bearer token and a JSON body.
    pub async fn post_at_once(
        &self,
        path: &str,
        requests: Vec<(Option<String>, Value)>,
    ) -> Vec<u16> {
        post_at_once_over(&[self], path, requests).await
    }

    /// The messages in the mail directory (file transport), as text, oldest first.
    pub fn mails(&self) -> Vec<String> {
        let dir = self.dir.path().join("mail");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        // Oldest first, by modification time.
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| {
                (
                    e.metadata().and_then(|m| m.modified()).expect("mtime"),
                    e.path(),
                )
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| std::fs::read_to_string(path).expect("readable mail"))
            .collect()
    }

    /// The newest `limit` security events, newest first.
    pub async fn events(&self, limit: u32) -> Vec<castellan::store::Event> {
        self.auth
            .store()
            .list_events(&castellan::store::EventFilter::newest(limit))
            .await
            .expect("events")
    }

    /// Whether a recorded event has this kind and `detail[field] == value`.
    pub async fn has_event(&self, kind: &str, field: &str, value: &str) -> bool {
        self.events(1000)
            .await
            .iter()
            .any(|e| e.kind == kind && e.detail[field] == value)
    }

    /// The kinds of the recorded security events, oldest first.
    pub async fn event_kinds(&self) -> Vec<String> {
        let mut events = self.events(1000).await;
        events.reverse();
        events.into_iter().map(|e| e.kind).collect()
    }
}

/// The admin token of tests that start the admin listener.
pub const ADMIN_TOKEN: &str = "adm1n-t0ken-for-tests-0123456789abcdefghijklmnop";

impl TestEnv {
    /// Starts the admin listener too (port 0, [`ADMIN_TOKEN`]).
    pub fn with_admin(&mut self) -> &mut Self {
        self.set("CASTELLAN_ADMIN_TOKEN", ADMIN_TOKEN)
            .set("CASTELLAN_ADMIN_LISTEN", "127.0.0.1:0")
    }
}

impl TestApp {
    /// The Prometheus text of the admin listener's `/metrics`.
    pub async fn metrics(&self) -> String {
        let base = self.admin_base.as_ref().expect("admin listener");
        let res = self
            .client
            .get(format!("{base}/metrics"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("metrics scraped");
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.expect("metrics text")
    }
}

impl TestApp {
    /// `/metrics` once no pooled database connection is in use. sqlx hands
    /// a released connection back to the pool on a task of its own, so the
    /// gauges settle a moment after the response that used it.
    pub async fn metrics_when_idle(&self) -> String {
        let started = std::time::Instant::now();
        loop {
            let text = self.metrics().await;
            if sample(&text, "castellan_db_pool_in_use_connections ") == 0.0 {
                return text;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "pooled connections stay in use: {text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The value of one sample line in Prometheus text, 0 when absent.
pub fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    TestEnv::new(backend).await.spawn().await
}

/// A unique email for a test.
pub fn email(tag: &str) -> String {
    format!(
        "{tag}-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The TOTP secret of a `POST /v1/mfa/totp/enroll` answer.
pub fn secret_of(enrolment: &Value) -> castellan::domain::TotpSecret {
    let b32 = enrolment["secret"]
        .as_str()
        .expect("secret in the enrolment");
    castellan::domain::TotpSecret::from_bytes(
        base32::decode(base32::Alphabet::Rfc4648 { padding: false }, b32).expect("base32 secret"),
    )
}

/// The code of `secret` now, or `offset_steps` 30-second steps away.
pub fn now_code(secret: &castellan::domain::TotpSecret, offset_steps: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    secret
        .code_at((now + offset_steps * 30) as u64, 6)
        .expect("a TOTP code")
}

/// TOTP turned on for one user, as [`TestApp::enable_totp`] returns it.
pub struct EnabledTotp {
    pub secret: castellan::domain::TotpSecret,
    pub backup_codes: Vec<String>,
    /// The code that activated TOTP (spent: it cannot be used again).
    pub activation_code: String,
}

impl TestApp {
    /// Starts a TOTP enrolment for the user of the session `token`.
    pub async fn enroll_totp(&self, token: &str) -> castellan::domain::TotpSecret {
        let enrolment = self
            .send_bearer(Method::POST, "/v1/mfa/totp/enroll", token, None)
            .await;
        assert_eq!(enrolment.status, 200, "{}", enrolment.text);
        secret_of(&enrolment.json())
    }

    /// `POST /v1/mfa/totp/activate` with `code`, whatever it answers.
    pub async fn activate_totp(&self, token: &str, code: &str) -> Reply {
        self.send_bearer(
            Method::POST,
            "/v1/mfa/totp/activate",
            token,
            Some(json!({ "code": code })),
        )
        .await
    }

    /// A password login of a user with a second factor: the pending token.
    pub async fn pending_login(&self, email: &str) -> String {
        let r = self.login(email, PASSWORD).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["session"]["mfa_pending"], true);
        r.json()["session_token"].as_str().unwrap().to_string()
    }

    /// Enrols and activates TOTP for the user of the session `token`.
    pub async fn enable_totp(&self, token: &str) -> EnabledTotp {
        let secret = self.enroll_totp(token).await;
        let activation_code = now_code(&secret, 0);
        let r = self.activate_totp(token, &activation_code).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let backup_codes = r.json()["backup_codes"]
            .as_array()
            .expect("backup codes")
            .iter()
            .map(|c| c.as_str().expect("a code").to_string())
            .collect();
        EnabledTotp {
            secret,
            backup_codes,
            activation_code,
        }
    }
}

/// Runs one statement on the test's database, as someone with direct
/// database access would.
pub async fn sql(env: &TestEnv, statement: &str) {
    let url = &env.vars["CASTELLAN_DATABASE_URL"];
    match env.backend {
        Backend::Sqlite => {
            let path = url.strip_prefix("sqlite://").unwrap();
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.execute_batch(statement).unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// [`TestApp::post_at_once`] with the requests spread round-robin over
/// several apps (nodes on one database).
pub async fn post_at_once_over(
    apps: &[&TestApp],
    path: &str,
    requests: Vec<(Option<String>, Value)>,
) -> Vec<u16> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (bearer, body))| {
            let app = apps[i % apps.len()];
            let (client, url, barrier) = (
                app.client.clone(),
                format!("{}{path}", app.base),
                barrier.clone(),
            );
            tokio::spawn(async move {
                let mut req = client.post(url).json(&body);
                if let Some(token) = bearer {
                    req = req.bearer_auth(token);
                }
                barrier.wait().await;
                req.send().await.expect("request sent").status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    statuses
}
