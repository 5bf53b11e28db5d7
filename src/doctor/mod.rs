//! `castellan doctor`: grades a deployment's hardening.
//!
//! Each check looks at the effective configuration and, where it needs one,
//! at what a live look at the database found ([`DatabaseFindings`]). A check
//! passes, warns or fails, says why it matters and names the setting that
//! fixes it. The score is the weighted share of the points: a pass earns a
//! check's weight, a warning half of it, a failure nothing; checks that do
//! not apply (PostgreSQL checks on SQLite) are left out.

mod database;
mod listeners;
mod operations;
mod secrets;

use serde::Serialize;

use crate::config::{Config, Profile};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One graded check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    /// What was found.
    pub summary: String,
    /// Why it matters.
    pub why: &'static str,
    /// The setting or action that fixes it (empty when it passes).
    pub fix: String,
    #[serde(skip)]
    pub weight: u32,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub score: u32,
    pub profile: &'static str,
    pub checks: Vec<Check>,
}

/// What a live look at the database found; `None` fields were not looked at
/// (SQLite has no roles or server settings).
#[derive(Debug, Clone, Default)]
pub struct DatabaseFindings {
    /// The connection failed: why.
    pub unreachable: Option<String>,
    /// TLS as reported by the server for this connection (`pg_stat_ssl`).
    pub tls_in_use: Option<bool>,
    /// Connections the server allows castellan: `max_connections` minus
    /// the superuser reserve.
    pub usable_connections: Option<u32>,
    /// Migrations embedded in this binary that the database has not applied.
    pub pending_migrations: Vec<String>,
    /// The runtime role is a superuser.
    pub role_is_superuser: Option<bool>,
    /// The runtime role owns castellan's tables (it could alter or drop them).
    pub role_owns_tables: Option<bool>,
    /// The server's `password_encryption`.
    pub password_encryption: Option<String>,
    /// `audit verify`'s verdict: `Ok` with the number of events, or the break.
    pub audit_chain: Option<Result<u64, String>>,
}

/// What doctor knows besides the configuration and the database.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The production profile was asked for but refused to load: the
    /// reasons. The other checks then grade the configuration as if it
    /// were allowed to run.
    pub production_refusals: Vec<String>,
    /// The process runs as root.
    pub running_as_root: bool,
    /// What a look at the served certificate found (native TLS only).
    pub certificate: Option<CertificateFindings>,
}

/// The certificate castellan serves with native TLS, as doctor read it.
#[derive(Debug, Clone)]
pub struct CertificateFindings {
    /// The public host it was checked for (from `public_base_url`).
    pub host: String,
    /// The leaf's public key, e.g. `RSA 2048 bits`; `Err` when unreadable.
    pub key: Result<String, String>,
    /// The key gives at least 128 bits of security (RSA >= 3072 bits,
    /// ECDSA on P-256/P-384/P-521, Ed25519 or Ed448).
    pub key_strong: bool,
    /// Verification of the chain against the public web PKI roots for
    /// `host`: `Err` with the reason.
    pub publicly_trusted: Result<(), String>,
}

/// The checks graded so far, and how much a weakness counts.
struct Grader {
    checks: Vec<Check>,
    production: bool,
    /// In production a weakness fails; in dev it only warns.
    weak: Status,
}

impl Grader {
    fn add(
        &mut self,
        id: &'static str,
        weight: u32,
        status: Status,
        summary: String,
        why: &'static str,
        fix: &str,
    ) {
        self.checks.push(Check {
            id,
            status,
            summary,
            why,
            fix: if status == Status::Pass {
                String::new()
            } else {
                fix.to_string()
            },
            weight,
        })
    }
}

/// Grades `config` (and what was found in the database).
pub fn examine(config: &Config, db: &DatabaseFindings, context: &Context) -> Report {
    let production =
        config.profile == Profile::Production || !context.production_refusals.is_empty();
    let mut g = Grader {
        checks: Vec::new(),
        production,
        weak: if production {
            Status::Fail
        } else {
            Status::Warn
        },
    };

    if !context.production_refusals.is_empty() {
        g.add(
            "production_profile",
            5,
            Status::Fail,
            format!(
                "the production profile refuses to start: {}",
                context.production_refusals.join("; ")
            ),
            "castellan refuses insecure settings in production rather than run with them",
            "fix each setting named above (docs/configuration.md)",
        );
    }

    database::grade(config, db, &mut g);
    secrets::grade(config, &mut g);
    listeners::grade(config, context, &mut g);
    operations::grade(config, context, &mut g);

    let checks = g.checks;
    let total: u32 = checks.iter().map(|c| c.weight * 2).sum();
    let earned: u32 = checks
        .iter()
        .map(|c| match c.status {
            Status::Pass => c.weight * 2,
            Status::Warn => c.weight,
            Status::Fail => 0,
        })
        .sum();
    let score = (earned * 100 + total / 2).checked_div(total).unwrap_or(0);
    Report {
        score,
        profile: if production { "production" } else { "dev" },
        checks,
    }
}
