//! Outgoing mail.
//!
//! Every notification is a `multipart/alternative` message (plain text and
//! HTML) built with lettre's builder from fixed texts in this module. The one
//! recipient comes from a validated [`crate::domain::Email`] (no CR/LF can
//! reach a header); values placed into the HTML part are escaped, and links
//! must be absolute `http(s)` URLs without spaces or control characters.
//!
//! Two transports (`mail_transport`):
//! - `file` (the development default) writes each message as an RFC 5322
//!   `<uuid>.eml` file into `mail_dir` (temp file + rename, so readers never
//!   see half a message). The first attempt happens inside
//!   [`Mailer::notify`], so a test can read the file as soon as the request
//!   that caused it has been answered; a failed write is retried by the
//!   worker like an SMTP failure.
//! - `smtp` sends through `smtp_host` with lettre's pooled async SMTP client,
//!   with STARTTLS required, implicit TLS, or (loopback relays only) no TLS.
//!   Certificates are verified against the web PKI roots plus `smtp_ca_file`.
//!   Nothing is sent inside the request: [`Mailer::notify`] puts the message
//!   on a bounded queue and returns.
//!
//! A background worker takes messages off the queue and delivers them, at
//! most [`CONCURRENT_DELIVERIES`] at a time, making up to
//! `mail_retry_attempts` attempts with exponential back-off (1s, 2s, 4s, ...
//! capped at [`MAX_BACKOFF`]). A permanent SMTP rejection (5xx) is not
//! retried. Every failure is logged and counted ([`Mailer::stats`]); logs
//! name the notice kind and the recipient's domain, never the address or
//! the body (which may hold a reset link).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Body, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

use crate::config::{Config, MailTransport, SmtpConfig, SmtpTls};
use crate::domain::Email;

/// Messages that may wait for the worker; beyond this `notify` drops the
/// message (logged at error level and counted).
pub const QUEUE_CAPACITY: usize = 1000;
/// Messages being delivered (or waiting for a retry) at the same time.
pub const CONCURRENT_DELIVERIES: usize = 4;
/// Wait before the second attempt; doubled for each further attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Limit for each SMTP command (connect, TLS, each reply).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest accepted link.
const MAX_URL_LEN: usize = 2000;

/// The notifications castellan sends.
#[derive(Clone, PartialEq, Eq)]
pub enum Notice {
    TotpEnabled,
    PasskeyAdded,
    PasskeyRemoved,
    /// A passkey's signature counter went backwards: it may have been copied.
    PasskeyFlagged,
    TotpRemoved {
        by_admin: bool,
    },
    BackupCodesRegenerated,
    BackupCodeUsed {
        remaining: u32,
    },
    PasswordChanged,
    PasswordReset,
    EmailVerified,
    /// A password-reset link; `url` must be an absolute `http(s)` URL.
    PasswordResetLink {
        url: String,
    },
    /// An email-verification link; `url` must be an absolute `http(s)` URL.
    VerificationLink {
        url: String,
    },
}

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Links carry one-time tokens: keep them out of debug output.
        match self {
            Self::TotpRemoved { by_admin } => write!(f, "TotpRemoved {{ by_admin: {by_admin} }}"),
            Self::BackupCodeUsed { remaining } => {
                write!(f, "BackupCodeUsed {{ remaining: {remaining} }}")
            }
            Self::PasswordResetLink { .. } => f.write_str("PasswordResetLink { url: [redacted] }"),
            Self::VerificationLink { .. } => f.write_str("VerificationLink { url: [redacted] }"),
            other => f.write_str(other.kind()),
        }
    }
}

/// What every notice about a change tells the user.
const NOT_YOU: &str =
    "If this was not you, reset your password at once and contact your administrator.";

/// One paragraph of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Text(String),
    /// A URL, on its own line in the text part and as a link in HTML.
    Link(String),
}

/// A rendered notice: fixed subject and paragraphs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content {
    subject: &'static str,
    blocks: Vec<Block>,
}

/// Lifetimes quoted in link mails.
#[derive(Debug, Clone, Copy)]
struct Ttls {
    reset: Duration,
    verification: Duration,
}

