//! Configuration: defaults, then a TOML file, then `CASTELLAN_*` variables.
//!
//! Every setting is declared once in [`SETTINGS`] (key, environment name,
//! default, meaning). The file uses the same keys in lower case
//! (`session_idle_timeout = "30m"`); the environment uses `CASTELLAN_` plus the
//! key in upper case. Secret settings can also be read from a file named by
//! `<key>_file` / `CASTELLAN_<KEY>_FILE`. Everything is parsed and validated
//! at start-up, all problems are reported together, and the result is
//! immutable.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

pub mod passkeys;

/// One declared setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Key in the TOML file.
    pub key: &'static str,
    /// Default value as written in the docs; empty means "unset".
    pub default: &'static str,
    /// Whether the value may come from a file (`*_FILE`) and must never be printed.
    pub secret: bool,
    /// One-line meaning, used by `castellan --help` style listings and docs checks.
    pub meaning: &'static str,
}

impl Setting {
    /// The environment variable that overrides this setting.
    pub fn env_name(&self) -> String {
        format!("CASTELLAN_{}", self.key.to_ascii_uppercase())
    }
}

const fn s(key: &'static str, default: &'static str, meaning: &'static str) -> Setting {
    Setting {
        key,
        default,
        secret: false,
        meaning,
    }
}

const fn secret(key: &'static str, meaning: &'static str) -> Setting {
    Setting {
        key,
        default: "",
        secret: true,
        meaning,
    }
}

/// Every setting castellan understands. `docs/configuration.md` documents
/// each one; a test fails when one is missing there.
pub const SETTINGS: &[Setting] = &[
    s(
        "profile",
        "dev",
        "`dev` or `production` (production refuses insecure settings)",
    ),
    secret(
        "database_url",
        "`sqlite://PATH` or `postgres://...`; default SQLite in the data directory",
    ),
    s(
        "data_dir",
        "./data",
        "where the default SQLite database, the dev secret key and mail go",
    ),
    s("listen", "127.0.0.1:8080", "public listener address"),
    s(
        "admin_listen",
        "127.0.0.1:8081",
        "admin listener address (only with an admin token)",
    ),
    secret(
        "admin_token",
        "admin bearer token (at least 32 bytes); unset means no admin listener",
    ),
    secret(
        "secret_key",
        "base64 of at least 32 random bytes for keyed hashes and encryption",
    ),
    secret(
        "previous_secret_key",
        "the secret key before a rotation, kept only to open TOTP secrets sealed with it",
    ),
    secret(
        "audit_key",
        "base64 of at least 32 random bytes; when set, every audit event also carries an HMAC under it (keep it outside the database)",
    ),
    s(
        "audit_retention",
        "365d",
        "audit events older than this are pruned (the chain stays verifiable); `forever` keeps them all",
    ),
    s(
        "session_idle_timeout",
        "30m",
        "a session unused this long ends",
    ),
    s("session_lifetime", "12h", "absolute session lifetime"),
    s(
        "session_pending_lifetime",
        "5m",
        "lifetime of a session waiting for its second factor",
    ),
    s(
        "session_max_per_user",
        "20",
        "full sessions one user may hold; a new one ends the oldest",
    ),
    s(
        "session_cleanup_interval",
        "1m",
        "how often ended sessions are deleted",
    ),
    s(
        "reauth_window",
        "10m",
        "re-authentication window for sensitive actions",
    ),
    s(
        "require_mfa",
        "false",
        "every user must enrol TOTP before doing anything else",
    ),
    s(
        "password_min_strength",
        "3",
        "lowest zxcvbn score (0-4) a new password must reach",
    ),
    s(
        "password_context_words",
        "",
        "comma-separated words (e.g. the organisation name) refused inside passwords",
    ),
    s(
        "public_base_url",
        "http://127.0.0.1:8080",
        "origin used in mailed links (https in production)",
    ),
    s(
        "ui_return_origins",
        "",
        "comma-separated origins (e.g. `https://app.example.com`) the hosted pages and forward auth may send a person back to after sign-in; castellan's own `public_base_url` is always allowed",
    ),
    s(
        "rate_registration_per_ip",
        "30/10m",
        "registrations one client address may attempt per window",
    ),
    s(
        "rate_login_per_ip",
        "120/1m",
        "logins one client address may attempt per window",
    ),
    s(
        "rate_reset_per_ip",
        "20/10m",
        "password-reset requests per client address per window",
    ),
    s(
        "rate_verification_per_ip",
        "20/10m",
        "verification requests per client address per window",
    ),
    s(
        "rate_mfa_per_ip",
        "60/1m",
        "second-factor attempts per client address per window",
    ),
    s(
        "reset_mails_per_account",
        "3/1h",
        "reset mails one account receives per window (more requests still get 202)",
    ),
    s(
        "verification_mails_per_account",
        "3/1h",
        "verification mails one account may request per window",
    ),
    s(
        "login_backoff_after",
        "5",
        "consecutive failures (account and address) before exponential back-off",
    ),
    s("login_backoff_max", "15m", "longest back-off"),
    s(
        "account_failures_per_hour",
        "20",
        "failures per account from any address per hour before back-off",
    ),
    s(
        "factor_hard_stop",
        "100",
        "consecutive failures after which a factor is disabled until reset",
    ),
    s(
        "password_min_length",
        "15",
        "minimum password length in characters (never below 8)",
    ),
    s(
        "password_max_length",
        "1024",
        "maximum password length in characters (at least 64)",
    ),
    s("argon2_memory_kib", "19456", "Argon2id memory cost in KiB"),
    s("argon2_iterations", "2", "Argon2id time cost"),
    s("argon2_parallelism", "1", "Argon2id lanes"),
    s(
        "hash_threads",
        "0",
        "threads hashing passwords; 0 means one per CPU",
    ),
    s(
        "hash_queue",
        "32",
        "password hashes that may wait; beyond it logins get 503",
    ),
    s(
        "reset_token_ttl",
        "30m",
        "lifetime of a password-reset token",
    ),
    s(
        "verification_token_ttl",
        "24h",
        "lifetime of an email-verification token",
    ),
    s(
        "mail_transport",
        "file",
        "`file` (writes .eml files) or `smtp` (sends through `smtp_host`)",
    ),
    s(
        "mail_dir",
        "./data/mail",
        "where the `file` transport writes messages",
    ),
    s(
        "mail_from",
        "castellan <no-reply@localhost>",
        "sender of notification mail, `Name <address>` or `address`",
    ),
    s(
        "mail_retry_attempts",
        "5",
        "attempts to deliver one message (default 5, 1 to 20), waiting 1s, 2s, 4s, ... between them",
    ),
    s(
        "smtp_host",
        "",
        "SMTP server host name or IP address (default unset; required when mail_transport is `smtp`)",
    ),
    s(
        "smtp_port",
        "587",
        "SMTP server port (default 587; usually 465 with smtp_tls = `tls`)",
    ),
    s(
        "smtp_tls",
        "starttls",
        "`starttls` (default, TLS required), `tls` (implicit TLS) or `none` (only for a loopback smtp_host)",
    ),
    s(
        "smtp_username",
        "",
        "SMTP user name (default unset: no authentication); needs smtp_password",
    ),
    secret(
        "smtp_password",
        "SMTP password (default unset); needs smtp_username",
    ),
    s(
        "smtp_ca_file",
        "",
        "PEM file of extra CA certificates trusted for the SMTP server (default unset: public web PKI roots only)",
    ),
    s(
        "totp_issuer",
        "castellan",
        "issuer shown by authenticator apps",
    ),
    s(
        "log_format",
        "",
        "`json` or `pretty`; default pretty in dev, json in production",
    ),
    s(
        "log_level",
        "info",
        "tracing filter, e.g. `info` or `castellan=debug`",
    ),
    s(
        "trusted_proxies",
        "",
        "comma-separated CIDRs whose X-Forwarded-For is believed",
    ),
    s(
        "behind_tls_proxy",
        "false",
        "production only: TLS is terminated by a proxy in front",
    ),
    s(
        "database_allow_unverified_tls",
        "false",
        "production only: accept a PostgreSQL sslmode weaker than verify-full to a remote host",
    ),
    s(
        "db_max_connections",
        "0",
        "PostgreSQL pool size; 0 means 2 x CPUs + 1",
    ),
    s(
        "db_acquire_timeout",
        "2s",
        "longest wait for a database connection before 503",
    ),
    s(
        "db_min_connections",
        "1",
        "PostgreSQL connections kept open even when idle; at most the pool size",
    ),
    s(
        "db_idle_timeout",
        "10m",
        "a PostgreSQL connection idle this long is closed (down to the minimum)",
    ),
    s(
        "db_max_lifetime",
        "30m",
        "a PostgreSQL connection is replaced after this long",
    ),
    s(
        "shutdown_timeout",
        "10s",
        "how long in-flight requests may finish after SIGTERM",
    ),
    s(
        "passkey_rp_id",
        "",
        "WebAuthn relying-party id (a domain); default the host of public_base_url, passkeys off when that is an IP address",
    ),
    s(
        "passkey_origins",
        "",
        "comma-separated origins allowed in passkey ceremonies; default public_base_url (https in production)",
    ),
    s(
        "passkey_challenge_ttl",
        "5m",
        "how long a passkey ceremony's challenge stays valid (at most 10m)",
    ),
];

