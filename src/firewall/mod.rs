//! Firewall: rules and conntrack with Nebula 1.6.1 semantics (plus master's reject actions and
//! `local_cidr`). Pure code: no sockets, files, clocks or tun; time is passed in by the caller.
//! Owns rule parsing, flow-key extraction from IPv4 packets, the compiled lookup tables, conntrack
//! and reject-packet construction. Must not touch certificates (peer identity comes in as a
//! borrowed [`Peer`]) or config files (the config module hands us YAML values).
//!
//! Decision for each packet ([`Firewall::check`]):
//! 1. the remote IP must be the peer's vpn ip, a cert IP or inside a cert subnet;
//! 2. the local IP must be one of ours or inside our cert subnets;
//! 3. a live conntrack entry allows the packet (refreshing it); an entry made under an older rule
//!    set is first re-checked against the current rules in its original direction, and dropped
//!    if they no longer allow it;
//! 4. a matching rule allows the packet and creates a conntrack entry (refused at the bound).
//!
//! Nebula 1.6.1 consults conntrack before steps 1-2; master (since v1.7.0) moved it after them, as
//! here, so one peer cannot ride another peer's tracked flow by spoofing its address.

mod conntrack;
mod gofmt;
mod identity;
pub mod net;
mod packet;
mod port;
pub mod reject;
pub mod rules;
mod settings;
mod table;

use std::time::Instant;

pub use conntrack::{ConnEntry, Conntrack, ConntrackStats, Lookup, DEFAULT_CONNTRACK_CAPACITY};
pub use identity::{LocalIdentity, Peer};
pub use net::Ipv4Net;
pub use packet::{FlowPacket, PacketError, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
pub use rules::{
    parse_port, parse_rules, Action, CidrSpec, ConntrackTimeouts, Direction, PortSpec, Proto, Rule,
    RuleError,
};

use table::RuleTable;

/// Everything the firewall takes from config; replaced as a whole on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// Rules from `firewall.inbound` (each rule's own `direction` decides its table).
    pub inbound: Vec<Rule>,
    /// Rules from `firewall.outbound`.
    pub outbound: Vec<Rule>,
    pub inbound_action: Action,
    pub outbound_action: Action,
    pub timeouts: ConntrackTimeouts,
    /// Most flows conntrack holds; new flows beyond are dropped (`DropReason::ConntrackFull`).
    pub conntrack_capacity: usize,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            inbound: Vec::new(),
            outbound: Vec::new(),
            inbound_action: Action::Drop,
            outbound_action: Action::Drop,
            timeouts: ConntrackTimeouts::default(),
            conntrack_capacity: DEFAULT_CONNTRACK_CAPACITY,
        }
    }
}

/// Outcome of a firewall check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Drop(DropReason),
}

impl Verdict {
    pub fn is_allow(self) -> bool {
        self == Verdict::Allow
    }
}

/// Why a packet was refused. Counted per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a parseable IPv4 packet (only from [`Firewall::check_packet`]).
    Malformed,
    /// Remote address is not the peer's (nebula: `firewall.*.dropped.remote_ip`).
    RemoteIp,
    /// Local address is not ours (`dropped.local_ip`).
    LocalIp,
    /// No rule allows it (`dropped.no_rule`).
    NoRule,
    /// Allowed by the rules but conntrack is full of live flows.
    ConntrackFull,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Malformed,
        DropReason::RemoteIp,
        DropReason::LocalIp,
        DropReason::NoRule,
        DropReason::ConntrackFull,
    ];

    fn index(self) -> usize {
        match self {
            DropReason::Malformed => 0,
            DropReason::RemoteIp => 1,
            DropReason::LocalIp => 2,
            DropReason::NoRule => 3,
            DropReason::ConntrackFull => 4,
        }
    }

    /// Metric-style name, e.g. `no_rule`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::RemoteIp => "remote_ip",
            DropReason::LocalIp => "local_ip",
            DropReason::NoRule => "no_rule",
            DropReason::ConntrackFull => "conntrack_full",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DropReason::Malformed => "malformed packet",
            DropReason::RemoteIp => "remote address is not in the peer's certificate",
            DropReason::LocalIp => "local address is not one we handle",
            DropReason::NoRule => "no matching firewall rule",
            DropReason::ConntrackFull => "conntrack table is full",
        })
    }
}

/// Drops counted by direction and reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [[u64; 5]; 2],
}

impl DropCounters {
    pub fn get(&self, direction: Direction, reason: DropReason) -> u64 {
        self.counts[dir_index(direction)][reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// `inbound.no_rule=3 outbound.remote_ip=1`: the non-zero counters; empty when none.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for direction in [Direction::Inbound, Direction::Outbound] {
            for reason in DropReason::ALL {
                let n = self.get(direction, reason);
                if n > 0 {
                    let sep = if out.is_empty() { "" } else { " " };
                    let dir = match direction {
                        Direction::Inbound => "inbound",
                        Direction::Outbound => "outbound",
                    };
                    out.push_str(&format!("{sep}{dir}.{}={n}", reason.name()));
                }
            }
        }
        out
    }

