//! Deletes ended sessions (expired, idle too long) in small batches, so no
//! transaction holds locks for long, and records a `session_expired` event
//! for each.

use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Auth;
use crate::auth::StoreError;

/// Sessions deleted per transaction.
pub const BATCH: u32 = 500;

/// One pass: deletes every ended session, batch by batch; returns how many.
pub async fn run_once(auth: &Auth) -> Result<u64, StoreError> {
    auth.purge_ended_sessions(BATCH).await
}

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
