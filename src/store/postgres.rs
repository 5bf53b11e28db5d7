//! The PostgreSQL backend, on sqlx.
//!
//! A URL without `sslmode` means `verify-full`: castellan never falls back to
//! plaintext on its own, and it sets the mode explicitly so that `PGSSLMODE`
//! in the environment cannot weaken it.

use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, bail};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    AccountStore, BackupCodeHash, Credentials, Event, EventFilter, EventStore, MfaStore, NewEvent,
    NewSession, NewUser, Op, PruneOutcome, SessionStore, Store, StoreError, ThrottleStore,
    TokenPurpose, TotpRecord, UserStore, stored_digest,
};
use crate::config::Config;
use crate::crypto::TokenHash;
use crate::domain::audit_chain::{ChainHead, ChainSealer, pruned_detail};
use crate::domain::{Aal, Email, Session, User, UserId};
use crate::metrics::QueryTimer;

mod passkeys;

/// PostgreSQL storage.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    sealer: ChainSealer,
    /// Hands security events to this process's appender task.
    appender: mpsc::Sender<PendingEvent>,
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
    /// Connects, checks TLS where it was asked for, and migrates.
    pub async fn connect(url: &SecretString, config: &Config) -> anyhow::Result<Self> {
        let options = connect_options(url)?;
        let mode = options.get_ssl_mode();
        check_tls_policy(&options, config)?;
        let max = config.db_pool_size();
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .min_connections(config.db_min_connections.min(max))
            .acquire_timeout(config.db_acquire_timeout)
            .idle_timeout(config.db_idle_timeout)
            .max_lifetime(config.db_max_lifetime)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL: {}", describe(&e)))?;
        if verifies(mode) || matches!(mode, PgSslMode::Require) {
            let ssl: Option<bool> =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_optional(&pool)
                    .await
                    .context("cannot read pg_stat_ssl")?;
            if ssl != Some(true) {
                bail!("the PostgreSQL connection is not encrypted although TLS was required");
            }
        }
        check_pool_fits(&pool, max).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("PostgreSQL migrations failed")?;
        let sealer = super::audit_sealer(config);
        let (appender, queue) = mpsc::channel(1024);
        tokio::spawn(run_appender(pool.clone(), sealer.clone(), queue));
        Ok(Self {
            pool,
            sealer,
            appender,
        })
    }

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
fn check_tls_policy(options: &PgConnectOptions, config: &Config) -> anyhow::Result<()> {
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
    if config.profile == crate::config::Profile::Production && !local {
        if !config.database_allow_unverified_tls {
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

fn map_err(e: sqlx::Error) -> StoreError {
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
            if db
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "53300") =>
        {
            // admin shutdown, connection exceptions, too many connections
            StoreError::Unavailable(describe(&e))
        }
        _ => StoreError::Unexpected(anyhow::Error::new(e).context("postgres")),
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

async fn insert_session(
    tx: &mut Transaction<'static, Postgres>,
    new: &NewSession,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, user_id, aal, mfa_pending, created_at,
             authenticated_at, last_seen_at, expires_at, user_agent, ip)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $7, $8, $9)",
    )
    .bind(new.id)
    .bind(new.token_hash.0.as_slice())
    .bind(new.user_id.0)
    .bind(new.aal.as_str())
    .bind(new.mfa_pending)
    .bind(new.now)
    .bind(new.expires_at)
    .bind(&new.user_agent)
    .bind(&new.ip)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

impl PgStore {
    /// A pooled connection for one operation, and the timer that records
    /// the operation's duration when dropped (keep it to the end).
    async fn conn(&self, op: Op) -> Result<(PoolConnection<Postgres>, QueryTimer), StoreError> {
        checkout(op, self.pool.acquire()).await
    }

    /// A transaction for one operation, and its timer; the measured wait
    /// also holds the `BEGIN` round trip.
    async fn begin(
        &self,
        op: Op,
    ) -> Result<(Transaction<'static, Postgres>, QueryTimer), StoreError> {
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
            Err(map_err(e))
        }
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let (mut conn, _timer) = self.conn(Op::CreateUser).await?;
        sqlx::query(
            "INSERT INTO users (id, email, email_key, password_hash, created_at, password_changed_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(new.id.0)
        .bind(new.email.as_str())
        .bind(new.email.key())
        .bind(&new.password_hash)
        .bind(new.now)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(User {
            id: new.id,
            email: new.email.clone(),
            email_verified: false,
            mfa_enabled: false,
            created_at: new.now,
            locked: false,
            last_login_at: None,
        })
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::FindCredentials).await?;
        let row = sqlx::query(
            "SELECT u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at, u.password_hash
             FROM users u WHERE u.email_key = $1",
        )
        .bind(email_key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        row.map(|r| {
            Ok(Credentials {
                user: user_from_row(&r, 0)?,
                password_hash: r.try_get(7)?,
            })
        })
        .transpose()
        .map_err(map_err)
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::GetUser).await?;
        let row = sqlx::query(
            "SELECT u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at
             FROM users u WHERE u.id = $1",
        )
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        row.map(|r| user_from_row(&r, 0))
            .transpose()
            .map_err(map_err)
    }

    async fn set_password_hash(&self, id: UserId, phc: &str) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::SetPasswordHash).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(phc)
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn set_locked(
        &self,
        id: UserId,
        locked: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::SetLocked).await?;
        let done = sqlx::query("UPDATE users SET locked_at = $1 WHERE id = $2")
            .bind(locked.then_some(at))
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::RecordLogin).await?;
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        new: &NewSession,
        max_full_sessions: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::CreateSession).await?;
        if !new.mfa_pending {
            // Serialise concurrent logins of one user so the cap holds. The
            // row lock comes first: taken after the insert (whose foreign
            // key holds a weaker lock on the same row) two logins deadlock.
            sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                .bind(new.user_id.0)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        insert_session(&mut tx, new).await?;
        let mut evicted = Vec::new();
        if !new.mfa_pending {
            evicted = sqlx::query_scalar(
                "DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions WHERE user_id = $1 AND NOT mfa_pending
                     ORDER BY created_at DESC, id DESC OFFSET $2)
                 RETURNING id",
            )
            .bind(new.user_id.0)
            .bind(i64::try_from(max_full_sessions).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(evicted)
    }

    async fn find_session(&self, hash: &TokenHash) -> Result<Option<(Session, User)>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::FindSession).await?;
        let row = sqlx::query(
            "SELECT s.id, s.user_id, s.aal, s.mfa_pending, s.created_at, s.authenticated_at,
                    s.last_seen_at, s.expires_at, s.user_agent, s.ip,
                    u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at,
                    u.last_login_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1",
        )
        .bind(hash.0.as_slice())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        row.map(|r| Ok((session_from_row(&r, 0)?, user_from_row(&r, 10)?)))
            .transpose()
            .map_err(map_err)
    }

    async fn touch_session(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        older_than: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::TouchSession).await?;
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $3")
            .bind(now)
            .bind(id)
            .bind(older_than)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn rotate_session(&self, old: Uuid, new: &NewSession) -> Result<bool, StoreError> {
        let (mut tx, _timer) = self.begin(Op::RotateSession).await?;
        let gone = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(old)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        insert_session(&mut tx, new).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn delete_session(&self, id: Uuid) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::DeleteSession).await?;
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ListSessions).await?;
        let rows = sqlx::query(
            "SELECT s.id, s.user_id, s.aal, s.mfa_pending, s.created_at, s.authenticated_at,
                    s.last_seen_at, s.expires_at, s.user_agent, s.ip
             FROM sessions s WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id",
        )
        .bind(user.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|r| session_from_row(r, 0))
            .collect::<Result<_, _>>()
            .map_err(map_err)
    }

    async fn delete_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::DeleteUserSessions).await?;
        let done = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND ($2::uuid IS NULL OR id <> $2)",
        )
        .bind(user.0)
        .bind(except)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn delete_all_sessions(&self) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::DeleteAllSessions).await?;
        let done = sqlx::query("DELETE FROM sessions")
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn purge_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        batch: u32,
    ) -> Result<Vec<(Uuid, UserId)>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeExpiredSessions).await?;
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "DELETE FROM sessions WHERE id IN (
                 SELECT id FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2
                 LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING id, user_id",
        )
        .bind(now)
        .bind(idle_cutoff)
        .bind(i64::from(batch))
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(id, user)| (id, UserId(user)))
            .collect())
    }
}

