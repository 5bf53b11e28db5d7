//! Builds castellan from a configuration and runs its listeners. Tests use
//! [`start`] directly: the real application on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Auth, Hasher};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DatabaseLocation, Profile};
use crate::crypto::{self, Keys};
use crate::domain::audit_chain::ChainSealer;
use crate::http::{self, AppState};
use crate::net;
use crate::store::{self, Backend, PoolOptions, StoreOptions};

/// A running castellan.
pub struct Running {
    /// Where the public listener is bound (useful with port 0).
    pub public_addr: SocketAddr,
    /// Where the admin listener is bound, when an admin token is configured.
    pub admin_addr: Option<SocketAddr>,
    /// Where the plain-HTTP redirect listener is bound, when configured.
    pub redirect_addr: Option<SocketAddr>,
    /// The use cases, for tests that need to reach past HTTP.
    pub auth: Auth,
    shutdown: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
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

    /// A handle that turns readiness to 503 (the drain before a shutdown).
    pub fn drain_handle(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }
}

/// Opens storage, starts the hashing pool and binds the listeners.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Opens storage and starts the hashing pool and the mailer: the use cases
/// without any listener (the `admin` and `audit` commands use this too).
pub async fn build_auth(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Auth> {
    assemble(config, clock, false).await
}

/// [`build_auth`]; `serving` lets a listener start before PostgreSQL is
/// reachable (it reports not ready until then).
async fn assemble(config: Config, clock: Arc<dyn Clock>, serving: bool) -> anyhow::Result<Auth> {
    let config = Arc::new(config);
    let master = match &config.secret_key {
        Some(key) => key.clone(),
        None => crypto::load_or_create_dev_key(&config.data_dir)?,
    };
    let store = if serving {
        store::open_for_serving(&store_options(&config)).await?
    } else {
        store::open(&store_options(&config)).await?
    };
    let previous: Vec<_> = config.previous_secret_key.iter().cloned().collect();
    let keys = Keys::derive(&master, &previous);
    let hasher = Hasher::start(&config.hashing, keys.backup_pepper.clone())?
        .with_previous_peppers(keys.previous_backup_peppers.clone());
    let mailer = crate::mail::Mailer::new(&config.mail, config.token_lifetimes);
    Ok(Auth::new(config, store, keys, hasher, clock, mailer))
}

/// What storage needs from the configuration.
pub fn store_options(config: &Config) -> StoreOptions {
    let database = &config.database;
    StoreOptions {
        backend: match &database.location {
            DatabaseLocation::Sqlite { path } => Backend::Sqlite { path: path.clone() },
            DatabaseLocation::Postgres { url } => Backend::Postgres { url: url.clone() },
        },
        pool: PoolOptions {
            max_connections: database.pool.size(),
            min_connections: database.pool.min_connections,
            acquire_timeout: database.pool.acquire_timeout,
            idle_timeout: database.pool.idle_timeout,
            max_lifetime: database.pool.max_lifetime,
        },
        production: config.profile == Profile::Production,
        allow_unverified_tls: database.allow_unverified_tls,
        sealer: audit_sealer(config),
    }
}

/// The audit chain's sealer, with the HMAC key when one is configured.
pub fn audit_sealer(config: &Config) -> ChainSealer {
    ChainSealer::new(config.audit_key.as_ref().map(|k| k.expose()))
}

/// [`start`] with an injected clock.
pub async fn start_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
    let auth = assemble(config, clock, true).await?;
    let config = auth.config().clone();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (CASTELLAN_LISTEN)", config.listen))?;
    let public_addr = listener.local_addr()?;
    crate::metrics::handle();
    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        auth: Arc::new(auth.clone()),
        draining: draining.clone(),
    };
    let (shutdown, signal) = watch::channel(false);
    let tls = start_tls(&config, &shutdown)?;
    let mut app = http::public_app(state.clone());
    if tls.is_some() {
        app = app.layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                axum::http::header::STRICT_TRANSPORT_SECURITY,
                axum::http::HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            ),
        );
    }
    let limits = config.net.limits;
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
            let admin = net::Listener {
                name: "admin",
                app: http::admin::admin_app(state.clone()),
                limits,
                tls: tls.clone(),
            };
            spawn_listener(admin_listener, admin, shutdown.subscribe());
            Some(addr)
        }
    };
    let redirect_addr = match config.net.redirect_listen {
        None => None,
        Some(addr) => {
            let plain = TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} (CASTELLAN_TLS_REDIRECT_LISTEN)")
            })?;
            let bound = plain.local_addr()?;
            let redirect = net::Listener {
                name: "redirect",
                app: net::redirect::app(config.public_base_url.clone()),
                limits,
                tls: None,
            };
            spawn_listener(plain, redirect, shutdown.subscribe());
            Some(bound)
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
    // Histogram samples are kept until folded in: without this, a node
    // nobody scrapes grows with every request it serves.
    tokio::spawn(crate::jobs::every(
        crate::metrics::UPKEEP_INTERVAL,
        shutdown.subscribe(),
        || async { crate::metrics::run_upkeep() },
    ));
    let public = net::Listener {
        name: "public",
        app,
        limits,
        tls,
    };
    let server = tokio::spawn(serve_until_stopped(
        listener,
        public,
        signal,
        config.shutdown_timeout,
    ));
    tracing::info!(%public_addr, backend = auth.backend(), "castellan is listening");
    Ok(Running {
        public_addr,
        admin_addr,
        redirect_addr,
        auth,
        shutdown,
        draining,
        server,
    })
}

/// Serves the public listener until the shutdown signal, then gives
/// in-flight requests `grace` to finish.
async fn serve_until_stopped(
    listener: TcpListener,
    public: net::Listener,
    signal: watch::Receiver<bool>,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let mut drain_signal = signal.clone();
    let serve = std::pin::pin!(net::serve(listener, public, signal));
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
}

/// Runs a secondary listener (admin, redirect) until shutdown.
fn spawn_listener(listener: TcpListener, served: net::Listener, stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let name = served.name;
        if let Err(e) = net::serve(listener, served, stop).await {
            tracing::error!(listener = name, error = %e, "a listener failed");
        }
    });
}

/// Loads the certificate when castellan terminates TLS, and starts its
/// reload watcher.
fn start_tls(
    config: &Config,
    shutdown: &watch::Sender<bool>,
) -> anyhow::Result<Option<net::tls::Acceptor>> {
    let Some(files) = &config.net.tls else {
        return Ok(None);
    };
    let certificates = net::tls::Certificates::load(files)?;
    let acceptor = certificates.acceptor()?;
    tokio::spawn(certificates.watch(config.net.tls_reload_interval, shutdown.subscribe()));
    Ok(Some(acceptor))
}
