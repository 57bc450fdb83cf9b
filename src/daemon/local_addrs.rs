//! Local interface addresses for the lighthouse updates: enumerates them with `getifaddrs`,
//! applies the `interfaces` part of `lighthouse.local_allow_list`, and hands the result to
//! `Node::set_local_addrs` at start and whenever it changes.
//!
//! Owns only that enumeration. Must not filter by CIDR, loopback or VPN range (the node does, so
//! the rule lives in one place) and must not touch sockets or the node's other state.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use regex::Regex;
use tracing::{debug, warn};

use crate::node::Node;

/// One interface address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub interface: String,
    pub addr: IpAddr,
}

/// Remembers what the node was last told, so a refresh with no change costs one syscall.
#[derive(Debug)]
pub struct LocalAddrs {
    interfaces: Vec<(Regex, bool)>,
    last: Option<Vec<IpAddr>>,
}

impl LocalAddrs {
    pub fn new(interfaces: Vec<(Regex, bool)>) -> LocalAddrs {
        LocalAddrs {
            interfaces,
            last: None,
        }
    }

    /// Re-reads the interface addresses and tells the node when they changed.
    pub fn refresh(&mut self, node: &mut Node, now: Instant) {
        let all = match enumerate() {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "listing local interface addresses failed");
                return;
            }
        };
        let mut addrs = allowed(&self.interfaces, &all);
        addrs.sort();
        addrs.dedup();
        if self.last.as_ref() == Some(&addrs) {
            return;
        }
        debug!(addrs = ?addrs, "local addresses changed");
        node.set_local_addrs(now, &addrs);
        self.last = Some(addrs);
    }
}

/// Applies the interface-name rules: all rules share one allow value; an interface matching
/// none of them gets the opposite (Nebula 1.6.1 `LocalAllowList.AllowName`). No rules = all.
pub fn allowed(rules: &[(Regex, bool)], addrs: &[IfAddr]) -> Vec<IpAddr> {
    addrs
        .iter()
        .filter(|a| name_allowed(rules, &a.interface))
        .map(|a| a.addr)
        .collect()
}

fn name_allowed(rules: &[(Regex, bool)], name: &str) -> bool {
    let Some((_, first)) = rules.first() else {
        return true;
    };
    match rules.iter().find(|(re, _)| re.is_match(name)) {
        Some((_, allow)) => *allow,
        None => !*first,
    }
}

/// Every IPv4/IPv6 address on every interface that is up.
pub fn enumerate() -> std::io::Result<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and has not been freed.
        let ifa = unsafe { &*cur };
        if let Some(a) = entry(ifa) {
            out.push(a);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

fn entry(ifa: &libc::ifaddrs) -> Option<IfAddr> {
    if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
        return None;
    }
    if ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 {
        return None;
    }
    // SAFETY: non-null, NUL-terminated name owned by the getifaddrs list.
    let interface = unsafe { CStr::from_ptr(ifa.ifa_name) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: ifa_addr is non-null and its family says which sockaddr type it points to.
    let addr = unsafe {
        match i32::from((*ifa.ifa_addr).sa_family) {
            libc::AF_INET => {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
            }
            _ => return None,
        }
    };
    Some(IfAddr { interface, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifa(name: &str, ip: &str) -> IfAddr {
        IfAddr {
            interface: name.into(),
            addr: ip.parse().unwrap(),
        }
    }

    #[test]
    fn interface_rules_follow_nebula() {
        let addrs = [ifa("eth0", "192.0.2.1"), ifa("docker0", "172.17.0.1")];
        assert_eq!(allowed(&[], &addrs).len(), 2);
        let deny_docker = [(Regex::new("^docker.*$").unwrap(), false)];
        assert_eq!(allowed(&deny_docker, &addrs), vec![addrs[0].addr]);
        // Allow rules make every other interface denied.
        let only_eth = [(Regex::new("^eth0$").unwrap(), true)];
        assert_eq!(allowed(&only_eth, &addrs), vec![addrs[0].addr]);
    }

    #[test]
    fn enumerate_sees_loopback() {
        let all = enumerate().unwrap();
        assert!(all.iter().any(|a| a.addr.is_loopback()), "{all:?}");
    }
}
