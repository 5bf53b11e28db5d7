//! Use cases of the operator and the background jobs: readiness, runtime
//! figures for `/metrics`, and the purges of ended state.

use serde_json::json;

use super::Auth;
use crate::audit::{EventKind, RequestMeta, chain};
use crate::mail::MailStats;
use crate::store::{PruneOutcome, StoreError};

/// Figures read when `/metrics` is scraped.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeStats {
    /// Hash jobs waiting for a worker.
    pub hash_queue: usize,
    /// Connection pool `(open, idle, max)`, where the backend has a pool.
    pub pool: Option<(u32, usize, u32)>,
    pub mail: MailStats,
}

impl Auth {
    /// The database answers a round trip.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// The storage backend's name, for logs.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    pub fn runtime_stats(&self) -> RuntimeStats {
        RuntimeStats {
            hash_queue: self.hasher.queued(),
            pool: self.store.pool_stats(),
            mail: self.mailer.stats(),
        }
    }

    /// Deletes sessions that ended (absolute expiry or idle), `batch` at a
    /// time, recording `session_expired` for each; returns how many.
    pub async fn purge_ended_sessions(&self, batch: u32) -> Result<u64, StoreError> {
        let meta = RequestMeta {
            request_id: "job:session_cleanup".into(),
            ..RequestMeta::default()
        };
        let mut total = 0u64;
        loop {
            let now = self.clock.now();
            let idle_cutoff = now - self.config.session.idle_timeout;
            let removed = self
                .store
                .purge_expired_sessions(now, idle_cutoff, batch)
                .await?;
            for (session_id, user) in &removed {
                self.record_event_at(
                    now,
                    EventKind::SessionExpired,
                    Some(*user),
                    &meta,
                    json!({"session_id": session_id}),
                )
                .await?;
            }
            total += removed.len() as u64;
            metrics::counter!(crate::metrics::SESSIONS_PURGED).increment(removed.len() as u64);
            if removed.len() < batch as usize {
                return Ok(total);
            }
        }
    }

    /// Deletes mailed tokens that expired; returns how many.
    pub async fn purge_expired_account_tokens(&self) -> Result<u64, StoreError> {
        self.store.purge_account_tokens(self.clock.now()).await
    }

    /// Prunes audit events older than `audit_retention`; `None` when the
    /// retention is `forever` or nothing was old enough.
    pub async fn prune_audit(&self) -> Result<Option<PruneOutcome>, StoreError> {
        let Some(retention) = self.config.audit_retention else {
            return Ok(None);
        };
        let meta = RequestMeta {
            request_id: "job:audit_retention".into(),
            ..RequestMeta::default()
        };
        chain::prune(&*self.store, self.clock.now(), retention, &meta).await
    }
}