impl Notice {
    /// A stable name for logs.
    fn kind(&self) -> &'static str {
        match self {
            Self::TotpEnabled => "TotpEnabled",
            Self::PasskeyAdded => "PasskeyAdded",
            Self::PasskeyRemoved => "PasskeyRemoved",
            Self::PasskeyFlagged => "PasskeyFlagged",
            Self::TotpRemoved { .. } => "TotpRemoved",
            Self::BackupCodesRegenerated => "BackupCodesRegenerated",
            Self::BackupCodeUsed { .. } => "BackupCodeUsed",
            Self::PasswordChanged => "PasswordChanged",
            Self::PasswordReset => "PasswordReset",
            Self::EmailVerified => "EmailVerified",
            Self::PasswordResetLink { .. } => "PasswordResetLink",
            Self::VerificationLink { .. } => "VerificationLink",
        }
    }

    fn render(&self, ttls: Ttls) -> Result<Content, &'static str> {
        let text = |s: &str| Block::Text(s.to_string());
        let not_you = || text(NOT_YOU);
        let (subject, blocks) = match self {
            Self::TotpEnabled => (
                "Two-factor authentication was turned on",
                vec![
                    text("Two-factor authentication was turned on for your account."),
                    text(
                        "An authenticator app was added to your account and 10 backup codes were issued.",
                    ),
                    not_you(),
                ],
            ),
            Self::TotpRemoved { by_admin } => (
                "Two-factor authentication was turned off",
                vec![
                    Block::Text(format!(
                        "Two-factor authentication was removed from your account{}.",
                        if *by_admin {
                            " by an administrator"
                        } else {
                            ""
                        }
                    )),
                    text(if *by_admin {
                        "Your backup codes and passkeys no longer work."
                    } else {
                        "Your backup codes no longer work."
                    }),
                    not_you(),
                ],
            ),
            Self::PasskeyAdded => (
                "A passkey was added to your account",
                vec![
                    text("A passkey was added to your account; it can now be used to sign in."),
                    not_you(),
                ],
            ),
            Self::PasskeyRemoved => (
                "A passkey was removed from your account",
                vec![
                    text(
                        "A passkey was removed from your account and can no longer be used to sign in.",
                    ),
                    not_you(),
                ],
            ),
            Self::PasskeyFlagged => (
                "A passkey of your account was blocked",
                vec![
                    text(
                        "A sign-in with one of your passkeys was refused because its signature counter went backwards, which can mean the passkey was copied. The passkey is blocked: remove it on your account page and add it again.",
                    ),
                    not_you(),
                ],
            ),
            Self::BackupCodesRegenerated => (
                "New backup codes were created",
                vec![
                    text(
                        "New backup codes were created for your account; the earlier codes no longer work.",
                    ),
                    not_you(),
                ],
            ),
            Self::BackupCodeUsed { remaining } => (
                "A backup code was used to sign in",
                vec![
                    text("A backup code was used to sign in to your account."),
                    Block::Text(format!(
                        "{remaining} unused codes remain; create new ones when few are left."
                    )),
                    not_you(),
                ],
            ),
            Self::PasswordChanged => (
                "Your password was changed",
                vec![text("The password of your account was changed."), not_you()],
            ),
            Self::PasswordReset => (
                "Your password was reset",
                vec![
                    text("The password of your account was reset with a password-reset link."),
                    not_you(),
                ],
            ),
            Self::EmailVerified => (
                "Your email address was confirmed",
                vec![
                    text("This email address was confirmed for your account."),
                    text(
                        "If this was not you, do not use the account and contact your administrator.",
                    ),
                ],
            ),
            Self::PasswordResetLink { url } => (
                "Reset your password",
                vec![
                    text("A password reset was requested for your account."),
                    text("To choose a new password, open this link:"),
                    Block::Link(checked_url(url)?.to_string()),
                    Block::Text(format!(
                        "The link is valid for {}. Do not share it with anyone.",
                        human_duration(ttls.reset)
                    )),
                    text(
                        "If you did not ask for this, ignore this message: your password stays unchanged.",
                    ),
                ],
            ),
            Self::VerificationLink { url } => (
                "Confirm your email address",
                vec![
                    text("To confirm this email address for your account, open this link:"),
                    Block::Link(checked_url(url)?.to_string()),
                    Block::Text(format!(
                        "The link is valid for {}.",
                        human_duration(ttls.verification)
                    )),
                    text(
                        "If you did not create an account, ignore this message; nothing changes without the link.",
                    ),
                ],
            ),
        };
        Ok(Content { subject, blocks })
    }
}

