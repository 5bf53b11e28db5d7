//! A read-only look at the configured database for `castellan doctor`:
//! which migrations are pending, whether the connection is encrypted, how
//! many connections the server allows, and what the runtime role may do.
//! Nothing here writes or migrates.

use std::path::Path;

use anyhow::Context;
use rusqlite::OptionalExtension;
use secrecy::SecretString;
use sqlx::{ConnectOptions, Connection};

use super::{Backend, StoreOptions};

/// What the database told us; `None` where the backend has no such notion.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub pending_migrations: Vec<String>,
    pub tls_in_use: Option<bool>,
    pub usable_connections: Option<u32>,
    pub role_is_superuser: Option<bool>,
    pub role_owns_tables: Option<bool>,
    pub password_encryption: Option<String>,
}

/// Looks at the configured database without changing it.
pub async fn inspect(options: &StoreOptions) -> anyhow::Result<Inspection> {
    match &options.backend {
        Backend::Sqlite { path } => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || inspect_sqlite(&path))
                .await
                .context("the SQLite inspection stopped")?
        }
        Backend::Postgres { url } => inspect_postgres(url).await,
    }
}

fn inspect_sqlite(path: &Path) -> anyhow::Result<Inspection> {
    let known = super::sqlite::MIGRATIONS
        .iter()
        .map(|(name, _)| name.to_string());
    if !path.exists() {
        return Ok(Inspection {
            pending_migrations: known.collect(),
            ..Inspection::default()
        });
    }
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", path.display()))?;
    let has_table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'castellan_migrations'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let mut applied = Vec::new();
    if has_table.is_some() {
        let mut st = conn.prepare("SELECT name FROM castellan_migrations")?;
        applied = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(Inspection {
        pending_migrations: known.filter(|m| !applied.contains(m)).collect(),
        ..Inspection::default()
    })
}

async fn inspect_postgres(url: &SecretString) -> anyhow::Result<Inspection> {
    let options = super::postgres::connect_options(url)?;
    let mut conn = options
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL: {e}"))?;
    let tls: Option<bool> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(&mut conn)
            .await?;
    let (limit, reserved): (String, String) = sqlx::query_as(
        "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections')",
    )
    .fetch_one(&mut conn)
    .await?;
    let usable = limit
        .parse::<u32>()
        .unwrap_or(0)
        .saturating_sub(reserved.parse::<u32>().unwrap_or(0));
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await?;
    let owns: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_tables
                        WHERE tablename IN ('users', 'sessions', 'security_events')
                          AND tableowner = current_user)",
    )
    .fetch_one(&mut conn)
    .await?;
    let encryption: String = sqlx::query_scalar("SELECT current_setting('password_encryption')")
        .fetch_one(&mut conn)
        .await?;
    let pending = pending_postgres_migrations(&mut conn).await?;
    conn.close().await.ok();
    Ok(Inspection {
        pending_migrations: pending,
        tls_in_use: tls,
        usable_connections: Some(usable),
        role_is_superuser: Some(superuser),
        role_owns_tables: Some(owns),
        password_encryption: Some(encryption),
    })
}

/// The migrations embedded in this binary that the PostgreSQL database has
/// not applied, as `NNNN_description`. Reading needs no privilege beyond
/// SELECT, so a role limited to data can check that the schema is current.
pub(crate) async fn pending_postgres_migrations(
    conn: &mut sqlx::PgConnection,
) -> anyhow::Result<Vec<String>> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    let applied: Vec<i64> = if has_table {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    Ok(sqlx::migrate!("./migrations/postgres")
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{:04}_{}", m.version, m.description.replace(' ', "_")))
        .collect())
}
