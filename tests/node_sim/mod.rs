//! A simulated underlay for meshd nodes: one process, virtual time, a deterministic seed, and
//! configurable latency, jitter (reordering), loss and duplication, plus a tap to drop, rewrite
//! or inject chosen packets. The harness plays the OS on the TUN side: it answers ICMP echo
//! requests that a node writes to its TUN and records echo replies. On panic it prints the
//! packet flow.
//!
//! NAT models (for lighthouse/punchy tests): a node added with [`Sim::add_node_nat`] sits at a
//! private address (172.16.n.1) unreachable from outside, behind a NAT with public IP
//! 203.0.113.n. Full-cone: one public port per private socket, open to anyone. Port-restricted:
//! same mapping, inbound only from (ip, port) pairs the node has sent to. Symmetric: a new public
//! port per destination, inbound only from that destination. Mappings never expire.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use meshd::cert::{
    CaPool, CaSigningKey, CertDetails, Ipv4Net, NebulaCertificate, X25519PrivateKey,
};
use meshd::crypto::Cipher;
use meshd::node::{
    identity_from_cert, ipv4, CaPoolVerifier, DatagramOutcome, Event, Node, NodeConfig, NodeRng,
    TunOutcome, VpnIp,
};
use meshd::wire::{Header, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod nat;
pub use nat::{Nat, NatKind};

/// Wall clock of virtual time zero (seconds since the epoch).
pub const EPOCH_S: u64 = 1_750_000_000;

#[derive(Clone, Debug)]
pub struct Datagram {
    pub at: Instant,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Test hook inspecting every datagram a node sends.
pub type TapFn = Box<dyn FnMut(&Datagram) -> Tap>;

/// What the tap decides for a packet leaving a node.
pub enum Tap {
    Pass,
    Drop,
    Replace(Vec<u8>),
}

pub struct SimNode {
    pub node: Node,
    /// NAT in front of the node (its `addr` is then private and unreachable from outside).
    pub nat: Option<Nat>,
    pub addr: SocketAddr,
    pub vpn_ip: Ipv4Addr,
    pub events: Vec<Event>,
    /// Echo replies received on TUN: (from, seq).
    pub replies: Vec<(Ipv4Addr, u16)>,
    pub tun_packets: usize,
    /// Packets the node generated for its own TUN (firewall rejects).
    pub local_tun: Vec<Vec<u8>>,
    /// When false the node receives nothing (cable unplugged).
    pub online: bool,
    cert: NebulaCertificate,
    key: X25519PrivateKey,
    pub config: NodeConfig,
}

impl SimNode {
    /// The node's private key (for reload tests that re-sign its certificate).
    pub fn key(&self) -> X25519PrivateKey {
        self.key.clone()
    }

    /// The node's certificate as signed for the simulation.
    pub fn cert(&self) -> &NebulaCertificate {
        &self.cert
    }
}

pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    pub nodes: Vec<SimNode>,
    pub cipher: Cipher,
    pub latency: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    pub tap: Option<TapFn>,
    pub flow: Vec<String>,
    /// When true (default) every node gets every other node in its static host map.
    pub full_mesh: bool,
    /// Every datagram delivered to a node: (from, to, bytes) after NAT translation.
    pub delivered: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    in_flight: Vec<Datagram>,
    rng: StdRng,
    ca: NebulaCertificate,
    ca_key: CaSigningKey,
    pool_pem: Vec<u8>,
    next_seed: u64,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- packet flow ({} lines, last 400) ----",
                self.flow.len()
            );
            let skip = self.flow.len().saturating_sub(400);
            for l in &self.flow[skip..] {
                eprintln!("{l}");
            }
            for (i, n) in self.nodes.iter().enumerate() {
                eprintln!(
                    "node {i} {}: drops {:?} events {:?}",
                    n.vpn_ip,
                    n.node.drops().nonzero(),
                    n.events
                );
            }
        }
    }
}

