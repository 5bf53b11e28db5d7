//! Background jobs. Each is a public `run_once` (tests call it directly)
//! plus a thin `run` that calls it through [`every`] and logs the outcome.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

pub mod audit_retention;
pub mod expired_state;
pub mod session_cleanup;

/// Runs `pass` every `interval` until `shutdown` turns true.
pub async fn every<F, Fut>(interval: Duration, mut shutdown: watch::Receiver<bool>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        pass().await;
    }
}