/// The columns `event_from_row` reads (a macro so queries stay static text).
macro_rules! event_columns {
    () => {
        "seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac"
    };
}

fn event_from_row(r: &PgRow) -> Result<Event, sqlx::Error> {
    let user_id: Option<Uuid> = r.try_get(4)?;
    Ok(Event {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        at: r.try_get(2)?,
        kind: r.try_get(3)?,
        user_id: user_id.map(UserId),
        ip: r.try_get(5)?,
        user_agent: r.try_get(6)?,
        request_id: r.try_get(7)?,
        detail: r.try_get(8)?,
        prev_hash: r.try_get(9)?,
        hash: r.try_get(10)?,
        mac: r.try_get(11)?,
    })
}

fn events_from_rows(rows: &[PgRow]) -> Result<Vec<Event>, StoreError> {
    rows.iter()
        .map(event_from_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(map_err)
}

fn head_from_row(r: &PgRow) -> Result<ChainHead, StoreError> {
    Ok(ChainHead {
        last_seq: r.try_get(0).map_err(map_err)?,
        last_hash: stored_digest(r.try_get(1).map_err(map_err)?)?,
        checkpoint_seq: r.try_get(2).map_err(map_err)?,
        checkpoint_hash: stored_digest(r.try_get(3).map_err(map_err)?)?,
    })
}

/// Locks the chain head for the rest of the transaction: this row lock is
/// what serialises appends across connections and nodes.
async fn lock_head(tx: &mut Transaction<'static, Postgres>) -> Result<ChainHead, StoreError> {
    let row = sqlx::query(
        "SELECT last_seq, last_hash, checkpoint_seq, checkpoint_hash
         FROM audit_chain WHERE id = 1 FOR UPDATE",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(map_err)?;
    head_from_row(&row)
}

/// Inserts `e` after `head` (whose row the caller has locked) and returns
/// the new head; the caller writes the head row back.
async fn insert_linked(
    tx: &mut Transaction<'static, Postgres>,
    sealer: &ChainSealer,
    head: ChainHead,
    e: &NewEvent,
) -> Result<ChainHead, StoreError> {
    let seq = head.last_seq + 1;
    let link = sealer.link(&head.last_hash, &e.chained(seq));
    sqlx::query(
        "INSERT INTO security_events
             (seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(seq)
    .bind(e.id)
    .bind(e.at)
    .bind(e.kind)
    .bind(e.user_id.map(|u| u.0))
    .bind(&e.ip)
    .bind(&e.user_agent)
    .bind(&e.request_id)
    .bind(&e.detail)
    .bind(&link.prev_hash[..])
    .bind(&link.hash[..])
    .bind(link.mac.as_ref().map(|m| &m[..]))
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(ChainHead {
        last_seq: seq,
        last_hash: link.hash,
        ..head
    })
}

/// Appends `events` in order in one transaction: lock the head, insert,
/// write the head back.
async fn append_all(
    pool: &PgPool,
    sealer: &ChainSealer,
    events: &[&NewEvent],
) -> Result<(), StoreError> {
    let (mut tx, _timer) = checkout(Op::AppendEvent, pool.begin()).await?;
    append_in(&mut tx, sealer, events).await?;
    tx.commit().await.map_err(map_err)
}

/// Appends inside the caller's transaction.
async fn append_in(
    tx: &mut Transaction<'static, Postgres>,
    sealer: &ChainSealer,
    events: &[&NewEvent],
) -> Result<(), StoreError> {
    let mut head = lock_head(tx).await?;
    for e in events {
        head = insert_linked(tx, sealer, head, e).await?;
    }
    sqlx::query("UPDATE audit_chain SET last_seq = $1, last_hash = $2 WHERE id = 1")
        .bind(head.last_seq)
        .bind(&head.last_hash[..])
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// The same failure for every waiter of a batch (`StoreError` is not
/// `Clone`: it may hold an `anyhow::Error`).
fn share(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::Unexpected(err) => StoreError::Unexpected(anyhow::anyhow!("{err:#}")),
    }
}

/// Group commit for security events. Request handlers queue their event
/// and wait for the outcome without holding a pool connection; this task
/// takes whatever has queued up (up to [`APPEND_BATCH`]) and appends it in
/// one transaction. Waiting on the chain's row lock thus costs one
/// connection per process instead of one per concurrent event, so a flood
/// of failed logins cannot take the connections session checks need. A
/// batch refused for its content is retried one event at a time, so one
/// bad event fails only its own request; an unreachable database fails
/// the whole batch at once.
async fn run_appender(pool: PgPool, sealer: ChainSealer, mut queue: mpsc::Receiver<PendingEvent>) {
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    while queue.recv_many(&mut batch, APPEND_BATCH).await > 0 {
        let events: Vec<&NewEvent> = batch.iter().map(|(e, _)| e).collect();
        match append_all(&pool, &sealer, &events).await {
            Ok(()) => {
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Ok(()));
                }
            }
            // One event, or the database is away: everyone gets the answer.
            Err(e) if batch.len() == 1 || matches!(e, StoreError::Unavailable(_)) => {
                for (_, done) in batch.drain(..) {
                    let _ = done.send(Err(share(&e)));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, events = batch.len(), "audit batch failed; appending one by one");
                for (event, done) in batch.drain(..) {
                    let _ = done.send(
                        append_all(&pool, &sealer, &[&event])
                            .await
                            .map_err(|e| share(&e)),
                    );
                }
            }
        }
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_event(&self, e: &NewEvent) -> Result<(), StoreError> {
        let stopped = || StoreError::Unexpected(anyhow::anyhow!("the audit appender stopped"));
        let (done, outcome) = oneshot::channel();
        self.appender
            .send((e.clone(), done))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ListEvents).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM security_events
             WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR kind = $2)
               AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at < $4)
               AND ($5::bigint IS NULL OR seq < $5)
             ORDER BY seq DESC LIMIT $6"
        ))
        .bind(f.user.map(|u| u.0))
        .bind(f.kind.as_deref())
        .bind(f.since)
        .bind(f.until)
        .bind(f.before_seq)
        .bind(i64::from(f.limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        events_from_rows(&rows)
    }

    async fn chain_events(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ChainEvents).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM security_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        events_from_rows(&rows)
    }

    async fn chain_head(&self) -> Result<ChainHead, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ChainHead).await?;
        let row = sqlx::query(
            "SELECT last_seq, last_hash, checkpoint_seq, checkpoint_hash FROM audit_chain WHERE id = 1",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
        head_from_row(&row)
    }

    async fn prune_events(
        &self,
        cutoff: OffsetDateTime,
        record: &NewEvent,
    ) -> Result<Option<PruneOutcome>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::PruneEvents).await?;
        let head = lock_head(&mut tx).await?;
        let last_old: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT seq, hash FROM security_events WHERE at < $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(cutoff)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some((through, hash)) = last_old else {
            return Ok(None);
        };
        let removed = sqlx::query("DELETE FROM security_events WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        let (checkpoint_seq, checkpoint_hash) =
            head.checkpoint_after_prune(through, hash.map(stored_digest).transpose()?);
        sqlx::query(
            "UPDATE audit_chain SET checkpoint_seq = $1, checkpoint_hash = $2 WHERE id = 1",
        )
        .bind(checkpoint_seq)
        .bind(&checkpoint_hash[..])
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let mut record = record.clone();
        record.detail = pruned_detail(checkpoint_seq, &checkpoint_hash, removed);
        append_in(&mut tx, &self.sealer, &[&record]).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(PruneOutcome {
            through_seq: checkpoint_seq,
            removed,
        }))
    }
}

