//! `castellan doctor`: grades a deployment's hardening.
//!
//! Each check looks at the effective configuration and, where it needs one,
//! at what a live look at the database found ([`DatabaseFindings`]). A check
//! passes, warns or fails, says why it matters and names the setting that
//! fixes it. The score is the weighted share of the points: a pass earns a
//! check's weight, a warning half of it, a failure nothing; checks that do
//! not apply (PostgreSQL checks on SQLite) are left out.

use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, DatabaseConfig, LogFormat, MailTransport, Profile, SmtpTls};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One graded check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    /// What was found.
    pub summary: String,
    /// Why it matters.
    pub why: &'static str,
    /// The setting or action that fixes it (empty when it passes).
    pub fix: String,
    #[serde(skip)]
    pub weight: u32,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub score: u32,
    pub profile: &'static str,
    pub checks: Vec<Check>,
}

/// What a live look at the database found; `None` fields were not looked at
/// (SQLite has no roles or server settings).
#[derive(Debug, Clone, Default)]
pub struct DatabaseFindings {
    /// The connection failed: why.
    pub unreachable: Option<String>,
    /// TLS as reported by the server for this connection (`pg_stat_ssl`).
    pub tls_in_use: Option<bool>,
    /// Connections the server allows castellan: `max_connections` minus
    /// the superuser reserve.
    pub usable_connections: Option<u32>,
    /// Migrations embedded in this binary that the database has not applied.
    pub pending_migrations: Vec<String>,
    /// The runtime role is a superuser.
    pub role_is_superuser: Option<bool>,
    /// The runtime role owns castellan's tables (it could alter or drop them).
    pub role_owns_tables: Option<bool>,
    /// The server's `password_encryption`.
    pub password_encryption: Option<String>,
    /// `audit verify`'s verdict: `Ok` with the number of events, or the break.
    pub audit_chain: Option<Result<u64, String>>,
}

/// What doctor knows besides the configuration and the database.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The production profile was asked for but refused to load: the
    /// reasons. The other checks then grade the configuration as if it
    /// were allowed to run.
    pub production_refusals: Vec<String>,
    /// The process runs as root.
    pub running_as_root: bool,
    /// What a look at the served certificate found (native TLS only).
    pub certificate: Option<CertificateFindings>,
}

/// The certificate castellan serves with native TLS, as doctor read it.
#[derive(Debug, Clone)]
pub struct CertificateFindings {
    /// The public host it was checked for (from `public_base_url`).
    pub host: String,
    /// The leaf's public key, e.g. `RSA 2048 bits`; `Err` when unreadable.
    pub key: Result<String, String>,
    /// The key gives at least 128 bits of security (RSA >= 3072 bits,
    /// ECDSA on P-256/P-384/P-521, Ed25519 or Ed448).
    pub key_strong: bool,
    /// Verification of the chain against the public web PKI roots for
    /// `host`: `Err` with the reason.
    pub publicly_trusted: Result<(), String>,
}

/// OWASP's Argon2id minimums (memory in KiB, iterations) for parallelism 1.
const ARGON2_MINIMUMS: &[(u32, u32)] = &[(47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5)];

