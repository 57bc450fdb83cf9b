//! Load-time checks across sections (Nebula §9.2): those needing only the config, and those
//! needing the VPN network from the host certificate. Reports problems and warnings naming keys;
//! never reads files or certificates itself.

use std::net::{IpAddr, Ipv4Addr};

use super::model::Config;
use super::reader::{Problem, Reader, Warning};
use super::types::{Host, HostPort, IpNet};

/// Checks that need nothing but the config.
pub fn check_config(r: &mut Reader<'_>, c: &Config) {
    let lh = &c.lighthouse;
    if lh.am_lighthouse && c.listen.port == 0 {
        r.problem(
            "listen.port",
            "lighthouse.am_lighthouse is enabled but no port number is set (0 = random)",
        );
    }
    if lh.am_lighthouse && !lh.hosts.is_empty() {
        r.warn(
            "lighthouse.hosts",
            "lighthouse.am_lighthouse is enabled but upstream lighthouses are listed",
        );
    }
    if !lh.am_lighthouse && lh.hosts.is_empty() {
        r.warn(
            "lighthouse.hosts",
            "no lighthouses configured: tunnels can only start to static_host_map entries",
        );
    }
    if lh.serve_dns && !lh.am_lighthouse {
        r.warn(
            "lighthouse.serve_dns",
            "the DNS server only runs on a lighthouse; ignored",
        );
    }
    for (i, host) in lh.hosts.iter().enumerate() {
        if !c.static_host_map.iter().any(|s| s.vpn_ip == *host) {
            r.problem(
                &format!("lighthouse.hosts[{i}]"),
                format!("lighthouse {host} does not have a static_host_map entry"),
            );
        }
    }
}

/// Whether Nebula keeps a static address (`lighthouse.go` addStaticRemote): the remote allow
/// lists must allow it and an IPv4 address must not be inside the VPN network. Names are
/// resolved later, so they count as kept.
fn static_addr_kept(c: &Config, vpn_net: IpNet, vpn_ip: Ipv4Addr, addr: &HostPort) -> bool {
    let Host::Ip(ip) = addr.host else { return true };
    let lh = &c.lighthouse;
    let inside = lh
        .remote_allow_ranges
        .iter()
        .filter(|(range, _)| range.contains(IpAddr::V4(vpn_ip)))
        .max_by_key(|(range, _)| range.prefix());
    let allowed = inside.is_none_or(|(_, list)| list.allows(ip))
        && lh
            .remote_allow_list
            .as_ref()
            .is_none_or(|list| list.allows(ip));
    allowed && !(ip.is_ipv4() && vpn_net.contains(ip))
}

/// Checks that need the VPN network (the first IP/mask of the host certificate). Problems stop
/// start-up; warnings do not.
pub fn check_network(c: &Config, vpn_net: IpNet) -> (Vec<Problem>, Vec<Warning>) {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    for (i, host) in c.lighthouse.hosts.iter().enumerate() {
        if !vpn_net.contains(IpAddr::V4(*host)) {
            problem(
                format!("lighthouse.hosts[{i}]"),
                format!("lighthouse {host} is not in our VPN network {vpn_net}"),
            );
        }
    }
    for s in &c.static_host_map {
        if !vpn_net.contains(IpAddr::V4(s.vpn_ip)) {
            problem(
                format!("static_host_map.{}", s.vpn_ip),
                format!("{} is not in our VPN network {vpn_net}", s.vpn_ip),
            );
        }
    }
    for (i, host) in c.lighthouse.hosts.iter().enumerate() {
        let Some(entry) = c.static_host_map.iter().find(|s| s.vpn_ip == *host) else {
            continue;
        };
        if !entry.addrs.is_empty()
            && !entry
                .addrs
                .iter()
                .any(|a| static_addr_kept(c, vpn_net, *host, a))
        {
            let message = format!(
                "lighthouse {host} does not have a usable static_host_map entry: every address is refused by \
                 lighthouse.remote_allow_list/remote_allow_ranges or lies inside the VPN network"
            );
            problem(format!("lighthouse.hosts[{i}]"), message);
        }
    }
    for (i, r) in c.tun.routes.iter().enumerate() {
        if !vpn_net.contains_net(&r.route) {
            problem(
                format!("tun.routes[{i}].route"),
                format!("{} is not inside the VPN network {vpn_net}", r.route),
            );
        }
    }
    for (i, r) in c.tun.unsafe_routes.iter().enumerate() {
        let key = format!("tun.unsafe_routes[{i}].route");
        if vpn_net.contains_net(&r.route) {
            problem(
                key,
                format!(
                    "{} is inside the VPN network {vpn_net}; unsafe routes must lie outside it",
                    r.route
                ),
            );
        } else if r.route.overlaps(&vpn_net) {
            let message = format!("{} overlaps the VPN network {vpn_net}", r.route);
            warnings.push(Warning { key, message });
        }
    }
    for (i, a) in c.lighthouse.advertise_addrs.iter().enumerate() {
        if let Host::Ip(ip) = a.host {
            if vpn_net.contains(ip) {
                let message = format!("{a} is inside the VPN network {vpn_net}; ignored");
                warnings.push(Warning {
                    key: format!("lighthouse.advertise_addrs[{i}]"),
                    message,
                });
            }
        }
    }
    (problems, warnings)
}
