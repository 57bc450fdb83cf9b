//! Issue 7 end to end: the tutorial's mesh in network namespaces with real TUN devices. A
//! lighthouse on a "public" switch, hosts behind port-restricted NAT routers that drop
//! unsolicited inbound traffic, meshd and nebula 1.6.1 mixed in every role. Proves the hosts find
//! each other through the lighthouse and then talk DIRECTLY (the lighthouse's interface counters
//! stay flat during a bulk transfer), the tutorial host firewall applies, the lighthouse serves
//! DNS, and a second lighthouse keeps discovery working when the first stops.

mod common;
mod netns_mesh_util;

use std::time::Duration;

use common::netns::NatKind;
use netns_mesh_util::{
    dns_a, node_config, payload, rx_bytes, sha256, tcp_connects, transfer, Impl, World,
    HOST_FIREWALL,
};

const LH_VPN: &str = "10.42.0.1";
const LH_PUBLIC: &str = "198.51.100.1";
const BULK: usize = 4 << 20;

fn serve_dns(yaml: String) -> String {
    yaml.replace(
        "  am_lighthouse: true\n",
        "  am_lighthouse: true\n  serve_dns: true\n  dns:\n    host: 0.0.0.0\n    port: 5353\n",
    )
}

/// A lighthouse and two hosts behind their own NATs; everything issue 7 asks of one mesh.
fn nat_mesh(lh: Impl, h1: Impl, h2: Impl) {
    let mut w = World::new();
    let (lh_ns, lh_if) = w.public(1);
    let (h1_ns, _) = w.behind_nat(NatKind::PortRestricted);
    let (h2_ns, r2) = w.behind_nat(NatKind::PortRestricted);
    assert!(
        !w.host(lh_ns).ping(w.routers[r2].wan_ip(), 1),
        "router 2 answered unsolicited inbound traffic"
    );
    assert!(
        !w.host(h1_ns).ping("192.168.12.2", 1),
        "hosts behind different NATs reach each other's LAN"
    );

    let mut lh_cfg = node_config(&[]);
    lh_cfg.am_lighthouse = true;
    let dns = lh == Impl::Meshd;
    let lh_i = w.start(lh, lh_ns, "lighthouse", LH_VPN, lh_cfg, |y| {
        if dns {
            serve_dns(y)
        } else {
            y
        }
    });
    let host_cfg = || {
        let mut c = node_config(&[(LH_VPN, LH_PUBLIC)]);
        c.firewall = Some(HOST_FIREWALL.into());
        c
    };
    let a = w.start(h1, h1_ns, "h1", "10.42.0.2", host_cfg(), |y| y);
    let b = w.start(h2, h2_ns, "h2", "10.42.0.3", host_cfg(), |y| y);

    assert!(
        w.ping_eventually(a, lh_i, 10),
        "h1 -> lighthouse\n{}",
        w.logs()
    );
    assert!(
        w.ping_eventually(b, lh_i, 10),
        "h2 -> lighthouse\n{}",
        w.logs()
    );
    assert!(
        w.ping_eventually(a, b, 20),
        "h1 -> h2 through the NATs\n{}",
        w.logs()
    );
    assert!(w.ping_eventually(b, a, 5), "h2 -> h1\n{}", w.logs());

    // Direct path: a bulk transfer h1 -> h2 barely moves the lighthouse's interface counter.
    let data = payload(7, BULK);
    let before = rx_bytes(w.host(lh_ns), &lh_if);
    let got = transfer(w.host(h1_ns), w.host(h2_ns), "10.42.0.3", 5432, &data)
        .unwrap_or_else(|e| panic!("transfer h1 -> h2:5432: {e}\n{}", w.logs()));
    let through_lh = rx_bytes(w.host(lh_ns), &lh_if) - before;
    assert_eq!(got, sha256(&data), "content changed on the way");
    assert!(
        through_lh < (BULK / 16) as u64,
        "{through_lh} bytes reached the lighthouse during a {BULK}-byte transfer"
    );
    // And h1 addresses h2 at router 2's public (NAT) address.
    let r2_wan = w.routers[r2].wan_ip().to_string();
    assert!(
        w.nodes[a].process.log().contains(&r2_wan),
        "h1 never used h2's NAT address {r2_wan}:\n{}",
        w.logs()
    );

    // The tutorial firewall on h2: 5432 (above) connects, 22 does not; out is open on h1.
    assert!(
        !tcp_connects(
            w.host(h1_ns),
            w.host(h2_ns),
            "10.42.0.3",
            22,
            Duration::from_secs(2)
        ),
        "h2's firewall let TCP 22 in"
    );
    assert!(
        tcp_connects(
            w.host(h1_ns),
            w.host(h2_ns),
            "10.42.0.3",
            8008,
            Duration::from_secs(5)
        ),
        "h2's firewall blocked TCP 8008\n{}",
        w.logs()
    );

    if dns {
        let server = format!("{LH_PUBLIC}:5353").parse().expect("addr");
        let found = dns_a(w.host(h1_ns), server, "h2").expect("DNS query");
        assert_eq!(
            found,
            vec!["10.42.0.3".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let none = dns_a(w.host(h1_ns), server, "nobody").expect("DNS query");
        assert!(none.is_empty(), "unknown name answered {none:?}");
    }
}

fn ready(test: &str) -> bool {
    netns_mesh_util::ready(test)
}

#[test]
fn meshd_mesh_behind_nats_talks_directly_with_dns() {
    if ready("meshd_mesh_behind_nats_talks_directly_with_dns") {
        nat_mesh(Impl::Meshd, Impl::Meshd, Impl::Meshd);
    }
}

#[test]
fn nebula_lighthouse_with_meshd_hosts() {
    if ready("nebula_lighthouse_with_meshd_hosts") {
        nat_mesh(Impl::Nebula, Impl::Meshd, Impl::Meshd);
    }
}

#[test]
fn meshd_lighthouse_with_nebula_hosts() {
    if ready("meshd_lighthouse_with_nebula_hosts") {
        nat_mesh(Impl::Meshd, Impl::Nebula, Impl::Nebula);
    }
}

#[test]
fn meshd_and_nebula_hosts_behind_nats() {
    if ready("meshd_and_nebula_hosts_behind_nats") {
        nat_mesh(Impl::Meshd, Impl::Meshd, Impl::Nebula);
    }
}

/// Two lighthouses; stopping one keeps established tunnels up, and a pair of hosts that never
/// talked still meets through the other.
#[test]
fn second_lighthouse_keeps_discovery_working() {
    if !ready("second_lighthouse_keeps_discovery_working") {
        return;
    }
    let mut w = World::new();
    let (l1_ns, _) = w.public(1);
    let (l2_ns, _) = w.public(2);
    let hosts: Vec<usize> = (0..3)
        .map(|_| w.behind_nat(NatKind::PortRestricted).0)
        .collect();
    let mut cfg = node_config(&[]);
    cfg.am_lighthouse = true;
    let l1 = w.start(Impl::Meshd, l1_ns, "lh1", LH_VPN, cfg, |y| y);
    let mut cfg = node_config(&[]);
    cfg.am_lighthouse = true;
    // The second lighthouse is nebula 1.6.1: discovery must not depend on which one survives.
    w.start(Impl::Nebula, l2_ns, "lh2", "10.42.0.2", cfg, |y| y);
    let lighthouses = [(LH_VPN, LH_PUBLIC), ("10.42.0.2", "198.51.100.2")];
    let ids: Vec<usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let name = format!("h{}", i + 1);
            let vpn = format!("10.42.0.{}", 11 + i);
            w.start(
                Impl::Meshd,
                *ns,
                &name,
                &vpn,
                node_config(&lighthouses),
                |y| y,
            )
        })
        .collect();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    assert!(w.ping_eventually(a, b, 20), "h1 -> h2\n{}", w.logs());

    w.nodes[l1].process.stop();
    assert!(
        w.ns_of(a).ping("10.42.0.12", 3),
        "the established h1 <-> h2 tunnel broke when lh1 stopped\n{}",
        w.logs()
    );
    assert!(
        w.ping_eventually(a, c, 20),
        "h1 could not find h3 through the remaining lighthouse\n{}",
        w.logs()
    );
    assert!(w.ns_of(c).ping("10.42.0.11", 3), "h3 -> h1\n{}", w.logs());
}