    fn bump(&mut self, direction: Direction, reason: DropReason) {
        let c = &mut self.counts[dir_index(direction)][reason.index()];
        *c = c.saturating_add(1);
    }
}

/// Builds both tables. A rule is filed by its own `direction`, whichever list holds it.
fn compile(config: &FirewallConfig) -> (RuleTable, RuleTable) {
    let all: Vec<Rule> = config
        .inbound
        .iter()
        .chain(&config.outbound)
        .cloned()
        .collect();
    (
        RuleTable::build(&all, Direction::Inbound),
        RuleTable::build(&all, Direction::Outbound),
    )
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

/// The stateful firewall of one node: compiled rules for both directions plus conntrack.
#[derive(Debug)]
pub struct Firewall {
    inbound: RuleTable,
    outbound: RuleTable,
    config: FirewallConfig,
    local: LocalIdentity,
    conntrack: Conntrack,
    rules_version: u16,
    drops: DropCounters,
}

impl Firewall {
    pub fn new(config: FirewallConfig, local: LocalIdentity) -> Firewall {
        let (inbound, outbound) = compile(&config);
        Firewall {
            inbound,
            outbound,
            conntrack: Conntrack::new(config.conntrack_capacity),
            config,
            local,
            rules_version: 0,
            drops: DropCounters::default(),
        }
    }

    /// Installs a new rule set (reload). Conntrack is kept; its entries are re-checked lazily
    /// against the new rules. On rule-version wrap-around conntrack is reset, as nebula does.
    pub fn replace_rules(&mut self, config: FirewallConfig) {
        let (inbound, outbound) = compile(&config);
        self.inbound = inbound;
        self.outbound = outbound;
        if config.conntrack_capacity != self.conntrack.capacity() {
            self.conntrack.set_capacity(config.conntrack_capacity);
        }
        self.config = config;
        self.rules_version = self.rules_version.wrapping_add(1);
        if self.rules_version == 0 {
            self.conntrack.clear();
        }
    }

    /// Replaces this node's own addresses (new certificate).
    pub fn set_local_identity(&mut self, local: LocalIdentity) {
        self.local = local;
    }

    /// Parses an IPv4 packet and checks it. Unparseable packets are `Drop(Malformed)`.
    pub fn check_packet(
        &mut self,
        data: &[u8],
        direction: Direction,
        peer: &Peer<'_>,
        now: Instant,
    ) -> Verdict {
        match FlowPacket::parse(data, direction) {
            Ok(p) => self.check(&p, direction, peer, now),
            Err(_) => self.drop(direction, DropReason::Malformed),
        }
    }

    /// Decides one packet (see the module docs for the order). Never allocates except when
    /// conntrack grows.
    pub fn check(
        &mut self,
        p: &FlowPacket,
        direction: Direction,
        peer: &Peer<'_>,
        now: Instant,
    ) -> Verdict {
        if !peer.owns_remote_ip(p.remote_ip) {
            return self.drop(direction, DropReason::RemoteIp);
        }
        if !self.local.handles(p.local_ip) {
            return self.drop(direction, DropReason::LocalIp);
        }
        if self.conntrack_allows(p, peer, now) {
            return Verdict::Allow;
        }
        if !self.table(direction).matches(p, direction, peer) {
            return self.drop(direction, DropReason::NoRule);
        }
        let timeouts = self.config.timeouts;
        if !self
            .conntrack
            .insert(*p, direction, self.rules_version, now, &timeouts)
        {
            return self.drop(direction, DropReason::ConntrackFull);
        }
        Verdict::Allow
    }

    /// Would the current rules alone allow this packet (no address checks, no conntrack)?
    pub fn rules_allow(&self, p: &FlowPacket, direction: Direction, peer: &Peer<'_>) -> bool {
        self.table(direction).matches(p, direction, peer)
    }

    /// What to do with refused packets in `direction`.
    pub fn action(&self, direction: Direction) -> Action {
        match direction {
            Direction::Inbound => self.config.inbound_action,
            Direction::Outbound => self.config.outbound_action,
        }
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    pub fn rules_version(&self) -> u16 {
        self.rules_version
    }

    pub fn config(&self) -> &FirewallConfig {
        &self.config
    }

    /// Sweeps expired conntrack entries (for an idle timer; packets sweep a little each).
    pub fn expire(&mut self, now: Instant) {
        self.conntrack.expire(now);
    }

    fn table(&self, direction: Direction) -> &RuleTable {
        match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        }
    }

    fn conntrack_allows(&mut self, p: &FlowPacket, peer: &Peer<'_>, now: Instant) -> bool {
        let entry = match self.conntrack.lookup(p, now) {
            Lookup::Miss => return false,
            Lookup::Hit(e) => e,
        };
        if entry.rules_version != self.rules_version
            && !self
                .table(entry.direction)
                .matches(p, entry.direction, peer)
        {
            self.conntrack.remove_rechecked(p);
            return false;
        }
        let timeouts = self.config.timeouts;
        self.conntrack
            .refresh(p, now, &timeouts, self.rules_version);
        true
    }

    fn drop(&mut self, direction: Direction, reason: DropReason) -> Verdict {
        self.drops.bump(direction, reason);
        Verdict::Drop(reason)
    }
}