/// `dev` or `production`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    File,
    Smtp,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; the upgrade is required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// No TLS at all: only allowed for a loopback relay.
    None,
}

/// The SMTP transport settings (used when `mail_transport = smtp`).
#[derive(Clone)]
pub struct SmtpConfig {
    /// Host name or IP address, without brackets; empty means unset.
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `smtp_ca_file` and its content, read and checked at start-up.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Which database backend and where.
#[derive(Clone)]
pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres { url: SecretString },
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "Sqlite({})", path.display()),
            Self::Postgres { .. } => f.write_str("Postgres([redacted url])"),
        }
    }
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub pending_lifetime: Duration,
    pub reauth_window: Duration,
    /// Full sessions one user may hold at once.
    pub max_per_user: usize,
    /// Period of the job that deletes ended sessions.
    pub cleanup_interval: Duration,
}

/// `N` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub window: Duration,
}

/// Rate limits and back-off (docs/security/brute-force.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub registration_per_ip: Rate,
    pub login_per_ip: Rate,
    pub reset_per_ip: Rate,
    pub verification_per_ip: Rate,
    pub mfa_per_ip: Rate,
    pub reset_mails_per_account: Rate,
    pub verification_mails_per_account: Rate,
    pub backoff_after: u64,
    pub backoff_max: Duration,
    pub account_failures_per_hour: u64,
    pub factor_hard_stop: u64,
}

