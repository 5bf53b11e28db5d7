//! Deletes ended sessions (expired, idle too long) in small batches, so no
//! transaction holds locks for long, and records a `session_expired` event
//! for each.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::audit::{self, EventKind, RequestMeta};
use crate::auth::Auth;
use crate::store::StoreError;

/// Sessions deleted per transaction.
pub const BATCH: u32 = 500;

/// One pass: deletes every ended session, batch by batch; returns how many.
pub async fn run_once(auth: &Auth) -> Result<u64, StoreError> {
    let meta = RequestMeta {
        request_id: "job:session_cleanup".into(),
        ..RequestMeta::default()
    };
    let mut total = 0u64;
    loop {
        let now = auth.clock.now();
        let idle_cutoff = now - auth.config.session.idle_timeout;
        let removed = auth
            .store
            .purge_expired_sessions(now, idle_cutoff, BATCH)
            .await?;
        for (session_id, user) in &removed {
            audit::record(
                &*auth.store,
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
        if removed.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

/// Runs [`run_once`] every `interval` until `shutdown` turns true.
pub async fn run(auth: Auth, interval: Duration, shutdown: watch::Receiver<bool>) {
    let auth = &auth;
    super::every(interval, shutdown, || async move {
        match run_once(auth).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "ended sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "session cleanup failed; will retry"),
        }
    })
    .await;
}
