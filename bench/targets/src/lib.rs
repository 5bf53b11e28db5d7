//! Shared bits of the comparison targets: settings from the environment,
//! seeded tokens and the bearer token's SHA-256.

use sha2::{Digest, Sha256};

/// `NAME` from the environment, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Token `i` of the seed (not secret: the benchmark only needs distinct values).
pub fn token(i: u64) -> String {
    format!("tok_{}", hex::encode(Sha256::digest(format!("bench-{i}"))))
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The bearer token of an `Authorization` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Writes every seeded token, one a line, for wrk's session.lua.
pub fn write_tokens(path: &str, n: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n {
        writeln!(out, "{}", token(i))?;
    }
    out.flush()
}

pub async fn listen() -> tokio::net::TcpListener {
    let addr = env_or("BENCH_LISTEN", "127.0.0.1:0");
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("addr"));
    listener
}
