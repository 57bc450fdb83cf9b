//! Lighthouse discovery (`lighthouse.go`, `remote_list.go` in 1.6.1), both roles.
//!
//! Server (`am_lighthouse`): per host, the *learned* address (the current remote of its tunnel)
//! and the addresses/relays it *reported* in its latest HostUpdateNotification. HostQuery gets a
//! HostQueryReply (learned first, then reported) and the queried host a HostPunchNotification
//! about the querier. Entries live exactly as long as the host's tunnel, so the table is bounded
//! by the hostmap; static entries (in `remotes`) are never served.
//!
//! Client: HostUpdateNotification to every lighthouse at start and every interval; HostQuery when
//! a handshake lacks addresses; answers only from configured lighthouses, filtered and capped,
//! then stored per lighthouse in the peer's [`super::RemoteList`].
//!
//! Every address list from the wire is read only up to [`MAX_EXAMINED_PER_FAMILY`] entries per
//! family before anything else (filtering, deduplication) looks at it, so one packet costs a
//! bounded amount of work; addresses that cannot be a peer (unspecified, multicast, broadcast,
//! port 0, loopback from a peer not itself on loopback) and those refused by
//! `remote_allow_list` never become handshake or punch targets.
//!
//! All lighthouse messages are `NebulaMeta` protobufs in type 3 / subtype 0 packets sealed on the
//! tunnel to the peer. Sans-IO: no sockets or clocks; must not touch handshake internals beyond
//! `connect` and `set_learned_remotes`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use prost::Message;

use crate::wire::{
    Header, Ip4AndPort, Ip6AndPort, MessageType, MetaType, NebulaMeta, NebulaMetaDetails, Subtype,
};

use super::punchy::PunchState;
use super::types::{DropReason, VpnIp};
use super::{AllowList, DatagramOutcome, Node, NodeConfig};

/// Addresses kept per family per host (1.6.1's cap), and relays per host.
pub const MAX_PER_FAMILY: usize = 10;
pub const MAX_RELAYS: usize = 10;
/// Wire entries read per family from one message; the rest is ignored unread. Above the
/// 10 kept so that a few refused entries do not crowd out good ones (1.6.1 reads 10).
pub const MAX_EXAMINED_PER_FAMILY: usize = 32;
/// Messages held per lighthouse while its tunnel is being built.
const MAX_OUTBOX: usize = 64;

/// What a host reported about itself (server side).
#[derive(Clone, Debug, Default)]
struct Reported {
    addrs: Vec<SocketAddr>,
    relays: Vec<VpnIp>,
}

/// Lighthouse state of a node (both roles) plus the punch schedule.
pub(super) struct LighthouseState {
    reported: BTreeMap<VpnIp, Reported>,
    /// Our interface addresses as passed by the driver, already filtered.
    local_addrs: Vec<IpAddr>,
    next_update: Option<Instant>,
    /// Encoded `NebulaMeta` payloads waiting for the tunnel to a lighthouse.
    outbox: BTreeMap<VpnIp, Vec<Vec<u8>>>,
    /// `<cert name>.` → VPN IP, for the lighthouse DNS (bounded by `max_hosts`).
    pub(super) dns: BTreeMap<String, VpnIp>,
    pub(super) punch: PunchState,
    /// Address entries read from lighthouse messages (work done for peers, for tests/stats).
    addrs_examined: u64,
}

impl LighthouseState {
    pub(super) fn new(config: &NodeConfig, now: Instant) -> Self {
        let client = !config.am_lighthouse && !config.lighthouses.is_empty();
        LighthouseState {
            reported: BTreeMap::new(),
            local_addrs: Vec::new(),
            next_update: client.then_some(now),
            outbox: BTreeMap::new(),
            dns: BTreeMap::new(),
            punch: PunchState::new(config, now),
            addrs_examined: 0,
        }
    }

