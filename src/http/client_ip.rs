//! The client's address: the socket peer, unless the peer is a trusted
//! proxy, in which case the right-most address in `X-Forwarded-For` that is
//! not itself a trusted proxy. A client can prepend whatever it likes to the
//! header, so anything left of that hop is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Resolves the client address for logging and rate limiting.
pub fn resolve(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = normalise(peer.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>().map(normalise))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer_ip)
}

/// IPv4-mapped IPv6 addresses become plain IPv4, so one client has one key.
fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        h
    }

    // covers: ASVS-4.1.3, ASVS-15.3.4
    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let none: Vec<IpNet> = vec![];
        assert_eq!(
            resolve(peer, &headers("203.0.113.9"), &none).to_string(),
            "127.0.0.1"
        );
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert_eq!(
            resolve(peer, &headers("203.0.113.9"), &trusted).to_string(),
            "203.0.113.9"
        );
        // A client-supplied left part is ignored: the right-most untrusted hop wins.
        assert_eq!(
            resolve(peer, &headers("6.6.6.6, 198.51.100.7, 10.1.2.3"), &trusted).to_string(),
            "198.51.100.7"
        );
        // Garbage in the header falls back to the peer.
        assert_eq!(
            resolve(peer, &headers("not-an-ip"), &trusted).to_string(),
            "127.0.0.1"
        );
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        assert_eq!(
            resolve(mapped, &HeaderMap::new(), &none).to_string(),
            "192.0.2.1"
        );
    }
}
