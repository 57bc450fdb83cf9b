//! Value types of the configuration model: CIDRs, `host:port` addresses and the small enums
//! (cipher, log level/format, send_recv_error, firewall action). Parsing only; no key names,
//! defaults or I/O here.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use crate::net::{parse_prefix_len, Ipv4Net};

/// An IPv4 or IPv6 network in CIDR form, normalised like Go's `net.ParseCIDR` (host bits cleared).
/// The IPv4 side is the crate's [`Ipv4Net`]; IPv6 appears only in allow-lists and ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpNet {
    V4(Ipv4Net),
    /// Network address (host bits cleared) and prefix length 0..=128.
    V6(Ipv6Addr, u8),
}

impl IpNet {
    /// Builds a network, clearing host bits; `None` if the prefix is too long for the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        match addr {
            IpAddr::V4(a) => Ipv4Net::new(a, prefix).map(|n| IpNet::V4(n.network())),
            IpAddr::V6(a) if prefix <= 128 => Some(IpNet::V6(
                Ipv6Addr::from(u128::from(a) & mask128(prefix)),
                prefix,
            )),
            IpAddr::V6(_) => None,
        }
    }

    pub fn addr(&self) -> IpAddr {
        match *self {
            IpNet::V4(n) => IpAddr::V4(n.addr()),
            IpNet::V6(a, _) => IpAddr::V6(a),
        }
    }

    pub fn prefix(&self) -> u8 {
        match *self {
            IpNet::V4(n) => n.prefix(),
            IpNet::V6(_, p) => p,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self, IpNet::V4(_))
    }

    /// True if `ip` lies inside this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.contains(a),
            (IpNet::V6(n, p), IpAddr::V6(a)) => u128::from(a) & mask128(p) == u128::from(n),
            _ => false,
        }
    }

    /// True if all of `other` lies inside this network.
    pub fn contains_net(&self, other: &IpNet) -> bool {
        other.prefix() >= self.prefix() && self.contains(other.addr())
    }

    /// True if the two networks share any address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.contains_net(other) || other.contains_net(self)
    }
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let invalid = || format!("invalid CIDR address: {s}");
        let (ip, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = ip.parse().map_err(|_| invalid())?;
        // Unlike `Ipv4Net::parse_cidr`, no leading zeros beyond "0" (as this module always did).
        if prefix.len() > 1 && prefix.starts_with('0') {
            return Err(invalid());
        }
        let prefix = parse_prefix_len(prefix)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or_else(invalid)?;
        IpNet::new(addr, prefix).ok_or_else(invalid)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix())
    }
}

/// The host part of an address: a literal IP or a DNS name resolved later by the daemon
/// (1.6.1 resolves names once at load; meshd keeps the pure core free of DNS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// `ip:port`, `[v6]:port` or `name:port`, as `static_host_map` and `advertise_addrs` take them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<HostPort, String> {
        let (host, port) = split_host_port(s)?;
        let port = match port.parse::<u16>() {
            Ok(p) if port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(format!("address {s}: invalid port {port:?}")),
        };
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if is_hostname(host) => Host::Name(host.to_string()),
            Err(_) => {
                return Err(format!(
                    "address {s}: {host:?} is neither an IP nor a host name"
                ))
            }
        };
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Host::Ip(a) => write!(f, "{a}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`; a bare IPv6 address is an error.
pub fn split_host_port(s: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("address {s}: missing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("address {s}: missing port"))?;
        return Ok((host, port));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("address {s}: missing port"))?;
    if host.contains(':') {
        return Err(format!("address {s}: too many colons"));
    }
    Ok((host, port))
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `cipher`: must be identical on every node of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes,
    ChaChaPoly,
}

/// `logging.level` (logrus levels; `warning` is an alias of `warn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Panic,
    Fatal,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl FromStr for LogLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<LogLevel, ()> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return Err(()),
        })
    }
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `listen.send_recv_error` (and the newer `listen.accept_recv_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendRecvError {
    Always,
    Never,
    Private,
}

/// `static_map.network` (since v1.7.0): which address families DNS names resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupNetwork {
    Ip4,
    Ip6,
    Ip,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing_normalises_like_go() {
        let n: IpNet = "10.1.2.3/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert!(n.contains("10.1.255.1".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains_net(&n));
        assert_eq!("::/0".parse::<IpNet>().unwrap().prefix(), 0);
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/08",
            "/8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_port_forms() {
        let a: HostPort = "100.64.22.11:4242".parse().unwrap();
        assert_eq!(a.port, 4242);
        let b: HostPort = "[2001:db8::1]:4242".parse().unwrap();
        assert_eq!(b.to_string(), "[2001:db8::1]:4242");
        let c: HostPort = "lighthouse.example.com:4242".parse().unwrap();
        assert_eq!(c.host, Host::Name("lighthouse.example.com".into()));
        for bad in [
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:70000",
            "2001:db8::1:4242",
            ":4242",
            "a b:1",
            "[::1]4242",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }
}