/// An absolute `http(s)` URL without whitespace or control characters.
fn checked_url(url: &str) -> Result<&str, &'static str> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= MAX_URL_LEN
        && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(url)
    } else {
        Err("the link is not an absolute http(s) URL without spaces")
    }
}

/// `30 minutes`, `24 hours`, `1 day`, `90 seconds`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs().max(1);
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Content {
    fn plain(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Text(t) | Block::Link(t) => out.push_str(t),
            }
            out.push_str("\n\n");
        }
        out.push_str("-- \ncastellan\n");
        out
    }

    fn html(&self) -> String {
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width\">\n<title>{}</title>\n</head>\n\
             <body style=\"font-family: sans-serif; line-height: 1.5; max-width: 40em\">\n",
            escape_html(self.subject)
        );
        for block in &self.blocks {
            match block {
                Block::Text(t) => {
                    out.push_str("<p>");
                    out.push_str(&escape_html(t));
                    out.push_str("</p>\n");
                }
                Block::Link(url) => {
                    let url = escape_html(url);
                    out.push_str("<p><a href=\"");
                    out.push_str(&url);
                    out.push_str("\">");
                    out.push_str(&url);
                    out.push_str("</a></p>\n");
                }
            }
        }
        out.push_str("<p style=\"color: #666\">castellan</p>\n</body>\n</html>\n");
        out
    }
}

/// A part as `7bit` (ASCII) or `8bit`, so the body stays readable in `.eml`
/// files and links are never split; quoted-printable only for a line over
/// 998 bytes (the RFC 5322 limit).
fn readable_body(text: String) -> Body {
    let lines_ok =
        text.lines().all(|l| l.len() <= 998) && !text.chars().any(|c| c.is_control() && c != '\n');
    if !lines_ok {
        return Body::new(text);
    }
    let encoding = if text.is_ascii() {
        ContentTransferEncoding::SevenBit
    } else {
        ContentTransferEncoding::EightBit
    };
    Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), encoding)
}

/// Delivery counters since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailStats {
    /// Messages handed to the transport successfully.
    pub sent: u64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: u64,
    /// Messages given up on (after the last attempt, a permanent
    /// rejection, or a message that could not be built).
    pub dropped: u64,
    /// Messages refused because the queue was full.
    pub queue_full: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
    queue_full: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

enum Transport {
    File {
        dir: PathBuf,
    },
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// The transport could not be set up (reported at start-up); every
    /// message fails with this reason.
    Unavailable(String),
}

/// What the worker shares with the mailers.
struct Shared {
    transport: Transport,
    attempts: u32,
    /// Messages queued or being delivered; [`Mailer::flush`] waits for 0.
    pending: watch::Sender<usize>,
    counters: Counters,
}

/// One message on its way.
struct Job {
    id: Uuid,
    kind: &'static str,
    /// The recipient's domain, the only part of the address that is logged.
    domain: String,
    envelope: Envelope,
    bytes: Vec<u8>,
    attempts_done: u32,
}

/// A failed attempt.
struct Failure {
    permanent: bool,
    detail: String,
}

/// Sends notifications. Failures are logged and never fail the request
/// that caused the mail.
#[derive(Clone)]
pub struct Mailer {
    from: Option<Mailbox>,
    ttls: Ttls,
    queue: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match &self.shared.transport {
            Transport::File { .. } => "file",
            Transport::Smtp(_) => "smtp",
            Transport::Unavailable(_) => "unavailable",
        };
        f.debug_struct("Mailer")
            .field("transport", &transport)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Checks that the TLS settings of `smtp` can be used (the CA file parses).
/// Called while the configuration is validated.
pub fn check_smtp_tls(smtp: &SmtpConfig) -> Result<(), String> {
    if smtp.tls == SmtpTls::None || smtp.host.is_empty() {
        return Ok(());
    }
    tls_parameters(smtp).map(|_| ())
}

fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if let Some(pem) = &smtp.ca_pem {
        let cert = Certificate::from_pem(pem)
            .map_err(|_| "does not hold valid PEM certificates".to_string())?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS for the SMTP server ({e})"))
}

fn smtp_transport(smtp: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = match smtp.tls {
        SmtpTls::StartTls => Tls::Required(tls_parameters(smtp)?),
        SmtpTls::Implicit => Tls::Wrapper(tls_parameters(smtp)?),
        SmtpTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(SMTP_TIMEOUT))
        .tls(tls);
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_string(),
        ));
    }
    Ok(builder.build())
}

