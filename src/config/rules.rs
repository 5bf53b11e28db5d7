//! Cross-setting rules: checks that involve more than one setting, and
//! what the production profile refuses.

use super::*;

impl Config {
    /// Rules that involve more than one setting, and the production profile.
    pub(super) fn cross_check(&self, errors: &mut Vec<SettingError>) {
        let mut fail = |setting: &str, problem: &str| {
            errors.push(SettingError {
                setting: setting.into(),
                problem: problem.into(),
            })
        };
        if self.passwords.max_length < self.passwords.min_length {
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
        super::passkeys::check(self, &mut fail);
        if self.profile == Profile::Production {
            if self.secret_key.is_none() {
                fail(
                    "secret_key",
                    "is required in production: set CASTELLAN_SECRET_KEY or CASTELLAN_SECRET_KEY_FILE to `openssl rand -base64 32`",
                );
            }
            let proxied = self.proxies.behind_tls && !self.proxies.trusted.is_empty();
            if self.net.tls.is_none() && !proxied {
                fail(
                    "behind_tls_proxy",
                    if self.proxies.behind_tls {
                        "production behind a TLS proxy needs the proxy's addresses: set CASTELLAN_TRUSTED_PROXIES (e.g. 10.0.0.5/32), otherwise every client shares the proxy's address and one attacker can lock everyone out; or let castellan terminate TLS with CASTELLAN_TLS_CERT_FILE and CASTELLAN_TLS_KEY_FILE"
                    } else {
                        "production needs TLS: set CASTELLAN_TLS_CERT_FILE and CASTELLAN_TLS_KEY_FILE, or terminate TLS in a proxy and set CASTELLAN_BEHIND_TLS_PROXY=true with CASTELLAN_TRUSTED_PROXIES listing the proxy's addresses"
                    },
                );
            }
            if self.log.level.contains("trace") || self.log.level.contains("debug") {
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
            if let DatabaseLocation::Postgres { url } = &self.database.location
                && has_well_known_credentials(secrecy::ExposeSecret::expose_secret(url))
            {
                fail(
                    "database_url",
                    "logs in with a well-known or trivial password; give castellan's database role a random one (`openssl rand -base64 24`)",
                );
            }
            if !self.admin_listen.ip().is_loopback()
                && self.admin_token.is_some()
                && self.net.tls.is_none()
            {
                fail(
                    "admin_listen",
                    "beyond a loopback address the admin listener must serve TLS in production: set CASTELLAN_TLS_CERT_FILE and CASTELLAN_TLS_KEY_FILE, or bind it to 127.0.0.1",
                );
            }
        }
    }
}

impl Config {
    /// The rules between the pool settings.
    fn check_pool(&self, fail: &mut impl FnMut(&str, &str)) {
        let pool = &self.database.pool;
        let max = pool.size();
        if pool.min_connections > max {
            let problem = format!(
                "must not exceed the pool size ({max}{}); lower CASTELLAN_DB_MIN_CONNECTIONS or raise CASTELLAN_DB_MAX_CONNECTIONS",
                if pool.max_connections == 0 {
                    ", the default for this machine"
                } else {
                    ""
                }
            );
            fail("db_min_connections", &problem);
        }
        if pool.idle_timeout > pool.max_lifetime {
            fail(
                "db_idle_timeout",
                "must not exceed db_max_lifetime (a connection is replaced before it could idle out)",
            );
        }
    }

    /// The rules of the SMTP settings (only checked for `mail_transport = smtp`).
    fn check_smtp(&self, fail: &mut impl FnMut(&str, &str)) {
        if self.mail.transport != MailTransport::Smtp {
            return;
        }
        let smtp = &self.mail.smtp;
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
        if let Err(problem) = check_smtp_tls(smtp) {
            let setting = if smtp.ca_pem.is_some() {
                "smtp_ca_file"
            } else {
                "smtp_host"
            };
            fail(setting, &problem);
        }
    }
}

/// `localhost` or a loopback IP address.
/// User and password pairs that ship as defaults or examples somewhere.
const WELL_KNOWN_DB_CREDENTIALS: &[(&str, &str)] = &[
    ("postgres", "postgres"),
    ("postgres", "password"),
    ("postgres", ""),
    ("castellan", "castellan"),
    ("castellan", "password"),
    ("admin", "admin"),
    ("root", "root"),
    ("user", "password"),
];

/// User and password of a `postgres://` URL, percent-decoded.
pub fn database_url_credentials(url: &str) -> (String, String) {
    let Some((_, rest)) = url.split_once("://") else {
        return (String::new(), String::new());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return (String::new(), String::new());
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    (decode(user), decode(password))
}

/// Whether a database URL logs in with a well-known or trivial password
/// (one of the shipped defaults, or the user name again).
pub fn has_well_known_credentials(url: &str) -> bool {
    let (user, password) = database_url_credentials(url);
    !user.is_empty()
        && (user == password
            || WELL_KNOWN_DB_CREDENTIALS
                .iter()
                .any(|(u, p)| *u == user && *p == password))
}

pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks that the TLS settings of `smtp` can be used (the CA file parses).
fn check_smtp_tls(smtp: &SmtpConfig) -> Result<(), String> {
    if smtp.tls == SmtpTls::None || smtp.host.is_empty() {
        return Ok(());
    }
    smtp.tls_parameters().map(|_| ())
}
