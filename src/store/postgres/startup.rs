//! Opening the PostgreSQL store: connect, check, migrate. `serve` may start
//! before the database is reachable; the store then answers `Unavailable`
//! (readiness 503, the API 503 with `Retry-After`) and finishes opening in
//! the background as soon as the database appears.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::mpsc;

use super::events::run_appender;
use super::server_trust::ServerTrust;
use super::{
    PgStore, StoreError, check_pool_fits, check_tls_policy, connect_options, describe, verifies,
};
use crate::store::StoreOptions;

/// Pause between two attempts while the database is unreachable.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What opening needs after the pool exists.
#[derive(Clone)]
struct Opening {
    pool: PgPool,
    options: PgConnectOptions,
    /// Bounds the first connection (`db_acquire_timeout`).
    connect_timeout: Duration,
    mode: PgSslMode,
    max: u32,
    ready: Arc<AtomicBool>,
    /// Trusts only `sslrootcert` (sqlx adds it to the public roots).
    trust: Option<Arc<ServerTrust>>,
}

/// Why opening failed: `transient` when the database could not be reached
/// (worth waiting for), otherwise a configuration or schema problem.
struct OpenError {
    transient: bool,
    error: anyhow::Error,
}

fn unreachable(e: sqlx::Error, what: &str) -> OpenError {
    OpenError {
        transient: is_transient(&e),
        error: anyhow::anyhow!("{what}: {}", describe(&e)),
    }
}

/// Whether a connection-time error means "not reachable (yet)". TLS and
/// authentication failures are not: waiting would not fix them.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "53300"),
        _ => false,
    }
}

impl Opening {
    /// Connects, checks TLS and the pool size, migrates, and marks the
    /// store ready.
    async fn run(&self) -> Result<(), OpenError> {
        if let Some(trust) = &self.trust {
            trust
                .check(self.connect_timeout)
                .await
                .map_err(|error| OpenError {
                    transient: false,
                    error: error.context("cannot connect to PostgreSQL"),
                })?;
        }
        // One direct connection first: the pool would retry until its
        // acquire timeout and report only "timed out", hiding the reason.
        let mut conn = tokio::time::timeout(self.connect_timeout, self.options.connect())
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
            .map_err(|e| unreachable(e, "cannot connect to PostgreSQL"))?;
        let fatal = |error: anyhow::Error| OpenError {
            transient: false,
            error,
        };
        if verifies(self.mode) || matches!(self.mode, PgSslMode::Require) {
            let ssl: Option<bool> =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_optional(&mut conn)
                    .await
                    .map_err(|e| unreachable(e, "cannot read pg_stat_ssl"))?;
            if ssl != Some(true) {
                return Err(fatal(anyhow::anyhow!(
                    "the PostgreSQL connection is not encrypted although TLS was required"
                )));
            }
        }
        let _ = conn.close().await;
        check_pool_fits(&self.pool, self.max).await.map_err(fatal)?;
        // A current schema needs no migration run, so the service can use a
        // role that may only read and write data (migrations then run as the
        // schema owner with `castellan migrate`).
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| unreachable(e, "cannot reach PostgreSQL"))?;
        let pending = crate::store::diagnostics::pending_postgres_migrations(&mut conn)
            .await
            .map_err(fatal)?;
        drop(conn);
        if !pending.is_empty() {
            // sqlx holds a PostgreSQL advisory lock while it migrates, so nodes
            // starting together on an empty database apply each migration once.
            sqlx::migrate!("./migrations/postgres")
                .run(&self.pool)
                .await
                .map_err(|e| match e {
                    sqlx::migrate::MigrateError::Execute(inner) => {
                        unreachable(inner, "PostgreSQL migrations failed")
                    }
                    other => {
                        fatal(anyhow::Error::new(other).context("PostgreSQL migrations failed"))
                    }
                })?;
        }
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Retries [`Opening::run`] until it succeeds; a non-transient failure
    /// is logged as an error but retried too, since the process already runs.
    async fn retry(self) {
        loop {
            tokio::time::sleep(RETRY_EVERY).await;
            match self.run().await {
                Ok(()) => {
                    tracing::info!("the database is reachable; this node is ready");
                    return;
                }
                Err(e) if e.transient => {
                    tracing::debug!(error = %e.error, "the database is still unreachable");
                }
                Err(e) => {
                    tracing::error!(error = %format!("{:#}", e.error), "cannot open the database")
                }
            }
        }
    }
}

impl PgStore {
    /// A store whose pool connects lazily; not ready until opened.
    fn lazy(url: &SecretString, config: &StoreOptions) -> anyhow::Result<(Self, Opening)> {
        let options = connect_options(url)?;
        let mode = options.get_ssl_mode();
        check_tls_policy(&options, config)?;
        let max = config.pool.max_connections;
        let trust = ServerTrust::from_options(url.expose_secret(), &options)?.map(Arc::new);
        let limit = config.pool.acquire_timeout;
        let per_connection = trust.clone();
        let pool = PgPoolOptions::new()
            .after_connect(move |_conn, _meta| {
                let trust = per_connection.clone();
                Box::pin(async move {
                    if let Some(trust) = trust {
                        trust
                            .check(limit)
                            .await
                            .map_err(|e| sqlx::Error::Tls(e.into()))?;
                    }
                    Ok(())
                })
            })
            .max_connections(max)
            .min_connections(config.pool.min_connections.min(max))
            .acquire_timeout(config.pool.acquire_timeout)
            .idle_timeout(config.pool.idle_timeout)
            .max_lifetime(config.pool.max_lifetime)
            .connect_lazy_with(options.clone());
        let sealer = config.sealer.clone();
        let (appender, queue) = mpsc::channel(1024);
        tokio::spawn(run_appender(pool.clone(), sealer.clone(), queue));
        let ready = Arc::new(AtomicBool::new(false));
        let opening = Opening {
            pool: pool.clone(),
            options,
            connect_timeout: config.pool.acquire_timeout,
            mode,
            max,
            ready: ready.clone(),
            trust,
        };
        let store = Self {
            pool,
            sealer,
            appender,
            ready,
        };
        Ok((store, opening))
    }

    /// Connects, checks TLS where it was asked for, and migrates; fails at
    /// once when the database cannot be reached (the `migrate`, `admin` and
    /// `audit` commands, and tests).
    pub async fn connect(url: &SecretString, config: &StoreOptions) -> anyhow::Result<Self> {
        let (store, opening) = Self::lazy(url, config)?;
        opening.run().await.map_err(|e| e.error)?;
        Ok(store)
    }

    /// Like [`PgStore::connect`], but an unreachable database is not an
    /// error: the store starts not ready and opens in the background once
    /// the database answers (`serve`). Misconfiguration still fails here.
    pub async fn connect_or_wait(
        url: &SecretString,
        config: &StoreOptions,
    ) -> anyhow::Result<Self> {
        let (store, opening) = Self::lazy(url, config)?;
        match opening.run().await {
            Ok(()) => {}
            Err(e) if e.transient => {
                tracing::warn!(
                    error = %e.error,
                    "the database is unreachable; starting not ready and retrying every second"
                );
                tokio::spawn(opening.retry());
            }
            Err(e) => bail!(e.error),
        }
        Ok(store)
    }

    /// `Unavailable` until the store has been opened.
    pub(super) fn check_ready(&self) -> Result<(), StoreError> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the database has not been reachable since start-up".into(),
            ))
        }
    }
}