/// Grades `config` (and what was found in the database).
pub fn examine(config: &Config, db: &DatabaseFindings, context: &Context) -> Report {
    let production =
        config.profile == Profile::Production || !context.production_refusals.is_empty();
    let mut checks = Vec::new();
    let mut add = |id, weight, status, summary: String, why, fix: &str| {
        checks.push(Check {
            id,
            status,
            summary,
            why,
            fix: if status == Status::Pass {
                String::new()
            } else {
                fix.to_string()
            },
            weight,
        })
    };
    // In production a weakness fails; in dev it only warns.
    let weak = if production {
        Status::Fail
    } else {
        Status::Warn
    };

    if !context.production_refusals.is_empty() {
        add(
            "production_profile",
            5,
            Status::Fail,
            format!(
                "the production profile refuses to start: {}",
                context.production_refusals.join("; ")
            ),
            "castellan refuses insecure settings in production rather than run with them",
            "fix each setting named above (docs/configuration.md)",
        );
    }

    // -- database
    match &config.database {
        DatabaseConfig::Sqlite { .. } => add(
            "database_tls",
            3,
            Status::Pass,
            "embedded SQLite: no network connection to protect".into(),
            "credentials and data cross the network to PostgreSQL",
            "",
        ),
        DatabaseConfig::Postgres { url } => {
            let text = secrecy::ExposeSecret::expose_secret(url);
            let mode = url_param(text, "sslmode").unwrap_or("verify-full");
            let host = url_host(text);
            let local = host.as_deref().is_none_or(crate::config::is_loopback_host);
            let status = match mode {
                "verify-full" => Status::Pass,
                "verify-ca" => Status::Warn,
                _ if local => Status::Pass,
                _ => Status::Fail,
            };
            add(
                "database_tls",
                3,
                status,
                format!(
                    "PostgreSQL sslmode {mode} to {}",
                    host.as_deref().unwrap_or("a Unix socket")
                ),
                "only verify-full proves the server is the database you meant; require encrypts but accepts any certificate",
                "add sslmode=verify-full&sslrootcert=/path/to/ca.pem to CASTELLAN_DATABASE_URL",
            );
            let ca = url_param(text, "sslrootcert");
            add(
                "database_ca",
                1,
                if ca.is_some() || local {
                    Status::Pass
                } else {
                    Status::Warn
                },
                match ca {
                    Some(path) => format!("only the CA in {path} is trusted for PostgreSQL"),
                    None if local => "loopback database".into(),
                    None => "the public web PKI roots are trusted for PostgreSQL".into(),
                },
                "with a private CA, any publicly trusted certificate for the host name would otherwise be accepted",
                "set sslrootcert=/path/to/private-ca.pem in CASTELLAN_DATABASE_URL (castellan then trusts only it)",
            );
            let (user, _) = crate::config::database_url_credentials(text);
            let default = crate::config::has_well_known_credentials(text);
            add(
                "database_credentials",
                2,
                if default { Status::Fail } else { Status::Pass },
                if default {
                    format!("the database user `{user}` has a well-known or trivial password")
                } else {
                    "the database credentials are not a well-known default".into()
                },
                "default credentials are the first thing an attacker tries",
                "give the castellan role a random password (openssl rand -base64 24) and update CASTELLAN_DATABASE_URL_FILE",
            );
        }
    }
    let postgres = matches!(config.database, DatabaseConfig::Postgres { .. });
    if let Some(why) = &db.unreachable {
        add(
            "database_reachable",
            3,
            Status::Fail,
            format!("cannot connect: {why}"),
            "castellan answers 503 to everything that needs the database",
            "check CASTELLAN_DATABASE_URL, the network and the server",
        );
    } else {
        if postgres {
            if let Some(tls) = db.tls_in_use {
                add(
                    "database_tls_in_use",
                    2,
                    if tls { Status::Pass } else { weak },
                    format!(
                        "the server reports this connection {}",
                        if tls { "encrypted" } else { "unencrypted" }
                    ),
                    "pg_stat_ssl tells what the server actually negotiated",
                    "enable ssl on the server and use sslmode=verify-full",
                );
            }
            if let Some(usable) = db.usable_connections {
                let pool = config.db_pool_size();
                add(
                    "database_pool_fits",
                    2,
                    if pool <= usable {
                        Status::Pass
                    } else {
                        Status::Fail
                    },
                    format!("pool of {pool} connections; the server allows {usable}"),
                    "a pool larger than the server allows fails under load instead of queueing",
                    "lower CASTELLAN_DB_MAX_CONNECTIONS (nodes x pool size <= max_connections - superuser_reserved_connections)",
                );
            }
            if let (Some(superuser), Some(owner)) = (db.role_is_superuser, db.role_owns_tables) {
                add(
                    "database_role",
                    2,
                    if superuser || owner {
                        Status::Fail
                    } else {
                        Status::Pass
                    },
                    if superuser {
                        "castellan's database role is a superuser".into()
                    } else if owner {
                        "castellan's database role owns its tables (it could alter or drop them)"
                            .into()
                    } else {
                        "castellan's database role holds data privileges only".into()
                    },
                    "a compromised service should not be able to change the schema, read other databases or delete the audit trail wholesale",
                    "run migrations with an owner role (castellan migrate) and serve with a role granted SELECT, INSERT, UPDATE, DELETE only (docs/operations.md)",
                );
            }
            if let Some(method) = &db.password_encryption {
                add(
                    "database_password_encryption",
                    1,
                    if method == "scram-sha-256" {
                        Status::Pass
                    } else {
                        Status::Fail
                    },
                    format!("password_encryption is {method}"),
                    "MD5 password authentication is broken; SCRAM-SHA-256 is the approved method",
                    "set password_encryption = scram-sha-256 on the server, reset the role's password, use scram-sha-256 in pg_hba.conf",
                );
            }
        }
        add(
            "migrations",
            2,
            if db.pending_migrations.is_empty() {
                Status::Pass
            } else {
                Status::Fail
            },
            if db.pending_migrations.is_empty() {
                "the database schema is current".into()
            } else {
                format!("pending migrations: {}", db.pending_migrations.join(", "))
            },
            "a schema behind the binary breaks requests at run time",
            "run castellan migrate (with the owner role)",
        );
        match &db.audit_chain {
            Some(Ok(events)) => add(
                "audit_chain",
                3,
                Status::Pass,
                format!("the audit chain verifies ({events} events)"),
                "a broken chain means security events were altered, removed or inserted",
                "",
            ),
            Some(Err(broken)) => add(
                "audit_chain",
                3,
                Status::Fail,
                format!("the audit chain is broken: {broken}"),
                "a broken chain means security events were altered, removed or inserted",
                "investigate with castellan audit verify and audit export; compare with shipped exports (docs/operations.md)",
            ),
            None => add(
                "audit_chain",
                3,
                Status::Warn,
                "the audit chain was not checked (the schema is not current)".into(),
                "a broken chain means security events were altered, removed or inserted",
                "run castellan migrate, then castellan doctor again",
            ),
        }
    }

    // -- keys
    match &config.secret_key {
        Some(key) => {
            let bytes = key.expose();
            let mut distinct = bytes.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            let random_looking = bytes.len() >= 32 && distinct.len() >= 16;
            add(
                "secret_key",
                3,
                if random_looking {
                    Status::Pass
                } else {
                    Status::Fail
                },
                if random_looking {
                    format!(
                        "secret key of {} bytes from the environment or a file",
                        bytes.len()
                    )
                } else {
                    format!(
                        "the secret key ({} bytes, {} distinct values) does not look random",
                        bytes.len(),
                        distinct.len()
                    )
                },
                "it keys every token hash and encrypts TOTP secrets",
                "set CASTELLAN_SECRET_KEY_FILE to a file holding `openssl rand -base64 32`",
            );
        }
        None => add(
            "secret_key",
            3,
            weak,
            "no secret key configured: the generated development key in the data directory is used"
                .into(),
            "it keys every token hash and encrypts TOTP secrets; a key generated on one machine is not backed up or shared by other nodes",
            "set CASTELLAN_SECRET_KEY_FILE to a file holding `openssl rand -base64 32`",
        ),
    }
    add(
        "audit_key",
        1,
        if config.audit_key.is_some() {
            Status::Pass
        } else {
            Status::Warn
        },
        if config.audit_key.is_some() {
            "audit events carry an HMAC under a key the database does not hold".into()
        } else {
            "no audit key: someone with database access can rewrite the whole chain undetected"
                .into()
        },
        "the HMAC makes the audit chain tamper-evident against the database's own administrators",
        "set CASTELLAN_AUDIT_KEY_FILE to a file holding `openssl rand -base64 32` (keep it outside the database)",
    );
    let a = config.argon2;
    let argon_ok = a.parallelism >= 1
        && ARGON2_MINIMUMS
            .iter()
            .any(|(m, t)| a.memory_kib >= *m && a.iterations >= *t);
    add(
        "argon2",
        2,
        if argon_ok { Status::Pass } else { Status::Fail },
        format!(
            "Argon2id m={} KiB, t={}, p={}",
            a.memory_kib, a.iterations, a.parallelism
        ),
        "below OWASP's minimum, stolen password hashes are cheap to crack",
        "set argon2_memory_kib = 19456 and argon2_iterations = 2 (or stronger)",
    );

    // -- the listeners
    let proxies_named = config.behind_tls_proxy && !config.trusted_proxies.is_empty();
    let native = config.net.tls.as_ref();
    add(
        "tls",
        3,
        if native.is_some() || proxies_named {
            Status::Pass
        } else if config.behind_tls_proxy {
            Status::Fail
        } else {
            weak
        },
        if let Some(files) = native {
            format!(
                "castellan terminates TLS itself with {}",
                files.cert_file.display()
            )
        } else if proxies_named {
            format!(
                "TLS is terminated by {} trusted prox{}",
                config.trusted_proxies.len(),
                if config.trusted_proxies.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            )
        } else if config.behind_tls_proxy {
            "behind_tls_proxy is set but no trusted proxy is named: every client shares the proxy's address".into()
        } else {
            "castellan serves plain HTTP and no TLS proxy is declared".into()
        },
        "passwords, codes and session cookies must only travel over TLS, and per-address limits need the real client address",
        "set CASTELLAN_BEHIND_TLS_PROXY=true and CASTELLAN_TRUSTED_PROXIES to the proxies' addresses",
    );
    if let Some(cert) = &context.certificate {
        certificate_checks(cert, &mut add);
    }
    let https = config.public_base_url.starts_with("https://");
    add(
        "cookies_secure",
        1,
        if https { Status::Pass } else { weak },
        format!("public_base_url is {}", config.public_base_url),
        "the session cookie is Secure and __Host-prefixed: browsers only keep it over https",
        "set CASTELLAN_PUBLIC_BASE_URL to the https:// origin users see",
    );
    let admin = match &config.admin_token {
        None => (
            Status::Pass,
            "no admin token: the admin listener is off".to_string(),
        ),
        Some(token) => {
            let token = secrecy::ExposeSecret::expose_secret(token);
            if token.len() < 32 {
                (
                    Status::Fail,
                    "the admin token is shorter than 32 characters".to_string(),
                )
            } else if config.admin_listen.ip().is_loopback() {
                (
                    Status::Pass,
                    format!("admin listener on loopback {}", config.admin_listen),
                )
            } else {
                (
                    Status::Warn,
                    format!("admin listener on {} beyond loopback", config.admin_listen),
                )
            }
        }
    };
    add(
        "admin_listener",
        2,
        admin.0,
        admin.1,
        "the admin token can lock accounts and revoke every session",
        "keep CASTELLAN_ADMIN_LISTEN on 127.0.0.1 and CASTELLAN_ADMIN_TOKEN_FILE at least 32 random characters",
    );

    // -- sessions, mail, logs
    let s = &config.session;
    let rev3 = s.idle_timeout <= Duration::from_secs(30 * 60)
        && s.lifetime <= Duration::from_secs(12 * 3600);
    let rev4 =
        s.idle_timeout <= Duration::from_secs(3600) && s.lifetime <= Duration::from_secs(24 * 3600);
    add(
        "session_timeouts",
        2,
        if rev3 {
            Status::Pass
        } else if rev4 {
            Status::Warn
        } else {
            Status::Fail
        },
        format!(
            "idle {}, lifetime {}",
            crate::config::format_duration(s.idle_timeout),
            crate::config::format_duration(s.lifetime)
        ),
        "NIST SP 800-63B AAL2: reauthenticate after 30 minutes idle and every 12 hours (rev 3; rev 4 allows 1 hour and 24 hours)",
        "set CASTELLAN_SESSION_IDLE_TIMEOUT=30m and CASTELLAN_SESSION_LIFETIME=12h or shorter",
    );
    let mail = match (&config.mail_transport, config.smtp.tls) {
        (MailTransport::Smtp, SmtpTls::StartTls | SmtpTls::Implicit) => {
            (Status::Pass, "mail goes over SMTP with TLS".to_string())
        }
        (MailTransport::Smtp, SmtpTls::None) => (
            Status::Warn,
            "SMTP without TLS to a loopback relay".to_string(),
        ),
        (MailTransport::File, _) => (
            weak,
            "mail is written to files: nobody receives reset links".to_string(),
        ),
    };
    add(
        "mail",
        2,
        mail.0,
        mail.1,
        "reset and verification links carry tokens: they must reach the user, encrypted",
        "set CASTELLAN_MAIL_TRANSPORT=smtp, CASTELLAN_SMTP_HOST and CASTELLAN_SMTP_TLS=starttls (or implicit)",
    );
    add(
        "log_format",
        1,
        if config.log_format == LogFormat::Json {
            Status::Pass
        } else {
            weak
        },
        format!(
            "logs are {}",
            if config.log_format == LogFormat::Json {
                "JSON lines"
            } else {
                "pretty text"
            }
        ),
        "a log collector parses JSON reliably; pretty text is for people at a terminal",
        "set CASTELLAN_LOG_FORMAT=json",
    );
    let shipping = config.log_shipping.trim();
    add(
        "log_shipping",
        1,
        if !shipping.is_empty() {
            Status::Pass
        } else if production {
            Status::Warn
        } else {
            Status::Pass
        },
        if shipping.is_empty() {
            "no log shipping declared".into()
        } else {
            format!("logs are shipped to {shipping}")
        },
        "logs kept only on the host can be erased by whoever breaks into it",
        "ship stdout to a collector and name it in CASTELLAN_LOG_SHIPPING (docs/operations.md)",
    );
    add(
        "require_mfa",
        1,
        if config.require_mfa {
            Status::Pass
        } else {
            Status::Warn
        },
        format!("require_mfa is {}", config.require_mfa),
        "NIST AAL2 needs a second factor for every account",
        "set CASTELLAN_REQUIRE_MFA=true",
    );
    add(
        "request_limits",
        2,
        if config.hash_queue <= 1024 && config.db_acquire_timeout <= Duration::from_secs(30) {
            Status::Pass
        } else {
            Status::Warn
        },
        format!(
            "hashing queue {}, database acquire timeout {}",
            config.hash_queue,
            crate::config::format_duration(config.db_acquire_timeout)
        ),
        "bounded queues and timeouts keep one flood from starving every other request",
        "keep CASTELLAN_HASH_QUEUE at 1024 or less and CASTELLAN_DB_ACQUIRE_TIMEOUT at 30s or less",
    );
    add(
        "process_user",
        2,
        if context.running_as_root {
            weak
        } else {
            Status::Pass
        },
        if context.running_as_root {
            "running as root".into()
        } else {
            "not running as root".into()
        },
        "a service running as root turns any flaw into control of the machine",
        "run castellan as its own user (deploy/systemd/castellan.service does)",
    );

    let total: u32 = checks.iter().map(|c| c.weight * 2).sum();
    let earned: u32 = checks
        .iter()
        .map(|c| match c.status {
            Status::Pass => c.weight * 2,
            Status::Warn => c.weight,
            Status::Fail => 0,
        })
        .sum();
    let score = (earned * 100 + total / 2).checked_div(total).unwrap_or(0);
    Report {
        score,
        profile: if production { "production" } else { "dev" },
        checks,
    }
}

