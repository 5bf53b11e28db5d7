//! `castellan doctor`: the hardening report of this deployment.
//!
//! Loads the configuration the way `serve` would; a production
//! configuration that `serve` would refuse is graded anyway (its refusals
//! become a failed check), so the report can name every fix at once. Then
//! it looks at the database read-only, verifies the audit chain when the
//! schema is current, prints the report and fails below the minimum score.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;

use crate::cli::DoctorArgs;
use crate::cli_output;
use crate::config::{Config, ConfigError};
use crate::doctor::{Context, DatabaseFindings, examine};
use crate::{app, audit, store};

/// Loads the configuration for doctor: as `serve` would, or, when only the
/// production rules refuse it, as the dev profile with those refusals kept.
pub fn load(
    file: Option<(&Path, bool)>,
    env: &BTreeMap<String, String>,
) -> Result<(Config, Context), ConfigError> {
    let mut context = Context {
        running_as_root: running_as_root(),
        ..Context::default()
    };
    match Config::load(file, env) {
        Ok(config) => Ok((config, context)),
        Err(refused) => {
            let mut as_dev = env.clone();
            as_dev.insert("CASTELLAN_PROFILE".into(), "dev".into());
            let config = Config::load(file, &as_dev).map_err(|_| refused.clone())?;
            context.production_refusals = refused.0.iter().map(ToString::to_string).collect();
            Ok((config, context))
        }
    }
}

pub async fn run(config: Config, context: Context, args: DoctorArgs) -> anyhow::Result<()> {
    let findings = look_at_the_database(&config).await;
    let report = examine(&config, &findings, &context);
    cli_output::doctor_report(&report, args.json())?;
    let minimum = args.min_score.unwrap_or(config.doctor_min_score);
    if report.score < minimum {
        bail!(
            "hardening score {} is below the minimum {minimum}",
            report.score
        );
    }
    Ok(())
}

async fn look_at_the_database(config: &Config) -> DatabaseFindings {
    let inspection = match store::diagnostics::inspect(&app::store_options(config)).await {
        Ok(i) => i,
        Err(e) => {
            return DatabaseFindings {
                unreachable: Some(format!("{e:#}")),
                ..DatabaseFindings::default()
            };
        }
    };
    let audit_chain = if inspection.pending_migrations.is_empty() {
        Some(verify_chain(config).await)
    } else {
        None
    };
    DatabaseFindings {
        unreachable: None,
        tls_in_use: inspection.tls_in_use,
        usable_connections: inspection.usable_connections,
        pending_migrations: inspection.pending_migrations,
        role_is_superuser: inspection.role_is_superuser,
        role_owns_tables: inspection.role_owns_tables,
        password_encryption: inspection.password_encryption,
        audit_chain,
    }
}

/// `audit verify` on the configured database (its schema is current, so
/// opening the store migrates nothing).
async fn verify_chain(config: &Config) -> Result<u64, String> {
    let db = store::open(&app::store_options(config))
        .await
        .map_err(|e| format!("{e:#}"))?;
    match audit::chain::verify(&*db, app::audit_sealer(config)).await {
        Ok(Ok(report)) => Ok(report.events),
        Ok(Err(broken)) => Err(broken.to_string()),
        Err(e) => Err(format!("cannot read the chain: {e}")),
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
