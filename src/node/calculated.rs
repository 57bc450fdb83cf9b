//! `lighthouse.calculated_remotes` (Nebula 1.7+): for a VPN IP inside a configured range, an
//! underlay address guessed from the VPN IP itself (the `mask` network's bits, the VPN IP's host
//! bits, the given port), added when a handshake starts so the first attempt need not wait for a
//! lighthouse answer. The guesses are kept as if learned from ourselves, filtered by the remote
//! allow lists like any learned address. Owns only the computation and that one insertion.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::lighthouse::remote_allowed_by;
use super::types::VpnIp;
use super::{Ipv4Net, Node};

/// One `{mask, port}` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalculatedRemote {
    pub mask: Ipv4Net,
    pub port: u16,
}

impl CalculatedRemote {
    /// The mask network's bits combined with `vpn_ip`'s remaining bits.
    pub fn apply(&self, vpn_ip: Ipv4Addr) -> SocketAddr {
        let m = self.mask.mask();
        let ip = (u32::from(self.mask.addr()) & m) | (u32::from(vpn_ip) & !m);
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), self.port)
    }
}

impl Node {
    /// Adds the calculated remotes of `vpn_ip` (most specific range) unless it is a static host.
    /// Returns whether any address was added.
    pub(super) fn add_calculated_remotes(&mut self, vpn_ip: VpnIp) -> bool {
        if self.config.static_host_map.contains_key(&vpn_ip) {
            return false;
        }
        let Some((_, entries)) = self
            .config
            .calculated_remotes
            .iter()
            .filter(|(range, _)| range.contains(vpn_ip.addr()))
            .max_by_key(|(range, _)| range.prefix())
        else {
            return false;
        };
        let net = self.identity.vpn_net;
        let addrs: Vec<SocketAddr> = entries
            .iter()
            .map(|c| c.apply(vpn_ip.addr()))
            .filter(|a| match a.ip() {
                IpAddr::V4(ip) => !net.contains(ip),
                IpAddr::V6(_) => false,
            })
            .filter(|a| remote_allowed_by(&self.config, vpn_ip, a.ip()))
            .collect();
        if addrs.is_empty()
            || (!self.remotes.contains_key(&vpn_ip) && self.remotes.len() >= self.config.max_hosts)
        {
            return false;
        }
        let me = self.identity.vpn_ip;
        self.remotes
            .entry(vpn_ip)
            .or_default()
            .set_learned(me, &addrs, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_takes_mask_network_bits_and_vpn_host_bits() {
        let c = CalculatedRemote {
            mask: Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).unwrap(),
            port: 4242,
        };
        assert_eq!(
            c.apply(Ipv4Addr::new(10, 0, 7, 9)),
            "192.168.7.9:4242".parse().unwrap()
        );
        let c = CalculatedRemote {
            mask: Ipv4Net::new(Ipv4Addr::new(172, 16, 200, 1), 24).unwrap(),
            port: 1,
        };
        assert_eq!(
            c.apply(Ipv4Addr::new(10, 0, 7, 9)),
            "172.16.200.9:1".parse().unwrap()
        );
    }
}