impl Sim {
    pub fn new(seed: u64, cipher: Cipher) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let ca_key = CaSigningKey::from_seed(rng.gen());
        let ca = CertDetails {
            name: "sim ca".into(),
            not_before: EPOCH_S as i64 - 3600,
            not_after: EPOCH_S as i64 + 365 * 86400,
            public_key: ca_key.public_key(),
            is_ca: true,
            ..CertDetails::default()
        }
        .sign(&ca_key);
        let pool_pem = ca.to_pem().into_bytes();
        let now = Instant::now();
        Sim {
            now,
            start: now,
            nodes: Vec::new(),
            cipher,
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            tap: None,
            flow: Vec::new(),
            full_mesh: true,
            delivered: Vec::new(),
            in_flight: Vec::new(),
            rng,
            ca,
            ca_key,
            pool_pem,
            next_seed: seed.wrapping_mul(1000),
        }
    }

    /// Adds a node with VPN IP 10.0.0.`n`/24 at underlay 192.0.2.`n`:4242; every node knows
    /// every other node's address (static host map).
    pub fn add_node(&mut self, n: u8) -> usize {
        self.add_node_with(n, |_| {})
    }

    pub fn add_node_with(&mut self, n: u8, tweak: impl FnOnce(&mut NodeConfig)) -> usize {
        self.add_node_nat(n, None, tweak)
    }

    /// Adds node `n`, behind a NAT of `nat` kind if given (private 172.16.`n`.1:4242, public
    /// 203.0.113.`n`). The node is told its interface address via `set_local_addrs`.
    pub fn add_node_nat(
        &mut self,
        n: u8,
        nat: Option<NatKind>,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> usize {
        let vpn_ip = Ipv4Addr::new(10, 0, 0, n);
        let key = X25519PrivateKey::from_bytes(self.rng.gen());
        let cert = self.sign(
            &format!("node{n}"),
            vpn_ip,
            &key,
            &self.ca.clone(),
            &self.ca_key.clone(),
        );
        let mut config = NodeConfig {
            cipher: self.cipher,
            ..NodeConfig::default()
        };
        tweak(&mut config);
        let addr = match nat {
            None => SocketAddr::from(([192, 0, 2, n], 4242)),
            Some(_) => SocketAddr::from(([172, 16, n, 1], 4242)),
        };
        let mut node = self.build_node(&cert, &key, config.clone());
        node.set_local_addrs(self.now, &[addr.ip()]);
        self.nodes.push(SimNode {
            node,
            nat: nat.map(|k| Nat::new(k, Ipv4Addr::new(203, 0, 113, n))),
            addr,
            vpn_ip,
            events: Vec::new(),
            replies: Vec::new(),
            tun_packets: 0,
            local_tun: Vec::new(),
            online: true,
            cert,
            key,
            config,
        });
        if self.full_mesh {
            self.relink();
        }
        self.nodes.len() - 1
    }

    pub fn sign(
        &self,
        name: &str,
        ip: Ipv4Addr,
        key: &X25519PrivateKey,
        ca: &NebulaCertificate,
        ca_key: &CaSigningKey,
    ) -> NebulaCertificate {
        let mut d = CertDetails {
            name: name.into(),
            ips: vec![Ipv4Net::new(ip, 24).unwrap()],
            not_before: EPOCH_S as i64 - 60,
            not_after: EPOCH_S as i64 + 30 * 86400,
            public_key: key.public_key(),
            ..CertDetails::default()
        };
        d.issuer = Some(ca.fingerprint());
        d.sign(ca_key)
    }

    fn build_node(
        &mut self,
        cert: &NebulaCertificate,
        key: &X25519PrivateKey,
        config: NodeConfig,
    ) -> Node {
        let identity = identity_from_cert(cert, key).unwrap();
        let pool = CaPool::from_pem(&self.pool_pem, EPOCH_S as i64)
            .unwrap()
            .pool;
        self.next_seed += 1;
        Node::new(
            config,
            identity,
            Box::new(CaPoolVerifier { pool }),
            NodeRng::seeded_for_simulation(self.next_seed),
            self.now,
            self.wall_ns(),
        )
    }

    pub fn wall_ns(&self) -> u64 {
        EPOCH_S * 1_000_000_000 + (self.now - self.start).as_nanos() as u64
    }

    /// Static host maps: everybody knows everybody's current address.
    fn relink(&mut self) {
        let map: BTreeMap<VpnIp, Vec<SocketAddr>> = self
            .nodes
            .iter()
            .map(|n| (VpnIp::from(n.vpn_ip), vec![n.addr]))
            .collect();
        for n in &mut self.nodes {
            n.config.static_host_map = map.clone();
        }
        // Rebuilding would lose state; nodes built before a peer was added get the map on restart.
        // Tests add all nodes first, so rebuild every node that has no state yet.
        let idle: Vec<usize> = (0..self.nodes.len())
            .filter(|i| {
                self.nodes[*i].node.hostmap().host_count() == 0
                    && self.nodes[*i].node.hostmap().pending_count() == 0
            })
            .collect();
        for i in idle {
            let (cert, key, config) = (
                self.nodes[i].cert.clone(),
                self.nodes[i].key.clone(),
                self.nodes[i].config.clone(),
            );
            self.nodes[i].node = self.build_node(&cert, &key, config);
        }
    }

    /// Replaces node `i` with a fresh process (same cert and key), optionally with its wall
    /// clock shifted (negative = behind).
    pub fn restart(&mut self, i: usize, clock_skew_s: i64) {
        let pool = self.pool();
        self.restart_with_pool(i, clock_skew_s, pool);
    }

    /// [`Sim::restart`], with node `i` trusting `pool` (e.g. one with a blocklist).
    pub fn restart_with_pool(&mut self, i: usize, clock_skew_s: i64, pool: CaPool) {
        let (cert, key, config) = (
            self.nodes[i].cert.clone(),
            self.nodes[i].key.clone(),
            self.nodes[i].config.clone(),
        );
        let identity = identity_from_cert(&cert, &key).unwrap();
        self.next_seed += 1;
        let wall = (self.wall_ns() as i64 + clock_skew_s * 1_000_000_000) as u64;
        self.nodes[i].node = Node::new(
            config,
            identity,
            Box::new(CaPoolVerifier { pool }),
            NodeRng::seeded_for_simulation(self.next_seed),
            self.now,
            wall,
        );
        let ip = self.nodes[i].addr.ip();
        self.nodes[i].node.set_local_addrs(self.now, &[ip]);
        self.flow.push(format!(
            "{:>8} node {i} restarted (clock skew {clock_skew_s}s)",
            self.t()
        ));
    }

    /// The CA pool every node trusts (for reload tests).
    pub fn pool(&self) -> CaPool {
        CaPool::from_pem(&self.pool_pem, EPOCH_S as i64)
            .unwrap()
            .pool
    }

    /// A new certificate for node `i`: same key and VPN IP, these groups (for reload tests).
    pub fn resign(&self, i: usize, groups: &[&str]) -> NebulaCertificate {
        let n = &self.nodes[i];
        let mut d = CertDetails {
            name: format!("node{}-v2", n.vpn_ip.octets()[3]),
            ips: vec![Ipv4Net::new(n.vpn_ip, 24).unwrap()],
            groups: groups.iter().map(|g| g.to_string()).collect(),
            not_before: EPOCH_S as i64 - 60,
            not_after: EPOCH_S as i64 + 30 * 86400,
            public_key: n.key.public_key(),
            ..CertDetails::default()
        };
        d.issuer = Some(self.ca.fingerprint());
        d.sign(&self.ca_key)
    }

    /// Moves node `i` to a new underlay port (NAT rebinding); peers are not told.
    pub fn rebind(&mut self, i: usize, port: u16) {
        self.nodes[i].addr.set_port(port);
        self.flow.push(format!(
            "{:>8} node {i} now at {}",
            self.t(),
            self.nodes[i].addr
        ));
    }

    fn t(&self) -> String {
        format!("{}ms", (self.now - self.start).as_millis())
    }

    /// Sends an ICMP echo request from node `i` to node `j` through the overlay.
    pub fn ping(&mut self, i: usize, j: usize, seq: u16) -> TunOutcome {
        let p = ipv4::echo_request(
            self.nodes[i].vpn_ip,
            self.nodes[j].vpn_ip,
            1,
            seq,
            b"sim ping",
        );
        self.tun_in(i, &p)
    }

    /// Feeds `packet` to node `i` as if read from its TUN device.
    pub fn tun_in(&mut self, i: usize, packet: &[u8]) -> TunOutcome {
        let mut out = vec![0u8; packet.len() + 64];
        let now = self.now;
        let r = self.nodes[i].node.handle_tun_packet(now, packet, &mut out);
        if let TunOutcome::Send { to, len } = r {
            let from = self.nodes[i].addr;
            self.emit(Datagram {
                at: now,
                from,
                to,
                bytes: out[..len].to_vec(),
            });
        }
        self.drain(i);
        r
    }

    /// Puts a datagram on the wire as if sent by `from` (injection by a test).
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.flow.push(format!(
            "{:>8} INJECT {from} -> {to} {}",
            self.t(),
            describe(&bytes)
        ));
        self.in_flight.push(Datagram {
            at: self.now,
            from,
            to,
            bytes,
        });
    }

    /// Moves node `i`'s pending outputs onto the wire (after calling it directly).
    pub fn flush(&mut self, i: usize) {
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        let from = self.nodes[i].addr;
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            let now = self.now;
            self.emit(Datagram {
                at: now,
                from,
                to: t.to,
                bytes: t.bytes,
            });
        }
        while let Some(p) = self.nodes[i].node.poll_tun() {
            self.nodes[i].local_tun.push(p);
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            self.flow
                .push(format!("{:>8} node {i} event {e:?}", self.t()));
            self.nodes[i].events.push(e);
        }
    }

    /// Applies tap, loss, duplication, latency and jitter to an outgoing datagram.
    fn emit(&mut self, mut d: Datagram) {
        if let Some(i) = self.nodes.iter().position(|n| n.addr == d.from) {
            if let Some(nat) = self.nodes[i].nat.as_mut() {
                d.from = nat.outbound(d.to);
            }
        }
        if let Some(tap) = self.tap.as_mut() {
            match tap(&d) {
                Tap::Pass => {}
                Tap::Drop => {
                    self.flow.push(format!(
                        "{:>8} TAPDROP {} -> {} {}",
                        self.t(),
                        d.from,
                        d.to,
                        describe(&d.bytes)
                    ));
                    return;
                }
                Tap::Replace(b) => d.bytes = b,
            }
        }
        if self.rng.gen_bool(self.loss) {
            self.flow.push(format!(
                "{:>8} LOST {} -> {} {}",
                self.t(),
                d.from,
                d.to,
                describe(&d.bytes)
            ));
            return;
        }
        let copies = if self.rng.gen_bool(self.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.jitter.mul_f64(self.rng.gen::<f64>())
            };
            let mut c = d.clone();
            c.at = self.now + self.latency + jitter;
            self.in_flight.push(c);
        }
    }

    /// Runs virtual time forward by `dur`, delivering packets and firing timers in order.
    pub fn run_for(&mut self, dur: Duration) {
        let end = self.now + dur;
        let mut guard = 0u32;
        loop {
            guard += 1;
            assert!(guard < 1_000_000, "simulation did not settle");
            let next_packet = self.in_flight.iter().map(|d| d.at).min();
            let next_timer = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.node.poll_timeout())
                .min();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            self.deliver_due();
            for i in 0..self.nodes.len() {
                let now = self.now;
                if self.nodes[i].node.poll_timeout().is_some_and(|t| t <= now) {
                    let now = self.now;
                    self.nodes[i].node.handle_timeout(now);
                    self.drain(i);
                }
            }
        }
        self.now = end;
    }

    fn deliver_due(&mut self) {
        let now = self.now;
        // Stable order: by time, then insertion.
        let mut due = Vec::new();
        let mut rest = Vec::new();
        for d in self.in_flight.drain(..) {
            if d.at <= now {
                due.push(d)
            } else {
                rest.push(d)
            }
        }
        self.in_flight = rest;
        due.sort_by_key(|d| d.at);
        for d in due {
            self.deliver(d);
        }
    }

    /// The node a datagram reaches (after inbound NAT), and the address it arrives at.
    fn route(&self, d: &Datagram) -> Option<(usize, SocketAddr)> {
        if let Some(i) = self
            .nodes
            .iter()
            .position(|n| n.addr == d.to && n.online && n.nat.is_none())
        {
            return Some((i, d.to));
        }
        let i = self.nodes.iter().position(|n| {
            n.online
                && n.nat.as_ref().is_some_and(|nat| {
                    IpAddr::V4(nat.public_ip) == d.to.ip() && nat.inbound(d.to.port(), d.from)
                })
        })?;
        Some((i, self.nodes[i].addr))
    }

    fn deliver(&mut self, d: Datagram) {
        let Some((i, to)) = self.route(&d) else {
            self.flow.push(format!(
                "{:>8} NOHOST {} -> {} {}",
                self.t(),
                d.from,
                d.to,
                describe(&d.bytes)
            ));
            return;
        };
        self.delivered.push((d.from, to, d.bytes.clone()));
        let mut buf = d.bytes.clone();
        let now = self.now;
        let r = self.nodes[i].node.handle_datagram(now, d.from, &mut buf);
        self.flow.push(format!(
            "{:>8} {} -> {} {} => {:?}",
            self.t(),
            d.from,
            d.to,
            describe(&d.bytes),
            short(&r)
        ));
        if let DatagramOutcome::ToTun(range) = r {
            let packet = buf[range].to_vec();
            self.os_tun_write(i, &packet);
        }
        self.drain(i);
    }

    /// The OS behind node `i`'s TUN: answer echo requests to it, record echo replies.
    fn os_tun_write(&mut self, i: usize, packet: &[u8]) {
        self.nodes[i].tun_packets += 1;
        let Ok(info) = ipv4::parse(packet) else {
            return;
        };
        if info.dst != self.nodes[i].vpn_ip {
            return;
        }
        if let Some(reply) = ipv4::echo_reply(packet) {
            self.tun_in(i, &reply);
        } else if packet.get(20) == Some(&0) && info.protocol == ipv4::PROTO_ICMP {
            let seq = u16::from_be_bytes([packet[26], packet[27]]);
            self.nodes[i].replies.push((info.src, seq));
        }
    }

    pub fn got_reply(&self, i: usize, from: usize, seq: u16) -> bool {
        self.nodes[i]
            .replies
            .contains(&(self.nodes[from].vpn_ip, seq))
    }

    /// Pings and runs until the reply arrives (or `limit` passes); returns success.
    pub fn ping_ok(&mut self, i: usize, j: usize, seq: u16, limit: Duration) -> bool {
        self.ping(i, j, seq);
        let step = Duration::from_millis(10);
        let mut waited = Duration::ZERO;
        while waited < limit {
            if self.got_reply(i, j, seq) {
                return true;
            }
            self.run_for(step);
            waited += step;
        }
        self.got_reply(i, j, seq)
    }

    pub fn host(&self, i: usize, peer: usize) -> Option<&meshd::node::HostInfo> {
        self.nodes[i]
            .node
            .hostmap()
            .host(VpnIp::from(self.nodes[peer].vpn_ip))
    }

    /// Both sides agree on each other's indexes.
    pub fn tunnel_consistent(&self, i: usize, j: usize) -> bool {
        match (self.host(i, j), self.host(j, i)) {
            (Some(a), Some(b)) => {
                a.remote_index.0 == b.local_index.0 && b.remote_index.0 == a.local_index.0
            }
            _ => false,
        }
    }
}

/// One-line packet description for the flow log.
pub fn describe(b: &[u8]) -> String {
    match Header::parse(b) {
        Ok(h) => format!(
            "{:?}/{} idx={:08x} ctr={} len={}",
            h.message_type,
            h.subtype.0,
            h.remote_index.0,
            h.counter,
            b.len()
        ),
        Err(_) if b.len() == 1 => format!("punch {:#04x}", b[0]),
        Err(_) => format!("garbage len={}", b.len()),
    }
}

fn short(r: &DatagramOutcome) -> String {
    match r {
        DatagramOutcome::ToTun(_) => "tun".into(),
        other => format!("{other:?}"),
    }
}

/// Header type of a datagram, if it parses.
pub fn kind(b: &[u8]) -> Option<(MessageType, u64)> {
    Header::parse(b).ok().map(|h| (h.message_type, h.counter))
}