impl Mailer {
    /// Sets up the transport and starts the delivery worker. Must be called
    /// inside the Tokio runtime; without one no mail is sent (logged).
    pub fn new(config: &Config) -> Self {
        let runtime = tokio::runtime::Handle::try_current();
        let transport = match (&config.mail_transport, &runtime) {
            (MailTransport::File, _) => Transport::File {
                dir: config.mail_dir.clone(),
            },
            (MailTransport::Smtp, Ok(_)) => match smtp_transport(&config.smtp) {
                Ok(t) => Transport::Smtp(t),
                Err(reason) => {
                    tracing::error!(%reason, "the SMTP transport cannot be set up; no mail will be sent");
                    Transport::Unavailable(reason)
                }
            },
            (MailTransport::Smtp, Err(_)) => {
                Transport::Unavailable("no async runtime for the SMTP transport".into())
            }
        };
        let from = config.mail_from.parse::<Mailbox>().ok();
        if from.is_none() {
            tracing::error!("mail_from is not a valid sender; no mail will be sent");
        }
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            transport,
            attempts: config.mail_retry_attempts.max(1),
            pending: watch::Sender::new(0),
            counters: Counters::default(),
        });
        match runtime {
            Ok(handle) => {
                handle.spawn(run_worker(shared.clone(), rx));
            }
            Err(_) => {
                tracing::error!(
                    "the mail worker needs a Tokio runtime; queued mail will be dropped"
                )
            }
        }
        Self {
            from,
            ttls: Ttls {
                reset: config.reset_token_ttl,
                verification: config.verification_token_ttl,
            },
            queue,
            shared,
        }
    }

    /// Sends a notification to `to`. Never fails and never waits for an
    /// SMTP server: the message is queued (the `file` transport writes it
    /// at once) and retried in the background.
    pub async fn notify(&self, to: &Email, notice: Notice) {
        let kind = notice.kind();
        let domain = to
            .key()
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let mut job = match self.build(to, &notice) {
            Ok((envelope, bytes)) => Job {
                id: Uuid::new_v4(),
                kind,
                domain,
                envelope,
                bytes,
                attempts_done: 0,
            },
            Err(reason) => {
                Counters::bump(&self.shared.counters.dropped);
                tracing::error!(notice = kind, recipient_domain = %domain, %reason, "mail dropped: the message cannot be built");
                return;
            }
        };
        if matches!(self.shared.transport, Transport::File { .. }) {
            match self.shared.attempt(&job).await {
                Ok(()) => {
                    Counters::bump(&self.shared.counters.sent);
                    return;
                }
                Err(failure) => {
                    job.attempts_done = 1;
                    if !self.shared.after_failure(&job, 1, &failure) {
                        return;
                    }
                }
            }
        }
        self.enqueue(job);
    }

    /// Waits until every queued message was delivered or given up on.
    /// Meant for tests and for shutdown (wrap it in a timeout there).
    pub async fn flush(&self) {
        let mut pending = self.shared.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Messages queued or being delivered right now.
    pub fn pending(&self) -> usize {
        *self.shared.pending.borrow()
    }

    /// Delivery counters since start-up.
    pub fn stats(&self) -> MailStats {
        let c = &self.shared.counters;
        MailStats {
            sent: c.sent.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            queue_full: c.queue_full.load(Ordering::Relaxed),
        }
    }

    /// The RFC 5322 message and its envelope (one recipient).
    fn build(&self, to: &Email, notice: &Notice) -> Result<(Envelope, Vec<u8>), String> {
        let from = self
            .from
            .clone()
            .ok_or_else(|| "mail_from is not a valid sender".to_string())?;
        let to: Address = to
            .as_str()
            .parse()
            .map_err(|_| "the recipient address is not accepted by the mail library".to_string())?;
        let content = notice.render(self.ttls)?;
        let message_id = format!("<{}@{}>", Uuid::new_v4(), from.email.domain());
        let message = Message::builder()
            .from(from)
            .to(Mailbox::new(None, to))
            .subject(content.subject)
            .message_id(Some(message_id))
            .multipart(MultiPart::alternative_plain_html(
                readable_body(content.plain()),
                readable_body(content.html()),
            ))
            .map_err(|e| format!("the message cannot be built ({e})"))?;
        Ok((message.envelope().clone(), message.formatted()))
    }

    fn enqueue(&self, job: Job) {
        self.shared.pending.send_modify(|n| *n += 1);
        let (job, full) = match self.queue.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job)) => (job, true),
            Err(TrySendError::Closed(job)) => (job, false),
        };
        self.shared.done();
        if full {
            Counters::bump(&self.shared.counters.queue_full);
            tracing::error!(
                notice = job.kind,
                recipient_domain = %job.domain,
                capacity = QUEUE_CAPACITY,
                "mail queue is full; message dropped"
            );
        } else {
            Counters::bump(&self.shared.counters.dropped);
            tracing::error!(
                notice = job.kind,
                recipient_domain = %job.domain,
                "the mail worker is not running; message dropped"
            );
        }
    }
}

