//! The command line (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// castellan: a self-hosted authentication and session service.
///
/// Configuration comes from defaults, then a TOML file (--config, or
/// ./castellan.toml if present), then CASTELLAN_* environment variables.
/// See docs/configuration.md.
#[derive(Debug, Parser)]
#[command(name = "castellan", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file (default: ./castellan.toml if it exists)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (applies pending migrations first)
    Serve,
    /// Apply pending database migrations and exit
    Migrate,
    /// Verify, export or prune the tamper-evident audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Grade this deployment's hardening (configuration, database, audit
    /// chain): pass/warn/fail per check with the setting that fixes it, and
    /// a score out of 100; exits 1 below --min-score (default: the
    /// doctor_min_score setting)
    Doctor(DoctorArgs),
    /// Operator actions on accounts and sessions, straight on the database
    /// (the same actions as the admin API, recorded the same way)
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Ask the local service's /health/live (the `listen` setting); exit 0
    /// when it answers 200, 1 otherwise (for container health checks)
    Health,
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Exit 1 when the score is below this (0 to 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub min_score: Option<u32>,
    /// Print the report as JSON (for automation) instead of text
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub format: String,
}

impl DoctorArgs {
    /// Whether the report is wanted as JSON.
    pub fn json(&self) -> bool {
        self.format == "json"
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; exit 1 and name the first altered, removed or
    /// inserted event if it is broken. With CASTELLAN_AUDIT_KEY set, HMACs
    /// are checked too.
    Verify,
    /// Write events as JSON lines (one object per event, chain order) to
    /// stdout, with their hashes, for shipping elsewhere
    Export {
        /// Only events after this sequence number (for incremental shipping)
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after_seq: i64,
    },
    /// Delete events older than the retention now (the service also does
    /// this hourly), keeping the rest verifiable
    Prune {
        /// Age to keep, e.g. 90d (default: the audit_retention setting)
        #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show the account with this email address
    FindUser {
        #[arg(value_name = "EMAIL")]
        email: String,
    },
    /// Lock an account and end all its sessions
    Lock {
        /// User id or email address
        #[arg(value_name = "USER")]
        user: String,
    },
    /// Unlock an account
    Unlock {
        /// User id or email address
        #[arg(value_name = "USER")]
        user: String,
    },
    /// End all sessions of one account
    RevokeSessions {
        /// User id or email address
        #[arg(value_name = "USER")]
        user: String,
    },
    /// Remove an account's TOTP and backup codes (after checking the
    /// person's identity, see docs/operations.md), end its sessions, mail it
    ResetMfa {
        /// User id or email address
        #[arg(value_name = "USER")]
        user: String,
    },
    /// End every session of every user (incident response)
    RevokeAllSessions {
        /// Required: confirms that everyone is signed out
        #[arg(long)]
        yes: bool,
    },
}