/// Two hosts on one LAN behind the same NAT meet at their LAN addresses, which only the
/// enumerated local addresses (with the port actually bound for `listen.port: 0`) can tell them:
/// the router does not hairpin. A third host whose LAN interface `local_allow_list` denies
/// advertises no LAN address, so it stays out of reach.
#[test]
fn hosts_on_one_lan_meet_at_their_local_addresses() {
    if !ready("hosts_on_one_lan_meet_at_their_local_addresses") {
        return;
    }
    let mut w = World::new();
    let (lh_ns, _) = w.public(1);
    let (a_ns, r) = w.behind_nat(NatKind::PortRestricted);
    let (b_ns, _) = w.join_lan(r, 3);
    let (c_ns, c_if) = w.join_lan(r, 4);
    let mut cfg = node_config(&[]);
    cfg.am_lighthouse = true;
    w.start(Impl::Meshd, lh_ns, "lighthouse", LH_VPN, cfg, |y| y);
    let lhs = [(LH_VPN, LH_PUBLIC)];
    let a = w.start(
        Impl::Meshd,
        a_ns,
        "a",
        "10.42.0.2",
        node_config(&lhs),
        |y| y,
    );
    let mut b_cfg = node_config(&lhs);
    b_cfg.listen_port = 0;
    let b = w.start(Impl::Meshd, b_ns, "b", "10.42.0.3", b_cfg, |y| y);
    let mut c_cfg = node_config(&lhs);
    // Without punchy.respond c cannot reach back to a on its own initiative.
    c_cfg.punchy = false;
    let c = w.start(Impl::Meshd, c_ns, "c", "10.42.0.4", c_cfg, move |y| {
        y.replacen(
            "lighthouse:\n",
            &format!("lighthouse:\n  local_allow_list:\n    interfaces:\n      '{c_if}': false\n"),
            1,
        )
    });

    assert!(
        w.ping_eventually(a, b, 20),
        "a -> b on one LAN\n{}",
        w.logs()
    );
    let b_log = w.nodes[b].process.log();
    let port = b_log
        .split("listen=0.0.0.0:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("b logs its listen address");
    assert_ne!(port, "0");
    let lan = w.routers[r]
        .wan_ip()
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_string();
    let expect = format!("remote=Some(192.168.{lan}.3:{port})");
    assert!(
        w.nodes[a].process.log().contains(&expect),
        "a did not reach b at its LAN address and bound port ({expect})\n{}",
        w.logs()
    );

    assert!(
        !w.ping_eventually(a, c, 8),
        "a reached c although c's LAN interface is not advertised\n{}",
        w.logs()
    );
    assert!(
        !w.nodes[a]
            .process
            .log()
            .contains(&format!("192.168.{lan}.4")),
        "c's denied LAN address reached a\n{}",
        w.logs()
    );
}

/// A host whose only LAN address is denied by a `local_allow_list` CIDR gains a second address
/// while running: the daemon notices the change and advertises it, and a LAN neighbour then
/// reaches it there.
#[test]
fn a_new_local_address_is_advertised() {
    if !ready("a_new_local_address_is_advertised") {
        return;
    }
    let mut w = World::new();
    let (lh_ns, _) = w.public(1);
    let (a_ns, r) = w.behind_nat(NatKind::PortRestricted);
    let (e_ns, e_if) = w.join_lan(r, 5);
    let lan = w.routers[r]
        .wan_ip()
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_string();
    let mut cfg = node_config(&[]);
    cfg.am_lighthouse = true;
    w.start(Impl::Meshd, lh_ns, "lighthouse", LH_VPN, cfg, |y| y);
    // A second subnet on the LAN, so e's reply to a leaves from e's new address (with one
    // subnet the kernel would answer from e's primary, denied, address).
    let a_if = w
        .host(a_ns)
        .ip(&["-o", "-4", "addr", "show", "to", "192.168.0.0/16"]);
    let a_if = a_if
        .split_whitespace()
        .nth(1)
        .expect("a's LAN interface")
        .to_string();
    w.host(a_ns)
        .ip(&["addr", "add", "10.99.0.2/24", "dev", &a_if]);
    let lhs = [(LH_VPN, LH_PUBLIC)];
    let a = w.start(
        Impl::Meshd,
        a_ns,
        "a",
        "10.42.0.2",
        node_config(&lhs),
        |y| y,
    );
    let mut e_cfg = node_config(&lhs);
    e_cfg.punchy = false;
    let denied = format!("192.168.{lan}.5/32");
    let e = w.start(Impl::Meshd, e_ns, "e", "10.42.0.5", e_cfg, move |y| {
        y.replacen(
            "lighthouse:\n",
            &format!("lighthouse:\n  local_allow_list:\n    \"{denied}\": false\n"),
            1,
        )
    });
    assert!(w.ping_eventually(e, 0, 10), "e -> lighthouse\n{}", w.logs());
    assert!(
        !w.ping_eventually(a, e, 3),
        "a reached e before e had an advertisable address\n{}",
        w.logs()
    );

    let added = "10.99.0.6";
    w.host(e_ns)
        .ip(&["addr", "add", &format!("{added}/24"), "dev", &e_if]);
    assert!(
        w.ping_eventually(a, e, 25),
        "a never reached e at its new address\n{}",
        w.logs()
    );
    assert!(
        w.nodes[a]
            .process
            .log()
            .contains(&format!("remote=Some({added}:4242)")),
        "a reached e, but not at the new address {added}\n{}",
        w.logs()
    );
}
