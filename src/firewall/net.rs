//! CIDR parsing as the firewall needs it (rule `cidr`/`local_cidr`): Go `net.ParseCIDR`
//! strictness, host bits cleared, and IPv6 prefixes accepted but marked as never matching.
//! The network type itself is [`crate::net::Ipv4Net`]; nothing else lives here.

use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::net::parse_prefix_len;
pub use crate::net::Ipv4Net;

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
/// decimal prefix within the address size, host bits cleared.
pub fn parse_cidr(s: &str) -> Result<ParsedCidr, CidrParseError> {
    let (addr, prefix) = s.split_once('/').ok_or(CidrParseError::MissingPrefix)?;
    if addr.contains(':') {
        let _v6 = std::net::Ipv6Addr::from_str(addr).map_err(|_| CidrParseError::BadAddress)?;
        prefix_len(prefix, 128)?;
        return Ok(ParsedCidr::V6);
    }
    let ip = Ipv4Addr::from_str(addr).map_err(|_| CidrParseError::BadAddress)?;
    let len = prefix_len(prefix, 32)?;
    Ipv4Net::new(ip, len)
        .map(|n| ParsedCidr::V4(n.network()))
        .ok_or(CidrParseError::BadPrefix)
}

fn prefix_len(s: &str, max: u8) -> Result<u8, CidrParseError> {
    match parse_prefix_len(s) {
        Some(n) if n <= u16::from(max) => Ok(n as u8),
        _ => Err(CidrParseError::BadPrefix),
    }
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
