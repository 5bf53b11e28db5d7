//! Checks of the listeners: TLS, the served certificate, secure cookies,
//! the admin listener.

use super::{CertificateFindings, Context, Grader, Status};
use crate::config::Config;

/// Grades how castellan is reached.
pub(super) fn grade(config: &Config, context: &Context, g: &mut Grader) {
    let proxies_named = config.proxies.behind_tls && !config.proxies.trusted.is_empty();
    let native = config.net.tls.as_ref();
    g.add(
        "tls",
        3,
        if native.is_some() || proxies_named {
            Status::Pass
        } else if config.proxies.behind_tls {
            Status::Fail
        } else {
            g.weak
        },
        if let Some(files) = native {
            format!(
                "castellan terminates TLS itself with {}",
                files.cert_file.display()
            )
        } else if proxies_named {
            format!(
                "TLS is terminated by {} trusted prox{}",
                config.proxies.trusted.len(),
                if config.proxies.trusted.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            )
        } else if config.proxies.behind_tls {
            "behind_tls_proxy is set but no trusted proxy is named: every client shares the proxy's address".into()
        } else {
            "castellan serves plain HTTP and no TLS proxy is declared".into()
        },
        "passwords, codes and session cookies must only travel over TLS, and per-address limits need the real client address",
        "set CASTELLAN_BEHIND_TLS_PROXY=true and CASTELLAN_TRUSTED_PROXIES to the proxies' addresses",
    );
    if let Some(cert) = &context.certificate {
        certificate_checks(cert, g);
    }
    let https = config.public_base_url.starts_with("https://");
    g.add(
        "cookies_secure",
        1,
        if https { Status::Pass } else { g.weak },
        format!("public_base_url is {}", config.public_base_url),
        "the session cookie is Secure and __Host-prefixed: browsers only keep it over https",
        "set CASTELLAN_PUBLIC_BASE_URL to the https:// origin users see",
    );
    let admin = match &config.admin_token {
        None => (
            Status::Pass,
            "no admin token: the admin listener is off".to_string(),
        ),
        Some(token) => {
            let token = secrecy::ExposeSecret::expose_secret(token);
            if token.len() < 32 {
                (
                    Status::Fail,
                    "the admin token is shorter than 32 characters".to_string(),
                )
            } else if config.admin_listen.ip().is_loopback() {
                (
                    Status::Pass,
                    format!("admin listener on loopback {}", config.admin_listen),
                )
            } else {
                (
                    Status::Warn,
                    format!("admin listener on {} beyond loopback", config.admin_listen),
                )
            }
        }
    };
    g.add(
        "admin_listener",
        2,
        admin.0,
        admin.1,
        "the admin token can lock accounts and revoke every session",
        "keep CASTELLAN_ADMIN_LISTEN on 127.0.0.1 and CASTELLAN_ADMIN_TOKEN_FILE at least 32 random characters",
    );
}

/// The served certificate: publicly trusted for the public host, with a
/// key of at least 128-bit strength.
fn certificate_checks(cert: &CertificateFindings, g: &mut Grader) {
    // A private CA can be right for an internal deployment: a warning.
    g.add(
        "tls_certificate_trust",
        2,
        if cert.publicly_trusted.is_ok() {
            Status::Pass
        } else {
            Status::Warn
        },
        match &cert.publicly_trusted {
            Ok(()) => format!("chains to a publicly trusted root for {}", cert.host),
            Err(why) => format!("not publicly trusted for {}: {why}", cert.host),
        },
        "browsers and clients on the internet only trust certificates from public CAs issued for the name they connect to",
        "put a certificate from a public CA (e.g. by ACME) for the public_base_url host, with its intermediates, in CASTELLAN_TLS_CERT_FILE",
    );
    g.add(
        "tls_key_strength",
        2,
        if cert.key_strong {
            Status::Pass
        } else {
            Status::Fail
        },
        match &cert.key {
            Ok(key) => format!("the certificate's key is {key}"),
            Err(why) => format!("the certificate cannot be read: {why}"),
        },
        "a key below 128-bit strength (RSA under 3072 bits, unapproved curves) can be broken within the certificate's life",
        "issue the certificate for an ECDSA P-256 or P-384 key (or RSA of at least 3072 bits)",
    );
}