/// The validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub profile: Profile,
    pub database: DatabaseConfig,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<SecretString>,
    /// Decoded key material; `None` in dev means "generate or load from the data dir".
    pub secret_key: Option<SecretBytes>,
    /// The key before a rotation: opens old sealed values, seals nothing.
    pub previous_secret_key: Option<SecretBytes>,
    /// HMAC key for the audit chain; the database never holds it.
    pub audit_key: Option<SecretBytes>,
    /// Age after which audit events are pruned; `None` keeps them all.
    pub audit_retention: Option<Duration>,
    pub session: SessionConfig,
    pub require_mfa: bool,
    /// Origin of mailed links, without a trailing slash.
    pub public_base_url: String,
    /// Origins (lower case, no trailing slash) a `return_to` may point at,
    /// besides `public_base_url`.
    pub ui_return_origins: Vec<String>,
    pub limits: Limits,
    pub password_min_length: usize,
    pub password_max_length: usize,
    pub password_min_strength: u8,
    /// Built-in context words plus the configured ones, folded.
    pub password_context_words: Vec<String>,
    pub argon2: Argon2Config,
    pub hash_threads: usize,
    pub hash_queue: usize,
    pub reset_token_ttl: Duration,
    pub verification_token_ttl: Duration,
    pub mail_transport: MailTransport,
    pub mail_dir: PathBuf,
    pub mail_from: String,
    /// Delivery attempts per message (1 means no retry).
    pub mail_retry_attempts: u32,
    pub smtp: SmtpConfig,
    pub totp_issuer: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub trusted_proxies: Vec<IpNet>,
    pub behind_tls_proxy: bool,
    /// Production override for a PostgreSQL TLS mode weaker than verify-full.
    pub database_allow_unverified_tls: bool,
    pub db_max_connections: u32,
    pub db_acquire_timeout: Duration,
    /// Connections the PostgreSQL pool keeps open when idle.
    pub db_min_connections: u32,
    pub db_idle_timeout: Duration,
    pub db_max_lifetime: Duration,
    pub shutdown_timeout: Duration,
    pub passkeys: passkeys::PasskeyConfig,
}

