//! A minimal session check on SQLite: SHA-256 of the bearer token, one
//! indexed lookup (joined to the user) through rusqlite on tokio's blocking
//! threads, one connection per thread, JSON reply.
//!
//! BENCH_DB (file), BENCH_SEED (sessions; 0 = keep the file), BENCH_TOKENS (output).
use std::cell::RefCell;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, extract::State, routing::get};
use castellan_bench_targets::{bearer, env_or, token, token_hash, write_tokens};
use rusqlite::{Connection, OptionalExtension, params};

thread_local! {
    static CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

fn open(path: &str) -> Connection {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;",
    )
    .expect("pragmas");
    c
}

fn seed(path: &str, n: u64) {
    let _ = std::fs::remove_file(path);
    let mut c = open(path);
    c.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);
         CREATE TABLE sessions (token_hash BLOB PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
                                expires_at INTEGER NOT NULL) WITHOUT ROWID;",
    )
    .expect("schema");
    let tx = c.transaction().expect("tx");
    {
        let mut u = tx
            .prepare("INSERT INTO users (id, email) VALUES (?1, ?2)")
            .expect("prep");
        let mut s = tx
            .prepare("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (?1, ?2, ?3)")
            .expect("prep");
        for i in 0..n {
            let id = i as i64;
            u.execute(params![id, format!("bench{i}@example.com")])
                .expect("user");
            s.execute(params![token_hash(&token(i)), id, i64::MAX])
                .expect("session");
        }
    }
    tx.commit().expect("commit");
}

async fn check(State(path): State<&'static str>, headers: HeaderMap) -> Response {
    let Some(t) = bearer(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let hash = token_hash(t);
    let found = tokio::task::spawn_blocking(move || {
        CONN.with(|cell| {
            let mut slot = cell.borrow_mut();
            let c = slot.get_or_insert_with(|| open(path));
            c.prepare_cached(
                "SELECT u.id, u.email, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = ?1",
            )
            .expect("prepare")
            .query_row([hash], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
            .optional()
            .expect("query")
        })
    })
    .await
    .expect("join");
    match found {
        Some((id, email, exp)) => {
            Json(serde_json::json!({"user": {"id": id, "email": email}, "expires_at": exp}))
                .into_response()
        }
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[tokio::main]
async fn main() {
    let path: &'static str =
        Box::leak(env_or("BENCH_DB", "/tmp/bench-minimal.db").into_boxed_str());
    let n: u64 = env_or("BENCH_SEED", "0").parse().expect("BENCH_SEED");
    if n > 0 {
        seed(path, n);
        write_tokens(&env_or("BENCH_TOKENS", "/tmp/bench-minimal.tokens"), n).expect("tokens");
    }
    let app = Router::new()
        .route("/v1/session", get(check))
        .with_state(path);
    let listener = castellan_bench_targets::listen().await;
    axum::serve(listener, app).await.expect("serve");
}
