//! Outgoing mail. The `file` transport (the development default) writes
//! each message as an RFC 5322 `.eml` file into the mail directory; tests
//! read tokens from those files. Addresses were validated by
//! [`crate::domain::Email`] (no CR/LF can reach a header), and subjects and
//! bodies come from fixed texts in this module.

use std::path::PathBuf;

use time::format_description::well_known::Rfc2822;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::Email;

/// Sends notifications. Failures are logged and never fail the request
/// that caused the mail.
#[derive(Debug, Clone)]
pub struct Mailer {
    dir: PathBuf,
    from: String,
}

/// The notifications castellan sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    TotpEnabled,
    TotpRemoved { by_admin: bool },
    BackupCodesRegenerated,
    BackupCodeUsed { remaining: u32 },
}

impl Notice {
    fn text(self) -> (&'static str, String) {
        let not_you =
            "If this was not you, reset your password at once and contact your administrator.";
        match self {
            Notice::TotpEnabled => (
                "Two-factor authentication was turned on",
                format!(
                    "An authenticator app was added to your account and 10 backup codes were issued.\n\n{not_you}"
                ),
            ),
            Notice::TotpRemoved { by_admin } => (
                "Two-factor authentication was turned off",
                format!(
                    "Two-factor authentication was removed from your account{}.\nYour backup codes no longer work.\n\n{not_you}",
                    if by_admin { " by an administrator" } else { "" }
                ),
            ),
            Notice::BackupCodesRegenerated => (
                "New backup codes were created",
                format!(
                    "New backup codes were created for your account; the earlier codes no longer work.\n\n{not_you}"
                ),
            ),
            Notice::BackupCodeUsed { remaining } => (
                "A backup code was used to sign in",
                format!(
                    "A backup code was used to sign in to your account. {remaining} unused codes remain; create new ones when few are left.\n\n{not_you}"
                ),
            ),
        }
    }
}

impl Mailer {
    pub fn new(config: &Config) -> Self {
        Self {
            dir: config.mail_dir.clone(),
            from: config.mail_from.clone(),
        }
    }

    /// Sends a notification to `to`.
    pub async fn notify(&self, to: &Email, notice: Notice) {
        let (subject, body) = notice.text();
        if let Err(e) = self.deliver(to, subject, &body).await {
            tracing::error!(error = %e, "mail delivery failed");
        }
    }

    async fn deliver(&self, to: &Email, subject: &str, body: &str) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        let date = time::OffsetDateTime::now_utc()
            .format(&Rfc2822)
            .unwrap_or_default();
        let id = Uuid::new_v4();
        let message = format!(
            "From: {}\r\nTo: <{}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@castellan>\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
            self.from,
            to.as_str(),
            body.replace('\n', "\r\n")
        );
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let tmp = dir.join(format!(".{id}.tmp"));
            std::fs::write(&tmp, message)?;
            // Rename so readers never see half a message.
            std::fs::rename(&tmp, dir.join(format!("{id}.eml")))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}
