//! Compiled rule tables for one direction, shaped like nebula's `FirewallTable` (`firewall.go`):
//! an any-protocol table checked first, then the packet's protocol table; inside each, a port slot
//! (exact port range, then `any`; fragments use the `fragment` slot, then `any`), then the CA
//! split (no CA condition / by `ca_sha` / by `ca_name`), then the peer selector (any, host,
//! group sets, cidr), each carrying the `local_cidr`s it applies to. Across rules everything ORs.
//!
//! Nebula keeps one map entry per port number; ranges would cost 65535 entries, so ports here are
//! cut into segments at every range boundary and found by binary search. Every segment holds the
//! merge of the rules covering it, which is exactly what nebula's per-port entry holds.
//! Owns matching only: no conntrack, no address checks. Lookups never allocate.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::identity::Peer;
use super::net::Ipv4Net;
use super::packet::{FlowPacket, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use super::rules::{CidrSpec, Direction, PortSpec, Proto, Rule};

/// All rules of one direction, compiled.
#[derive(Debug, Default)]
pub(crate) struct RuleTable {
    any_proto: PortTable,
    tcp: PortTable,
    udp: PortTable,
    icmp: PortTable,
}

impl RuleTable {
    /// Compiles the rules whose direction is `direction` (others are ignored).
    pub(crate) fn build(rules: &[Rule], direction: Direction) -> RuleTable {
        let select = |proto: Proto| -> Vec<&Rule> {
            rules
                .iter()
                .filter(|r| r.direction == direction && r.proto == proto)
                .collect()
        };
        RuleTable {
            any_proto: PortTable::build(&select(Proto::Any)),
            tcp: PortTable::build(&select(Proto::Tcp)),
            udp: PortTable::build(&select(Proto::Udp)),
            icmp: PortTable::build(&select(Proto::Icmp)),
        }
    }

    /// Does any rule allow this packet, travelling in `direction`, with this peer?
    pub(crate) fn matches(&self, p: &FlowPacket, direction: Direction, peer: &Peer<'_>) -> bool {
        let port = p.rule_port(direction);
        if self.any_proto.matches(port, p, peer) {
            return true;
        }
        match p.protocol {
            PROTO_TCP => self.tcp.matches(port, p, peer),
            PROTO_UDP => self.udp.matches(port, p, peer),
            PROTO_ICMP => self.icmp.matches(port, p, peer),
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct PortTable {
    any: Option<CaTable>,
    fragment: Option<CaTable>,
    /// Sorted segment starts; segment i covers `starts[i]..starts[i+1]`.
    starts: Vec<u32>,
    segments: Vec<Option<CaTable>>,
}

impl PortTable {
    fn build(rules: &[&Rule]) -> PortTable {
        let mut table = PortTable::default();
        let mut bounds = Vec::new();
        for rule in rules {
            match rule.port {
                PortSpec::Any => table.any.get_or_insert_with(CaTable::default).add(rule),
                PortSpec::Fragment => table
                    .fragment
                    .get_or_insert_with(CaTable::default)
                    .add(rule),
                PortSpec::Range { start, end } => {
                    bounds.push(u32::from(start));
                    bounds.push(u32::from(end) + 1);
                }
                PortSpec::Never => {}
            }
        }
        bounds.sort_unstable();
        bounds.dedup();
        for &start in &bounds {
            let mut seg: Option<CaTable> = None;
            for rule in rules {
                if let PortSpec::Range { start: a, end: b } = rule.port {
                    if u32::from(a) <= start && start <= u32::from(b) {
                        seg.get_or_insert_with(CaTable::default).add(rule);
                    }
                }
            }
            table.starts.push(start);
            table.segments.push(seg);
        }
        table
    }

    fn segment(&self, port: u16) -> Option<&CaTable> {
        let idx = self.starts.partition_point(|&s| s <= u32::from(port));
        idx.checked_sub(1)
            .and_then(|i| self.segments.get(i))
            .and_then(Option::as_ref)
    }

    fn matches(&self, port: u16, p: &FlowPacket, peer: &Peer<'_>) -> bool {
        let specific = if p.fragment {
            self.fragment.as_ref()
        } else if port == 0 {
            // Port 0 is nebula's `any` key itself: only the any slot applies.
            None
        } else {
            self.segment(port)
        };
        let hit = |t: Option<&CaTable>| t.is_some_and(|t| t.matches(p, peer));
        hit(specific) || hit(self.any.as_ref())
    }
}

/// Nebula's `FirewallCA`: rules without CA condition, and rules keyed by CA fingerprint or name.
#[derive(Debug, Default)]
struct CaTable {
    any: Option<PeerSet>,
    by_sha: HashMap<String, PeerSet>,
    by_name: HashMap<String, PeerSet>,
}

impl CaTable {
    fn add(&mut self, rule: &Rule) {
        if rule.ca_sha.is_none() && rule.ca_name.is_none() {
            self.any.get_or_insert_with(PeerSet::default).add(rule);
            return;
        }
        // A rule with both is filed under each, so either CA condition admits it (as in 1.6.1).
        if let Some(sha) = &rule.ca_sha {
            self.by_sha.entry(sha.clone()).or_default().add(rule);
        }
        if let Some(name) = &rule.ca_name {
            self.by_name.entry(name.clone()).or_default().add(rule);
        }
    }

    fn matches(&self, p: &FlowPacket, peer: &Peer<'_>) -> bool {
        let hit = |s: Option<&PeerSet>| s.is_some_and(|s| s.matches(p, peer));
        hit(self.any.as_ref())
            || hit(self.by_sha.get(peer.issuer))
            || hit(peer.ca_name.and_then(|n| self.by_name.get(n)))
    }
}

/// Nebula's `FirewallRule`: which peers, each with the local addresses it applies to.
#[derive(Debug, Default)]
struct PeerSet {
    any: LocalSet,
    hosts: HashMap<String, LocalSet>,
    groups: Vec<(Vec<String>, LocalSet)>,
    cidrs: Vec<(Ipv4Net, LocalSet)>,
}

impl PeerSet {
    fn add(&mut self, rule: &Rule) {
        let local = rule.local_cidr;
        if rule.matches_any_peer() {
            self.any.add(local);
            return;
        }
        if !rule.groups.is_empty() {
            let mut set = LocalSet::default();
            set.add(local);
            self.groups.push((rule.groups.clone(), set));
        }
        if let Some(host) = &rule.host {
            self.hosts.entry(host.clone()).or_default().add(local);
        }
        if let Some(CidrSpec::V4(net)) = rule.cidr {
            // Compare spellings of one network as equal, as the old masked type did.
            let net = net.network();
            match self.cidrs.iter_mut().find(|(n, _)| *n == net) {
                Some((_, set)) => set.add(local),
                None => {
                    let mut set = LocalSet::default();
                    set.add(local);
                    self.cidrs.push((net, set));
                }
            }
        }
    }

    fn matches(&self, p: &FlowPacket, peer: &Peer<'_>) -> bool {
        let local = p.local_ip;
        if self.any.matches(local) {
            return true;
        }
        let group_hit = self
            .groups
            .iter()
            .any(|(need, set)| need.iter().all(|g| peer.has_group(g)) && set.matches(local));
        if group_hit {
            return true;
        }
        if self.hosts.get(peer.name).is_some_and(|s| s.matches(local)) {
            return true;
        }
        self.cidrs
            .iter()
            .any(|(net, set)| net.contains(p.remote_ip) && set.matches(local))
    }
}

/// The `local_cidr`s a selector applies to; empty means it applies nowhere.
#[derive(Debug, Default)]
struct LocalSet {
    any: bool,
    nets: Vec<Ipv4Net>,
}

impl LocalSet {
    fn add(&mut self, local: Option<CidrSpec>) {
        match local {
            None | Some(CidrSpec::Any) => self.any = true,
            Some(CidrSpec::V4(n)) => {
                let n = n.network();
                if !self.nets.contains(&n) {
                    self.nets.push(n);
                }
            }
            Some(CidrSpec::V6Never) => {}
        }
    }

    fn matches(&self, local: Ipv4Addr) -> bool {
        self.any || self.nets.iter().any(|n| n.contains(local))
    }
}