/// The served certificate: publicly trusted for the public host, with a
/// key of at least 128-bit strength.
fn certificate_checks(
    cert: &CertificateFindings,
    add: &mut impl FnMut(&'static str, u32, Status, String, &'static str, &str),
) {
    // A private CA can be right for an internal deployment: a warning.
    add(
        "tls_certificate_trust",
        2,
        if cert.publicly_trusted.is_ok() {
            Status::Pass
        } else {
            Status::Warn
        },
        match &cert.publicly_trusted {
            Ok(()) => format!("chains to a publicly trusted root for {}", cert.host),
            Err(why) => format!("not publicly trusted for {}: {why}", cert.host),
        },
        "browsers and clients on the internet only trust certificates from public CAs issued for the name they connect to",
        "put a certificate from a public CA (e.g. by ACME) for the public_base_url host, with its intermediates, in CASTELLAN_TLS_CERT_FILE",
    );
    add(
        "tls_key_strength",
        2,
        if cert.key_strong {
            Status::Pass
        } else {
            Status::Fail
        },
        match &cert.key {
            Ok(key) => format!("the certificate's key is {key}"),
            Err(why) => format!("the certificate cannot be read: {why}"),
        },
        "a key below 128-bit strength (RSA under 3072 bits, unapproved curves) can be broken within the certificate's life",
        "issue the certificate for an ECDSA P-256 or P-384 key (or RSA of at least 3072 bits)",
    );
}