async fn insert_codes(
    tx: &mut Transaction<'static, Postgres>,
    user: UserId,
    codes: &[BackupCodeHash],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
        .bind(user.0)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    for c in codes {
        sqlx::query("INSERT INTO backup_codes (user_id, slot, code_hash) VALUES ($1, $2, $3)")
            .bind(user.0)
            .bind(i16::from(c.slot))
            .bind(&c.code_hash)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

fn step_to_sql(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

#[async_trait]
impl MfaStore for PgStore {
    async fn put_pending_totp(
        &self,
        user: UserId,
        sealed: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::PutPendingTotp).await?;
        let done = sqlx::query(
            "INSERT INTO totp_credentials (user_id, sealed_secret, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                 created_at = excluded.created_at, last_used_step = NULL
             WHERE totp_credentials.enabled_at IS NULL",
        )
        .bind(user.0)
        .bind(sealed)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            Err(StoreError::Conflict)
        } else {
            Ok(())
        }
    }

    async fn get_totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::GetTotp).await?;
        let row: Option<(Vec<u8>, Option<OffsetDateTime>, Option<i64>)> = sqlx::query_as(
            "SELECT sealed_secret, enabled_at, last_used_step FROM totp_credentials WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(row.map(|(sealed_secret, enabled, step)| TotpRecord {
            sealed_secret,
            enabled: enabled.is_some(),
            last_used_step: step.and_then(|s| u64::try_from(s).ok()),
        }))
    }

    async fn activate_totp(
        &self,
        user: UserId,
        step: u64,
        codes: &[BackupCodeHash],
        session: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ActivateTotp).await?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET enabled_at = $1, last_used_step = $2
             WHERE user_id = $3 AND enabled_at IS NULL",
        )
        .bind(now)
        .bind(step_to_sql(step))
        .bind(user.0)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET mfa_enabled = TRUE WHERE id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_codes(&mut tx, user, codes).await?;
        sqlx::query("UPDATE sessions SET aal = 'aal2' WHERE id = $1")
            .bind(session)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn reseal_totp(&self, user: UserId, sealed: &[u8]) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ResealTotp).await?;
        sqlx::query("UPDATE totp_credentials SET sealed_secret = $1 WHERE user_id = $2")
            .bind(sealed)
            .bind(user.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn claim_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ClaimTotpStep).await?;
        let done = sqlx::query(
            "UPDATE totp_credentials SET last_used_step = $1
             WHERE user_id = $2 AND enabled_at IS NOT NULL
               AND (last_used_step IS NULL OR last_used_step < $1)",
        )
        .bind(step_to_sql(step))
        .bind(user.0)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn remove_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        let (mut tx, _timer) = self.begin(Op::RemoveMfa).await?;
        let done = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("UPDATE users SET mfa_enabled = FALSE WHERE id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: &[BackupCodeHash],
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::ReplaceBackupCodes).await?;
        insert_codes(&mut tx, user, codes).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn unused_backup_code(
        &self,
        user: UserId,
        slot: u8,
    ) -> Result<Option<String>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::UnusedBackupCode).await?;
        sqlx::query_scalar("SELECT code_hash FROM backup_codes WHERE user_id = $1 AND slot = $2 AND used_at IS NULL")
            .bind(user.0)
            .bind(i16::from(slot))
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)
    }

    async fn claim_backup_code(
        &self,
        user: UserId,
        slot: u8,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ClaimBackupCode).await?;
        let done = sqlx::query(
            "UPDATE backup_codes SET used_at = $1
             WHERE user_id = $2 AND slot = $3 AND code_hash = $4 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user.0)
        .bind(i16::from(slot))
        .bind(code_hash)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn backup_code_counts(&self, user: UserId) -> Result<(u32, u32), StoreError> {
        let (mut conn, _timer) = self.conn(Op::BackupCodeCounts).await?;
        let (remaining, total): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE used_at IS NULL), COUNT(*) FROM backup_codes WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok((
            u32::try_from(remaining).unwrap_or(0),
            u32::try_from(total).unwrap_or(0),
        ))
    }

    async fn record_mfa_failure(&self, session: Uuid) -> Result<u32, StoreError> {
        let (mut conn, _timer) = self.conn(Op::RecordMfaFailure).await?;
        let n: Option<i32> =
            sqlx::query_scalar("UPDATE sessions SET mfa_failures = mfa_failures + 1 WHERE id = $1 RETURNING mfa_failures")
                .bind(session)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_err)?;
        Ok(n.and_then(|n| u32::try_from(n).ok()).unwrap_or(u32::MAX))
    }
}

