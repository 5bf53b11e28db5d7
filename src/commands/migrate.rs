//! `castellan migrate`: apply pending migrations and exit.

use crate::app;
use crate::config::Config;
use crate::store;

pub async fn run(config: Config) -> anyhow::Result<()> {
    store::migrate(&app::store_options(&config)).await?;
    tracing::info!("migrations are up to date");
    Ok(())
}