/// Secret key bytes whose `Debug` never shows them.
#[derive(Clone)]
pub struct SecretBytes(pub(crate) zeroize::Zeroizing<Vec<u8>>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

impl SecretBytes {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// One problem with one setting, phrased so an operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

/// Every problem found while loading; the process stops on any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<SettingError>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where each raw value came from, for error messages.
#[derive(Debug, Clone)]
struct Raw {
    value: String,
    source: String,
}

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then `env`.
    ///
    /// `file` is `(path, required)`: the default `castellan.toml` is optional,
    /// a file named with `--config` must exist.
    pub fn load(
        file: Option<(&Path, bool)>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let mut raw: BTreeMap<&'static str, Raw> = BTreeMap::new();
        for setting in SETTINGS {
            raw.insert(
                setting.key,
                Raw {
                    value: setting.default.to_string(),
                    source: "default".into(),
                },
            );
        }
        if let Some((path, required)) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => read_toml(path, &text, &mut raw, &mut errors),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(SettingError {
                    setting: path.display().to_string(),
                    problem: format!("cannot read the configuration file ({e})"),
                }),
            }
        }
        read_env(env, &mut raw, &mut errors);
        let config = Self::from_raw(&raw, &mut errors);
        match config {
            Some(c) if errors.is_empty() => Ok(c),
            _ => Err(ConfigError(errors)),
        }
    }

    fn from_raw(raw: &BTreeMap<&'static str, Raw>, errors: &mut Vec<SettingError>) -> Option<Self> {
        let mut p = Parser { raw, errors };
        let profile = p.parse("profile", |v| match v {
            "dev" => Ok(Profile::Dev),
            "production" => Ok(Profile::Production),
            _ => Err("must be `dev` or `production`".into()),
        });
        let data_dir = p.parse("data_dir", nonempty_path);
        let database = p.parse("database_url", parse_database_url);
        let listen = p.parse("listen", parse_addr);
        let admin_listen = p.parse("admin_listen", parse_addr);
        let admin_token = p.parse("admin_token", |v| {
            if v.is_empty() {
                Ok(None)
            } else if v.len() < 32 {
                Err("must be at least 32 characters of random data (e.g. `openssl rand -base64 32`)".into())
            } else {
                Ok(Some(SecretString::from(v.to_string())))
            }
        });
        let secret_key = p.parse("secret_key", parse_key);
        let previous_secret_key = p.parse("previous_secret_key", parse_key);
        let audit_key = p.parse("audit_key", parse_key);
        let audit_retention = p.parse("audit_retention", |v| match v {
            "forever" => Ok(None),
            _ => parse_duration_in(
                v,
                Duration::from_secs(86_400),
                Duration::from_secs(36_500 * 86_400),
            )
            .map(Some),
        });
        let idle_timeout = p.parse("session_idle_timeout", |v| {
            parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(24 * 3600))
        });
        let lifetime = p.parse("session_lifetime", |v| {
            parse_duration_in(
                v,
                Duration::from_secs(1),
                Duration::from_secs(30 * 24 * 3600),
            )
        });
        let pending_lifetime = p.parse("session_pending_lifetime", |v| {
            parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(3600))
        });
        let reauth_window = p.parse("reauth_window", |v| {
            parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(24 * 3600))
        });
        let cleanup_interval = p.parse("session_cleanup_interval", |v| {
            parse_duration_in(
                v,
                Duration::from_millis(100),
                Duration::from_secs(24 * 3600),
            )
        });
        let max_per_user = p.parse("session_max_per_user", |v| parse_int_in(v, 1, 1000));
        let require_mfa = p.parse("require_mfa", parse_bool);
        let password_min_strength = p.parse("password_min_strength", |v| parse_int_in(v, 0, 4));
        let password_context_words = p.parse("password_context_words", |v| {
            let mut words = crate::domain::password::builtin_context_words();
            words.extend(
                v.split(',')
                    .map(crate::domain::password::fold_context)
                    .filter(|w| !w.is_empty()),
            );
            if words.iter().any(|w| w.chars().count() < 3) {
                return Err("each word needs at least 3 characters".into());
            }
            Ok(words)
        });
        let public_base_url = p.parse("public_base_url", |v| {
            let ok = (v.starts_with("https://") || v.starts_with("http://"))
                && !v.ends_with('/')
                && v.len() < 200
                && !v.chars().any(|c| c.is_whitespace() || c.is_control() || "\\\"<>`#?".contains(c));
            if ok { Ok(v.to_string()) } else { Err("must be an origin like https://auth.example.com (no trailing slash, path or query)".into()) }
        });
        let passkeys = passkeys::parse(&mut p, public_base_url.as_deref());
        let ui_return_origins = p.parse("ui_return_origins", parse_origins);
        let registration_per_ip = p.parse("rate_registration_per_ip", parse_rate);
        let login_per_ip = p.parse("rate_login_per_ip", parse_rate);
        let reset_per_ip = p.parse("rate_reset_per_ip", parse_rate);
        let verification_per_ip = p.parse("rate_verification_per_ip", parse_rate);
        let mfa_per_ip = p.parse("rate_mfa_per_ip", parse_rate);
        let reset_mails_per_account = p.parse("reset_mails_per_account", parse_rate);
        let verification_mails_per_account = p.parse("verification_mails_per_account", parse_rate);
        let backoff_after = p.parse("login_backoff_after", |v| parse_int_in(v, 1, 1000));
        let backoff_max = p.parse("login_backoff_max", |v| {
            parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(24 * 3600))
        });
        let account_failures_per_hour =
            p.parse("account_failures_per_hour", |v| parse_int_in(v, 1, 100_000));
        let factor_hard_stop = p.parse("factor_hard_stop", |v| parse_int_in(v, 1, 100));
        let password_min_length = p.parse("password_min_length", |v| parse_int_in(v, 8, 64));
        let password_max_length = p.parse("password_max_length", |v| parse_int_in(v, 64, 4096));
        let memory_kib = p.parse("argon2_memory_kib", |v| {
            parse_int_in(v, 8 * 1024, 4 * 1024 * 1024)
        });
        let iterations = p.parse("argon2_iterations", |v| parse_int_in(v, 1, 64));
        let parallelism = p.parse("argon2_parallelism", |v| parse_int_in(v, 1, 16));
        let hash_threads = p.parse("hash_threads", |v| parse_int_in(v, 0, 256));
        let hash_queue = p.parse("hash_queue", |v| parse_int_in(v, 1, 100_000));
        let reset_token_ttl = p.parse("reset_token_ttl", |v| {
            parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(24 * 3600))
        });
        let verification_token_ttl = p.parse("verification_token_ttl", |v| {
            parse_duration_in(
                v,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
            )
        });
        let mail_transport = p.parse("mail_transport", |v| match v {
            "file" => Ok(MailTransport::File),
            "smtp" => Ok(MailTransport::Smtp),
            _ => Err("must be `file` or `smtp`".into()),
        });
        let mail_dir = p.parse("mail_dir", nonempty_path);
        let mail_from = p.parse("mail_from", |v| {
            if v.is_empty()
                || v.len() > 200
                || v.chars().any(char::is_control)
                || v.parse::<lettre::message::Mailbox>().is_err()
            {
                Err("must be a sender like `castellan <no-reply@example.com>`".into())
            } else {
                Ok(v.to_string())
            }
        });
        let mail_retry_attempts = p.parse("mail_retry_attempts", |v| parse_int_in(v, 1, 20));
        let smtp_host = p.parse("smtp_host", parse_smtp_host);
        let smtp_port = p.parse("smtp_port", |v| parse_int_in(v, 1, 65535));
        let smtp_tls = p.parse("smtp_tls", |v| match v {
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Implicit),
            "none" => Ok(SmtpTls::None),
            _ => Err("must be `starttls`, `tls` or `none`".into()),
        });
        let smtp_username = p.parse("smtp_username", |v| {
            if v.chars().any(char::is_control) || v.len() > 256 {
                Err("must be at most 256 printable characters".into())
            } else {
                Ok((!v.is_empty()).then(|| v.to_string()))
            }
        });
        let smtp_password = p.parse("smtp_password", |v| {
            Ok((!v.is_empty()).then(|| SecretString::from(v.to_string())))
        });
        let smtp_ca = p.parse("smtp_ca_file", read_ca_file);
        let totp_issuer = p.parse("totp_issuer", |v| {
            if v.is_empty() || v.len() > 64 || v.contains(':') || v.chars().any(char::is_control) {
                Err("must be 1 to 64 printable characters without `:`".into())
            } else {
                Ok(v.to_string())
            }
        });
        let log_format = p.parse("log_format", |v| match v {
            "" => Ok(None),
            "json" => Ok(Some(LogFormat::Json)),
            "pretty" => Ok(Some(LogFormat::Pretty)),
            _ => Err("must be `json` or `pretty`".into()),
        });
        let log_level = p.parse("log_level", |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| v.to_string())
                .map_err(|e| format!("is not a valid tracing filter ({e})"))
        });
        let trusted_proxies = p.parse("trusted_proxies", parse_cidrs);
        let behind_tls_proxy = p.parse("behind_tls_proxy", parse_bool);
        let database_allow_unverified_tls = p.parse("database_allow_unverified_tls", parse_bool);
        let db_max_connections = p.parse("db_max_connections", |v| parse_int_in(v, 0, 10_000));
        let db_acquire_timeout = p.parse("db_acquire_timeout", |v| {
            parse_duration_in(v, Duration::from_millis(10), Duration::from_secs(60))
        });
        let db_min_connections = p.parse("db_min_connections", |v| parse_int_in(v, 0, 10_000));
        let db_idle_timeout = p.parse("db_idle_timeout", |v| {
            parse_duration_in(v, Duration::from_secs(1), Duration::from_secs(24 * 3600))
        });
        let db_max_lifetime = p.parse("db_max_lifetime", |v| {
            parse_duration_in(
                v,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
            )
        });
        let shutdown_timeout = p.parse("shutdown_timeout", |v| {
            parse_duration_in(v, Duration::from_millis(0), Duration::from_secs(300))
        });

        let profile = profile?;
        let data_dir = data_dir?;
        let database = database?.unwrap_or_else(|| DatabaseConfig::Sqlite {
            path: data_dir.join("castellan.db"),
        });
        let (lifetime, idle_timeout) = (lifetime?, idle_timeout?);
        let (min, max) = (password_min_length?, password_max_length?);
        let config = Config {
            profile,
            database,
            listen: listen?,
            admin_listen: admin_listen?,
            admin_token: admin_token?,
            secret_key: secret_key?,
            previous_secret_key: previous_secret_key?,
            audit_key: audit_key?,
            audit_retention: audit_retention?,
            session: SessionConfig {
                idle_timeout,
                lifetime,
                pending_lifetime: pending_lifetime?,
                reauth_window: reauth_window?,
                max_per_user: usize::try_from(max_per_user?).ok()?,
                cleanup_interval: cleanup_interval?,
            },
            require_mfa: require_mfa?,
            public_base_url: public_base_url?,
            ui_return_origins: ui_return_origins?,
            limits: Limits {
                registration_per_ip: registration_per_ip?,
                login_per_ip: login_per_ip?,
                reset_per_ip: reset_per_ip?,
                verification_per_ip: verification_per_ip?,
                mfa_per_ip: mfa_per_ip?,
                reset_mails_per_account: reset_mails_per_account?,
                verification_mails_per_account: verification_mails_per_account?,
                backoff_after: backoff_after?,
                backoff_max: backoff_max?,
                account_failures_per_hour: account_failures_per_hour?,
                factor_hard_stop: factor_hard_stop?,
            },
            password_min_length: usize::try_from(min).ok()?,
            password_max_length: usize::try_from(max).ok()?,
            password_min_strength: u8::try_from(password_min_strength?).ok()?,
            password_context_words: password_context_words?,
            argon2: Argon2Config {
                memory_kib: u32::try_from(memory_kib?).ok()?,
                iterations: u32::try_from(iterations?).ok()?,
                parallelism: u32::try_from(parallelism?).ok()?,
            },
            hash_threads: usize::try_from(hash_threads?).ok()?,
            hash_queue: usize::try_from(hash_queue?).ok()?,
            reset_token_ttl: reset_token_ttl?,
            verification_token_ttl: verification_token_ttl?,
            mail_transport: mail_transport?,
            mail_dir: mail_dir?,
            mail_from: mail_from?,
            mail_retry_attempts: u32::try_from(mail_retry_attempts?).ok()?,
            smtp: {
                let (ca_file, ca_pem) = smtp_ca?.unzip();
                SmtpConfig {
                    host: smtp_host?,
                    port: u16::try_from(smtp_port?).ok()?,
                    tls: smtp_tls?,
                    username: smtp_username?,
                    password: smtp_password?,
                    ca_file,
                    ca_pem,
                }
            },
            totp_issuer: totp_issuer?,
            log_format: log_format?.unwrap_or(match profile {
                Profile::Dev => LogFormat::Pretty,
                Profile::Production => LogFormat::Json,
            }),
            log_level: log_level?,
            trusted_proxies: trusted_proxies?,
            behind_tls_proxy: behind_tls_proxy?,
            database_allow_unverified_tls: database_allow_unverified_tls?,
            db_max_connections: u32::try_from(db_max_connections?).ok()?,
            db_acquire_timeout: db_acquire_timeout?,
            db_min_connections: u32::try_from(db_min_connections?).ok()?,
            db_idle_timeout: db_idle_timeout?,
            db_max_lifetime: db_max_lifetime?,
            shutdown_timeout: shutdown_timeout?,
            passkeys: passkeys?,
            data_dir,
        };
        config.cross_check(errors);
        Some(config)
    }

    /// Rules that involve more than one setting, and the production profile.
    fn cross_check(&self, errors: &mut Vec<SettingError>) {
        let mut fail = |setting: &str, problem: &str| {
            errors.push(SettingError {
                setting: setting.into(),
                problem: problem.into(),
            })
        };
        if self.password_max_length < self.password_min_length {
            fail(
                "password_max_length",
                "must not be below password_min_length",
            );
        }
        if self.session.idle_timeout > self.session.lifetime {
            fail("session_idle_timeout", "must not exceed session_lifetime");
        }
        self.check_pool(&mut fail);
        self.check_smtp(&mut fail);
        passkeys::check(self, &mut fail);
        if self.profile == Profile::Production {
            if self.secret_key.is_none() {
                fail(
                    "secret_key",
                    "is required in production: set CASTELLAN_SECRET_KEY or CASTELLAN_SECRET_KEY_FILE to `openssl rand -base64 32`",
                );
            }
            if !self.behind_tls_proxy {
                fail(
                    "behind_tls_proxy",
                    "production needs TLS in front of castellan: terminate TLS in a proxy and set CASTELLAN_BEHIND_TLS_PROXY=true",
                );
            }
            if self.log_level.contains("trace") || self.log_level.contains("debug") {
                fail(
                    "log_level",
                    "debug and trace logging are refused in production; use `info`",
                );
            }
            if !self.public_base_url.starts_with("https://") {
                fail(
                    "public_base_url",
                    "must use https:// in production (mailed links carry tokens)",
                );
            }
            if !self.admin_listen.ip().is_loopback() && self.admin_token.is_some() {
                fail(
                    "admin_listen",
                    "the admin listener serves plain HTTP and must stay on a loopback address in production",
                );
            }
        }
    }
}

