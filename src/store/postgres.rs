//! The PostgreSQL backend, on sqlx.
//!
//! A URL without `sslmode` means `verify-full`: castellan never falls back to
//! plaintext on its own, and it sets the mode explicitly so that `PGSSLMODE`
//! in the environment cannot weaken it.

mod limits;

use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgRow, PgSslMode};
use sqlx::{Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub mod server_trust;

use super::{
    AccountStore, BackupCodeHash, Credentials, Event, EventFilter, EventStore, MfaStore, NewEvent,
    NewSession, NewUser, Op, PruneOutcome, SessionStore, Store, StoreError, StoreOptions,
    ThrottleStore, TokenPurpose, TotpRecord, UserStore, stored_digest,
};
use crate::domain::audit_chain::{ChainHead, ChainSealer, pruned_detail};
use crate::domain::{Aal, Email, Session, TokenHash, User, UserId};
use crate::metrics::QueryTimer;

mod accounts;
mod events;
mod mfa;
mod passkeys;
mod sessions;
mod startup;
mod throttle;
mod users;

/// PostgreSQL storage.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    sealer: ChainSealer,
    /// Hands security events to this process's appender task.
    appender: mpsc::Sender<PendingEvent>,
    /// Set once connected, checked and migrated (see `startup.rs`).
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// An event waiting for the appender, and where its outcome goes.
type PendingEvent = (NewEvent, oneshot::Sender<Result<(), StoreError>>);

/// Events the appender writes in one transaction at most.
const APPEND_BATCH: usize = 64;

/// Parses the URL and applies castellan's TLS default (`verify-full`).
pub fn connect_options(url: &SecretString) -> anyhow::Result<PgConnectOptions> {
    let text = url.expose_secret();
    let options = PgConnectOptions::from_str(text)
        .map_err(|_| anyhow::anyhow!("CASTELLAN_DATABASE_URL is not a valid postgres:// URL"))?;
    let explicit_mode = text
        .split_once('?')
        .map(|(_, q)| q.split('&').any(|kv| kv.starts_with("sslmode=")))
        .unwrap_or(false);
    Ok(if explicit_mode {
        // Re-apply the parsed mode so PGSSLMODE can never override it.
        let mode = options.get_ssl_mode();
        options.ssl_mode(mode)
    } else {
        options.ssl_mode(PgSslMode::VerifyFull)
    })
}

impl PgStore {
    /// The pool, for metrics and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Refuses a pool the server cannot hold: `max_connections` minus the
/// connections reserved for superusers must leave room for all of it.
async fn check_pool_fits(pool: &PgPool, max: u32) -> anyhow::Result<()> {
    let (limit, reserved): (String, String) = sqlx::query_as(
        "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')",
    )
    .fetch_one(pool)
    .await
    .context("cannot read max_connections")?;
    let usable = limit
        .parse::<u32>()
        .unwrap_or(0)
        .saturating_sub(reserved.parse::<u32>().unwrap_or(0));
    if max > usable {
        bail!(
            "a pool of {max} connections cannot fit: the server allows {usable} \
             (max_connections {limit} minus {reserved} reserved); lower CASTELLAN_DB_MAX_CONNECTIONS \
             or raise max_connections (with several nodes, keep nodes x pool size <= {usable})"
        );
    }
    Ok(())
}

/// The libpq spelling of a mode, for messages.
fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Whether the connection verifies the server's certificate and name.
fn verifies(mode: PgSslMode) -> bool {
    matches!(mode, PgSslMode::VerifyFull | PgSslMode::VerifyCa)
}

/// Production refuses a mode weaker than verify-full to a remote host,
/// unless the operator set the override (then it warns at every start).
/// Dev only warns. Unix sockets and loopback never leave the machine.
fn check_tls_policy(options: &PgConnectOptions, config: &StoreOptions) -> anyhow::Result<()> {
    let mode = options.get_ssl_mode();
    // Only verify-full checks the host name as well as the chain.
    if matches!(mode, PgSslMode::VerifyFull) {
        return Ok(());
    }
    let host = options
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if config.production && !local {
        if !config.allow_unverified_tls {
            bail!(
                "CASTELLAN_DATABASE_URL uses sslmode={}, which does not verify the server; production needs sslmode=verify-full (with sslrootcert for a private CA), or CASTELLAN_DATABASE_ALLOW_UNVERIFIED_TLS=true to accept the risk",
                mode_name(mode)
            );
        }
        tracing::warn!(sslmode = ?mode, "CASTELLAN_DATABASE_ALLOW_UNVERIFIED_TLS is on: the database server is not verified");
    } else {
        tracing::warn!(
            sslmode = ?mode,
            "the PostgreSQL connection does not verify the server certificate; use sslmode=verify-full"
        );
    }
    Ok(())
}

/// A short description of a connection error, without the URL or password.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("I/O error: {io}"),
        sqlx::Error::Tls(tls) => format!("TLS error: {tls}"),
        sqlx::Error::Database(db) => format!("server said: {}", db.message()),
        sqlx::Error::PoolTimedOut => "timed out".into(),
        other => other.to_string(),
    }
}

