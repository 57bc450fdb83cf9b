//! Property tests: the compiled lookup tables against a naive matcher written straight from the
//! rule semantics (nebula-protocol.md §8.2), and the whole firewall (address checks, conntrack,
//! reloads, expiry) against a simple model, on random rules, peers, packets and times.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshd::firewall::{
    CidrSpec, ConntrackTimeouts, Direction, DropReason, Firewall, FirewallConfig, FlowPacket,
    Ipv4Net, LocalIdentity, Peer, PortSpec, Proto, Rule, Verdict,
};
use proptest::prelude::*;

const NAMES: &[&str] = &["a", "b", "any"];
const GROUPS: &[&str] = &["g1", "g2", "g3", "any"];
const ISSUERS: &[&str] = &["s1", "s2"];
const CA_NAMES: &[&str] = &["n1", "n2"];
const PORTS: &[u16] = &[0, 1, 2, 22, 80, 443, 1000, 65535];

fn ip4() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (0u8..6).prop_map(|d| Ipv4Addr::new(10, 0, 0, d)),
        (0u8..4).prop_map(|d| Ipv4Addr::new(10, 0, 1, d)),
        Just(Ipv4Addr::UNSPECIFIED),
    ]
}

fn cidr() -> impl Strategy<Value = CidrSpec> {
    prop_oneof![
        1 => Just(CidrSpec::Any),
        1 => Just(CidrSpec::V6Never),
        6 => (ip4(), prop_oneof![Just(0u8), Just(8), Just(24), Just(30), Just(32)])
            .prop_map(|(ip, p)| CidrSpec::V4(Ipv4Net::new(ip, p).expect("prefix <= 32"))),
    ]
}

fn port_spec() -> impl Strategy<Value = PortSpec> {
    prop_oneof![
        2 => Just(PortSpec::Any),
        1 => Just(PortSpec::Fragment),
        1 => Just(PortSpec::Never),
        3 => prop::sample::select(PORTS).prop_filter("nonzero", |p| *p != 0)
            .prop_map(|p| PortSpec::Range { start: p, end: p }),
        3 => (1u16..1200, 0u16..600).prop_map(|(s, w)| PortSpec::Range { start: s, end: s.saturating_add(w) }),
    ]
}

fn opt_str(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.4, prop::sample::select(pool).prop_map(String::from))
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![Just(Direction::Inbound), Just(Direction::Outbound)],
        prop_oneof![
            Just(Proto::Any),
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::Icmp)
        ],
        port_spec(),
        opt_str(NAMES),
        prop::collection::vec(prop::sample::select(GROUPS).prop_map(String::from), 0..3),
        prop::option::weighted(0.3, cidr()),
        prop::option::weighted(0.3, cidr()),
        opt_str(CA_NAMES),
        opt_str(ISSUERS),
    )
        .prop_map(
            |(direction, proto, port, host, groups, cidr, local_cidr, ca_name, ca_sha)| Rule {
                direction,
                proto,
                port,
                host,
                groups,
                cidr,
                local_cidr,
                ca_name,
                ca_sha,
            },
        )
}

#[derive(Debug, Clone)]
struct PeerData {
    vpn_ip: Ipv4Addr,
    name: String,
    groups: Vec<String>,
    issuer: String,
    ca_name: Option<String>,
    subnets: Vec<Ipv4Net>,
}

impl PeerData {
    fn peer(&self) -> Peer<'_> {
        Peer {
            vpn_ip: self.vpn_ip,
            name: &self.name,
            groups: &self.groups,
            issuer: &self.issuer,
            ca_name: self.ca_name.as_deref(),
            ips: std::slice::from_ref(&self.vpn_ip),
            subnets: &self.subnets,
        }
    }
}

fn peer_data() -> impl Strategy<Value = PeerData> {
    (
        ip4(),
        prop::sample::select(&["a", "b", "c"][..]).prop_map(String::from),
        prop::collection::vec(prop::sample::select(GROUPS).prop_map(String::from), 0..4),
        prop::sample::select(ISSUERS).prop_map(String::from),
        opt_str(CA_NAMES),
        prop::option::of(cidr()),
    )
        .prop_map(|(vpn_ip, name, groups, issuer, ca_name, subnet)| PeerData {
            vpn_ip,
            name,
            groups,
            issuer,
            ca_name,
            subnets: match subnet {
                Some(CidrSpec::V4(n)) => vec![n],
                _ => Vec::new(),
            },
        })
}

fn flow() -> impl Strategy<Value = FlowPacket> {
    (
        ip4(),
        ip4(),
        prop::sample::select(PORTS),
        prop_oneof![prop::sample::select(PORTS), 1u16..1500],
        prop_oneof![Just(1u8), Just(6), Just(17), Just(47)],
        prop::bool::weighted(0.15),
    )
        .prop_map(|(local_ip, remote_ip, a, b, protocol, fragment)| {
            // ICMP and fragments have no ports, as the packet parser guarantees.
            let no_ports = fragment || protocol == 1;
            let (local_port, remote_port) = if no_ports { (0, 0) } else { (a, b) };
            FlowPacket {
                local_ip,
                remote_ip,
                local_port,
                remote_port,
                protocol,
                fragment,
            }
        })
}

/// The semantics, one rule at a time, without any of the table machinery.
fn naive_allows(rules: &[Rule], p: &FlowPacket, dir: Direction, peer: &Peer<'_>) -> bool {
    rules
        .iter()
        .filter(|r| r.direction == dir)
        .any(|r| naive_rule(r, p, dir, peer))
}

