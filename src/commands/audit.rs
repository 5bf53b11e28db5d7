//! `castellan audit verify|export|prune`: the audit chain from the command
//! line, straight on the database the configuration names.

use anyhow::{Context, bail};

use crate::app;
use crate::audit::{RequestMeta, chain};
use crate::cli::AuditCommand;
use crate::cli_output;
use crate::config::{Config, format_duration};
use crate::store;

pub async fn run(config: Config, command: AuditCommand) -> anyhow::Result<()> {
    let db = store::open(&app::store_options(&config)).await?;
    match command {
        AuditCommand::Verify => {
            let sealer = app::audit_sealer(&config);
            let report = chain::verify(&*db, sealer).await?;
            match report {
                Ok(report) => cli_output::audit_verified(&report),
                Err(broken) => {
                    tracing::error!(seq = broken.seq(), problem = %broken, "audit chain broken");
                    bail!("audit chain broken: {broken}");
                }
            }
        }
        AuditCommand::Export { after_seq } => {
            let mut out = cli_output::stdout();
            let n = chain::export(&*db, after_seq, &mut out).await?;
            tracing::info!(events = n, after_seq, "audit events exported");
        }
        AuditCommand::Prune { older_than } => {
            let retention = older_than
                .or(config.audit_retention)
                .context("audit_retention is `forever`; pass --older-than to prune anyway")?;
            let meta = RequestMeta {
                request_id: format!("cli:{}", uuid::Uuid::new_v4()),
                ip: "local".into(),
                user_agent: cli_output::USER_AGENT.into(),
            };
            let now = time::OffsetDateTime::now_utc();
            let outcome = chain::prune(&*db, now, retention, &meta).await?;
            cli_output::audit_pruned(outcome.as_ref(), &format_duration(retention));
        }
    }
    Ok(())
}