impl Config {
    /// The PostgreSQL pool size: the configured one, or the CPU-based default.
    pub fn db_pool_size(&self) -> u32 {
        if self.db_max_connections == 0 {
            default_pool_size()
        } else {
            self.db_max_connections
        }
    }

    /// The rules between the pool settings.
    fn check_pool(&self, fail: &mut impl FnMut(&str, &str)) {
        let max = self.db_pool_size();
        if self.db_min_connections > max {
            let problem = format!(
                "must not exceed the pool size ({max}{}); lower CASTELLAN_DB_MIN_CONNECTIONS or raise CASTELLAN_DB_MAX_CONNECTIONS",
                if self.db_max_connections == 0 {
                    ", the default for this machine"
                } else {
                    ""
                }
            );
            fail("db_min_connections", &problem);
        }
        if self.db_idle_timeout > self.db_max_lifetime {
            fail(
                "db_idle_timeout",
                "must not exceed db_max_lifetime (a connection is replaced before it could idle out)",
            );
        }
    }

    /// The rules of the SMTP settings (only checked for `mail_transport = smtp`).
    fn check_smtp(&self, fail: &mut impl FnMut(&str, &str)) {
        if self.mail_transport != MailTransport::Smtp {
            return;
        }
        let smtp = &self.smtp;
        if smtp.host.is_empty() {
            fail(
                "smtp_host",
                "is required when mail_transport is `smtp`: set CASTELLAN_SMTP_HOST to the SMTP server",
            );
            return;
        }
        if smtp.tls == SmtpTls::None && !is_loopback_host(&smtp.host) {
            fail(
                "smtp_tls",
                "`none` sends mail and passwords in clear text and is only allowed when smtp_host is a loopback address (127.0.0.1, ::1 or localhost); use `starttls` or `tls`",
            );
        }
        if smtp.username.is_some() != smtp.password.is_some() {
            fail(
                "smtp_username",
                "smtp_username and smtp_password must be set together",
            );
        }
        if let Err(problem) = crate::mail::check_smtp_tls(smtp) {
            let setting = if smtp.ca_pem.is_some() {
                "smtp_ca_file"
            } else {
                "smtp_host"
            };
            fail(setting, &problem);
        }
    }
}

