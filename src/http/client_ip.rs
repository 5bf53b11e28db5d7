//! The client's address: the socket peer, unless the peer is a trusted
//! proxy. Then the forwarding header the configuration names
//! (`X-Forwarded-For`, or the standard `Forwarded`) is walked from the
//! right: each trusted proxy vouches for the entry to its left, so the walk
//! stops at the first entry that is not a trusted proxy (the client), or at
//! one it cannot parse, in which case the last address vouched for is the
//! client. A client can prepend whatever it likes to the header, so
//! nothing left of that point is believed.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ForwardedHeader;

/// Resolves the client address for logging and rate limiting.
pub fn resolve(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ForwardedHeader,
) -> IpAddr {
    let peer_ip = normalise(peer.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let hops = match header {
        ForwardedHeader::XForwardedFor => header_entries(headers, "x-forwarded-for", |v| {
            v.split(',').map(parse_node).collect()
        }),
        ForwardedHeader::Forwarded => header_entries(headers, "forwarded", forwarded_for),
    };
    let mut client = peer_ip;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The entries of every `name` header line in order; a line that is not
/// visible ASCII is one unparsable entry.
fn header_entries(
    headers: &HeaderMap,
    name: &str,
    split: impl Fn(&str) -> Vec<Option<IpAddr>>,
) -> Vec<Option<IpAddr>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => split(s),
            Err(_) => vec![None],
        })
        .collect()
}

/// One node: `ip`, `ip:port`, `[ipv6]` or `[ipv6]:port`, optionally in
/// double quotes; anything else (`unknown`, obfuscated names) is `None`.
pub fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(normalise(ip));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(normalise(addr.ip()));
    }
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
        .map(|v6| normalise(IpAddr::V6(v6)))
}

