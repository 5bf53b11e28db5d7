//! Native TLS: rustls with the ring provider, TLS 1.2 and 1.3 only,
//! forward-secret AEAD suites only, ALPN `h2` and `http/1.1`, and a
//! certificate that can be replaced while connections stay open.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::{CryptoProvider, ring};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// Accepts TLS connections with the current certificate.
#[derive(Clone)]
pub struct Acceptor {
    inner: TlsAcceptor,
}

impl Acceptor {
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.inner.accept(stream).await
    }
}

/// The suites castellan offers: every one has ephemeral (EC)DHE key
/// exchange and an AEAD cipher. TLS 1.3 suites come first, so a client
/// that can speak 1.3 gets it.
fn provider() -> CryptoProvider {
    let suites = vec![
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ring::cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    }
}

/// The certificate in use, swapped whole on reload.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
    files: TlsFiles,
    /// Modification times and sizes of the files when last loaded.
    stamp: RwLock<Option<Stamp>>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

impl Certificates {
    /// Loads the files; start-up fails when they are unusable.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Arc<Self>> {
        let stamp = stamp(files);
        let key = certified_key(files)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(key)),
            files: files.clone(),
            stamp: RwLock::new(stamp),
        }))
    }

    /// Reads the files again; on any problem the current certificate stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let stamp = stamp(&self.files);
        let key = certified_key(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        if let Ok(mut s) = self.stamp.write() {
            *s = stamp;
        }
        Ok(())
    }

    fn changed(&self) -> bool {
        let now = stamp(&self.files);
        self.stamp.read().map(|s| *s != now).unwrap_or(true)
    }

    /// A TLS acceptor that always serves the current certificate.
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<Acceptor> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("cannot build the TLS configuration")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        Ok(Acceptor {
            inner: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reloads when the files change (checked every `interval`) or on
    /// SIGHUP, until `stop`. Open connections keep the certificate they
    /// started with; new handshakes get the new one.
    pub fn watch(
        self: Arc<Self>,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut hangup = hangup_signal();
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    () = async { let _ = stop.wait_for(|s| *s).await; } => return,
                    _ = tick.tick() => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                if !forced && !self.changed() {
                    continue;
                }
                match self.reload() {
                    Ok(()) => {
                        tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "TLS certificate reload failed; keeping the current one")
                    }
                }
            }
        }
    }
}

/// SIGHUP, registered when the watcher is created (not when it first
/// runs), so a signal right after start-up is never the default "exit".
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate reload only by file change");
            None
        }
    }
}

fn stamp(files: &TlsFiles) -> Option<Stamp> {
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    Some([one(&files.cert_file)?, one(&files.key_file)?])
}

fn certified_key(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let cert_path = files.cert_file.display();
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .with_context(|| format!("cannot read CASTELLAN_TLS_CERT_FILE {cert_path}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("CASTELLAN_TLS_CERT_FILE {cert_path} is not valid PEM"))?;
    if certs.is_empty() {
        anyhow::bail!("CASTELLAN_TLS_CERT_FILE {cert_path} holds no CERTIFICATE block");
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).with_context(|| {
        format!(
            "CASTELLAN_TLS_KEY_FILE {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM)",
            files.key_file.display()
        )
    })?;
    let signer = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .context("CASTELLAN_TLS_KEY_FILE: unsupported private key type")?;
    let certified = CertifiedKey::new(certs, signer);
    certified
        .keys_match()
        .context("CASTELLAN_TLS_KEY_FILE does not belong to the first certificate of CASTELLAN_TLS_CERT_FILE")?;
    Ok(certified)
}
