//! The settings table: every key, its default and its meaning.

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
    s(
        "admin_token_backoff_after",
        "5",
        "consecutive wrong admin tokens from one address before exponential back-off (capped by login_backoff_max)",
    ),
    secret(
        "secret_key",
        "base64 of at least 32 random bytes for keyed hashes and encryption",
    ),
    secret(
        "previous_secret_key",
        "the secret key before a rotation, kept only to open TOTP secrets sealed with it and check backup codes issued under it",
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
        "ipv6_limit_prefix",
        "64",
        "IPv6 clients share per-address limits by this prefix length (32 to 128)",
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
        "hash_thread_priority",
        "low",
        "`low` (hashing threads yield the CPU to request handling) or `normal`",
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
        "PEM file of the CA certificates trusted for the SMTP server, replacing the public roots (default unset: public web PKI roots)",
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
        "log_buffer_lines",
        "8192",
        "log lines that may wait for the log writer thread; beyond it lines are dropped",
    ),
    s(
        "trusted_proxies",
        "",
        "comma-separated CIDRs whose forwarding header is believed",
    ),
    s(
        "forwarded_header",
        "x-forwarded-for",
        "the header trusted proxies report the client in: `x-forwarded-for` or `forwarded` (RFC 7239)",
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
        "log_shipping",
        "",
        "where the logs are shipped off the host (e.g. `journald to the SIEM`); checked by `castellan doctor`",
    ),
    s(
        "allow_root",
        "false",
        "in production `castellan serve` refuses to run as root unless this is true (only where root is mapped to an unprivileged user, e.g. a rootless container)",
    ),
    s(
        "doctor_min_score",
        "80",
        "`castellan doctor` exits non-zero below this score (0 to 100)",
    ),
    s(
        "http_header_read_timeout",
        "10s",
        "a client must send a request's complete headers (and finish the TLS handshake) within this",
    ),
    s(
        "http_body_read_timeout",
        "10s",
        "longest pause between two pieces of a request body",
    ),
    s(
        "http_request_timeout",
        "30s",
        "a whole request must be answered within this, else 408",
    ),
    s(
        "http_idle_timeout",
        "60s",
        "a connection with no request in flight for this long is closed",
    ),
    s(
        "http_max_connections",
        "1024",
        "open connections per listener; further clients wait until one closes",
    ),
    s(
        "tls_cert_file",
        "",
        "PEM certificate chain; with tls_key_file castellan serves HTTPS itself",
    ),
    s("tls_key_file", "", "PEM private key of tls_cert_file"),
    s(
        "tls_reload_interval",
        "10s",
        "how often the certificate files are checked for changes (SIGHUP reloads at once)",
    ),
    s(
        "tls_redirect_listen",
        "",
        "optional plain-HTTP listener that redirects pages to HTTPS and refuses API calls",
    ),
    s(
        "shutdown_drain_delay",
        "5s",
        "after SIGTERM, how long /health/ready answers 503 before the listener closes",
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
