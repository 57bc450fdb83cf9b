//! IPv4 prefixes as the firewall uses them (rule `cidr`/`local_cidr`, cert subnets). Owns parsing
//! with Go `net.ParseCIDR` strictness and containment; nothing else.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: address with host bits cleared, and a prefix length 0..=32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Builds a network, clearing host bits (as Go's ParseCIDR does). `None` if prefix > 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        if prefix > 32 {
            return None;
        }
        let masked = u32::from(addr) & mask(prefix);
        Some(Ipv4Net {
            addr: Ipv4Addr::from(masked),
            prefix,
        })
    }

    /// A /32 for one address.
    pub fn host(addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net { addr, prefix: 32 }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a CIDR string did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidrParseError {
    #[error("missing /prefix")]
    MissingPrefix,
    #[error("bad address")]
    BadAddress,
    #[error("bad prefix length")]
    BadPrefix,
}

/// Result of parsing a CIDR that may also be IPv6 (Go's ParseCIDR accepts both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedCidr {
    V4(Ipv4Net),
    /// A valid IPv6 prefix: accepted like nebula 1.6.1 does, but it never matches an IPv4 packet.
    V6,
}

/// Parses `a.b.c.d/n` (or an IPv6 prefix) like Go's `net.ParseCIDR`: no leading zeros in octets,
/// decimal prefix within the address size.
pub fn parse_cidr(s: &str) -> Result<ParsedCidr, CidrParseError> {
    let (addr, prefix) = s.split_once('/').ok_or(CidrParseError::MissingPrefix)?;
    if addr.contains(':') {
        let _v6 = std::net::Ipv6Addr::from_str(addr).map_err(|_| CidrParseError::BadAddress)?;
        parse_prefix_len(prefix, 128)?;
        return Ok(ParsedCidr::V6);
    }
    let ip = Ipv4Addr::from_str(addr).map_err(|_| CidrParseError::BadAddress)?;
    let len = parse_prefix_len(prefix, 32)?;
    Ipv4Net::new(ip, len)
        .map(ParsedCidr::V4)
        .ok_or(CidrParseError::BadPrefix)
}

fn parse_prefix_len(s: &str, max: u8) -> Result<u8, CidrParseError> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CidrParseError::BadPrefix);
    }
    let n: u16 = s.parse().map_err(|_| CidrParseError::BadPrefix)?;
    if n > u16::from(max) {
        return Err(CidrParseError::BadPrefix);
    }
    Ok(n as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let n = match parse_cidr("10.1.2.3/8") {
            Ok(ParsedCidr::V4(n)) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!n.contains(Ipv4Addr::new(11, 0, 0, 1)));
        assert_eq!(parse_cidr("fd00::/8"), Ok(ParsedCidr::V6));
        assert!(parse_cidr("10.0.0.0").is_err());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("010.0.0.0/8").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("10.0.0.0/-1").is_err());
        let all = Ipv4Net::new(Ipv4Addr::new(1, 2, 3, 4), 0).expect("valid");
        assert!(all.contains(Ipv4Addr::new(255, 255, 255, 255)));
    }
}
