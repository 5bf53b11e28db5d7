//! A minimal session check on PostgreSQL: SHA-256 of the bearer token, one
//! indexed lookup (joined to the user) through an sqlx pool, JSON reply.
//!
//! BENCH_DB (URL), BENCH_POOL (connections), BENCH_SEED (sessions; 0 = keep),
//! BENCH_TOKENS (output).
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, extract::State, routing::get};
use castellan_bench_targets::{bearer, env_or, token, token_hash, write_tokens};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

async fn seed(pool: &PgPool, n: u64) {
    for stmt in [
        "DROP TABLE IF EXISTS m_sessions",
        "DROP TABLE IF EXISTS m_users",
        "CREATE TABLE m_users (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE)",
        "CREATE TABLE m_sessions (token_hash BYTEA PRIMARY KEY, user_id BIGINT NOT NULL REFERENCES m_users(id), expires_at BIGINT NOT NULL)",
    ] {
        sqlx::query(stmt).execute(pool).await.expect("schema");
    }
    let chunk = 10_000u64;
    let mut start = 0;
    while start < n {
        let end = (start + chunk).min(n);
        let ids: Vec<i64> = (start..end).map(|i| i as i64).collect();
        let emails: Vec<String> = (start..end)
            .map(|i| format!("bench{i}@example.com"))
            .collect();
        let hashes: Vec<Vec<u8>> = (start..end).map(|i| token_hash(&token(i))).collect();
        sqlx::query(
            "INSERT INTO m_users (id, email) SELECT * FROM UNNEST($1::bigint[], $2::text[])",
        )
        .bind(&ids)
        .bind(&emails)
        .execute(pool)
        .await
        .expect("users");
        sqlx::query(
            "INSERT INTO m_sessions (token_hash, user_id, expires_at) SELECT h, u, 9223372036854775807 FROM UNNEST($1::bytea[], $2::bigint[]) AS t(h, u)",
        )
        .bind(&hashes)
        .bind(&ids)
        .execute(pool)
        .await
        .expect("sessions");
        start = end;
    }
    sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
}

async fn check(State(pool): State<PgPool>, headers: HeaderMap) -> Response {
    let Some(t) = bearer(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let row: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT u.id, u.email, s.expires_at FROM m_sessions s JOIN m_users u ON u.id = s.user_id WHERE s.token_hash = $1",
    )
    .bind(token_hash(t))
    .fetch_optional(&pool)
    .await
    .expect("query");
    match row {
        Some((id, email, exp)) => {
            Json(serde_json::json!({"user": {"id": id, "email": email}, "expires_at": exp}))
                .into_response()
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[tokio::main]
async fn main() {
    let url = env_or("BENCH_DB", "postgres://localhost/postgres");
    let size: u32 = env_or("BENCH_POOL", "5").parse().expect("BENCH_POOL");
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .connect(&url)
        .await
        .expect("connect");
    let n: u64 = env_or("BENCH_SEED", "0").parse().expect("BENCH_SEED");
    if n > 0 {
        seed(&pool, n).await;
        write_tokens(&env_or("BENCH_TOKENS", "/tmp/bench-minimal.tokens"), n).expect("tokens");
    }
    let app = Router::new()
        .route("/v1/session", get(check))
        .with_state(pool);
    let listener = castellan_bench_targets::listen().await;
    axum::serve(listener, app).await.expect("serve");
}
