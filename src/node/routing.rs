//! Where an inner packet from TUN goes: a VPN IP inside our network, or the `via` peer of the
//! most specific `tun.unsafe_routes` entry; and the MTU it must fit (route MTU, else `tun.mtu`).
//!
//! Owns only that lookup. Must not seal, filter or queue packets (the data path does).

use std::net::Ipv4Addr;

use super::types::{DropReason, Ipv4Net, VpnIp};
use super::Node;

/// One `tun.unsafe_routes` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsafeRoute {
    pub route: Ipv4Net,
    pub via: VpnIp,
    /// Route MTU (`mtu`, default `tun.mtu`).
    pub mtu: Option<u16>,
}

/// The peer an outbound packet goes to and the MTU it must fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NextHop {
    pub vpn_ip: VpnIp,
    pub mtu: u16,
}

impl Node {
    /// Destination inside the VPN network: itself. Outside: the most specific unsafe route.
    /// The MTU is the most specific `tun.routes` / unsafe route MTU, else `tun.mtu`.
    pub(super) fn next_hop(&self, dst: Ipv4Addr) -> Result<NextHop, DropReason> {
        if self.identity.vpn_net.contains(dst) {
            let mtu = self
                .config
                .route_mtus
                .iter()
                .filter(|(net, _)| net.contains(dst))
                .max_by_key(|(net, _)| net.prefix())
                .map_or(self.config.tun_mtu, |(_, m)| *m);
            return Ok(NextHop {
                vpn_ip: VpnIp::from(dst),
                mtu,
            });
        }
        self.config
            .unsafe_routes
            .iter()
            .chain(&self.system_routes)
            .filter(|r| r.route.contains(dst))
            .max_by_key(|r| r.route.prefix())
            .map(|r| NextHop {
                vpn_ip: r.via,
                mtu: r.mtu.unwrap_or(self.config.tun_mtu),
            })
            .ok_or(DropReason::NoRoute)
    }
}