    /// After a reload of `lighthouse.hosts`/`interval`: a client reports to its (new)
    /// lighthouses at once; a node without lighthouses stops reporting.
    pub(super) fn restart_updates(&mut self, client: bool, now: Instant) {
        self.next_update = client.then_some(now);
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match (self.next_update, self.punch.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Node {
    /// Tells the node its local interface addresses (the driver enumerates interfaces and applies
    /// the `interfaces` part of local_allow_list). Loopback, link-local, unspecified, multicast,
    /// VPN-network and CIDR-denied addresses are dropped. A change after the first update is
    /// announced to the lighthouses at once.
    pub fn set_local_addrs(&mut self, now: Instant, addrs: &[IpAddr]) {
        let mut keep: Vec<IpAddr> = addrs
            .iter()
            .map(|a| canonical(*a))
            .filter(|a| self.advertisable(*a))
            .filter(|a| allowed(self.config.local_allow_list.as_ref(), *a))
            .collect();
        keep.sort();
        keep.dedup();
        if keep == self.lh.local_addrs {
            return;
        }
        self.lh.local_addrs = keep;
        if self.lh.next_update.is_some_and(|t| t > now) {
            self.send_host_update(now);
        }
    }

    /// The addresses this node would advertise now (HostUpdateNotification contents).
    pub fn advertised_addrs(&self) -> Vec<SocketAddr> {
        let port = self.config.listen_port;
        let advertise = self.config.advertise_addrs.iter().map(|a| {
            let p = if a.port() == 0 { port } else { a.port() };
            SocketAddr::new(canonical(a.ip()), p)
        });
        let local = self
            .lh
            .local_addrs
            .iter()
            .map(|ip| SocketAddr::new(*ip, port));
        let all: Vec<SocketAddr> = advertise
            .filter(|a| !self.in_vpn_net(a.ip()))
            .chain(local)
            .collect();
        cap_per_family(dedup(all))
    }

    /// Address entries read from lighthouse messages so far; one message adds at most
    /// 2 × [`MAX_EXAMINED_PER_FAMILY`], however many it carries.
    pub fn lighthouse_addrs_examined(&self) -> u64 {
        self.lh.addrs_examined
    }

    /// Whether this lighthouse holds an entry for `vpn_ip` (its tunnel is up).
    pub fn lighthouse_entry(&self, vpn_ip: VpnIp) -> Option<(Vec<SocketAddr>, Vec<VpnIp>)> {
        self.served_entry(vpn_ip)
    }

    fn advertisable(&self, ip: IpAddr) -> bool {
        let special = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_multicast(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        !special && !ip.is_unspecified() && !self.in_vpn_net(ip)
    }

    fn in_vpn_net(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(v4) => self.identity.vpn_net.contains(v4),
            IpAddr::V6(_) => false,
        }
    }

    fn is_lighthouse(&self, ip: VpnIp) -> bool {
        self.config.lighthouses.contains(&ip)
    }

    /// Runs the update and punch timers that are due.
    pub(super) fn lighthouse_timers(&mut self, now: Instant) {
        if self.lh.next_update.is_some_and(|t| t <= now) {
            self.send_host_update(now);
        }
        self.punch_timers(now);
    }

    /// HostUpdateNotification to every lighthouse; reschedules the next one.
    fn send_host_update(&mut self, now: Instant) {
        self.lh.next_update = Some(now + self.config.lighthouse_interval);
        let meta = NebulaMeta {
            r#type: MetaType::HostUpdateNotification as i32,
            details: Some(details(
                self.identity.vpn_ip,
                &self.advertised_addrs(),
                &self.config.advertise_relays,
            )),
        }
        .encode_to_vec();
        for lh in self.config.lighthouses.clone() {
            self.send_meta(now, lh, meta.clone());
        }
    }

    /// HostQuery for `target` to every lighthouse. Lighthouses never query, and nobody queries
    /// for a lighthouse.
    pub(super) fn query_lighthouses(&mut self, now: Instant, target: VpnIp) {
        if self.config.am_lighthouse || self.is_lighthouse(target) || target == self.identity.vpn_ip
        {
            return;
        }
        let meta = NebulaMeta {
            r#type: MetaType::HostQuery as i32,
            details: Some(details(target, &[], &[])),
        }
        .encode_to_vec();
        for lh in self.config.lighthouses.clone() {
            self.send_meta(now, lh, meta.clone());
        }
    }

    /// Seals a meta message to `to`, or holds it (bounded, deduplicated) and starts the
    /// handshake when there is no tunnel yet.
    fn send_meta(&mut self, now: Instant, to: VpnIp, payload: Vec<u8>) {
        if self.hostmap.host(to).is_some() {
            self.send_control(now, to, MessageType::LightHouse, Subtype(0), &payload);
            return;
        }
        let queue = self.lh.outbox.entry(to).or_default();
        if !queue.contains(&payload) {
            if queue.len() < MAX_OUTBOX {
                queue.push(payload);
            } else {
                self.drops.count(DropReason::OutputQueueFull);
            }
        }
        self.connect(now, to);
    }

    /// A tunnel completed: flush held meta messages and record the DNS name.
    pub(super) fn lighthouse_tunnel_up(&mut self, now: Instant, vpn_ip: VpnIp) {
        if let Some(queue) = self.lh.outbox.remove(&vpn_ip) {
            for payload in queue {
                self.send_control(now, vpn_ip, MessageType::LightHouse, Subtype(0), &payload);
            }
        }
        if self.config.am_lighthouse && self.config.serve_dns {
            self.add_dns_record(vpn_ip);
        }
    }

    /// A handshake gave up: messages held for that peer are dropped with it (like 1.6.1's
    /// packet cache), so a dead lighthouse does not keep stale queries.
    pub(super) fn lighthouse_unreachable(&mut self, vpn_ip: VpnIp) {
        self.lh.outbox.remove(&vpn_ip);
    }

    /// A tunnel closed or died: the lighthouse forgets the host's reported addresses.
    pub(super) fn lighthouse_host_gone(&mut self, vpn_ip: VpnIp) {
        self.lh.reported.remove(&vpn_ip);
    }

    /// Authenticates a lighthouse packet and dispatches its `NebulaMeta`.
    pub(super) fn handle_lighthouse(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        let (sender, payload) = match self.open_established(now, from, header, buf) {
            Ok(v) => v,
            Err(r) => return DatagramOutcome::Dropped(r),
        };
        self.msgs.count_lighthouse_rx(payload);
        let Ok(meta) = NebulaMeta::decode(payload) else {
            return DatagramOutcome::Dropped(DropReason::LightHouseMalformed);
        };
        let d = meta.details.unwrap_or_default();
        let r = match MetaType::try_from(meta.r#type) {
            Ok(MetaType::HostQuery) => self.on_host_query(now, sender, &d),
            Ok(MetaType::HostQueryReply) => self.on_query_reply(now, sender, &d),
            Ok(MetaType::HostUpdateNotification) => self.on_host_update(sender, &d),
            Ok(MetaType::HostPunchNotification) => self.on_punch_notification(now, sender, &d),
            // Defined but unused by 1.6.1 (and newer types like the update ack): ignored.
            _ => Ok(()),
        };
        match r {
            Ok(()) => DatagramOutcome::Handled,
            Err(reason) => DatagramOutcome::Dropped(reason),
        }
    }

    /// Server: answer with the queried host's addresses, and tell it to punch towards us.
    fn on_host_query(
        &mut self,
        now: Instant,
        querier: VpnIp,
        d: &NebulaMetaDetails,
    ) -> Result<(), DropReason> {
        if !self.config.am_lighthouse {
            return Err(DropReason::LightHouseNotServing);
        }
        let target = VpnIp(d.vpn_ip);
        let (addrs, relays) = self
            .served_entry(target)
            .ok_or(DropReason::LightHouseUnknownHost)?;
        let reply = NebulaMeta {
            r#type: MetaType::HostQueryReply as i32,
            details: Some(details(target, &addrs, &relays)),
        };
        let lh = MessageType::LightHouse;
        self.send_control(now, querier, lh, Subtype(0), &reply.encode_to_vec());
        if let Some((q_addrs, _)) = self.served_entry(querier) {
            let punch = NebulaMeta {
                r#type: MetaType::HostPunchNotification as i32,
                details: Some(details(querier, &q_addrs, &[])),
            };
            self.send_control(now, target, lh, Subtype(0), &punch.encode_to_vec());
        }
        Ok(())
    }

    /// Learned address (the tunnel's remote) then reported ones; None without a tunnel.
    fn served_entry(&self, vpn_ip: VpnIp) -> Option<(Vec<SocketAddr>, Vec<VpnIp>)> {
        let host = self.hostmap.host(vpn_ip)?;
        let reported = self.lh.reported.get(&vpn_ip).cloned().unwrap_or_default();
        let addrs: Vec<SocketAddr> = host.remote.into_iter().chain(reported.addrs).collect();
        Some((cap_per_family(addrs), reported.relays))
    }

    /// Server: store what a host says about itself, never about others.
    fn on_host_update(&mut self, sender: VpnIp, d: &NebulaMetaDetails) -> Result<(), DropReason> {
        if !self.config.am_lighthouse {
            return Err(DropReason::LightHouseNotServing);
        }
        if VpnIp(d.vpn_ip) != sender {
            return Err(DropReason::LightHouseUpdateSpoofed);
        }
        let addrs = self.reported_addrs(sender, sender, d);
        let relays = self.reported_relays(d);
        self.lh.reported.insert(sender, Reported { addrs, relays });
        Ok(())
    }

    /// Client: accept a lighthouse's answer and fire the waiting handshake.
    fn on_query_reply(
        &mut self,
        now: Instant,
        sender: VpnIp,
        d: &NebulaMetaDetails,
    ) -> Result<(), DropReason> {
        if !self.is_lighthouse(sender) {
            return Err(DropReason::LightHouseNotLighthouse);
        }
        let target = VpnIp(d.vpn_ip);
        if target == self.identity.vpn_ip {
            return Ok(());
        }
        let addrs = self.reported_addrs(sender, target, d);
        let relays = self.reported_relays(d);
        self.set_learned_remotes(now, sender, target, &addrs, &relays);
        Ok(())
    }

    /// Client: a lighthouse says `d.vpn_ip` wants to reach us; punch (and maybe respond).
    fn on_punch_notification(
        &mut self,
        now: Instant,
        sender: VpnIp,
        d: &NebulaMetaDetails,
    ) -> Result<(), DropReason> {
        if !self.is_lighthouse(sender) {
            return Err(DropReason::LightHouseNotLighthouse);
        }
        // 1.6.1 punches whatever the lighthouse names; these pass the same rules as handshake
        // targets, so a lighthouse cannot point our punches anywhere the config refuses.
        let addrs = self.reported_addrs(sender, VpnIp(d.vpn_ip), d);
        self.schedule_punches(now, &addrs);
        if self.config.punch_respond {
            self.schedule_respond(now, VpnIp(d.vpn_ip));
        }
        Ok(())
    }

    /// remote_allow_list and the most specific remote_allow_ranges list for `vpn_ip` (1.6.1's
    /// `RemoteAllowList.Allow`).
    pub(super) fn remote_allowed(&self, vpn_ip: VpnIp, ip: IpAddr) -> bool {
        remote_allowed_by(&self.config, vpn_ip, ip)
    }

    /// Addresses `peer` (a lighthouse, or the host updating it) reports for `subject`: the
    /// first [`MAX_EXAMINED_PER_FAMILY`] of each family, then [`Self::filter_remote_addrs`].
    /// Loopback counts only from a peer we reach over loopback itself (everything on one
    /// machine); from anywhere else it would aim our packets at our own local services.
    fn reported_addrs(
        &mut self,
        peer: VpnIp,
        subject: VpnIp,
        d: &NebulaMetaDetails,
    ) -> Vec<SocketAddr> {
        let read = d.ip4_and_ports.len().min(MAX_EXAMINED_PER_FAMILY)
            + d.ip6_and_ports.len().min(MAX_EXAMINED_PER_FAMILY);
        self.lh.addrs_examined = self.lh.addrs_examined.saturating_add(read as u64);
        let loopback_ok = self
            .hostmap
            .host(peer)
            .and_then(|h| h.remote)
            .is_some_and(|r| canonical(r.ip()).is_loopback());
        let addrs = from_wire(d)
            .into_iter()
            .filter(|a| usable_peer_addr(a, loopback_ok))
            .collect();
        self.filter_remote_addrs(subject, addrs)
    }

    /// Relays named in a message: at most [`MAX_RELAYS`], only VPN IPs of our network.
    fn reported_relays(&self, d: &NebulaMetaDetails) -> Vec<VpnIp> {
        let net = self.identity.vpn_net;
        d.relay_vpn_ip
            .iter()
            .take(MAX_RELAYS)
            .map(|r| VpnIp(*r))
            .filter(|r| net.contains(r.addr()) && r.addr() != net.broadcast())
            .collect()
    }

    /// Inside one of `preferred_ranges`?
    pub(super) fn preferred(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.config.preferred_ranges.iter().any(|n| n.contains(ip))
    }

    /// Allowed by [`Self::remote_allowed`], outside our VPN network, ≤ 10 per family. `addrs`
    /// is short (read through [`from_wire`]), so the quadratic dedup stays cheap.
    pub(super) fn filter_remote_addrs(
        &self,
        vpn_ip: VpnIp,
        addrs: Vec<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let kept = addrs
            .into_iter()
            .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
            .filter(|a| self.remote_allowed(vpn_ip, a.ip()))
            .filter(|a| !self.in_vpn_net(a.ip()))
            .collect();
        cap_per_family(dedup(kept))
    }
}

fn allowed(list: Option<&AllowList>, ip: IpAddr) -> bool {
    list.is_none_or(|l| l.allows(ip))
}

/// [`Node::remote_allowed`] under `cfg` (a reload filters with the config it installs).
pub(super) fn remote_allowed_by(cfg: &NodeConfig, vpn_ip: VpnIp, ip: IpAddr) -> bool {
    let ip = canonical(ip);
    let range_list = cfg
        .remote_allow_ranges
        .iter()
        .filter(|(net, _)| net.contains(vpn_ip.addr()))
        .max_by_key(|(net, _)| net.prefix())
        .map(|(_, l)| l);
    allowed(cfg.remote_allow_list.as_ref(), ip) && allowed(range_list, ip)
}

/// The `static_host_map` addresses of `vpn_ip` that become handshake targets: allowed by the
/// remote allow lists and outside our VPN network (1.6.1's `addStaticRemote`).
pub(super) fn static_targets(
    cfg: &NodeConfig,
    vpn_net: super::Ipv4Net,
    vpn_ip: VpnIp,
    addrs: &[SocketAddr],
) -> Vec<SocketAddr> {
    addrs
        .iter()
        .copied()
        .filter(|a| remote_allowed_by(cfg, vpn_ip, a.ip()))
        .filter(|a| match canonical(a.ip()) {
            IpAddr::V4(v4) => !vpn_net.contains(v4),
            IpAddr::V6(_) => true,
        })
        .collect()
}

/// Could a reported address be a peer at all? Not unspecified, multicast, the IPv4 broadcast
/// or port 0; loopback only when `loopback_ok`. `a` is canonical (IPv4-mapped as IPv4).
fn usable_peer_addr(a: &SocketAddr, loopback_ok: bool) -> bool {
    let ip = a.ip();
    let special = match ip {
        IpAddr::V4(v4) => v4.is_broadcast() || v4.is_multicast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    a.port() != 0 && !special && !ip.is_unspecified() && (loopback_ok || !ip.is_loopback())
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn dedup(v: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(v.len());
    for a in v {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Keeps the first [`MAX_PER_FAMILY`] addresses of each family, in order.
pub(super) fn cap_per_family(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (mut v4, mut v6) = (0, 0);
    addrs
        .into_iter()
        .filter(|a| {
            let n = if a.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            *n <= MAX_PER_FAMILY
        })
        .collect()
}

/// `NebulaMetaDetails` for `vpn_ip` with addresses split by family.
pub fn details(vpn_ip: VpnIp, addrs: &[SocketAddr], relays: &[VpnIp]) -> NebulaMetaDetails {
    let mut d = NebulaMetaDetails {
        vpn_ip: vpn_ip.0,
        relay_vpn_ip: relays.iter().map(|r| r.0).collect(),
        ..Default::default()
    };
    for a in addrs {
        match canonical(a.ip()) {
            IpAddr::V4(v4) => d.ip4_and_ports.push(Ip4AndPort {
                ip: u32::from(v4),
                port: u32::from(a.port()),
            }),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                d.ip6_and_ports.push(Ip6AndPort {
                    hi: (bits >> 64) as u64,
                    lo: bits as u64,
                    port: u32::from(a.port()),
                });
            }
        }
    }
    d
}

/// Underlay addresses of a `NebulaMetaDetails` (IPv4 first, IPv4-mapped IPv6 as IPv4): the
/// first [`MAX_EXAMINED_PER_FAMILY`] entries of each family, whatever follows is never read.
/// Entries with ports that do not fit 16 bits are hostile and skipped.
pub fn from_wire(d: &NebulaMetaDetails) -> Vec<SocketAddr> {
    let v4 = d
        .ip4_and_ports
        .iter()
        .take(MAX_EXAMINED_PER_FAMILY)
        .filter_map(|e| {
            let port = u16::try_from(e.port).ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(e.ip)), port))
        });
    let v6 = d
        .ip6_and_ports
        .iter()
        .take(MAX_EXAMINED_PER_FAMILY)
        .filter_map(|e| {
            let port = u16::try_from(e.port).ok()?;
            let ip = Ipv6Addr::from((u128::from(e.hi) << 64) | u128::from(e.lo));
            Some(SocketAddr::new(canonical(IpAddr::V6(ip)), port))
        });
    v4.chain(v6).collect()
}

impl Node {
    /// Seals any `NebulaMeta` to `to` (starting a handshake if needed). For control tooling
    /// (e.g. a "query lighthouse" command) and tests; normal operation never needs it.
    pub fn send_lighthouse_message(&mut self, now: Instant, to: VpnIp, meta: &NebulaMeta) {
        self.send_meta(now, to, meta.encode_to_vec());
    }
}

impl Node {
    /// Path promotion (`TryPromoteBest`), on every outbound TUN packet to an established host:
    /// every `counters.try_promote`th (1.6.1: a fixed 1000), unless the tunnel already uses a
    /// preferred address, probe each preferred-range address of the host with a TestRequest
    /// (the answer makes us roam there); every `counters.requery_every_packets`th (1.6.1: 5000),
    /// also re-query the lighthouses, at most once per `timers.requery_wait_duration` (newer
    /// releases; 1.6.1 has no such wait). Lighthouses do neither.
    pub(super) fn try_promote_best(&mut self, now: Instant, vpn_ip: VpnIp) {
        if self.config.am_lighthouse {
            return;
        }
        let Some(h) = self.hostmap.host_mut(vpn_ip) else {
            return;
        };
        h.promote_counter = h.promote_counter.wrapping_add(1);
        let (c, remote) = (h.promote_counter, h.remote);
        let (promote_every, requery_every) = (
            self.config.try_promote_every.max(1),
            self.config.requery_every_packets.max(1),
        );
        if c % promote_every == 0 {
            if remote.is_some_and(|r| self.preferred(r.ip())) {
                return;
            }
            let probes: Vec<SocketAddr> = self
                .remotes
                .get(&vpn_ip)
                .map(|r| r.addrs())
                .unwrap_or_default()
                .into_iter()
                .filter(|a| remote.is_none() || self.preferred(a.ip()))
                .collect();
            for to in probes {
                self.send_control_via(now, vpn_ip, to, MessageType::Test, Subtype::TEST_REQUEST);
            }
        }
        if c % requery_every == 0 {
            let wait = self.config.requery_wait;
            let Some(h) = self.hostmap.host_mut(vpn_ip) else {
                return;
            };
            if h.liveness.next_lh_query.is_some_and(|t| now < t) {
                return;
            }
            h.liveness.next_lh_query = Some(now + wait);
            self.query_lighthouses(now, vpn_ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn wire_addresses_round_trip_and_layout() {
        let addrs = [
            sa("192.0.2.7:4242"),
            sa("[fd00::2]:47003"),
            sa("[::ffff:198.51.100.1]:9"),
        ];
        let d = details(VpnIp(5), &addrs, &[VpnIp(9)]);
        // IPv4-mapped addresses travel as IPv4; v6 halves are big-endian (doc §5.1 example).
        assert_eq!(d.ip4_and_ports.len(), 2);
        assert_eq!(d.ip4_and_ports[0].ip, 0xc000_0207);
        assert_eq!(d.ip6_and_ports[0].hi, 0xfd00_0000_0000_0000);
        assert_eq!(d.ip6_and_ports[0].lo, 2);
        assert_eq!(d.relay_vpn_ip, vec![9]);
        assert_eq!(
            from_wire(&d),
            vec![
                sa("192.0.2.7:4242"),
                sa("198.51.100.1:9"),
                sa("[fd00::2]:47003")
            ]
        );
    }

    #[test]
    fn only_the_first_entries_of_each_family_are_read() {
        let v4: Vec<SocketAddr> = (0..5000u32)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)), 1))
            .collect();
        let mut all = v4.clone();
        all.extend((0..100u16).map(|i| sa(&format!("[2001:db8::{i:x}]:1"))));
        let read = from_wire(&details(VpnIp(1), &all, &[]));
        assert_eq!(read.len(), 2 * MAX_EXAMINED_PER_FAMILY);
        assert_eq!(
            read[..MAX_EXAMINED_PER_FAMILY],
            v4[..MAX_EXAMINED_PER_FAMILY]
        );
    }

    #[test]
    fn addresses_no_peer_can_have() {
        for bad in [
            "0.0.0.0:1",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "192.0.2.1:0",
            "[::]:1",
            "[ff02::1]:1",
        ] {
            assert!(!usable_peer_addr(&sa(bad), true), "{bad}");
        }
        assert!(!usable_peer_addr(&sa("127.0.0.1:1"), false));
        assert!(!usable_peer_addr(&sa("[::1]:1"), false));
        assert!(
            usable_peer_addr(&sa("127.0.0.1:1"), true),
            "peers on one machine"
        );
        assert!(usable_peer_addr(&sa("10.1.2.3:4242"), false));
        assert!(usable_peer_addr(&sa("[2001:db8::1]:4242"), false));
    }

    #[test]
    fn hostile_ports_are_skipped_and_families_capped() {
        let mut d = details(VpnIp(1), &[sa("192.0.2.1:1")], &[]);
        d.ip4_and_ports.push(Ip4AndPort {
            ip: 1,
            port: 70_000,
        });
        assert_eq!(from_wire(&d), vec![sa("192.0.2.1:1")]);
        let many: Vec<SocketAddr> = (0..15)
            .map(|i| sa(&format!("192.0.2.{i}:1")))
            .chain((0..15).map(|i| sa(&format!("[2001:db8::{i}]:1"))))
            .collect();
        let capped = cap_per_family(many);
        assert_eq!(capped.len(), 2 * MAX_PER_FAMILY);
        assert_eq!(
            capped[9],
            sa("192.0.2.9:1"),
            "first ten of each family, in order"
        );
    }
}
