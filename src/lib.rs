//! castellan: a self-hosted authentication and session service.
//!
//! Map of the crate (see docs/architecture.md for the file map and the
//! layer rules that `tests/it/layers.rs` checks):
//! - [`cli`], [`cli_output`]: the command line and the only code that prints.
//! - [`commands`]: one function per subcommand (`serve`, `migrate`, `admin`, `audit`, `health`).
//! - [`config`]: every setting, loaded once (defaults, TOML, environment) and validated.
//! - [`app`]: wires storage, hashing, mail and HTTP together and runs the listeners.
//! - [`telemetry`]: structured logging through `tracing`.
//! - [`clock`]: time as an input, so expiry can be tested without sleeping.
//! - [`crypto`]: the OS random generator, derived keys, token hashing, CSRF tokens.
//! - [`domain`]: types with invariants and no I/O (email, password, token, session).
//! - [`auth`]: the use cases, the only door to storage, and the hashing pool.
//! - [`store`]: role traits and their SQLite and PostgreSQL implementations; all SQL.
//! - [`audit`]: security events written to the database and the log, and
//!   the verification, export and pruning of their hash chain.
//! - [`metrics`]: Prometheus metric names and the recorder.
//! - [`mail`]: notification mail: content, transports, the delivery queue.
//! - [`http`]: routes, extractors, the error mapping and security headers;
//!   the JSON API, forward auth and the hosted HTML pages (`templates/`).
//! - [`net`]: the accept loop (connection cap, timeouts) and native TLS.
//! - [`jobs`]: background work (ended sessions, expired state, audit retention).
//! - [`doctor`]: the hardening checks and score of `castellan doctor`.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod cli_output;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod doctor;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod store;
pub mod telemetry;
