//! Deletes state that no longer decides anything: rate-limit counters whose
//! window has ended and account tokens (reset, verification) that have
//! expired. Both name addresses or accounts, so they are not kept longer
//! than they matter. Runs at the session cleanup interval.

use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Auth;
use crate::auth::StoreError;

/// What one pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub throttles: u64,
    pub account_tokens: u64,
    /// Passkey ceremonies whose challenge expired unfinished.
    pub passkey_ceremonies: u64,
}

/// One pass.
pub async fn run_once(auth: &Auth) -> Result<Purged, StoreError> {
    Ok(Purged {
        throttles: auth.purge_ended_windows().await?,
        account_tokens: auth.purge_expired_account_tokens().await?,
        passkey_ceremonies: auth.purge_passkey_ceremonies().await?,
    })
}

/// Runs [`run_once`] every `interval` until `shutdown` turns true.
pub async fn run(auth: Auth, interval: Duration, shutdown: watch::Receiver<bool>) {
    let auth = &auth;
    super::every(interval, shutdown, || async move {
        match run_once(auth).await {
            Ok(p) if p == Purged::default() => {}
            Ok(p) => tracing::info!(
                throttles = p.throttles,
                account_tokens = p.account_tokens,
                passkey_ceremonies = p.passkey_ceremonies,
                "expired rate-limit counters and account tokens deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "expired-state cleanup failed; will retry"),
        }
    })
    .await;
}
