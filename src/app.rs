//! Builds castellan from a configuration and runs its listeners. Tests use
//! [`start`] directly: the real application on port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Auth, Hasher};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DatabaseConfig, Profile};
use crate::crypto::{self, Keys};
use crate::domain::audit_chain::ChainSealer;
use crate::http::{self, AppState};
use crate::store::{self, Backend, PoolOptions, StoreOptions};

/// A running castellan.
pub struct Running {
    /// Where the public listener is bound (useful with port 0).
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound, when an admin token is configured.
    pub admin_addr: Option<SocketAddr>,
    /// The use cases, for tests that need to reach past HTTP.
    pub auth: Auth,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within the
    /// configured timeout, then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server ends (after a shutdown signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.server.await.context("server task failed")??;
        Ok(())
    }

    /// A handle that triggers shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens storage, starts the hashing pool and binds the listeners.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Opens storage and starts the hashing pool and the mailer: the use cases
/// without any listener (the `admin` and `audit` commands use this too).
pub async fn build_auth(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Auth> {
    let config = Arc::new(config);
    let master = match &config.secret_key {
        Some(key) => key.clone(),
        None => crypto::load_or_create_dev_key(&config.data_dir)?,
    };
    let store = store::open(&store_options(&config)).await?;
    let previous: Vec<_> = config.previous_secret_key.iter().cloned().collect();
    let keys = Keys::derive(&master, &previous);
    let hasher = Hasher::start(
        config.hash_threads,
        config.hash_queue,
        config.argon2,
        keys.backup_pepper.clone(),
    )?;
    let mailer = crate::mail::Mailer::new(&config);
    Ok(Auth::new(config, store, keys, hasher, clock, mailer))
}

/// What storage needs from the configuration.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        backend: match &config.database {
            DatabaseConfig::Sqlite { path } => Backend::Sqlite { path: path.clone() },
            DatabaseConfig::Postgres { url } => Backend::Postgres { url: url.clone() },
        },
        pool: PoolOptions {
            max_connections: config.db_pool_size(),
            min_connections: config.db_min_connections,
            acquire_timeout: config.db_acquire_timeout,
            idle_timeout: config.db_idle_timeout,
            max_lifetime: config.db_max_lifetime,
        },
        production: config.profile == Profile::Production,
        allow_unverified_tls: config.database_allow_unverified_tls,
        sealer: audit_sealer(config),
    }
}

/// The audit chain's sealer, with the HMAC key when one is configured.
pub fn audit_sealer(config: &Config) -> ChainSealer {
    ChainSealer::new(config.audit_key.as_ref().map(|k| k.expose()))
}

/// [`start`] with an injected clock.
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let auth = build_auth(config, clock).await?;
    let config = auth.config().clone();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (CASTELLAN_LISTEN)", config.listen))?;
    let public_addr = listener.local_addr()?;
    crate::metrics::handle();
    let state = AppState {
        auth: Arc::new(auth.clone()),
    };
    let app = http::public_app(state.clone());
    let (shutdown, mut signal) = watch::channel(false);
    let admin_addr = match &config.admin_token {
        None => None,
        Some(_) => {
            let admin_listener =
                TcpListener::bind(config.admin_listen)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen on {} (CASTELLAN_ADMIN_LISTEN)",
                            config.admin_listen
                        )
                    })?;
            let addr = admin_listener.local_addr()?;
            let admin = http::admin::admin_app(state.clone());
            let mut stop = shutdown.subscribe();
            tokio::spawn(async move {
                let served = axum::serve(
                    admin_listener,
                    admin.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the admin listener failed");
                }
            });
            Some(addr)
        }
    };
    tokio::spawn(crate::jobs::session_cleanup::run(
        auth.clone(),
        config.session.cleanup_interval,
        shutdown.subscribe(),
    ));
    tokio::spawn(crate::jobs::expired_state::run(
        auth.clone(),
        config.session.cleanup_interval,
        shutdown.subscribe(),
    ));
    tokio::spawn(crate::jobs::audit_retention::run(
        auth.clone(),
        shutdown.subscribe(),
    ));
    let grace = config.shutdown_timeout;
    let server = tokio::spawn(async move {
        let mut drain_signal = signal.clone();
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = signal.wait_for(|stop| *stop).await;
        });
        let serve = std::pin::pin!(serve.into_future());
        // After the signal, in-flight requests get `grace` to finish.
        tokio::select! {
            result = serve => result,
            () = async {
                let _ = drain_signal.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("shutdown timeout reached; dropping unfinished requests");
                Ok(())
            }
        }
    });
    tracing::info!(%public_addr, backend = auth.backend(), "castellan is listening");
    Ok(Running {
        public_addr,
        admin_addr,
        auth,
        shutdown,
        server,
    })
}
