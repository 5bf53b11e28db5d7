//! Prunes audit events older than `audit_retention`, once an hour. Each
//! prune moves the chain's checkpoint and records an `audit_pruned` event,
//! so `castellan audit verify` still passes afterwards.

use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Auth;
use crate::auth::{PruneOutcome, StoreError};

/// How often the job looks for old events.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// One pass; `None` when retention is `forever` or nothing was old enough.
pub async fn run_once(auth: &Auth) -> Result<Option<PruneOutcome>, StoreError> {
    auth.prune_audit().await
}

pub async fn run(auth: Auth, shutdown: watch::Receiver<bool>) {
    let auth = &auth;
    super::every(INTERVAL, shutdown, || async move {
        if let Err(e) = run_once(auth).await {
            tracing::warn!(error = %e, "audit retention failed; will retry");
        }
    })
    .await;
}
