//! `Ipv4Net`: an IPv4 address with a prefix length, as carried in certificate `Ips`/`Subnets`.
//! The address is kept as written (a host cert's VPN IP is `10.42.1.5/16`, not the network).
//! Pure value type; knows nothing about certificates beyond the (address, mask) wire pair.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::CertError;

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
    /// Builds a network; `None` if `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Ipv4Net { addr, prefix })
    }

    /// Decodes a certificate (address, mask) pair; the mask must be a contiguous prefix.
    pub fn from_wire(addr: u32, mask: u32) -> Result<Self, CertError> {
        let prefix = mask.leading_ones();
        if mask.checked_shl(prefix).unwrap_or(0) != 0 {
            return Err(CertError::NonContiguousMask {
                addr: Ipv4Addr::from(addr),
                mask,
            });
        }
        // leading_ones of a u32 is at most 32, so it fits a u8.
        Ok(Ipv4Net {
            addr: Ipv4Addr::from(addr),
            prefix: prefix as u8,
        })
    }

    /// The (address, mask) pair as stored in a certificate.
    pub fn to_wire(self) -> (u32, u32) {
        (u32::from(self.addr), self.mask())
    }

    /// Parses `a.b.c.d/n` like Go's `net.ParseCIDR`, keeping the address as written.
    pub fn parse_cidr(s: &str) -> Result<Self, CidrError> {
        let invalid = || CidrError::Invalid(s.to_string());
        let (ip, bits) = s.split_once('/').ok_or_else(invalid)?;
        // Go accepts only plain decimal digits (leading zeros allowed) after the slash.
        if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let prefix: u8 = bits.parse().map_err(|_| invalid())?;
        match ip.parse::<Ipv4Addr>() {
            Ok(addr) => Ipv4Net::new(addr, prefix).ok_or_else(invalid),
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

    /// True if `ip` lies inside this network.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// Nebula's CA rule (cert.go netMatch): `inner`'s address is inside this network and its
    /// prefix is at least as long.
    pub fn covers(self, inner: Ipv4Net) -> bool {
        self.contains(inner.addr) && inner.prefix >= self.prefix
    }
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
    fn wire_round_trip_and_masks() {
        let n = Ipv4Net::from_wire(0x0A2A0105, 0xFFFF0000).unwrap();
        assert_eq!(n.to_string(), "10.42.1.5/16");
        assert_eq!(n.to_wire(), (0x0A2A0105, 0xFFFF0000));
        assert_eq!(n.network().to_string(), "10.42.0.0/16");
        assert_eq!(Ipv4Net::from_wire(1, 0).unwrap().prefix(), 0);
        assert_eq!(Ipv4Net::from_wire(1, u32::MAX).unwrap().prefix(), 32);
        assert!(Ipv4Net::from_wire(1, 0xFF00FF00).is_err());
        assert!(Ipv4Net::from_wire(1, 0x00FFFFFF).is_err());
    }

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
}