fn naive_rule(r: &Rule, p: &FlowPacket, dir: Direction, peer: &Peer<'_>) -> bool {
    let proto_ok = match r.proto {
        Proto::Any => true,
        Proto::Tcp => p.protocol == 6,
        Proto::Udp => p.protocol == 17,
        Proto::Icmp => p.protocol == 1,
    };
    let port = match dir {
        Direction::Inbound => p.local_port,
        Direction::Outbound => p.remote_port,
    };
    let port_ok = match r.port {
        PortSpec::Any => true,
        PortSpec::Fragment => p.fragment,
        PortSpec::Range { start, end } => !p.fragment && start <= port && port <= end,
        PortSpec::Never => false,
    };
    let has_ca = r.ca_name.is_some() || r.ca_sha.is_some();
    let ca_ok = !has_ca
        || r.ca_sha.as_deref() == Some(peer.issuer)
        || (r.ca_name.is_some() && r.ca_name.as_deref() == peer.ca_name);
    let cidr_is_any = match r.cidr {
        Some(CidrSpec::Any) => true,
        Some(CidrSpec::V4(n)) => n.contains(Ipv4Addr::UNSPECIFIED),
        _ => false,
    };
    let any_peer = (r.host.is_none() && r.groups.is_empty() && r.cidr.is_none())
        || r.host.as_deref() == Some("any")
        || r.groups.iter().any(|g| g == "any")
        || cidr_is_any;
    let peer_ok = any_peer
        || r.host.as_deref() == Some(peer.name)
        || (!r.groups.is_empty() && r.groups.iter().all(|g| peer.groups.contains(g)))
        || matches!(r.cidr, Some(CidrSpec::V4(n)) if n.contains(p.remote_ip));
    let local_ok = match r.local_cidr {
        None | Some(CidrSpec::Any) => true,
        Some(CidrSpec::V4(n)) => n.contains(p.local_ip),
        Some(CidrSpec::V6Never) => false,
    };
    proto_ok && port_ok && ca_ok && peer_ok && local_ok
}

fn split(rules: Vec<Rule>) -> FirewallConfig {
    let (inbound, outbound) = rules
        .into_iter()
        .partition(|r| r.direction == Direction::Inbound);
    FirewallConfig {
        inbound,
        outbound,
        ..FirewallConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_tables_match_naive_rules(
        rules in prop::collection::vec(rule(), 0..12),
        peers in prop::collection::vec(peer_data(), 1..4),
        flows in prop::collection::vec((flow(), prop::bool::ANY), 1..40),
    ) {
        let fw = Firewall::new(split(rules.clone()), LocalIdentity::default());
        for (i, (p, inbound)) in flows.iter().enumerate() {
            let dir = if *inbound { Direction::Inbound } else { Direction::Outbound };
            let pd = &peers[i % peers.len()];
            let peer = pd.peer();
            prop_assert_eq!(
                fw.rules_allow(p, dir, &peer),
                naive_allows(&rules, p, dir, &peer),
                "packet {:?} {:?} peer {:?}", p, dir, pd
            );
        }
    }

    #[test]
    fn firewall_matches_stateful_model(
        rule_sets in prop::collection::vec(prop::collection::vec(rule(), 0..8), 1..3),
        peers in prop::collection::vec(peer_data(), 1..3),
        steps in prop::collection::vec((flow(), prop::bool::ANY, 0u64..40, 0usize..3, prop::bool::weighted(0.05)), 1..60),
    ) {
        let timeouts = ConntrackTimeouts {
            tcp: Duration::from_secs(50),
            udp: Duration::from_secs(20),
            default: Duration::from_secs(30),
        };
        let local = LocalIdentity::new(
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
            vec![Ipv4Net::new(Ipv4Addr::new(10, 0, 1, 0), 30).expect("net")],
        );
        let config = |rules: &Vec<Rule>| FirewallConfig { timeouts, ..split(rules.clone()) };
        let mut fw = Firewall::new(config(&rule_sets[0]), local.clone());
        let mut current = 0usize;
        let mut version = 0u16;
        // Model conntrack: key -> (expires, creating direction, version).
        let mut model: HashMap<FlowPacket, (Instant, Direction, u16)> = HashMap::new();
        let t0 = Instant::now();
        let mut now = t0;
        for (p, inbound, dt, peer_ix, reload) in steps {
            now += Duration::from_secs(dt);
            if reload {
                current = (current + 1) % rule_sets.len();
                fw.replace_rules(config(&rule_sets[current]));
                version = version.wrapping_add(1);
            }
            let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
            let pd = &peers[peer_ix % peers.len()];
            let peer = pd.peer();
            let rules = &rule_sets[current];
            let timeout = match p.protocol { 6 => timeouts.tcp, 17 => timeouts.udp, _ => timeouts.default };

            let want = if !peer.owns_remote_ip(p.remote_ip) {
                Verdict::Drop(DropReason::RemoteIp)
            } else if !local.handles(p.local_ip) {
                Verdict::Drop(DropReason::LocalIp)
            } else {
                let tracked = match model.get(&p).copied() {
                    Some((exp, _, _)) if exp <= now => { model.remove(&p); false }
                    Some((_, d, v)) if v != version => {
                        if naive_allows(rules, &p, d, &peer) { true } else { model.remove(&p); false }
                    }
                    Some(_) => true,
                    None => false,
                };
                if tracked {
                    if let Some(e) = model.get_mut(&p) { e.0 = now + timeout; e.2 = version; }
                    Verdict::Allow
                } else if naive_allows(rules, &p, dir, &peer) {
                    model.insert(p, (now + timeout, dir, version));
                    Verdict::Allow
                } else {
                    Verdict::Drop(DropReason::NoRule)
                }
            };
            prop_assert_eq!(fw.check(&p, dir, &peer, now), want, "packet {:?} {:?}", p, dir);
        }
    }
}