/// Pool size when none is configured: two connections per CPU plus one.
/// A session check holds a connection for one short query, so more
/// connections than the CPUs can keep busy only add contention: measured in
/// docs/operations/pool-sizing.md (on 2 CPUs, 4 to 8 connections gave the
/// best p99; 32 and more raised it several times over).
pub fn default_pool_size() -> u32 {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    u32::try_from(cpus * 2 + 1).unwrap_or(5)
}

/// A host name (letters, digits, `-`, `.`) or an IP address; brackets
/// around an IPv6 address are removed. Empty means unset.
fn parse_smtp_host(v: &str) -> Result<String, String> {
    let host = v
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(v);
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host.to_string());
    }
    let ok = host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(host.to_string())
    } else {
        Err("must be a host name or an IP address, without a port (set smtp_port)".into())
    }
}

/// `localhost` or a loopback IP address.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a PEM file of CA certificates; empty means unset.
fn read_ca_file(v: &str) -> Result<Option<(PathBuf, Vec<u8>)>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(v).map_err(|e| format!("cannot read the file ({})", e.kind()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err("must be a PEM file with at least one CERTIFICATE block".into());
    }
    Ok(Some((PathBuf::from(v), pem)))
}

/// Collects errors while parsing each raw value.
struct Parser<'a> {
    raw: &'a BTreeMap<&'static str, Raw>,
    errors: &'a mut Vec<SettingError>,
}

impl Parser<'_> {
    fn parse<T>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let Some(raw) = self.raw.get(key) else {
            // A parse of an undeclared key is a bug in this file; say so.
            self.errors.push(SettingError {
                setting: key.into(),
                problem: "is not declared in SETTINGS (a castellan bug)".into(),
            });
            return None;
        };
        match f(raw.value.trim()) {
            Ok(v) => Some(v),
            Err(problem) => {
                let secret = SETTINGS.iter().any(|s| s.key == key && s.secret);
                let shown = if secret {
                    String::new()
                } else {
                    format!(" (got {:?} from {})", truncate(&raw.value, 60), raw.source)
                };
                self.errors.push(SettingError {
                    setting: format!("CASTELLAN_{}", key.to_ascii_uppercase()),
                    problem: format!("{problem}{shown}"),
                });
                None
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn read_toml(
    path: &Path,
    text: &str,
    raw: &mut BTreeMap<&'static str, Raw>,
    errors: &mut Vec<SettingError>,
) {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            errors.push(SettingError {
                setting: path.display().to_string(),
                problem: format!("is not valid TOML: {}", e.message()),
            });
            return;
        }
    };
    for (key, value) in table {
        let (setting, from_file) = match lookup(&key) {
            Some(found) => found,
            None => {
                errors.push(SettingError {
                    setting: format!("{key} in {}", path.display()),
                    problem: "is not a known setting (see docs/configuration.md)".into(),
                });
                continue;
            }
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        let source = format!("{} key {key}", path.display());
        insert_value(setting, from_file, value, source, raw, errors);
    }
}

fn read_env(
    env: &BTreeMap<String, String>,
    raw: &mut BTreeMap<&'static str, Raw>,
    errors: &mut Vec<SettingError>,
) {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("CASTELLAN_") else {
            continue;
        };
        // Variables of the test harness and tooling live under CASTELLAN_TEST_.
        if rest.starts_with("TEST_") {
            continue;
        }
        match lookup(&rest.to_ascii_lowercase()) {
            Some((setting, from_file)) => {
                insert_value(setting, from_file, value.clone(), name.clone(), raw, errors)
            }
            None => errors.push(SettingError {
                setting: name.clone(),
                problem: "is not a known setting (see docs/configuration.md)".into(),
            }),
        }
    }
}