async fn claim_token_in(
    tx: &mut Transaction<'static, Postgres>,
    hash: &TokenHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UserId>, StoreError> {
    let owner: Option<Uuid> = sqlx::query_scalar(
        "UPDATE account_tokens SET used_at = $1
         WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1
         RETURNING user_id",
    )
    .bind(now)
    .bind(hash.0.as_slice())
    .bind(purpose.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(owner.map(UserId))
}

#[async_trait]
impl AccountStore for PgStore {
    async fn issue_token(
        &self,
        hash: &TokenHash,
        user: UserId,
        purpose: TokenPurpose,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::IssueToken).await?;
        sqlx::query(
            "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        )
        .bind(user.0)
        .bind(purpose.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash.0.as_slice())
        .bind(user.0)
        .bind(purpose.as_str())
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn claim_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ClaimToken).await?;
        let owner = claim_token_in(&mut tx, hash, purpose, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(owner)
    }

    async fn reset_password(
        &self,
        hash: &TokenHash,
        phc: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let (mut tx, _timer) = self.begin(Op::ResetPassword).await?;
        let Some(user) = claim_token_in(&mut tx, hash, TokenPurpose::PasswordReset, now).await?
        else {
            return Ok(None);
        };
        sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
            .bind(phc)
            .bind(now)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM account_tokens WHERE user_id = $1 AND purpose = 'password_reset' AND used_at IS NULL")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Some(user))
    }

    async fn change_password(
        &self,
        user: UserId,
        phc: &str,
        keep: Uuid,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut tx, _timer) = self.begin(Op::ChangePassword).await?;
        sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
            .bind(phc)
            .bind(now)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
            .bind(user.0)
            .bind(keep)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM account_tokens WHERE user_id = $1 AND purpose = 'password_reset' AND used_at IS NULL")
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn mark_email_verified(&self, user: UserId) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::MarkEmailVerified).await?;
        sqlx::query("UPDATE users SET email_verified = TRUE WHERE id = $1")
            .bind(user.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn purge_account_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeAccountTokens).await?;
        let done = sqlx::query("DELETE FROM account_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl ThrottleStore for PgStore {
    async fn throttle_hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: std::time::Duration,
    ) -> Result<(u64, OffsetDateTime), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleHit).await?;
        let (count, start): (i64, OffsetDateTime) = sqlx::query_as(
            "INSERT INTO throttles (key, count, window_start) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET
                 count = CASE WHEN throttles.window_start <= $3 THEN 1 ELSE throttles.count + 1 END,
                 window_start = CASE WHEN throttles.window_start <= $3 THEN $2 ELSE throttles.window_start END
             RETURNING count, window_start",
        )
        .bind(key)
        .bind(now)
        .bind(now - window)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok((u64::try_from(count).unwrap_or(0), start))
    }

    async fn throttle_block(
        &self,
        key: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleBlock).await?;
        sqlx::query(
            "INSERT INTO throttles (key, count, window_start, blocked_until) VALUES ($1, 0, $2, $3)
             ON CONFLICT (key) DO UPDATE SET blocked_until = GREATEST(throttles.blocked_until, $3)",
        )
        .bind(key)
        .bind(now)
        .bind(until)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn throttle_blocked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleBlockedUntil).await?;
        sqlx::query_scalar(
            "SELECT max(blocked_until) FROM throttles WHERE key = ANY($1) AND blocked_until > $2",
        )
        .bind(keys)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)
    }

    async fn throttle_count(&self, key: &str) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleCount).await?;
        let n: Option<i64> = sqlx::query_scalar("SELECT count FROM throttles WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn throttle_clear(&self, keys: &[String]) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::ThrottleClear).await?;
        sqlx::query("DELETE FROM throttles WHERE key = ANY($1)")
            .bind(keys)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn purge_throttles(
        &self,
        prefix: &str,
        started_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let (mut conn, _timer) = self.conn(Op::PurgeThrottles).await?;
        let done = sqlx::query(
            "DELETE FROM throttles
             WHERE left(key, length($1)) = $1 AND window_start < $2
               AND (blocked_until IS NULL OR blocked_until <= $3)",
        )
        .bind(prefix)
        .bind(started_before)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let (mut conn, _timer) = self.conn(Op::Ping).await?;
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
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
