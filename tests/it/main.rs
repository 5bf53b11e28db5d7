//! castellan's integration tests: one binary, one module per area.
//!
//! Tests that touch storage run on SQLite and on a real PostgreSQL (the
//! cluster started by `scripts/test.sh`, found through
//! `CASTELLAN_TEST_PG_URL`); each test gets its own fresh database.

// Test code may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod pg_cluster;

mod accounts;
mod admin;
mod atomic_writes;
mod audit;
mod audit_order;
mod black_box;
mod db_faults;
mod docs;
mod doctor;
mod forward_auth;
mod guessing_limits;
mod hostile;
mod http_conventions;
mod layers;
mod lifecycle;
mod listener;
mod mail_smtp;
mod mfa;
mod passkeys;
mod pg_tls;
mod pg_trust;
mod production;
mod properties;
mod request_bounds;
mod security_docs;
mod session_security;
mod sessions;
mod store_contract;
mod tls;
