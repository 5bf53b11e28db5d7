//! `castellan serve`: run until SIGTERM or Ctrl-C, then drain.

use anyhow::bail;

use crate::app;
use crate::config::{Config, Profile};

pub async fn run(config: Config) -> anyhow::Result<()> {
    // A service running as root turns any flaw into control of the machine.
    if config.profile == Profile::Production && !config.allow_root && super::running_as_root() {
        bail!(
            "refusing to run as root in production: run castellan as its own user \
             (deploy/systemd/castellan.service and the container image do), or set \
             CASTELLAN_ALLOW_ROOT=true only where root is mapped to an unprivileged user"
        );
    }
    let drain_delay = config.shutdown_drain_delay;
    let running = app::start(config).await?;
    let stop = running.shutdown_handle();
    let draining = running.drain_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Readiness turns 503 first and the node keeps serving for the
        // drain delay, so the load balancer stops routing here before the
        // listener closes.
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(drain_delay = ?drain_delay, "shutdown requested; draining (readiness is 503)");
        tokio::time::sleep(drain_delay).await;
        tracing::info!("drain delay over; finishing in-flight requests");
        let _ = stop.send(true);
    });
    running.wait().await?;
    tracing::info!("castellan stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
