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
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cli::DoctorArgs;
use crate::cli_output;
use crate::config::{Config, ConfigError};
use crate::doctor::{CertificateFindings, Context, DatabaseFindings, examine};
use crate::{app, audit, store};

/// Loads the configuration for doctor: as `serve` would, or, when only the
/// production rules refuse it, as the dev profile with those refusals kept.
pub fn load(
    file: Option<(&Path, bool)>,
    env: &BTreeMap<String, String>,
) -> Result<(Config, Context), ConfigError> {
    let mut context = Context {
        running_as_root: super::running_as_root(),
        ..Context::default()
    };
    match Config::load(file, env) {
        Ok(config) => {
            context.certificate = look_at_the_certificate(&config);
            Ok((config, context))
        }
        Err(refused) => {
            let mut as_dev = env.clone();
            as_dev.insert("CASTELLAN_PROFILE".into(), "dev".into());
            let config = Config::load(file, &as_dev).map_err(|_| refused.clone())?;
            context.production_refusals = refused.0.iter().map(ToString::to_string).collect();
            context.certificate = look_at_the_certificate(&config);
            Ok((config, context))
        }
    }
}

/// Reads the certificate native TLS serves: its key, and whether the
/// public web PKI (the roots browsers ship) trusts it for the public host.
fn look_at_the_certificate(config: &Config) -> Option<CertificateFindings> {
    let files = config.net.tls.as_ref()?;
    let host = url::Url::parse(&config.public_base_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_default();
    let chain: Result<Vec<CertificateDer<'static>>, String> =
        CertificateDer::pem_file_iter(&files.cert_file)
            .and_then(Iterator::collect)
            .map_err(|e| e.to_string());
    let chain = match chain {
        Ok(chain) if !chain.is_empty() => chain,
        Ok(_) => return Some(unreadable(host, "no certificate in the file".into())),
        Err(e) => return Some(unreadable(host, e)),
    };
    let (key, key_strong) = match leaf_key(&chain[0]) {
        Ok((key, strong)) => (Ok(key), strong),
        Err(e) => (Err(e), false),
    };
    Some(CertificateFindings {
        publicly_trusted: publicly_trusted(&chain, &host),
        host,
        key,
        key_strong,
    })
}

fn unreadable(host: String, why: String) -> CertificateFindings {
    CertificateFindings {
        host,
        key: Err(why.clone()),
        key_strong: false,
        publicly_trusted: Err(why),
    }
}

/// The leaf's key and whether it gives at least 128-bit security.
fn leaf_key(leaf: &CertificateDer<'_>) -> Result<(String, bool), String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    use x509_parser::public_key::PublicKey;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| e.to_string())?;
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    Ok(match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            (format!("RSA {bits} bits"), bits >= 3072)
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => ("ECDSA P-256".into(), true),
                "1.3.132.0.34" => ("ECDSA P-384".into(), true),
                "1.3.132.0.35" => ("ECDSA P-521".into(), true),
                other => (format!("ECDSA on curve {other}"), false),
            }
        }
        _ => match algorithm.as_str() {
            "1.3.101.112" => ("Ed25519".into(), true),
            "1.3.101.113" => ("Ed448".into(), true),
            other => (format!("algorithm {other}"), false),
        },
    })
}

/// Verifies `chain` for `host` against the roots browsers trust.
fn publicly_trusted(chain: &[CertificateDer<'static>], host: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier;
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
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