/// PostgreSQL errors as the caller sees them; a failed TLS verification is
/// also logged as a failing security control.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let text = e.to_string();
        if matches!(e, sqlx::Error::Tls(_)) || text.contains("certificate") {
            // A failing security control, not an ordinary outage (ASVS 16.3.4).
            tracing::error!(reason = %describe(&e), "the database TLS connection failed verification");
        }
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(describe(&e)),
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("57P") || c.starts_with("08") || c == "53300"
                }) =>
            {
                // admin shutdown, connection exceptions, too many connections
                StoreError::Unavailable(describe(&e))
            }
            _ => StoreError::Unexpected(anyhow::Error::new(e).context("postgres")),
        }
    }
}

/// Reads the user columns starting at `at` (see the SELECTs below).
fn user_from_row(row: &PgRow, at: usize) -> Result<User, sqlx::Error> {
    let locked_at: Option<OffsetDateTime> = row.try_get(at + 5)?;
    Ok(User {
        id: UserId(row.try_get(at)?),
        email: Email::from_trusted(row.try_get(at + 1)?),
        email_verified: row.try_get(at + 2)?,
        mfa_enabled: row.try_get(at + 3)?,
        created_at: row.try_get(at + 4)?,
        locked: locked_at.is_some(),
        last_login_at: row.try_get(at + 6)?,
    })
}

fn session_from_row(row: &PgRow, at: usize) -> Result<Session, sqlx::Error> {
    let aal: String = row.try_get(at + 2)?;
    Ok(Session {
        id: row.try_get(at)?,
        user_id: UserId(row.try_get(at + 1)?),
        aal: Aal::parse(&aal).unwrap_or(Aal::Aal1),
        mfa_pending: row.try_get(at + 3)?,
        created_at: row.try_get(at + 4)?,
        authenticated_at: row.try_get(at + 5)?,
        last_seen_at: row.try_get(at + 6)?,
        expires_at: row.try_get(at + 7)?,
        user_agent: row.try_get(at + 8)?,
        ip: row.try_get(at + 9)?,
    })
}

impl PgStore {
    /// A pooled connection for one operation, and the timer that records
    /// the operation's duration when dropped (keep it to the end).
    async fn conn(&self, op: Op) -> Result<(PoolConnection<Postgres>, QueryTimer), StoreError> {
        self.check_ready()?;
        checkout(op, self.pool.acquire()).await
    }

    /// A transaction for one operation, and its timer; the measured wait
    /// also holds the `BEGIN` round trip.
    async fn begin(
        &self,
        op: Op,
    ) -> Result<(Transaction<'static, Postgres>, QueryTimer), StoreError> {
        self.check_ready()?;
        checkout(op, self.pool.begin()).await
    }
}

/// Waits for `acquire`, recording the wait and counting a timeout; sqlx
/// does not time acquisition itself.
async fn checkout<C>(
    op: Op,
    acquire: impl Future<Output = Result<C, sqlx::Error>>,
) -> Result<(C, QueryTimer), StoreError> {
    let started = Instant::now();
    let acquired = acquire.await;
    crate::metrics::record_acquire_wait(started);
    match acquired {
        Ok(conn) => Ok((conn, QueryTimer::start(op.as_str()))),
        Err(e) => {
            if matches!(e, sqlx::Error::PoolTimedOut) {
                metrics::counter!(crate::metrics::DB_ACQUIRE_TIMEOUTS).increment(1);
            }
            Err(StoreError::from(e))
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::Ping).await?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> Option<(u32, usize, u32)> {
        Some((
            self.pool.size(),
            self.pool.num_idle(),
            self.pool.options().get_max_connections(),
        ))
    }
}
