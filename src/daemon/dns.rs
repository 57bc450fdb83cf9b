//! The lighthouse's DNS listener (`lighthouse.serve_dns`): a UDP socket on `lighthouse.dns.host`
//! / `port` whose queries the event loop answers from the node's records.
//!
//! Owns only the socket. The node keeps the records and builds every answer
//! (`Node::dns_answer`); this file never parses DNS. The loop awaits [`DnsServer::recv`] next to
//! its other sources, so the node keeps one owner and no channel or lock is needed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::Context;
use tracing::debug;

use super::setup::DnsListen;
use crate::node::Node;

/// Longest query we read; DNS over UDP without EDNS is capped at 512 bytes, but dig sends EDNS.
const MAX_QUERY: usize = 1500;

pub struct DnsServer {
    socket: tokio::net::UdpSocket,
    buf: Vec<u8>,
}

impl DnsServer {
    /// Binds the listener; an empty host means every IPv4 address (as Nebula's default).
    pub fn bind(listen: &DnsListen) -> anyhow::Result<DnsServer> {
        let addr = listen_addr(listen)?;
        let std = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("binding the lighthouse DNS listener on {addr}"))?;
        std.set_nonblocking(true)
            .context("setting the DNS socket non-blocking")?;
        let socket = tokio::net::UdpSocket::from_std(std).context("registering the DNS socket")?;
        Ok(DnsServer {
            socket,
            buf: vec![0; MAX_QUERY],
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Waits for the next query (cancel-safe). Returns its length and sender.
    pub async fn recv(&mut self) -> std::io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(&mut self.buf).await
    }

    /// Answers the query last received. Malformed queries get no reply (as 1.6.1's server
    /// drops what it cannot parse); a full send buffer drops the answer rather than stall the loop.
    pub fn answer(&self, node: &Node, len: usize, from: SocketAddr) {
        let query = &self.buf[..len.min(self.buf.len())];
        match node.dns_answer_from(query, from.ip()) {
            Ok(reply) => {
                if let Err(e) = self.socket.try_send_to(&reply, from) {
                    debug!(error = %e, %from, "dns reply not sent");
                }
            }
            Err(e) => debug!(error = %e, %from, "dns query ignored"),
        }
    }
}

/// Waits on the listener when there is one, else never completes.
pub async fn recv(server: Option<&mut DnsServer>) -> std::io::Result<(usize, SocketAddr)> {
    match server {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn listen_addr(listen: &DnsListen) -> anyhow::Result<SocketAddr> {
    let host = listen.host.trim();
    if host.is_empty() {
        return Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen.port,
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, listen.port));
    }
    (host, listen.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving lighthouse.dns.host {host}"))?
        .next()
        .with_context(|| format!("lighthouse.dns.host {host} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let l = |h: &str| DnsListen {
            host: h.into(),
            port: 5353,
        };
        assert_eq!(
            listen_addr(&l("")).unwrap(),
            "0.0.0.0:5353".parse().unwrap()
        );
        assert_eq!(
            listen_addr(&l("[::1]")).unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(
            listen_addr(&l("127.0.0.1")).unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
    }
}