/// The `for=` node of each element of a `Forwarded` value (RFC 7239); an
/// element without one is `None`. Commas and semicolons split even inside
/// quotes: a `for=` node never holds one, and a client could otherwise open
/// a quote that swallows the entry its proxy appends.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    value
        .split(',')
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, node)| parse_node(node))
        })
        .collect()
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
    use proptest::prelude::*;

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    // covers: ASVS-4.1.3, ASVS-15.3.4
    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let none: Vec<IpNet> = vec![];
        let xff = |v: &str| headers("x-forwarded-for", v);
        assert_eq!(
            resolve(peer(), &xff("203.0.113.9"), &none, XFF).to_string(),
            "127.0.0.1"
        );
        assert_eq!(
            resolve(peer(), &xff("203.0.113.9"), &trusted(), XFF).to_string(),
            "203.0.113.9"
        );
        // A client-supplied left part is ignored: the right-most untrusted hop wins.
        assert_eq!(
            resolve(
                peer(),
                &xff("6.6.6.6, 198.51.100.7, 10.1.2.3"),
                &trusted(),
                XFF
            )
            .to_string(),
            "198.51.100.7"
        );
        // Garbage as the only entry: the proxy itself is all that is known.
        assert_eq!(
            resolve(peer(), &xff("not-an-ip"), &trusted(), XFF).to_string(),
            "127.0.0.1"
        );
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
        assert_eq!(
            resolve(mapped, &HeaderMap::new(), &none, XFF).to_string(),
            "192.0.2.1"
        );
    }

    #[test]
    fn an_unparsable_entry_left_of_the_client_does_not_hide_it() {
        let t = trusted();
        let xff = |v: &str| resolve(peer(), &headers("x-forwarded-for", v), &t, XFF).to_string();
        assert_eq!(xff("unknown, 203.0.113.9"), "203.0.113.9");
        assert_eq!(xff("203.0.113.9:4444"), "203.0.113.9");
        assert_eq!(xff("[2001:db8::7]:443, 10.0.0.1"), "2001:db8::7");
        assert_eq!(xff("[2001:db8::7]"), "2001:db8::7");
        // Unparsable between two proxies: the last vouched-for proxy.
        assert_eq!(xff("203.0.113.9, garbage, 10.0.0.2"), "10.0.0.2");
    }

    #[test]
    fn the_forwarded_header_is_read_when_configured() {
        let t = trusted();
        let fwd = ForwardedHeader::Forwarded;
        let get = |v: &str| resolve(peer(), &headers("forwarded", v), &t, fwd).to_string();
        assert_eq!(
            get("for=192.0.2.60;proto=http;by=203.0.113.43"),
            "192.0.2.60"
        );
        assert_eq!(
            get(r#"for=unknown, For="[2001:db8:cafe::17]:4711";proto=https"#),
            "2001:db8:cafe::17"
        );
        assert_eq!(get(r#"for="_hidden", for=10.0.0.3"#), "10.0.0.3");
        // A quote the client leaves open does not swallow the proxy's entry.
        assert_eq!(get(r#"for="6.6.6.6, for=198.51.100.1"#), "198.51.100.1");
        // The other header is not believed.
        assert_eq!(
            resolve(peer(), &headers("x-forwarded-for", "203.0.113.9"), &t, fwd).to_string(),
            "127.0.0.1"
        );
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]
    }

    /// An address written as a proxy might: bare, with a port, bracketed.
    fn written(ip: IpAddr, form: u8, port: u16) -> String {
        match (ip, form % 3) {
            (_, 0) => ip.to_string(),
            (IpAddr::V4(v4), _) => format!("{v4}:{port}"),
            (IpAddr::V6(v6), 1) => format!("[{v6}]"),
            (IpAddr::V6(v6), _) => format!("[{v6}]:{port}"),
        }
    }

    proptest! {
        // Any visible-ASCII header: no panic, and the answer is the peer or
        // an address the header names.
        #[test]
        fn any_header_yields_the_peer_or_a_named_address(v in "[ -~]{0,120}") {
            for header in [XFF, ForwardedHeader::Forwarded] {
                let name = if header == XFF { "x-forwarded-for" } else { "forwarded" };
                let Ok(value) = HeaderValue::from_str(&v) else { continue };
                let mut h = HeaderMap::new();
                h.insert(name, value);
                let got = resolve(peer(), &h, &trusted(), header);
                let named = v
                    .split([',', ';', '=', ' '])
                    .filter_map(parse_node)
                    .any(|ip| ip == got);
                prop_assert!(got == normalise(peer().ip()) || named, "{v:?} gave {got}");
            }
        }

        // Behind trusted proxies, the client is found whatever the client
        // prepended and however each hop is written, in either header.
        #[test]
        fn the_client_behind_proxies_is_found(
            junk in proptest::collection::vec("[!-+\\--~]{0,12}", 0..4),
            client in any_ip(),
            proxies in proptest::collection::vec((any::<u8>(), 0u8..3), 0..4),
            form in any::<u8>(),
            port in 1u16..,
        ) {
            let client = normalise(client);
            prop_assume!(!trusted().iter().any(|n| n.contains(&client)));
            let hops: Vec<IpAddr> = proxies
                .iter()
                .map(|(n, f)| if *f == 0 {
                    IpAddr::from([10, 0, 0, *n])
                } else {
                    IpAddr::from([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, *n])
                })
                .collect();
            let mut entries: Vec<String> = junk.clone();
            entries.push(written(client, form, port));
            entries.extend(hops.iter().map(|ip| written(*ip, form.wrapping_add(1), port)));
            let xff = headers("x-forwarded-for", &entries.join(", "));
            prop_assert_eq!(resolve(peer(), &xff, &trusted(), XFF), client);
            let fwd: Vec<String> = entries.iter().map(|e| format!("for=\"{e}\"")).collect();
            let fwd = headers("forwarded", &fwd.join(", "));
            prop_assert_eq!(resolve(peer(), &fwd, &trusted(), ForwardedHeader::Forwarded), client);
        }

        // Every written form of an address parses back to it.
        #[test]
        fn nodes_round_trip(ip in any_ip(), form in any::<u8>(), port in any::<u16>()) {
            prop_assert_eq!(parse_node(&written(ip, form, port)), Some(normalise(ip)));
        }
    }
}