/// Finds the setting for a key, or for `<key>_file` of a secret setting.
fn lookup(key: &str) -> Option<(&'static Setting, bool)> {
    if let Some(s) = SETTINGS.iter().find(|s| s.key == key) {
        return Some((s, false));
    }
    let base = key.strip_suffix("_file")?;
    SETTINGS
        .iter()
        .find(|s| s.key == base && s.secret)
        .map(|s| (s, true))
}

fn insert_value(
    setting: &'static Setting,
    from_file: bool,
    value: String,
    source: String,
    raw: &mut BTreeMap<&'static str, Raw>,
    errors: &mut Vec<SettingError>,
) {
    let value = if from_file {
        match std::fs::read_to_string(&value) {
            Ok(content) => content.trim().to_string(),
            Err(e) => {
                errors.push(SettingError {
                    setting: source,
                    problem: format!("cannot read the secret file {value:?} ({})", e.kind()),
                });
                return;
            }
        }
    } else {
        value
    };
    raw.insert(setting.key, Raw { value, source });
}

/// A rate written `N/duration`, e.g. `30/10m`.
fn parse_rate(v: &str) -> Result<Rate, String> {
    let hint = "must be a count and a window like 30/10m";
    let (n, window) = v.split_once('/').ok_or_else(|| hint.to_string())?;
    let limit = parse_int_in(n.trim(), 1, 1_000_000_000)?;
    let window = parse_duration_in(
        window.trim(),
        Duration::from_secs(1),
        Duration::from_secs(7 * 24 * 3600),
    )?;
    Ok(Rate { limit, window })
}

/// Base64 of at least 32 random bytes; empty means unset.
fn parse_key(v: &str) -> Result<Option<SecretBytes>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.trim()))
        .map_err(|_| "must be base64 (e.g. `openssl rand -base64 32`)".to_string())?;
    if bytes.len() < 32 {
        return Err(format!(
            "decodes to {} bytes; at least 32 random bytes are needed (`openssl rand -base64 32`)",
            bytes.len()
        ));
    }
    Ok(Some(SecretBytes(zeroize::Zeroizing::new(bytes))))
}

fn nonempty_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(PathBuf::from(v))
    }
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "must be an address with a port, e.g. 127.0.0.1:8080".to_string())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be `true` or `false`".into()),
    }
}

fn parse_int_in(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("must be a whole number from {min} to {max}"))?;
    if n < min || n > max {
        return Err(format!("must be from {min} to {max}"));
    }
    Ok(n)
}

fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            crate::domain::return_to::parse_origin(s).ok_or_else(|| {
                format!("{s:?} is not an origin like https://app.example.com (scheme, host and optional port; no path)")
            })
        })
        .collect()
}

fn parse_cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
        })
        .collect()
}

fn parse_database_url(v: &str) -> Result<Option<DatabaseConfig>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if let Some(path) = v.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://./data/castellan.db".into());
        }
        return Ok(Some(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        }));
    }
    if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        return Ok(Some(DatabaseConfig::Postgres {
            url: SecretString::from(v.to_string()),
        }));
    }
    Err("must start with sqlite:// or postgres://".into())
}

/// Parses durations written like `30m`, `12h`, `2s`, `500ms` or `7d`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits_end);
    let hint = "must be a number with a unit (ms, s, m, h or d), e.g. 30m";
    let n: u64 = number.parse().map_err(|_| hint.to_string())?;
    let (scale_ms, what): (u64, _) = match unit {
        "ms" => (1, "ms"),
        "s" => (1_000, "s"),
        "m" => (60_000, "m"),
        "h" => (3_600_000, "h"),
        "d" => (86_400_000, "d"),
        _ => return Err(hint.to_string()),
    };
    let ms = n
        .checked_mul(scale_ms)
        .ok_or_else(|| format!("{n}{what} is too large"))?;
    Ok(Duration::from_millis(ms))
}

