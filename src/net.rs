//! `Ipv4Net`: the crate's one IPv4 network type, an address with a prefix length (0..=32).
//! The address is kept as written (a host cert's VPN IP is `10.42.1.5/16`, not the network);
//! callers that want Go's `net.ParseCIDR` normalisation take [`Ipv4Net::network`].
//! Pure value type: parsing, masks and containment only; no wire formats, no module wording.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 address and a contiguous prefix length (0..=32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

/// Why a CIDR string was refused (nebula-cert words these as "invalid ip definition: ...").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR address: {0}")]
    Invalid(String),
    #[error("can only be ipv4, have {0}")]
    NotIpv4(String),
}

impl Ipv4Net {
    /// Builds a network, keeping `addr` as given; `None` if `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Net { addr, prefix })
    }

    /// A /32 holding exactly `addr`.
    pub fn host(addr: Ipv4Addr) -> Self {
        Ipv4Net { addr, prefix: 32 }
    }

    /// Builds a network from an address and a netmask; `None` unless the mask is contiguous.
    pub fn from_mask(addr: Ipv4Addr, mask: u32) -> Option<Self> {
        let prefix = mask.leading_ones();
        if mask.checked_shl(prefix).unwrap_or(0) != 0 {
            return None;
        }
        // leading_ones of a u32 is at most 32, so it fits a u8.
        Self::new(addr, prefix as u8)
    }

    /// Parses `a.b.c.d/n` like Go's `net.ParseCIDR`, keeping the address as written.
    pub fn parse_cidr(s: &str) -> Result<Self, CidrError> {
        let invalid = || CidrError::Invalid(s.to_string());
        let (ip, bits) = s.split_once('/').ok_or_else(invalid)?;
        let prefix = parse_prefix_len(bits).ok_or_else(invalid)?;
        match ip.parse::<Ipv4Addr>() {
            Ok(addr) => u8::try_from(prefix)
                .ok()
                .and_then(|p| Ipv4Net::new(addr, p))
                .ok_or_else(invalid),
            Err(_) if ip.parse::<Ipv6Addr>().is_ok() && prefix <= 128 => {
                Err(CidrError::NotIpv4(s.to_string()))
            }
            Err(_) => Err(invalid()),
        }
    }

    /// The address as written.
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// The netmask as a big-endian integer.
    pub fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The same network with the host bits cleared (`192.168.10.7/24` → `192.168.10.0/24`).
    pub fn network(self) -> Self {
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// The all-ones host address of the network.
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// True if `ip` lies inside this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// Nebula's CA rule (cert.go netMatch): `inner`'s address is inside this network and its
    /// prefix is at least as long. Also "all of `inner` lies inside this network".
    pub fn covers(self, inner: Ipv4Net) -> bool {
        self.contains(inner.addr) && inner.prefix >= self.prefix
    }
}

/// Go's prefix-length syntax after the slash: 1 to 3 plain decimal digits (leading zeros allowed,
/// no sign). The family's upper bound is the caller's to check.
pub fn parse_prefix_len(bits: &str) -> Option<u16> {
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    bits.parse().ok()
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cidr_like_go() {
        assert_eq!(
            Ipv4Net::parse_cidr("10.1.2.3/016").unwrap().to_string(),
            "10.1.2.3/16"
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0",
            "nope",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "010.0.0.1/8",
        ] {
            assert!(
                matches!(Ipv4Net::parse_cidr(bad), Err(CidrError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Ipv4Net::parse_cidr("fe80::1/64"),
            Err(CidrError::NotIpv4(_))
        ));
    }

    #[test]
    fn covers_requires_longer_prefix() {
        let ca = Ipv4Net::parse_cidr("10.42.0.0/16").unwrap();
        assert!(ca.covers(Ipv4Net::parse_cidr("10.42.1.5/16").unwrap()));
        assert!(ca.covers(Ipv4Net::parse_cidr("10.42.1.5/24").unwrap()));
        assert!(!ca.covers(Ipv4Net::parse_cidr("10.42.1.5/8").unwrap()));
        assert!(!ca.covers(Ipv4Net::parse_cidr("10.43.1.5/24").unwrap()));
    }

    #[test]
    fn masks_network_broadcast_contains() {
        let n = Ipv4Net::new(Ipv4Addr::new(10, 42, 1, 5), 16).unwrap();
        assert_eq!(n.mask(), 0xFFFF_0000);
        assert_eq!(n.network().to_string(), "10.42.0.0/16");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 42, 255, 255));
        assert!(n.contains(Ipv4Addr::new(10, 42, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 43, 0, 1)));
        let all = Ipv4Net::new(Ipv4Addr::new(1, 2, 3, 4), 0).unwrap();
        assert!(all.contains(Ipv4Addr::new(255, 255, 255, 255)));
        assert_eq!(
            Ipv4Net::host(Ipv4Addr::LOCALHOST).to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(Ipv4Net::from_mask(Ipv4Addr::LOCALHOST, 0xFF00FF00), None);
        assert!(Ipv4Net::new(Ipv4Addr::LOCALHOST, 33).is_none());
    }
}
