//! Value parsing: one raw text value into a typed one, with a message an
//! operator can act on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

use super::{DatabaseLocation, Rate, SecretBytes};

/// A host name (letters, digits, `-`, `.`) or an IP address; brackets
/// around an IPv6 address are removed. Empty means unset.
pub(super) fn parse_smtp_host(v: &str) -> Result<String, String> {
    let host = v
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(v);
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(host.to_string());
    }
    let ok = host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(host.to_string())
    } else {
        Err("must be a host name or an IP address, without a port (set smtp_port)".into())
    }
}

/// Reads a PEM file of CA certificates; empty means unset.
pub(super) fn read_ca_file(v: &str) -> Result<Option<(PathBuf, Vec<u8>)>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(v).map_err(|e| format!("cannot read the file ({})", e.kind()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err("must be a PEM file with at least one CERTIFICATE block".into());
    }
    Ok(Some((PathBuf::from(v), pem)))
}

/// A rate written `N/duration`, e.g. `30/10m`.
pub(super) fn parse_rate(v: &str) -> Result<Rate, String> {
    let hint = "must be a count and a window like 30/10m";
    let (n, window) = v.split_once('/').ok_or_else(|| hint.to_string())?;
    let limit = parse_int_in(n.trim(), 1, 1_000_000_000)?;
    let window = parse_duration_in(
        window.trim(),
        Duration::from_secs(1),
        Duration::from_secs(7 * 24 * 3600),
    )?;
    Ok(Rate { limit, window })
}

/// Base64 of at least 32 random bytes; empty means unset.
pub(super) fn parse_key(v: &str) -> Result<Option<SecretBytes>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v.trim()))
        .map_err(|_| "must be base64 (e.g. `openssl rand -base64 32`)".to_string())?;
    if bytes.len() < 32 {
        return Err(format!(
            "decodes to {} bytes; at least 32 random bytes are needed (`openssl rand -base64 32`)",
            bytes.len()
        ));
    }
    Ok(Some(SecretBytes(zeroize::Zeroizing::new(bytes))))
}

pub(super) fn nonempty_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(PathBuf::from(v))
    }
}

pub(super) fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "must be an address with a port, e.g. 127.0.0.1:8080".to_string())
}

pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be `true` or `false`".into()),
    }
}

pub(super) fn parse_int_in(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("must be a whole number from {min} to {max}"))?;
    if n < min || n > max {
        return Err(format!("must be from {min} to {max}"));
    }
    Ok(n)
}

/// Comma-separated origins, normalised (see `domain::return_to::parse_origin`).
pub(super) fn parse_origins(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            crate::domain::return_to::parse_origin(s).ok_or_else(|| {
                format!("{s:?} is not an origin like https://app.example.com (scheme, host and optional port; no path)")
            })
        })
        .collect()
}

pub(super) fn parse_cidrs(v: &str) -> Result<Vec<IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
        })
        .collect()
}

pub(super) fn parse_database_url(v: &str) -> Result<Option<DatabaseLocation>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    if let Some(path) = v.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://./data/castellan.db".into());
        }
        return Ok(Some(DatabaseLocation::Sqlite {
            path: PathBuf::from(path),
        }));
    }
    if v.starts_with("postgres://") || v.starts_with("postgresql://") {
        return Ok(Some(DatabaseLocation::Postgres {
            url: SecretString::from(v.to_string()),
        }));
    }
    Err("must start with sqlite:// or postgres://".into())
}

/// Parses durations written like `30m`, `12h`, `2s`, `500ms` or `7d`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits_end);
    let hint = "must be a number with a unit (ms, s, m, h or d), e.g. 30m";
    let n: u64 = number.parse().map_err(|_| hint.to_string())?;
    let (scale_ms, what): (u64, _) = match unit {
        "ms" => (1, "ms"),
        "s" => (1_000, "s"),
        "m" => (60_000, "m"),
        "h" => (3_600_000, "h"),
        "d" => (86_400_000, "d"),
        _ => return Err(hint.to_string()),
    };
    let ms = n
        .checked_mul(scale_ms)
        .ok_or_else(|| format!("{n}{what} is too large"))?;
    Ok(Duration::from_millis(ms))
}

pub(super) fn parse_duration_in(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < min || d > max {
        return Err(format!(
            "must be between {} and {}",
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Formats a duration in the same notation the settings use.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, scale) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= scale && ms.is_multiple_of(scale) {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}
