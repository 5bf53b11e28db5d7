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
use std::time::Duration;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Credentials, Event, EventStore, NewEvent, NewSession, NewUser, SessionStore, Store, StoreError,
    UserStore,
};
use crate::crypto::TokenHash;
use crate::domain::{Aal, Email, Session, User, UserId};

/// Embedded migrations; the file names match `migrations/postgres/`.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_init.sql",
    include_str!("../../migrations/sqlite/0001_init.sql"),
)];

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
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path)).await?
    }

    fn open_blocking(path: &Path) -> anyhow::Result<Self> {
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
        writer
            .pragma_update(None, "journal_mode", "WAL")
            .context("cannot switch SQLite to WAL mode")?;
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
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let n = inner.readers.len();
            let start = inner.next_reader.fetch_add(1, Ordering::Relaxed);
            // Take the first idle reader, else wait for the round-robin pick.
            for i in 0..n {
                if let Ok(conn) = inner.readers[(start + i) % n].try_lock() {
                    return f(&conn);
                }
            }
            let conn = inner.readers[start % n]
                .lock()
                .map_err(|_| StoreError::Unexpected(anyhow!("sqlite reader mutex poisoned")))?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unexpected(anyhow!("sqlite task failed: {e}")))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| StoreError::Unexpected(anyhow!("sqlite writer mutex poisoned")))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unexpected(anyhow!("sqlite task failed: {e}")))?
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
        self.write(move |conn| {
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
        self.read(move |conn| {
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
        self.read(move |conn| {
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
        self.write(move |conn| {
            conn.execute(
                "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                params![phc, id.0.to_string()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn record_login(&self, id: UserId, at: OffsetDateTime) -> Result<(), StoreError> {
        self.write(move |conn| {
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
        self.write(move |conn| {
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
        self.read(move |conn| {
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
        self.write(move |conn| {
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
        self.write(move |conn| {
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
        self.write(move |conn| {
            let n = conn
                .execute("DELETE FROM sessions WHERE id = ?1", [id.to_string()])
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_sessions(&self, user: UserId) -> Result<Vec<Session>, StoreError> {
        self.read(move |conn| {
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
        self.write(move |conn| {
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
        self.write(|conn| {
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
        self.write(move |conn| {
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

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        let e = event.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO security_events (id, at, kind, user_id, ip, user_agent, request_id, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    e.id.to_string(),
                    to_ms(e.at),
                    e.kind,
                    e.user_id.map(|u| u.0.to_string()),
                    e.ip,
                    e.user_agent,
                    e.request_id,
                    e.detail.to_string()
                ])
            })
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_events(
        &self,
        user: Option<UserId>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT id, at, kind, user_id, ip, user_agent, request_id, detail
                     FROM security_events WHERE (?1 IS NULL OR user_id = ?1)
                     ORDER BY seq DESC LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![user.map(|u| u.0.to_string()), limit], |r| {
                    let user_id: Option<String> = r.get(3)?;
                    let detail: String = r.get(7)?;
                    Ok(Event {
                        id: parse_uuid(&r.get::<_, String>(0)?)?,
                        at: from_ms(r.get(1)?)?,
                        kind: r.get(2)?,
                        user_id: user_id.as_deref().map(parse_uuid).transpose()?.map(UserId),
                        ip: r.get(4)?,
                        user_agent: r.get(5)?,
                        request_id: r.get(6)?,
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
