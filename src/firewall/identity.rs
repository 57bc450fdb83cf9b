//! Who is on each side of a packet, as the firewall needs to know it: the peer's certificate
//! details (borrowed, so the firewall does not depend on the cert module) and this node's own
//! addresses. Owns the address checks of §8.3 steps 2 and 3; nothing else.

use std::net::Ipv4Addr;

use super::net::Ipv4Net;

/// The peer at the other end of the tunnel, from its verified certificate.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The tunnel's vpn ip (the cert's first IP).
    pub vpn_ip: Ipv4Addr,
    /// Certificate Name (matched by `host`).
    pub name: &'a str,
    /// Certificate Groups (matched by `group`/`groups`).
    pub groups: &'a [String],
    /// Certificate Issuer: hex fingerprint of the signing CA (matched by `ca_sha`).
    pub issuer: &'a str,
    /// Name of the issuing CA found in our CA pool (matched by `ca_name`); `None` when the
    /// issuer is not in the pool.
    pub ca_name: Option<&'a str>,
    /// All IPs in the certificate (each counts as a /32).
    pub ips: &'a [Ipv4Addr],
    /// Certificate Subnets (unsafe networks the peer routes).
    pub subnets: &'a [Ipv4Net],
}

impl Peer<'_> {
    /// May traffic with this remote address travel through this peer? (1.6.1
    /// `HostInfo.remoteCidr`: the vpn ip, any cert IP, or inside a cert subnet.)
    pub fn owns_remote_ip(&self, ip: Ipv4Addr) -> bool {
        ip == self.vpn_ip || self.ips.contains(&ip) || self.subnets.iter().any(|n| n.contains(ip))
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// This node's own addresses from its certificate: packets may only be for (inbound) or from
/// (outbound) these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalIdentity {
    pub ips: Vec<Ipv4Addr>,
    pub subnets: Vec<Ipv4Net>,
}

impl LocalIdentity {
    pub fn new(ips: Vec<Ipv4Addr>, subnets: Vec<Ipv4Net>) -> LocalIdentity {
        LocalIdentity { ips, subnets }
    }

    /// 1.6.1 `Firewall.localIps`: our cert IPs as /32s and our cert subnets.
    pub fn handles(&self, ip: Ipv4Addr) -> bool {
        self.ips.contains(&ip) || self.subnets.iter().any(|n| n.contains(ip))
    }
}
