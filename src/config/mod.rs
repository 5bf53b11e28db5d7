//! Configuration: defaults, then a TOML file, then `CASTELLAN_*` variables.
//!
//! Every setting is declared once in [`SETTINGS`] (key, environment name,
//! default, meaning). The file uses the same keys in lower case
//! (`session_idle_timeout = "30m"`); the environment uses `CASTELLAN_` plus the
//! key in upper case. Secret settings can also be read from a file named by
//! `<key>_file` / `CASTELLAN_<KEY>_FILE`. Everything is parsed and validated
//! at start-up, all problems are reported together, and the result is
//! immutable.
//!
//! The folder splits the jobs: [`settings`] declares every setting,
//! `load` reads the sources (defaults, file, environment) into a [`Config`],
//! `parse` turns one raw value into a typed one, and `rules` checks the
//! settings that depend on each other.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use secrecy::SecretString;

use crate::domain::password::PasswordPolicy;

mod load;
mod net;
mod parse;
pub mod passkeys;
mod rules;
pub mod settings;
#[cfg(test)]
mod tests;

pub use load::process_env;
pub use net::{ListenerLimits, NetConfig, TlsFiles};
pub use parse::{format_duration, parse_duration};
pub use rules::{database_url_credentials, has_well_known_credentials, is_loopback_host};
pub use settings::{SETTINGS, Setting};

/// `dev` or `production`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Production,
}

/// The header trusted proxies name the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    XForwardedFor,
    Forwarded,
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

impl SmtpConfig {
    /// TLS for the SMTP connection: `smtp_ca_file` alone when set (it
    /// replaces the web PKI roots, libpq's meaning of `sslrootcert`), else
    /// the web PKI roots; the server name is checked. Validation calls it too, so a CA file that
    /// does not parse stops the start.
    pub fn tls_parameters(&self) -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(self.host.clone());
        if let Some(pem) = &self.ca_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|_| "does not hold valid PEM certificates".to_string())?;
            builder = builder
                .certificate_store(lettre::transport::smtp::client::CertificateStore::None)
                .add_root_certificate(cert);
        }
        builder
            .build_rustls()
            .map_err(|e| format!("cannot set up TLS for the SMTP server ({e})"))
    }
}

/// Which database backend and where.
#[derive(Clone)]
pub enum DatabaseLocation {
    Sqlite { path: PathBuf },
    Postgres { url: SecretString },
}

impl fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "Sqlite({})", path.display()),
            Self::Postgres { .. } => f.write_str("Postgres([redacted url])"),
        }
    }
}

/// The database: where it is, the pool, and the TLS override.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub location: DatabaseLocation,
    pub pool: PoolConfig,
    /// Production override for a PostgreSQL TLS mode weaker than verify-full.
    pub allow_unverified_tls: bool,
}

/// The PostgreSQL connection pool (SQLite keeps its own fixed pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// 0 means the CPU-based default: see [`PoolConfig::size`].
    pub max_connections: u32,
    /// Connections the pool keeps open when idle.
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
}

impl PoolConfig {
    /// The pool size: the configured one, or the CPU-based default.
    pub fn size(&self) -> u32 {
        if self.max_connections == 0 {
            default_pool_size()
        } else {
            self.max_connections
        }
    }
}

/// Password hashing: the Argon2id cost and the worker pool that pays it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingConfig {
    pub argon2: Argon2Config,
    pub threads: usize,
    /// Hash jobs that may wait; beyond it a login is refused with 503.
    pub queue: usize,
    /// Hashing threads run at the lowest OS priority (SCHED_BATCH, nice 19).
    pub low_priority: bool,
}

/// Outgoing mail: the transport, the sender and the retries.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// Where the `file` transport writes messages.
    pub dir: PathBuf,
    pub from: String,
    /// Delivery attempts per message (1 means no retry).
    pub retry_attempts: u32,
    pub smtp: SmtpConfig,
}

/// How long mailed tokens (password reset, email verification) stay valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    pub reset: Duration,
    pub verification: Duration,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// Lines the writer may hold before it drops (and counts) new ones.
    pub buffer_lines: usize,
    /// Where logs go off the host; only declared, for `castellan doctor`.
    pub shipping: String,
}

/// Which peers may name the client, and whether they terminate TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub trusted: Vec<IpNet>,
    pub header: ForwardedHeader,
    /// Requests arrive through a proxy that terminated TLS.
    pub behind_tls: bool,
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
    /// Wrong admin tokens in a row from one address before back-off.
    pub admin_token_backoff_after: u64,
    /// IPv6 addresses are counted by this prefix (one /64 is one client).
    pub ipv6_prefix: u8,
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
    /// The password policy (NIST SP 800-63B 3.1.1.2).
    pub passwords: PasswordPolicy,
    pub hashing: HashingConfig,
    pub token_lifetimes: TokenLifetimes,
    pub mail: MailConfig,
    pub totp_issuer: String,
    pub log: LogConfig,
    pub proxies: ProxyConfig,
    pub shutdown_timeout: Duration,
    /// `castellan doctor` fails below this score.
    pub doctor_min_score: u32,
    /// Production `serve` may run as root (root mapped to an unprivileged user).
    pub allow_root: bool,
    /// Listener limits and native TLS.
    pub net: NetConfig,
    /// How long the node reports not-ready before it stops accepting.
    pub shutdown_drain_delay: Duration,
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
