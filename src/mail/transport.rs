//! Transports: `.eml` files for development, SMTP with verified TLS.

use std::path::{Path, PathBuf};

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::{SmtpConfig, SmtpTls};

use super::*;

pub(super) enum Transport {
    File {
        dir: PathBuf,
    },
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// The transport could not be set up (reported at start-up); every
    /// message fails with this reason.
    Unavailable(String),
}

pub(super) fn smtp_transport(
    smtp: &SmtpConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = match smtp.tls {
        SmtpTls::StartTls => Tls::Required(smtp.tls_parameters()?),
        SmtpTls::Implicit => Tls::Wrapper(smtp.tls_parameters()?),
        SmtpTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .timeout(Some(SMTP_TIMEOUT))
        .tls(tls);
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_string(),
        ));
    }
    Ok(builder.build())
}

/// Writes `<id>.eml` into `dir` (mode 0700, created when missing) through a
/// temporary file and a rename.
pub(super) async fn write_eml(dir: PathBuf, id: Uuid, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_eml_blocking(&dir, id, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

pub(super) fn write_eml_blocking(dir: &Path, id: Uuid, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{id}.tmp"));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Rename so readers never see half a message.
    std::fs::rename(&tmp, dir.join(format!("{id}.eml")))
}
