//! `castellan migrate`: apply pending migrations and exit.

use crate::config::Config;
use crate::store;

pub async fn run(config: Config) -> anyhow::Result<()> {
    store::migrate(&config).await?;
    tracing::info!("migrations are up to date");
    Ok(())
}
