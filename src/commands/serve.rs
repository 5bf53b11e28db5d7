//! `castellan serve`: run until SIGTERM or Ctrl-C, then drain.

use crate::app;
use crate::config::Config;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = app::start(config).await?;
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
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
