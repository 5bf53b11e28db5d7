//! Background jobs. Each is a public `run_once` (tests call it directly)
//! plus a thin loop that sleeps, calls it, logs failures and stops on the
//! shutdown signal.

pub mod audit_retention;
pub mod session_cleanup;
