//! `castellan health`: asks the local service's `/health/live` and exits 0
//! when it answers 200. Container health checks run it, so an image needs
//! no shell or HTTP client next to the binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;

/// The whole probe (connect, ask, read the status line) must finish in this.
const TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(config: Config) -> anyhow::Result<()> {
    let addr = probe_addr(config.listen);
    tokio::time::timeout(TIMEOUT, probe(addr))
        .await
        .with_context(|| format!("no answer from {addr} within {}s", TIMEOUT.as_secs()))?
}

/// A service listening on every address is asked on loopback.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

async fn probe(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request = format!("GET /health/live HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // The status line fits in the first bytes; the rest is not needed.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream.read(&mut head[read..]).await?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let status = String::from_utf8_lossy(&head[..read]);
    match status.split_whitespace().nth(1) {
        Some("200") => {
            tracing::debug!(%addr, "castellan is live");
            Ok(())
        }
        Some(code) => bail!("{addr}/health/live answered {code}"),
        None => bail!("{addr} did not answer HTTP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_probed_on_loopback() {
        let any4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let any6: SocketAddr = "[::]:9000".parse().unwrap();
        let own: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(probe_addr(any4), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(probe_addr(any6), "[::1]:9000".parse().unwrap());
        assert_eq!(probe_addr(own), own);
    }
}
