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
//!   Certificates are verified against `smtp_ca_file` alone when it is set,
//!   else against the web PKI roots.
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
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::config::{MailConfig, MailTransport, TokenLifetimes};
use crate::domain::Email;

mod content;
mod queue;
#[cfg(test)]
mod tests;
mod transport;

pub use content::Notice;
use content::*;
use queue::*;
use transport::*;

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

/// Sends notifications. Failures are logged and never fail the request
/// that caused the mail.
#[derive(Clone)]
pub struct Mailer {
    from: Option<Mailbox>,
    ttls: TokenLifetimes,
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

impl Mailer {
    /// Sets up the transport and starts the delivery worker. Must be called
    /// inside the Tokio runtime; without one no mail is sent (logged).
    pub fn new(config: &MailConfig, ttls: TokenLifetimes) -> Self {
        let runtime = tokio::runtime::Handle::try_current();
        let transport = match (&config.transport, &runtime) {
            (MailTransport::File, _) => Transport::File {
                dir: config.dir.clone(),
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
        let from = config.from.parse::<Mailbox>().ok();
        if from.is_none() {
            tracing::error!("mail_from is not a valid sender; no mail will be sent");
        }
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            transport,
            attempts: config.retry_attempts.max(1),
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
            ttls,
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

    /// Runs `work` (which may call [`Mailer::notify`]) as a background
    /// task, counted as pending until it ends, so [`Mailer::flush`] waits
    /// for it too. Keeps token issue and mail building off a request path
    /// whose duration must not depend on them.
    pub fn defer(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.shared.pending.send_modify(|n| *n += 1);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            work.await;
            shared.done();
        });
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
