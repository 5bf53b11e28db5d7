//! `castellan admin ...`: the admin API's actions for operators without
//! HTTP tooling. They run the same use cases, so each is recorded as an
//! `admin_action` event (user agent `castellan-cli/...`, address `local`).

use std::sync::Arc;

use anyhow::{Context, bail};

use crate::app;
use crate::audit::RequestMeta;
use crate::auth::Auth;
use crate::auth::admin::AdminAction;
use crate::cli::AdminCommand;
use crate::cli_output;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::domain::{Email, User, UserId};

pub async fn run(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    let auth = app::build_auth(config, Arc::new(SystemClock)).await?;
    let meta = RequestMeta {
        request_id: format!("cli:{}", uuid::Uuid::new_v4()),
        ip: "local".into(),
        user_agent: cli_output::USER_AGENT.into(),
    };
    let (action, user) = match command {
        AdminCommand::FindUser { email } => {
            let user = find(&auth, &email).await?;
            cli_output::admin_user(&user);
            return Ok(());
        }
        AdminCommand::RevokeAllSessions { yes } => {
            if !yes {
                bail!("this signs out every user; run again with --yes to confirm");
            }
            let n = auth.admin_revoke_all(&meta).await?;
            cli_output::admin_done(&format!("ended {n} sessions of all users"));
            return Ok(());
        }
        AdminCommand::Lock { user } => (AdminAction::Lock, user),
        AdminCommand::Unlock { user } => (AdminAction::Unlock, user),
        AdminCommand::RevokeSessions { user } => (AdminAction::RevokeUserSessions, user),
        AdminCommand::ResetMfa { user } => (AdminAction::ResetMfa, user),
    };
    let user = resolve(&auth, &user).await?;
    auth.admin_act(action, user.id, &meta).await?;
    // The MFA reset mails the user; deliver before the process ends.
    auth.mailer().flush().await;
    cli_output::admin_done(&format!("{}: done for user {}", action.name(), user.id.0));
    Ok(())
}

/// A user id, or an email address to look up.
async fn resolve(auth: &Auth, user: &str) -> anyhow::Result<User> {
    match uuid::Uuid::parse_str(user) {
        Ok(id) => auth
            .admin_get_user(UserId(id))
            .await?
            .context("no user with this id"),
        Err(_) => find(auth, user).await,
    }
}

async fn find(auth: &Auth, email: &str) -> anyhow::Result<User> {
    let email = Email::parse(email).map_err(|e| anyhow::anyhow!("email: {e}"))?;
    let found = auth.admin_find_user(&email).await?;
    found.context("no user with this email address")
}
