//! Sources and loading: defaults, then the TOML file, then the environment,
//! each value parsed and every problem collected.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;

use super::parse::*;
use super::settings::{SETTINGS, Setting};
use super::*;

/// Where each raw value came from, for error messages.
#[derive(Debug, Clone)]
pub(super) struct Raw {
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
        let ui_return_origins = p.parse("ui_return_origins", parse_origins);
        let public_base_url = p.parse("public_base_url", |v| {
            let ok = (v.starts_with("https://") || v.starts_with("http://"))
                && !v.ends_with('/')
                && v.len() < 200
                && !v.chars().any(|c| c.is_whitespace() || c.is_control() || "\\\"<>`#?".contains(c));
            if ok { Ok(v.to_string()) } else { Err("must be an origin like https://auth.example.com (no trailing slash, path or query)".into()) }
        });
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
        let admin_token_backoff_after =
            p.parse("admin_token_backoff_after", |v| parse_int_in(v, 1, 1000));
        let ipv6_prefix = p.parse("ipv6_limit_prefix", |v| parse_int_in(v, 32, 128));
        let password_min_length = p.parse("password_min_length", |v| parse_int_in(v, 8, 64));
        let password_max_length = p.parse("password_max_length", |v| parse_int_in(v, 64, 4096));
        let memory_kib = p.parse("argon2_memory_kib", |v| {
            parse_int_in(v, 8 * 1024, 4 * 1024 * 1024)
        });
        let iterations = p.parse("argon2_iterations", |v| parse_int_in(v, 1, 64));
        let parallelism = p.parse("argon2_parallelism", |v| parse_int_in(v, 1, 16));
        let hash_threads = p.parse("hash_threads", |v| parse_int_in(v, 0, 256));
        let hash_queue = p.parse("hash_queue", |v| parse_int_in(v, 1, 100_000));
        let hash_low_priority = p.parse("hash_thread_priority", |v| match v {
            "low" => Ok(true),
            "normal" => Ok(false),
            _ => Err("must be `low` or `normal`".into()),
        });
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
        let log_buffer_lines = p.parse("log_buffer_lines", |v| parse_int_in(v, 1, 1_000_000));
        let trusted_proxies = p.parse("trusted_proxies", parse_cidrs);
        let forwarded_header = p.parse("forwarded_header", |v| match v {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => Err("must be x-forwarded-for or forwarded".into()),
        });
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
        let net = net::parse(&mut p);
        let passkeys = super::passkeys::parse(&mut p, public_base_url.as_deref());

        let log_shipping = p.parse("log_shipping", |v| {
            if v.len() > 200 || v.chars().any(char::is_control) {
                Err("must be at most 200 printable characters".into())
            } else {
                Ok(v.to_string())
            }
        });
        let doctor_min_score = p.parse("doctor_min_score", |v| parse_int_in(v, 0, 100));
        let allow_root = p.parse("allow_root", parse_bool);
        let shutdown_drain_delay = p.parse("shutdown_drain_delay", |v| {
            parse_duration_in(v, Duration::from_millis(0), Duration::from_secs(300))
        });

        let profile = profile?;
        let data_dir = data_dir?;
        let database = DatabaseConfig {
            location: database?.unwrap_or_else(|| DatabaseLocation::Sqlite {
                path: data_dir.join("castellan.db"),
            }),
            pool: PoolConfig {
                max_connections: u32::try_from(db_max_connections?).ok()?,
                min_connections: u32::try_from(db_min_connections?).ok()?,
                acquire_timeout: db_acquire_timeout?,
                idle_timeout: db_idle_timeout?,
                max_lifetime: db_max_lifetime?,
            },
            allow_unverified_tls: database_allow_unverified_tls?,
        };
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
                admin_token_backoff_after: admin_token_backoff_after?,
                ipv6_prefix: u8::try_from(ipv6_prefix?).ok()?,
            },
            passwords: PasswordPolicy {
                min_length: usize::try_from(min).ok()?,
                max_length: usize::try_from(max).ok()?,
                min_strength: u8::try_from(password_min_strength?).ok()?,
                context_words: password_context_words?,
            },
            hashing: HashingConfig {
                argon2: Argon2Config {
                    memory_kib: u32::try_from(memory_kib?).ok()?,
                    iterations: u32::try_from(iterations?).ok()?,
                    parallelism: u32::try_from(parallelism?).ok()?,
                },
                threads: usize::try_from(hash_threads?).ok()?,
                queue: usize::try_from(hash_queue?).ok()?,
                low_priority: hash_low_priority?,
            },
            token_lifetimes: TokenLifetimes {
                reset: reset_token_ttl?,
                verification: verification_token_ttl?,
            },
            mail: MailConfig {
                transport: mail_transport?,
                dir: mail_dir?,
                from: mail_from?,
                retry_attempts: u32::try_from(mail_retry_attempts?).ok()?,
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
            },
            totp_issuer: totp_issuer?,
            log: LogConfig {
                format: log_format?.unwrap_or(match profile {
                    Profile::Dev => LogFormat::Pretty,
                    Profile::Production => LogFormat::Json,
                }),
                level: log_level?,
                buffer_lines: usize::try_from(log_buffer_lines?).ok()?,
                shipping: log_shipping?,
            },
            proxies: ProxyConfig {
                trusted: trusted_proxies?,
                header: forwarded_header?,
                behind_tls: behind_tls_proxy?,
            },
            shutdown_timeout: shutdown_timeout?,
            doctor_min_score: u32::try_from(doctor_min_score?).ok()?,
            allow_root: allow_root?,
            net: net?,
            passkeys: passkeys?,
            shutdown_drain_delay: shutdown_drain_delay?,
            data_dir,
        };
        config.cross_check(errors);
        Some(config)
    }
}

/// Collects errors while parsing each raw value.
pub(super) struct Parser<'a> {
    raw: &'a BTreeMap<&'static str, Raw>,
    errors: &'a mut Vec<SettingError>,
}

impl Parser<'_> {
    /// Records a problem that involves more than the value itself.
    pub(super) fn fail(&mut self, key: &str, problem: &str) {
        self.errors.push(SettingError {
            setting: format!("CASTELLAN_{}", key.to_ascii_uppercase()),
            problem: problem.into(),
        });
    }

    pub(super) fn parse<T>(
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

pub(super) fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

pub(super) fn read_toml(
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

pub(super) fn read_env(
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
pub(super) fn lookup(key: &str) -> Option<(&'static Setting, bool)> {
    if let Some(s) = SETTINGS.iter().find(|s| s.key == key) {
        return Some((s, false));
    }
    let base = key.strip_suffix("_file")?;
    SETTINGS
        .iter()
        .find(|s| s.key == base && s.secret)
        .map(|s| (s, true))
}

pub(super) fn insert_value(
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

/// The process environment as a map, for [`Config::load`].
pub fn process_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
