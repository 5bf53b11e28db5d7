//! `sslrootcert` with libpq's meaning: only the configured CA is trusted.
//!
//! sqlx 0.9 with rustls adds the `sslrootcert` file to the compiled-in web
//! PKI roots and has no way to replace them (`import_root_certs` in
//! sqlx-core's `tls_rustls.rs`), so a publicly trusted certificate for the
//! database host would pass `verify-full`. castellan therefore checks the
//! server itself: before the pool opens and for every new pooled connection,
//! it makes its own TLS connection to the same host and port (PostgreSQL's
//! `SSLRequest`, then a rustls handshake whose root store holds only the
//! configured certificates) and refuses unless the server's chain ends at
//! one of them (and, with `verify-full`, names the host).
//!
//! What remains (docs/security.md, known gaps): the check and sqlx's own
//! connection are two TCP connections, so an attacker on the path who holds
//! a publicly trusted certificate for the host and tells the two apart
//! could let the check through to the real server and intercept the other.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server check for one database URL.
#[derive(Debug)]
pub struct ServerTrust {
    host: String,
    port: u16,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl ServerTrust {
    /// `None` when there is nothing to check: no `sslrootcert`, a mode that
    /// does not verify, or a Unix socket.
    pub fn from_options(url: &str, options: &PgConnectOptions) -> anyhow::Result<Option<Self>> {
        let mode = options.get_ssl_mode();
        let check_name = match mode {
            PgSslMode::VerifyFull => true,
            PgSslMode::VerifyCa => false,
            _ => return Ok(None),
        };
        let Some(path) = query_param(url, "sslrootcert") else {
            return Ok(None);
        };
        let host = options.get_host().to_string();
        if host.starts_with('/') {
            return Ok(None);
        }
        let pem =
            std::fs::read(&path).with_context(|| format!("cannot read sslrootcert {path}"))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| format!("sslrootcert {path} is not valid PEM"))?;
            roots
                .add(cert)
                .with_context(|| format!("sslrootcert {path} holds an unusable certificate"))?;
        }
        if roots.is_empty() {
            bail!("sslrootcert {path} holds no certificate");
        }
        Ok(Some(Self::new(
            host,
            options.get_port(),
            roots,
            check_name,
        )?))
    }

    /// A check against exactly `roots`.
    pub fn new(
        host: String,
        port: u16,
        roots: RootCertStore,
        check_name: bool,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("cannot build the certificate verifier")?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot build the TLS configuration")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(OnlyRoots {
                inner: verifier,
                check_name,
            }))
            .with_no_client_auth();
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name =
            ServerName::try_from(bare).context("the database host is not a valid TLS name")?;
        Ok(Self {
            host,
            port,
            name,
            config: Arc::new(config),
        })
    }

    /// Connects and completes a TLS handshake with only the configured roots.
    pub async fn check(&self, limit: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(limit, self.handshake())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the database server did not finish the TLS handshake in time")
            })?
    }

    async fn handshake(&self) -> anyhow::Result<()> {
        let addr = format!(
            "{}:{}",
            self.host.trim_start_matches('[').trim_end_matches(']'),
            self.port
        );
        let mut tcp = TcpStream::connect(&addr)
            .await
            .with_context(|| format!("cannot reach the database server at {addr}"))?;
        // SSLRequest: length 8, code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            bail!("the database server does not offer TLS");
        }
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let mut tls = connector.connect(self.name.clone(), tcp).await.map_err(|e| {
            anyhow::anyhow!(
                "the database server's certificate is not signed by a CA in sslrootcert (only those are trusted, as with libpq): {e}"
            )
        })?;
        let _ = tls.shutdown().await;
        Ok(())
    }
}

/// The raw value of one query parameter of the URL, percent-decoded.
fn query_param(url: &str, key: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// WebPKI verification against only the configured roots; for
/// `verify-ca` the host name is not checked (libpq's meaning).
#[derive(Debug)]
struct OnlyRoots {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for OnlyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
