//! The delivery queue: a bounded channel, a worker with a concurrency
//! cap, retries with exponential back-off, counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lettre::AsyncTransport;
use lettre::address::Envelope;
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

use super::*;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) failed_attempts: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) queue_full: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the worker shares with the mailers.
pub(super) struct Shared {
    pub(super) transport: Transport,
    pub(super) attempts: u32,
    /// Messages queued or being delivered; [`Mailer::flush`] waits for 0.
    pub(super) pending: watch::Sender<usize>,
    pub(super) counters: Counters,
}

/// One message on its way.
pub(super) struct Job {
    pub(super) id: Uuid,
    pub(super) kind: &'static str,
    /// The recipient's domain, the only part of the address that is logged.
    pub(super) domain: String,
    pub(super) envelope: Envelope,
    pub(super) bytes: Vec<u8>,
    pub(super) attempts_done: u32,
}

/// A failed attempt.
pub(super) struct Failure {
    pub(super) permanent: bool,
    pub(super) detail: String,
}

/// Takes messages off the queue; each is delivered in its own task, at
/// most [`CONCURRENT_DELIVERIES`] at a time.
pub(super) async fn run_worker(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
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
pub(super) fn backoff(attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

impl Shared {
    pub(super) fn done(&self) {
        self.pending.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Attempts until success, a permanent failure or the last attempt.
    pub(super) async fn deliver(&self, job: Job) {
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
    pub(super) fn after_failure(&self, job: &Job, attempt: u32, failure: &Failure) -> bool {
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

    pub(super) async fn attempt(&self, job: &Job) -> Result<(), Failure> {
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