fn parse_duration_in(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Formats a duration in the same notation the settings use.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, scale) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= scale && ms.is_multiple_of(scale) {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// The process environment as a map, for [`Config::load`].
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_with_no_configuration() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.profile, Profile::Dev);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session.lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(c.password_min_length, 15);
        assert!(matches!(c.database, DatabaseConfig::Sqlite { .. }));
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    // covers: ASVS-1.4.2
    #[test]
    fn durations_parse_and_overflow_is_an_error() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("99999999999999999h").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("-1s").is_err());
        let err = Config::load(
            None,
            &env(&[("CASTELLAN_SESSION_LIFETIME", "99999999999h")]),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].setting.contains("SESSION_LIFETIME"), "{err}");
    }

    #[test]
    fn pool_settings_have_defaults_and_are_checked_together() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.db_min_connections, 1);
        assert_eq!(c.db_idle_timeout, Duration::from_secs(600));
        assert_eq!(c.db_max_lifetime, Duration::from_secs(1800));
        assert_eq!(c.db_pool_size(), default_pool_size());
        let c = Config::load(
            None,
            &env(&[
                ("CASTELLAN_DB_MAX_CONNECTIONS", "4"),
                ("CASTELLAN_DB_MIN_CONNECTIONS", "4"),
                ("CASTELLAN_DB_IDLE_TIMEOUT", "1m"),
                ("CASTELLAN_DB_MAX_LIFETIME", "1m"),
            ]),
        )
        .unwrap();
        assert_eq!((c.db_pool_size(), c.db_min_connections), (4, 4));
        assert_eq!(c.db_idle_timeout, c.db_max_lifetime);
        // Out of range and malformed values, each reported.
        let err = Config::load(
            None,
            &env(&[
                ("CASTELLAN_DB_MIN_CONNECTIONS", "-1"),
                ("CASTELLAN_DB_IDLE_TIMEOUT", "0s"),
                ("CASTELLAN_DB_MAX_LIFETIME", "8d"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        for name in ["MIN_CONNECTIONS", "IDLE_TIMEOUT", "MAX_LIFETIME"] {
            assert!(text.contains(&format!("CASTELLAN_DB_{name}")), "{text}");
        }
        // Rules between settings, both reported.
        let err = Config::load(
            None,
            &env(&[
                ("CASTELLAN_DB_MAX_CONNECTIONS", "4"),
                ("CASTELLAN_DB_MIN_CONNECTIONS", "5"),
                ("CASTELLAN_DB_IDLE_TIMEOUT", "2h"),
                ("CASTELLAN_DB_MAX_LIFETIME", "1h"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 2, "{text}");
        assert!(
            text.contains("db_min_connections: must not exceed the pool size (4)"),
            "{text}"
        );
        assert!(
            text.contains("db_idle_timeout: must not exceed db_max_lifetime"),
            "{text}"
        );
        // With the default pool size the message says it is the default.
        let err =
            Config::load(None, &env(&[("CASTELLAN_DB_MIN_CONNECTIONS", "10000")])).unwrap_err();
        assert!(
            err.to_string().contains("the default for this machine"),
            "{err}"
        );
    }

    #[test]
    fn unknown_variables_and_every_bad_value_are_reported_together() {
        let err = Config::load(
            None,
            &env(&[
                ("CASTELLAN_NOPE", "1"),
                ("CASTELLAN_PASSWORD_MIN_LENGTH", "7"),
                ("CASTELLAN_LISTEN", "nowhere"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0.len(), 3, "{text}");
        assert!(text.contains("CASTELLAN_NOPE"));
        assert!(text.contains("CASTELLAN_PASSWORD_MIN_LENGTH: must be from 8 to 64"));
        assert!(text.contains("CASTELLAN_LISTEN"));
    }

    #[test]
    fn toml_file_is_overridden_by_env_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("castellan.toml");
        std::fs::write(
            &path,
            "session_idle_timeout = \"5m\"\nlisten = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some((&path, true)),
            &env(&[("CASTELLAN_LISTEN", "127.0.0.1:9001")]),
        )
        .unwrap();
        assert_eq!(c.session.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.listen.port(), 9001);
        std::fs::write(&path, "sesion_idle_timeout = \"5m\"\n").unwrap();
        let err = Config::load(Some((&path, true)), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("sesion_idle_timeout"));
    }

    // covers: ASVS-13.3.1
    #[test]
    fn secrets_come_from_files_and_are_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "c2hvcnQ=\n").unwrap();
        let err = Config::load(
            None,
            &env(&[("CASTELLAN_SECRET_KEY_FILE", key_file.to_str().unwrap())]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("at least 32 random bytes"), "{text}");
        assert!(!text.contains("c2hvcnQ"), "secret value leaked: {text}");
        let good = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaA==";
        std::fs::write(&key_file, good).unwrap();
        let c = Config::load(
            None,
            &env(&[("CASTELLAN_SECRET_KEY_FILE", key_file.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(c.secret_key.unwrap().expose().len(), 34);
    }

    // covers: ASVS-6.3.2, ASVS-13.4.2
    #[test]
    fn production_refuses_insecure_settings() {
        let err = Config::load(
            None,
            &env(&[
                ("CASTELLAN_PROFILE", "production"),
                ("CASTELLAN_LOG_LEVEL", "debug"),
            ]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("secret_key"), "{text}");
        assert!(text.contains("behind_tls_proxy"), "{text}");
        assert!(text.contains("log_level"), "{text}");
        let err = Config::load(None, &env(&[("CASTELLAN_ADMIN_TOKEN", "short")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("CASTELLAN_ADMIN_TOKEN: must be at least 32"),
            "{err}"
        );
        assert!(
            !err.to_string().contains("short"),
            "the token value must not be echoed: {err}"
        );
    }

    #[test]
    fn password_minimum_never_goes_below_eight() {
        assert!(Config::load(None, &env(&[("CASTELLAN_PASSWORD_MIN_LENGTH", "7")])).is_err());
        let c = Config::load(None, &env(&[("CASTELLAN_PASSWORD_MIN_LENGTH", "8")])).unwrap();
        assert_eq!(c.password_min_length, 8);
    }
}
