//! The embedded SQLite backend (the default), on rusqlite.
//!
//! SQLite allows one writer at a time, so the backend keeps one write
//! connection behind a mutex and a few read connections; WAL mode lets the
//! readers run while the writer commits. Every call runs on tokio's blocking
//! pool, so the async runtime never waits on disk. rusqlite is used rather
//! than sqlx here because the per-query overhead matters on the session-check
//! hot path (see docs/performance.md).

mod limits;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AccountStore, BackupCodeHash, Credentials, Event, EventFilter, EventStore, MfaStore, NewEvent,
    NewSession, NewUser, Op, PruneOutcome, SessionStore, Store, StoreError, ThrottleStore,
    TokenPurpose, TotpRecord, UserStore, stored_digest,
};
use crate::domain::audit_chain::{ChainHead, ChainSealer, pruned_detail};
use crate::domain::{Aal, Email, Session, TokenHash, User, UserId};
use crate::metrics::QueryTimer;

mod accounts;
mod events;
mod mfa;
mod passkeys;
mod sessions;
mod throttle;
mod users;

/// Embedded migrations; the file names match `migrations/postgres/`.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init.sql",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        "0002_mfa.sql",
        include_str!("../../migrations/sqlite/0002_mfa.sql"),
    ),
    (
        "0003_lifecycle.sql",
        include_str!("../../migrations/sqlite/0003_lifecycle.sql"),
    ),
    (
        "0004_audit_chain.sql",
        include_str!("../../migrations/sqlite/0004_audit_chain.sql"),
    ),
    (
        "0005_passkeys.sql",
        include_str!("../../migrations/sqlite/0005_passkeys.sql"),
    ),
];

/// Shared state of the backend.
struct Inner {
    /// The only connection that writes; SQLite serialises writers anyway.
    writer: Mutex<Connection>,
    /// Read-only connections, picked round-robin.
    readers: Vec<Mutex<Connection>>,
    /// Round-robin cursor into `readers`.
    next_reader: AtomicUsize,
}

/// SQLite storage.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    sealer: ChainSealer,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path, sealer: ChainSealer) -> anyhow::Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, sealer)).await?
    }

    fn open_blocking(path: &Path, sealer: ChainSealer) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut writer = Connection::open(path)
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
        configure(&writer)?;
        enable_wal(&writer)?;
        migrate(&mut writer)?;
        let readers = (0..4)
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&conn)?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            }),
            sealer,
        })
    }

    /// Runs `f` on a read connection on the blocking pool; the wait for a
    /// reader and the run of `f` are recorded under `op`.
    async fn read_op<T: Send + 'static>(
        &self,
        op: Op,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let asked = Instant::now();
        tokio::task::spawn_blocking(move || {
            let n = inner.readers.len();
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
            // Take the first idle reader, else wait for the round-robin pick.
            for i in 0..n {
                if let Ok(mut conn) = inner.readers[(start + i) % n].try_lock() {
                    return timed(op, asked, &mut conn, |c| f(c));
                }
            }
            let mut conn = inner.readers[start % n]
                .lock()
                .map_err(|_| StoreError::Unexpected(anyhow!("sqlite reader mutex poisoned")))?;
            timed(op, asked, &mut conn, |c| f(c))
        })
        .await
        .map_err(|e| StoreError::Unexpected(anyhow!("sqlite task failed: {e}")))?
    }

    /// Runs `f` on the one write connection on the blocking pool; the wait
    /// for the writer and the run of `f` are recorded under `op`.
    async fn write_op<T: Send + 'static>(
        &self,
        op: Op,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let asked = Instant::now();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| StoreError::Unexpected(anyhow!("sqlite writer mutex poisoned")))?;
            timed(op, asked, &mut conn, f)
        })
        .await
        .map_err(|e| StoreError::Unexpected(anyhow!("sqlite task failed: {e}")))?
    }
}

/// Records the wait since `asked` for the connection now held, then runs
/// `f` on it and records its duration under `op`.
fn timed<T>(
    op: Op,
    asked: Instant,
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> T,
) -> T {
    crate::metrics::record_acquire_wait(asked);
    let _timer = QueryTimer::start(op.as_str());
    f(conn)
}

/// Switches the database to WAL mode. When another process is creating or
/// migrating the same file at this moment, SQLite answers "locked" at once
/// instead of calling the busy handler, so retry for up to five seconds.
fn enable_wal(conn: &Connection) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("cannot switch SQLite to WAL mode"),
        }
    }
}

/// Applies embedded migrations inside one IMMEDIATE transaction, so two
/// processes starting at once apply each migration exactly once.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS castellan_migrations (
             name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT",
    )?;
    for (name, sql) in MIGRATIONS {
        let done: Option<String> = tx
            .query_row(
                "SELECT name FROM castellan_migrations WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_none() {
            tx.execute_batch(sql)
                .with_context(|| format!("migration {name} failed"))?;
            tx.execute(
                "INSERT INTO castellan_migrations (name, applied_at) VALUES (?1, ?2)",
                params![name, to_ms(OffsetDateTime::now_utc())],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
    })
}

fn parse_uuid(s: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// SQLite errors as the caller sees them: a constraint is a conflict, a busy or
/// unopenable file is an outage, anything else is unexpected.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
                StoreError::Conflict
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Unexpected(anyhow::Error::new(e).context("sqlite")),
        }
    }
}

const USER_COLUMNS: &str =
    "u.id, u.email, u.email_verified, u.mfa_enabled, u.created_at, u.locked_at, u.last_login_at";
const SESSION_COLUMNS: &str = "s.id, s.user_id, s.aal, s.mfa_pending, s.created_at, \
     s.authenticated_at, s.last_seen_at, s.expires_at, s.user_agent, s.ip";

/// Reads the user columns starting at `at`.
fn user_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<User> {
    let locked_at: Option<i64> = row.get(at + 5)?;
    let last_login: Option<i64> = row.get(at + 6)?;
    Ok(User {
        id: UserId(parse_uuid(&row.get::<_, String>(at)?)?),
        email: Email::from_trusted(row.get(at + 1)?),
        email_verified: row.get(at + 2)?,
        mfa_enabled: row.get(at + 3)?,
        created_at: from_ms(row.get(at + 4)?)?,
        locked: locked_at.is_some(),
        last_login_at: last_login.map(from_ms).transpose()?,
    })
}

fn session_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<Session> {
    let aal: String = row.get(at + 2)?;
    Ok(Session {
        id: parse_uuid(&row.get::<_, String>(at)?)?,
        user_id: UserId(parse_uuid(&row.get::<_, String>(at + 1)?)?),
        aal: Aal::parse(&aal).unwrap_or(Aal::Aal1),
        mfa_pending: row.get(at + 3)?,
        created_at: from_ms(row.get(at + 4)?)?,
        authenticated_at: from_ms(row.get(at + 5)?)?,
        last_seen_at: from_ms(row.get(at + 6)?)?,
        expires_at: from_ms(row.get(at + 7)?)?,
        user_agent: row.get(at + 8)?,
        ip: row.get(at + 9)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read_op(Op::Ping, |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(StoreError::from)
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
