//! castellan: a self-hosted authentication and session service.
//!
//! Map of the crate (see docs/architecture.md for the reasoning):
//! - [`cli`], [`cli_output`]: the command line and the only code that prints.
//! - [`commands`]: one function per subcommand (`serve`, `migrate`).
//! - [`config`]: every setting, loaded once (defaults, TOML, environment) and validated.
//! - [`app`]: wires storage, hashing and HTTP together and runs the listeners.
//! - [`telemetry`]: structured logging through `tracing`.
//! - [`clock`]: time as an input, so expiry can be tested without sleeping.
//! - [`crypto`]: the OS random generator, derived keys, token hashing, CSRF tokens.
//! - [`domain`]: types with invariants and no I/O (email, password, token, session).
//! - [`auth`]: use cases (registration, login, the session check) and the hashing pool.
//! - [`store`]: role traits and their SQLite and PostgreSQL implementations; all SQL.
//! - [`audit`]: security events written to the database and the log, and
//!   the verification, export and pruning of their hash chain.
//! - [`metrics`]: Prometheus metric names and the recorder.
//! - [`mail`]: notification mail (the `file` transport writes `.eml` files).
//! - [`http`]: routes, extractors, the error mapping and security headers;
//!   the JSON API, forward auth and the hosted HTML pages (`templates/`).
//! - [`jobs`]: background work (deleting ended sessions, audit retention).
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
pub mod domain;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod store;
pub mod telemetry;
