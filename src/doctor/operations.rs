//! Checks of operations: session timeouts, mail, logs, MFA policy,
//! request limits, the process user.

use std::time::Duration;

use super::{Context, Grader, Status};
use crate::config::{Config, LogFormat, MailTransport, SmtpTls};

/// Grades sessions, mail, logging and the running process.
pub(super) fn grade(config: &Config, context: &Context, g: &mut Grader) {
    let s = &config.session;
    let rev3 = s.idle_timeout <= Duration::from_secs(30 * 60)
        && s.lifetime <= Duration::from_secs(12 * 3600);
    let rev4 =
        s.idle_timeout <= Duration::from_secs(3600) && s.lifetime <= Duration::from_secs(24 * 3600);
    g.add(
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
    let mail = match (&config.mail.transport, config.mail.smtp.tls) {
        (MailTransport::Smtp, SmtpTls::StartTls | SmtpTls::Implicit) => {
            (Status::Pass, "mail goes over SMTP with TLS".to_string())
        }
        (MailTransport::Smtp, SmtpTls::None) => (
            Status::Warn,
            "SMTP without TLS to a loopback relay".to_string(),
        ),
        (MailTransport::File, _) => (
            g.weak,
            "mail is written to files: nobody receives reset links".to_string(),
        ),
    };
    g.add(
        "mail",
        2,
        mail.0,
        mail.1,
        "reset and verification links carry tokens: they must reach the user, encrypted",
        "set CASTELLAN_MAIL_TRANSPORT=smtp, CASTELLAN_SMTP_HOST and CASTELLAN_SMTP_TLS=starttls (or implicit)",
    );
    g.add(
        "log_format",
        1,
        if config.log.format == LogFormat::Json {
            Status::Pass
        } else {
            g.weak
        },
        format!(
            "logs are {}",
            if config.log.format == LogFormat::Json {
                "JSON lines"
            } else {
                "pretty text"
            }
        ),
        "a log collector parses JSON reliably; pretty text is for people at a terminal",
        "set CASTELLAN_LOG_FORMAT=json",
    );
    let shipping = config.log.shipping.trim();
    g.add(
        "log_shipping",
        1,
        if !shipping.is_empty() {
            Status::Pass
        } else if g.production {
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
    g.add(
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
    g.add(
        "request_limits",
        2,
        if config.hashing.queue <= 1024
            && config.database.pool.acquire_timeout <= Duration::from_secs(30)
        {
            Status::Pass
        } else {
            Status::Warn
        },
        format!(
            "hashing queue {}, database acquire timeout {}",
            config.hashing.queue,
            crate::config::format_duration(config.database.pool.acquire_timeout)
        ),
        "bounded queues and timeouts keep one flood from starving every other request",
        "keep CASTELLAN_HASH_QUEUE at 1024 or less and CASTELLAN_DB_ACQUIRE_TIMEOUT at 30s or less",
    );
    g.add(
        "process_user",
        2,
        if context.running_as_root {
            g.weak
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
}