/// A query parameter of a URL, undecoded (sslmode values need no decoding;
/// paths are shown as written).
fn url_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The host of a `postgres://` URL, `None` for a Unix socket.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        host_port.split(':').next()?.to_string()
    };
    if host.is_empty()
        || url_param(url, "host").is_some_and(|h| h.starts_with('/') || h.starts_with("%2F"))
    {
        None
    } else {
        Some(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_without_a_full_parser() {
        let url = "postgres://app:s%40cret@db.example.com:5432/castellan?sslmode=require&sslrootcert=/ca.pem";
        assert_eq!(url_param(url, "sslmode"), Some("require"));
        assert_eq!(url_param(url, "sslrootcert"), Some("/ca.pem"));
        assert_eq!(url_host(url).as_deref(), Some("db.example.com"));
        assert_eq!(
            crate::config::database_url_credentials(url),
            ("app".into(), "s@cret".into())
        );
        assert!(crate::config::has_well_known_credentials(
            "postgres://postgres:postgres@db/x"
        ));
        assert!(crate::config::has_well_known_credentials(
            "postgres://app:app@db/x"
        ));
        assert!(!crate::config::has_well_known_credentials(url));
        assert_eq!(
            url_host("postgres://u@[::1]:5432/x").as_deref(),
            Some("::1")
        );
        assert_eq!(url_host("postgres:///castellan?host=/run/postgresql"), None);
    }

    #[test]
    fn argon2_minimums_follow_owasp() {
        let ok = |m, t| ARGON2_MINIMUMS.iter().any(|(mm, tt)| m >= *mm && t >= *tt);
        assert!(ok(19456, 2) && ok(47104, 1) && ok(7168, 5));
        assert!(!ok(19456, 1) && !ok(4096, 3));
    }
}