/// Takes messages off the queue; each is delivered in its own task, at
/// most [`CONCURRENT_DELIVERIES`] at a time.
async fn run_worker(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(job) = rx.recv().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.deliver(job).await;
            drop(slot);
            shared.done();
        });
    }
}

/// The wait after attempt number `attempt` (1-based) failed.
fn backoff(attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Shared {
    fn done(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Attempts until success, a permanent failure or the last attempt.
    async fn deliver(&self, job: Job) {
        let mut attempt = job.attempts_done;
        loop {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            attempt += 1;
            match self.attempt(&job).await {
                Ok(()) => {
                    Counters::bump(&self.counters.sent);
                    if attempt > 1 {
                        tracing::info!(notice = job.kind, recipient_domain = %job.domain, attempts = attempt, "mail delivered after a retry");
                    }
                    return;
                }
                Err(failure) => {
                    if !self.after_failure(&job, attempt, &failure) {
                        return;
                    }
                }
            }
        }
    }

    /// Logs and counts a failed attempt; true when another attempt follows.
    fn after_failure(&self, job: &Job, attempt: u32, failure: &Failure) -> bool {
        Counters::bump(&self.counters.failed_attempts);
        if failure.permanent || attempt >= self.attempts {
            Counters::bump(&self.counters.dropped);
            tracing::error!(
                notice = job.kind,
                recipient_domain = %job.domain,
                attempts = attempt,
                permanent = failure.permanent,
                error = %failure.detail,
                "mail dropped after {attempt} attempts"
            );
            false
        } else {
            tracing::warn!(
                notice = job.kind,
                recipient_domain = %job.domain,
                attempt,
                retry_in = ?backoff(attempt),
                error = %failure.detail,
                "mail delivery failed; will retry"
            );
            true
        }
    }

    async fn attempt(&self, job: &Job) -> Result<(), Failure> {
        match &self.transport {
            Transport::File { dir } => write_eml(dir.clone(), job.id, job.bytes.clone())
                .await
                .map_err(|e| Failure {
                    permanent: false,
                    detail: format!("cannot write to the mail directory ({e})"),
                }),
            Transport::Smtp(smtp) => match smtp.send_raw(&job.envelope, &job.bytes).await {
                Ok(_) => Ok(()),
                Err(e) => Err(Failure {
                    permanent: e.is_permanent(),
                    detail: match e.status() {
                        // The server's text may quote the address: log the code only.
                        Some(code) if e.is_permanent() => {
                            format!("rejected by the SMTP server ({code})")
                        }
                        Some(code) => format!("temporary SMTP failure ({code})"),
                        None => e.to_string(),
                    },
                }),
            },
            Transport::Unavailable(reason) => Err(Failure {
                permanent: true,
                detail: reason.clone(),
            }),
        }
    }
}

/// Writes `<id>.eml` into `dir` (mode 0700, created when missing) through a
/// temporary file and a rename.
async fn write_eml(dir: PathBuf, id: Uuid, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_eml_blocking(&dir, id, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

fn write_eml_blocking(dir: &Path, id: Uuid, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{id}.tmp"));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Rename so readers never see half a message.
    std::fs::rename(&tmp, dir.join(format!("{id}.eml")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTLS: Ttls = Ttls {
        reset: Duration::from_secs(1800),
        verification: Duration::from_secs(86_400),
    };

    #[test]
    fn html_escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn links_must_be_absolute_http_urls_without_spaces() {
        let url = |u: &str| Notice::PasswordResetLink { url: u.into() }.render(TTLS);
        assert!(url("https://auth.example.com/reset?token=abc&x=1").is_ok());
        for bad in [
            "javascript:alert(1)",
            "/reset?token=abc",
            "https://a.example/\r\nBcc: x@evil.test",
            "https://a.example/ x",
        ] {
            assert!(url(bad).is_err(), "{bad:?} accepted");
        }
    }

    // covers: N63B-20
    #[test]
    fn every_change_notice_says_what_to_do_if_it_was_not_you() {
        for notice in [
            Notice::TotpEnabled,
            Notice::PasskeyAdded,
            Notice::PasskeyRemoved,
            Notice::PasskeyFlagged,
            Notice::TotpRemoved { by_admin: true },
            Notice::BackupCodesRegenerated,
            Notice::BackupCodeUsed { remaining: 3 },
            Notice::PasswordChanged,
            Notice::PasswordReset,
            Notice::EmailVerified,
        ] {
            let text = notice.render(TTLS).unwrap().plain();
            assert!(text.contains("If this was not you"), "{notice:?}: {text}");
        }
    }

    #[test]
    fn link_mails_put_the_url_on_its_own_line_and_quote_the_lifetime() {
        let url = "https://auth.example.com/reset?token=a<b>&c=\"d\"";
        let content = Notice::PasswordResetLink { url: url.into() }
            .render(TTLS)
            .unwrap();
        let plain = content.plain();
        assert!(plain.lines().any(|l| l == url), "{plain}");
        assert!(plain.contains("valid for 30 minutes"), "{plain}");
        let html = content.html();
        let escaped = "https://auth.example.com/reset?token=a&lt;b&gt;&amp;c=&quot;d&quot;";
        assert!(
            html.contains(&format!("<a href=\"{escaped}\">{escaped}</a>")),
            "{html}"
        );
        assert!(!html.contains("a<b>"), "{html}");
        let verify = Notice::VerificationLink {
            url: "https://auth.example.com/verify?t=x".into(),
        }
        .render(TTLS)
        .unwrap()
        .plain();
        assert!(verify.contains("valid for 1 day"), "{verify}");
    }

    // covers: ASVS-1.3.11
    #[test]
    fn messages_have_one_recipient_and_readable_parts() {
        let config = Config::load(None, &Default::default()).unwrap();
        let mailer = Mailer::new(&config);
        let to = Email::parse("O'Hara+x@Example.com").unwrap();
        let url = "https://auth.example.com/reset?token=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefghijklmnop";
        let (envelope, bytes) = mailer
            .build(&to, &Notice::PasswordResetLink { url: url.into() })
            .unwrap();
        assert_eq!(envelope.to().len(), 1);
        assert_eq!(envelope.to()[0].to_string(), "O'Hara+x@Example.com");
        let raw = String::from_utf8(bytes).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert_eq!(head.matches("\r\nTo: ").count(), 1, "{head}");
        assert!(!head.contains("Cc:") && !head.contains("Bcc:"), "{head}");
        assert!(
            head.contains("Content-Type: multipart/alternative"),
            "{head}"
        );
        assert!(raw.contains(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit"
        ));
        assert!(
            raw.contains(
                "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit"
            )
        );
        assert!(!raw.contains("quoted-printable"), "{raw}");
        assert!(
            raw.contains(&format!("\r\n{url}\r\n")),
            "URL on its own line: {raw}"
        );
        assert!(
            raw.contains(&format!("<a href=\"{url}\">{url}</a>")),
            "{raw}"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn debug_output_hides_links() {
        let n = Notice::PasswordResetLink {
            url: "https://x.example/r?token=secret".into(),
        };
        assert!(!format!("{n:?}").contains("secret"));
    }
}
