//! The embedded SQLite backend (the default), on rusqlite.
//!
//! SQLite allows one writer at a time, so the backend keeps one write
//! connection behind a mutex and a few read connections; WAL mode lets the
//! readers run while the writer commits. Every call runs on tokio's blocking
//! pool, so the async runtime never waits on disk. rusqlite is used rather
//! than sqlx here because the per-query overhead matters on the session-check
//! hot path (see docs/performance.md).

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
use crate::crypto::TokenHash;
use crate::domain::audit_chain::{ChainHead, ChainSealer, pruned_detail};
use crate::domain::{Aal, Email, Session, User, UserId};
use crate::metrics::QueryTimer;

mod passkeys;

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

fn map_err(e: rusqlite::Error) -> StoreError {
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

fn insert_session(conn: &Connection, new: &NewSession) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sessions (id, token_hash, user_id, aal, mfa_pending, created_at,
             authenticated_at, last_seen_at, expires_at, user_agent, ip)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            new.id.to_string(),
            new.token_hash.0.as_slice(),
            new.user_id.0.to_string(),
            new.aal.as_str(),
            new.mfa_pending,
            to_ms(new.now),
            to_ms(new.expires_at),
            new.user_agent,
            new.ip
        ])
    })
    .map_err(map_err)?;
    Ok(())
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
impl UserStore for SqliteStore {
    async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        let new = new.clone();
        self.write_op(Op::CreateUser, move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (id, email, email_key, password_hash, created_at, password_changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    new.id.0.to_string(),
                    new.email.as_str(),
                    new.email.key(),
                    new.password_hash,
                    to_ms(new.now)
                ])
            })
            .map_err(map_err)?;
            Ok(User {
                id: new.id,
                email: new.email,
                email_verified: false,
                mfa_enabled: false,
                created_at: new.now,
                locked: false,
                last_login_at: None,
            })
        })
        .await
    }

    async fn find_credentials(&self, email_key: &str) -> Result<Option<Credentials>, StoreError> {
        let key = email_key.to_string();
        self.read_op(Op::FindCredentials, move |conn| {
            let sql = format!(
                "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.email_key = ?1"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([key], |r| {
                        Ok(Credentials {
                            user: user_from_row(r, 0)?,
                            password_hash: r.get(7)?,
                        })
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.read_op(Op::GetUser, move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([id.0.to_string()], |r| user_from_row(r, 0))
                        .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn set_password_hash(&self, id: UserId, phc: &str) -> Result<(), StoreError> {
        let phc = phc.to_string();
        self.write_op(Op::SetPasswordHash, move |conn| {
            conn.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                params![phc, id.0.to_string()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn set_locked(
        &self,
        id: UserId,
        locked: bool,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write_op(Op::SetLocked, move |conn| {
            let locked_at = locked.then(|| to_ms(at));
            let n = conn
                .execute(
                    "UPDATE users SET locked_at = ?1 WHERE id = ?2",
                    params![locked_at, id.0.to_string()],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write_op(Op::RecordLogin, move |conn| {
            conn.prepare_cached("UPDATE users SET last_login_at = ?1 WHERE id = ?2")
                .and_then(|mut st| st.execute(params![to_ms(at), id.0.to_string()]))
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        new: &NewSession,
        max_full_sessions: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let new = new.clone();
        self.write_op(Op::CreateSession, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            insert_session(&tx, &new)?;
            let mut evicted = Vec::new();
            if !new.mfa_pending {
                let keep = i64::try_from(max_full_sessions).unwrap_or(i64::MAX);
                let mut st = tx
                    .prepare_cached(
                        "DELETE FROM sessions WHERE id IN (
                             SELECT id FROM sessions WHERE user_id = ?1 AND mfa_pending = 0
                             ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?2)
                         RETURNING id",
                    )
                    .map_err(map_err)?;
                let rows = st
                    .query_map(params![new.user_id.0.to_string(), keep], |r| {
                        parse_uuid(&r.get::<_, String>(0)?)
                    })
                    .map_err(map_err)?;
                for id in rows {
                    evicted.push(id.map_err(map_err)?);
                }
            }
            tx.commit().map_err(map_err)?;
            Ok(evicted)
        })
        .await
    }

    async fn find_session(&self, hash: &TokenHash) -> Result<Option<(Session, User)>, StoreError> {
        let hash = *hash;
        self.read_op(Op::FindSession, move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions s
                 JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1"
            );
            conn.prepare_cached(&sql)
                .and_then(|mut st| {
                    st.query_row([hash.0.as_slice()], |r| {
                        Ok((session_from_row(r, 0)?, user_from_row(r, 10)?))
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn touch_session(
        &self,
        id: Uuid,
        now: OffsetDateTime,
        older_than: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.write_op(Op::TouchSession, move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET last_seen_at = ?1 WHERE id = ?2 AND last_seen_at < ?3",
            )
            .and_then(|mut st| st.execute(params![to_ms(now), id.to_string(), to_ms(older_than)]))
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn rotate_session(&self, old: Uuid, new: &NewSession) -> Result<bool, StoreError> {
        let new = new.clone();
        self.write_op(Op::RotateSession, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let gone = tx
                .execute("DELETE FROM sessions WHERE id = ?1", [old.to_string()])
                .map_err(map_err)?;
            if gone == 0 {
                return Ok(false);
            }
            insert_session(&tx, &new)?;
            tx.commit().map_err(map_err)?;
            Ok(true)
        })
        .await
    }

    async fn delete_session(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write_op(Op::DeleteSession, move |conn| {
            let n = conn
                .execute("DELETE FROM sessions WHERE id = ?1", [id.to_string()])
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read_op(Op::ListSessions, move |conn| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.user_id = ?1
                 ORDER BY s.created_at DESC, s.id"
            );
            let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
            let rows = st
                .query_map([user.0.to_string()], |r| session_from_row(r, 0))
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn delete_user_sessions(
        &self,
        user: UserId,
        except: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        self.write_op(Op::DeleteUserSessions, move |conn| {
            let keep = except.map(|id| id.to_string()).unwrap_or_default();
            let n = conn
                .execute(
                    "DELETE FROM sessions WHERE user_id = ?1 AND id <> ?2",
                    params![user.0.to_string(), keep],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_all_sessions(&self) -> Result<u64, StoreError> {
        self.write_op(Op::DeleteAllSessions, |conn| {
            let n = conn.execute("DELETE FROM sessions", []).map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn purge_expired_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
        batch: u32,
    ) -> Result<Vec<(Uuid, UserId)>, StoreError> {
        self.write_op(Op::PurgeExpiredSessions, move |conn| {
            let mut st = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE id IN (
                         SELECT id FROM sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2 LIMIT ?3)
                     RETURNING id, user_id",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![to_ms(now), to_ms(idle_cutoff), batch], |r| {
                    Ok((
                        parse_uuid(&r.get::<_, String>(0)?)?,
                        UserId(parse_uuid(&r.get::<_, String>(1)?)?),
                    ))
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
}

const EVENT_COLUMNS: &str =
    "seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac";

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let user_id: Option<String> = r.get(4)?;
    let detail: String = r.get(8)?;
    Ok(Event {
        seq: r.get(0)?,
        id: parse_uuid(&r.get::<_, String>(1)?)?,
        at: from_ms(r.get(2)?)?,
        kind: r.get(3)?,
        user_id: user_id.as_deref().map(parse_uuid).transpose()?.map(UserId),
        ip: r.get(5)?,
        user_agent: r.get(6)?,
        request_id: r.get(7)?,
        detail: serde_json::from_str(&detail).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        })?,
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
        mac: r.get(11)?,
    })
}

fn read_head(conn: &Connection) -> Result<ChainHead, StoreError> {
    let (last_seq, last_hash, checkpoint_seq, checkpoint_hash): (i64, Vec<u8>, i64, Vec<u8>) = conn
        .query_row(
            "SELECT last_seq, last_hash, checkpoint_seq, checkpoint_hash FROM audit_chain WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(map_err)?;
    Ok(ChainHead {
        last_seq,
        last_hash: stored_digest(last_hash)?,
        checkpoint_seq,
        checkpoint_hash: stored_digest(checkpoint_hash)?,
    })
}

/// Appends inside the caller's IMMEDIATE transaction (which holds SQLite's
/// write lock, so no other process can extend the chain meanwhile).
fn append_in(tx: &Connection, sealer: &ChainSealer, e: &NewEvent) -> Result<(), StoreError> {
    let head = read_head(tx)?;
    let seq = head.last_seq + 1;
    let link = sealer.link(&head.last_hash, &e.chained(seq));
    tx.prepare_cached(
        "INSERT INTO security_events
             (seq, id, at, kind, user_id, ip, user_agent, request_id, detail, prev_hash, hash, mac)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut st| {
        st.execute(params![
            seq,
            e.id.to_string(),
            to_ms(e.at),
            e.kind,
            e.user_id.map(|u| u.0.to_string()),
            e.ip,
            e.user_agent,
            e.request_id,
            e.detail.to_string(),
            &link.prev_hash[..],
            &link.hash[..],
            link.mac.as_ref().map(|m| &m[..]),
        ])
    })
    .map_err(map_err)?;
    tx.execute(
        "UPDATE audit_chain SET last_seq = ?1, last_hash = ?2 WHERE id = 1",
        params![seq, &link.hash[..]],
    )
    .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let e = event.clone();
        let sealer = self.sealer.clone();
        self.write_op(Op::AppendEvent, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            append_in(&tx, &sealer, &e)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
        let f = filter.clone();
        self.read_op(Op::ListEvents, move |conn| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM security_events
                 WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR at >= ?3) AND (?4 IS NULL OR at < ?4)
                   AND (?5 IS NULL OR seq < ?5)
                 ORDER BY seq DESC LIMIT ?6"
            );
            let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
            let rows = st
                .query_map(
                    params![
                        f.user.map(|u| u.0.to_string()),
                        f.kind,
                        f.since.map(to_ms),
                        f.until.map(to_ms),
                        f.before_seq,
                        f.limit
                    ],
                    event_from_row,
                )
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn chain_events(&self, after_seq: i64, limit: u32) -> Result<Vec<Event>, StoreError> {
        self.read_op(Op::ChainEvents, move |conn| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM security_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            );
            let mut st = conn.prepare_cached(&sql).map_err(map_err)?;
            let rows = st
                .query_map(params![after_seq, limit], event_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn chain_head(&self) -> Result<ChainHead, StoreError> {
        self.read_op(Op::ChainHead, read_head).await
    }

    async fn prune_events(
        &self,
        cutoff: OffsetDateTime,
        record: &NewEvent,
    ) -> Result<Option<PruneOutcome>, StoreError> {
        let mut record = record.clone();
        let sealer = self.sealer.clone();
        self.write_op(Op::PruneEvents, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let head = read_head(&tx)?;
            let last_old: Option<(i64, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT seq, hash FROM security_events WHERE at < ?1 ORDER BY seq DESC LIMIT 1",
                    [to_ms(cutoff)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            let Some((through, hash)) = last_old else {
                return Ok(None);
            };
            let removed = tx
                .execute("DELETE FROM security_events WHERE seq <= ?1", [through])
                .map_err(map_err)? as u64;
            let (checkpoint_seq, checkpoint_hash) =
                head.checkpoint_after_prune(through, hash.map(stored_digest).transpose()?);
            tx.execute(
                "UPDATE audit_chain SET checkpoint_seq = ?1, checkpoint_hash = ?2 WHERE id = 1",
                params![checkpoint_seq, &checkpoint_hash[..]],
            )
            .map_err(map_err)?;
            record.detail = pruned_detail(checkpoint_seq, &checkpoint_hash, removed);
            append_in(&tx, &sealer, &record)?;
            tx.commit().map_err(map_err)?;
            Ok(Some(PruneOutcome {
                through_seq: checkpoint_seq,
                removed,
            }))
        })
        .await
    }
}

fn insert_codes(tx: &Connection, user: UserId, codes: &[BackupCodeHash]) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM backup_codes WHERE user_id = ?1",
        [user.0.to_string()],
    )
    .map_err(map_err)?;
    let mut st = tx
        .prepare_cached("INSERT INTO backup_codes (user_id, slot, code_hash) VALUES (?1, ?2, ?3)")
        .map_err(map_err)?;
    for c in codes {
        st.execute(params![user.0.to_string(), c.slot, c.code_hash])
            .map_err(map_err)?;
    }
    Ok(())
}

fn step_to_sql(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

#[async_trait]
impl MfaStore for SqliteStore {
    async fn put_pending_totp(
        &self,
        user: UserId,
        sealed: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let sealed = sealed.to_vec();
        self.write_op(Op::PutPendingTotp, move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO totp_credentials (user_id, sealed_secret, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                         created_at = excluded.created_at, last_used_step = NULL
                     WHERE totp_credentials.enabled_at IS NULL",
                    params![user.0.to_string(), sealed, to_ms(now)],
                )
                .map_err(map_err)?;
            if n == 0 { Err(StoreError::Conflict) } else { Ok(()) }
        })
        .await
    }

    async fn get_totp(&self, user: UserId) -> Result<Option<TotpRecord>, StoreError> {
        self.read_op(Op::GetTotp, move |conn| {
            conn.query_row(
                "SELECT sealed_secret, enabled_at, last_used_step FROM totp_credentials WHERE user_id = ?1",
                [user.0.to_string()],
                |r| {
                    let enabled: Option<i64> = r.get(1)?;
                    let step: Option<i64> = r.get(2)?;
                    Ok(TotpRecord {
                        sealed_secret: r.get(0)?,
                        enabled: enabled.is_some(),
                        last_used_step: step.and_then(|s| u64::try_from(s).ok()),
                    })
                },
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn activate_totp(
        &self,
        user: UserId,
        step: u64,
        codes: &[BackupCodeHash],
        session: Uuid,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let codes = codes.to_vec();
        self.write_op(Op::ActivateTotp, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let n = tx
                .execute(
                    "UPDATE totp_credentials SET enabled_at = ?1, last_used_step = ?2
                     WHERE user_id = ?3 AND enabled_at IS NULL",
                    params![to_ms(now), step_to_sql(step), user.0.to_string()],
                )
                .map_err(map_err)?;
            if n == 0 {
                return Ok(false);
            }
            tx.execute(
                "UPDATE users SET mfa_enabled = 1 WHERE id = ?1",
                [user.0.to_string()],
            )
            .map_err(map_err)?;
            insert_codes(&tx, user, &codes)?;
            tx.execute(
                "UPDATE sessions SET aal = 'aal2' WHERE id = ?1",
                [session.to_string()],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(true)
        })
        .await
    }

    async fn reseal_totp(&self, user: UserId, sealed: &[u8]) -> Result<(), StoreError> {
        let sealed = sealed.to_vec();
        self.write_op(Op::ResealTotp, move |conn| {
            conn.execute(
                "UPDATE totp_credentials SET sealed_secret = ?1 WHERE user_id = ?2",
                params![sealed, user.0.to_string()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn claim_totp_step(&self, user: UserId, step: u64) -> Result<bool, StoreError> {
        self.write_op(Op::ClaimTotpStep, move |conn| {
            let n = conn
                .execute(
                    "UPDATE totp_credentials SET last_used_step = ?1
                     WHERE user_id = ?2 AND enabled_at IS NOT NULL
                       AND (last_used_step IS NULL OR last_used_step < ?1)",
                    params![step_to_sql(step), user.0.to_string()],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn remove_mfa(&self, user: UserId) -> Result<bool, StoreError> {
        self.write_op(Op::RemoveMfa, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let id = user.0.to_string();
            let n = tx
                .execute("DELETE FROM totp_credentials WHERE user_id = ?1", [&id])
                .map_err(map_err)?;
            tx.execute("DELETE FROM backup_codes WHERE user_id = ?1", [&id])
                .map_err(map_err)?;
            tx.execute("UPDATE users SET mfa_enabled = 0 WHERE id = ?1", [&id])
                .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: &[BackupCodeHash],
    ) -> Result<(), StoreError> {
        let codes = codes.to_vec();
        self.write_op(Op::ReplaceBackupCodes, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            insert_codes(&tx, user, &codes)?;
            tx.commit().map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn unused_backup_code(
        &self,
        user: UserId,
        slot: u8,
    ) -> Result<Option<String>, StoreError> {
        self.read_op(Op::UnusedBackupCode, move |conn| {
            conn.query_row(
                "SELECT code_hash FROM backup_codes WHERE user_id = ?1 AND slot = ?2 AND used_at IS NULL",
                params![user.0.to_string(), slot],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn claim_backup_code(
        &self,
        user: UserId,
        slot: u8,
        code_hash: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let code_hash = code_hash.to_string();
        self.write_op(Op::ClaimBackupCode, move |conn| {
            let n = conn
                .execute(
                    "UPDATE backup_codes SET used_at = ?1
                     WHERE user_id = ?2 AND slot = ?3 AND code_hash = ?4 AND used_at IS NULL",
                    params![to_ms(now), user.0.to_string(), slot, code_hash],
                )
                .map_err(map_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn backup_code_counts(&self, user: UserId) -> Result<(u32, u32), StoreError> {
        self.read_op(Op::BackupCodeCounts, move |conn| {
            conn.query_row(
                "SELECT COUNT(*) FILTER (WHERE used_at IS NULL), COUNT(*) FROM backup_codes WHERE user_id = ?1",
                [user.0.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(map_err)
        })
        .await
    }

    async fn record_mfa_failure(&self, session: Uuid) -> Result<u32, StoreError> {
        self.write_op(Op::RecordMfaFailure, move |conn| {
            conn.query_row(
                "UPDATE sessions SET mfa_failures = mfa_failures + 1 WHERE id = ?1 RETURNING mfa_failures",
                [session.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map(|n| n.unwrap_or(u32::MAX))
            .map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn issue_token(
        &self,
        hash: &TokenHash,
        user: UserId,
        purpose: TokenPurpose,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let hash = *hash;
        self.write_op(Op::IssueToken, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
            tx.execute(
                "DELETE FROM account_tokens WHERE user_id = ?1 AND purpose = ?2 AND used_at IS NULL",
                params![user.0.to_string(), purpose.as_str()],
            )
            .map_err(map_err)?;
            tx.execute(
                "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash.0.as_slice(), user.0.to_string(), purpose.as_str(), to_ms(now), to_ms(expires_at)],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn claim_token(
        &self,
        hash: &TokenHash,
        purpose: TokenPurpose,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let hash = *hash;
        self.write_op(Op::ClaimToken, move |conn| {
            claim_token_in(conn, &hash, purpose, now)
        })
        .await
    }

    async fn reset_password(
        &self,
        hash: &TokenHash,
        phc: &str,
        now: OffsetDateTime,
    ) -> Result<Option<UserId>, StoreError> {
        let (hash, phc) = (*hash, phc.to_string());
        self.write_op(Op::ResetPassword, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
            let Some(user) = claim_token_in(&tx, &hash, TokenPurpose::PasswordReset, now)? else {
                return Ok(None);
            };
            let id = user.0.to_string();
            tx.execute(
                "UPDATE users SET password_hash = ?1, password_changed_at = ?2 WHERE id = ?3",
                params![phc, to_ms(now), id],
            )
            .map_err(map_err)?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [&id]).map_err(map_err)?;
            tx.execute(
                "DELETE FROM account_tokens WHERE user_id = ?1 AND purpose = 'password_reset' AND used_at IS NULL",
                [&id],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(Some(user))
        })
        .await
    }

    async fn change_password(
        &self,
        user: UserId,
        phc: &str,
        keep: Uuid,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let phc = phc.to_string();
        self.write_op(Op::ChangePassword, move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(map_err)?;
            let id = user.0.to_string();
            tx.execute(
                "UPDATE users SET password_hash = ?1, password_changed_at = ?2 WHERE id = ?3",
                params![phc, to_ms(now), id],
            )
            .map_err(map_err)?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1 AND id <> ?2", params![id, keep.to_string()])
                .map_err(map_err)?;
            tx.execute(
                "DELETE FROM account_tokens WHERE user_id = ?1 AND purpose = 'password_reset' AND used_at IS NULL",
                [&id],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn mark_email_verified(&self, user: UserId) -> Result<(), StoreError> {
        self.write_op(Op::MarkEmailVerified, move |conn| {
            conn.execute(
                "UPDATE users SET email_verified = 1 WHERE id = ?1",
                [user.0.to_string()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn purge_account_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write_op(Op::PurgeAccountTokens, move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM account_tokens WHERE expires_at < ?1",
                    [to_ms(now)],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }
}

fn claim_token_in(
    conn: &Connection,
    hash: &TokenHash,
    purpose: TokenPurpose,
    now: OffsetDateTime,
) -> Result<Option<UserId>, StoreError> {
    let owner: Option<String> = conn
        .query_row(
            "UPDATE account_tokens SET used_at = ?1
             WHERE token_hash = ?2 AND purpose = ?3 AND used_at IS NULL AND expires_at > ?1
             RETURNING user_id",
            params![to_ms(now), hash.0.as_slice(), purpose.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    owner
        .map(|o| parse_uuid(&o).map(UserId).map_err(map_err))
        .transpose()
}

fn json_keys(keys: &[String]) -> String {
    serde_json::to_string(keys).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl ThrottleStore for SqliteStore {
    async fn throttle_hit(
        &self,
        key: &str,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<(u64, OffsetDateTime), StoreError> {
        let key = key.to_string();
        self.write_op(Op::ThrottleHit, move |conn| {
            let (count, start): (i64, i64) = conn
                .prepare_cached(
                    "INSERT INTO throttles (key, count, window_start) VALUES (?1, 1, ?2)
                     ON CONFLICT (key) DO UPDATE SET
                         count = CASE WHEN throttles.window_start <= ?3 THEN 1 ELSE throttles.count + 1 END,
                         window_start = CASE WHEN throttles.window_start <= ?3 THEN ?2 ELSE throttles.window_start END
                     RETURNING count, window_start",
                )
                .and_then(|mut st| st.query_row(params![key, to_ms(now), to_ms(now - window)], |r| Ok((r.get(0)?, r.get(1)?))))
                .map_err(map_err)?;
            Ok((u64::try_from(count).unwrap_or(0), from_ms(start).map_err(map_err)?))
        })
        .await
    }

    async fn throttle_block(
        &self,
        key: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write_op(Op::ThrottleBlock, move |conn| {
            conn.execute(
                "INSERT INTO throttles (key, count, window_start, blocked_until) VALUES (?1, 0, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET blocked_until = max(coalesce(throttles.blocked_until, 0), ?3)",
                params![key, to_ms(now), to_ms(until)],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn throttle_blocked_until(
        &self,
        keys: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let keys = json_keys(keys);
        self.read_op(Op::ThrottleBlockedUntil, move |conn| {
            let until: Option<i64> = conn
                .prepare_cached(
                    "SELECT max(blocked_until) FROM throttles
                     WHERE key IN (SELECT value FROM json_each(?1)) AND blocked_until > ?2",
                )
                .and_then(|mut st| st.query_row(params![keys, to_ms(now)], |r| r.get(0)))
                .map_err(map_err)?;
            until.map(from_ms).transpose().map_err(map_err)
        })
        .await
    }

    async fn throttle_count(&self, key: &str) -> Result<u64, StoreError> {
        let key = key.to_string();
        self.read_op(Op::ThrottleCount, move |conn| {
            let n: Option<i64> = conn
                .query_row("SELECT count FROM throttles WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(map_err)?;
            Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
        })
        .await
    }

    async fn throttle_clear(&self, keys: &[String]) -> Result<(), StoreError> {
        let keys = json_keys(keys);
        self.write_op(Op::ThrottleClear, move |conn| {
            conn.execute(
                "DELETE FROM throttles WHERE key IN (SELECT value FROM json_each(?1))",
                [keys],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn purge_throttles(
        &self,
        prefix: &str,
        started_before: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let prefix = prefix.to_string();
        self.write_op(Op::PurgeThrottles, move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM throttles
                     WHERE substr(key, 1, length(?1)) = ?1 AND window_start < ?2
                       AND (blocked_until IS NULL OR blocked_until <= ?3)",
                    params![prefix, to_ms(started_before), to_ms(now)],
                )
                .map_err(map_err)?;
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read_op(Op::Ping, |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err)
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
