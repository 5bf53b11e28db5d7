//! Settings of the listeners: timeouts, the connection cap and native TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::load::Parser;
use super::parse::{parse_addr, parse_duration_in, parse_int_in};

/// Limits that protect every listener from slow or greedy clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A client must send a request's complete headers within this (HTTP/1.1;
    /// also bounds the TLS handshake).
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_read_timeout: Duration,
    /// A whole request (body and handler) must finish within this, else 408.
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections per listener; beyond it new ones wait in the backlog.
    pub max_connections: usize,
}

/// The certificate and key castellan serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Everything about the listeners beyond their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub limits: ListenerLimits,
    /// `Some` when castellan terminates TLS itself.
    pub tls: Option<TlsFiles>,
    /// How often the certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    /// A plain-HTTP listener that only redirects pages to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
}

pub(super) fn parse(p: &mut Parser<'_>) -> Option<NetConfig> {
    let secs = |lo: u64, hi: u64| {
        move |v: &str| parse_duration_in(v, Duration::from_millis(lo), Duration::from_secs(hi))
    };
    let header_read_timeout = p.parse("http_header_read_timeout", secs(100, 300));
    let body_read_timeout = p.parse("http_body_read_timeout", secs(100, 300));
    let request_timeout = p.parse("http_request_timeout", secs(100, 600));
    let idle_timeout = p.parse("http_idle_timeout", secs(100, 3600));
    let max_connections = p.parse("http_max_connections", |v| parse_int_in(v, 1, 1_000_000));
    let cert_file = p.parse("tls_cert_file", optional_path);
    let key_file = p.parse("tls_key_file", optional_path);
    let tls_reload_interval = p.parse("tls_reload_interval", secs(100, 86_400));
    let redirect_listen = p.parse("tls_redirect_listen", |v| {
        if v.is_empty() {
            Ok(None)
        } else {
            parse_addr(v).map(Some)
        }
    });
    let tls = match (cert_file?, key_file?) {
        (Some(cert_file), Some(key_file)) => Some(TlsFiles {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        _ => {
            p.fail(
                "tls_cert_file",
                "CASTELLAN_TLS_CERT_FILE and CASTELLAN_TLS_KEY_FILE must be set together",
            );
            None
        }
    };
    let redirect_listen = redirect_listen?;
    if redirect_listen.is_some() && tls.is_none() {
        p.fail(
            "tls_redirect_listen",
            "redirects to HTTPS, so it needs CASTELLAN_TLS_CERT_FILE and CASTELLAN_TLS_KEY_FILE",
        );
    }
    Some(NetConfig {
        limits: ListenerLimits {
            header_read_timeout: header_read_timeout?,
            body_read_timeout: body_read_timeout?,
            request_timeout: request_timeout?,
            idle_timeout: idle_timeout?,
            max_connections: usize::try_from(max_connections?).ok()?,
        },
        tls,
        tls_reload_interval: tls_reload_interval?,
        redirect_listen,
    })
}

fn optional_path(v: &str) -> Result<Option<PathBuf>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    std::fs::metadata(v).map_err(|e| format!("cannot read the file ({})", e.kind()))?;
    Ok(Some(PathBuf::from(v)))
}
