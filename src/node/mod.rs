//! The sans-IO Nebula node: hostmap, handshake manager, data path, recv_error handling, test
//! packets, connection manager, roaming and closeTunnel, matching Nebula 1.6.1 on the wire.
//!
//! Inputs: [`Node::handle_datagram`], [`Node::handle_tun_packet`], [`Node::handle_timeout`],
//! [`Node::set_local_addrs`] (interface addresses, before the first `handle_timeout` and on
//! change); lighthouse DNS queries go to [`Node::dns_answer`].
//! Outputs: [`Node::poll_transmit`], [`Node::poll_tun`], [`Node::poll_event`],
//! [`Node::poll_timeout`]. Time and randomness are parameters; no sockets, TUN, clocks or async
//! runtime.
//! Certificates are checked through [`CertVerifier`], packets filtered through [`PacketFilter`]
//! (the firewall plugs in there); this module implements neither.
//!
//! Driver contract: after every input, drain `poll_transmit`, `poll_tun` and `poll_event`, then
//! sleep until `poll_timeout`. The data path borrows: `handle_tun_packet` seals into the caller's
//! `out` buffer (returning `TunOutcome::Send`), `handle_datagram` decrypts in place (returning
//! `DatagramOutcome::ToTun(range)`); only handshakes and control replies are queued as owned
//! `Transmit`s. Lighthouse discovery, hole punching and the lighthouse DNS records live in
//! `lighthouse`, `punchy` and `dns`; relays (CreateRelayRequest/Response, relayed framing,
//! forwarding) in `relay`.

mod calculated;
mod certs;
mod conn_manager;
mod datapath;
pub mod dns;
pub mod filter;
mod handshake;
mod hostmap;
mod inactivity;
pub mod ipv4;
mod lighthouse;
mod punchy;
mod relay;
mod relay_table;
mod reload;
mod remotes;
mod routing;
pub mod status;
mod types;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use rand::RngCore;

pub use crate::config::AllowList;
use crate::crypto::{Cipher, NoiseSeed, StaticSecret};
pub use crate::crypto::{NodeRng, RngOrigin};

pub use calculated::CalculatedRemote;
pub use certs::{identity_from_cert, identity_from_pem, peer_cert, still_valid, CaPoolVerifier};
pub use hostmap::{Answered, Candidate, HostInfo, HostMap, Liveness, PendingHandshake};
pub use lighthouse::{
    details as lighthouse_details, from_wire as lighthouse_addrs, MAX_EXAMINED_PER_FAMILY,
};
pub use relay_table::{
    RelayIndex, RelayLeg, RelayRole, RelayState, RelayTable, MAX_HANDSHAKES_PER_REQUESTER,
    MAX_LEGS_PER_HOP,
};
pub use reload::{ReloadInput, Reloaded};
pub use remotes::RemoteList;
pub use routing::UnsafeRoute;
pub use types::{DropCounters, DropReason, Ipv4Net, LocalIndex, PeerCert, VpnIp};

/// Bytes of tunnel overhead per data packet: header and AEAD tag.
pub const OVERHEAD: usize = crate::wire::HEADER_LEN + crate::crypto::TAG_LEN;

/// `listen.send_recv_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendRecvError {
    #[default]
    Always,
    Never,
    /// Only to private (RFC 1918 / unique-local) source addresses.
    Private,
}

/// Everything the node needs from the configuration. Defaults are Nebula 1.6.1's.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub cipher: Cipher,
    /// `handshakes.try_interval`
    pub handshake_try_interval: Duration,
    /// `handshakes.retries`
    pub handshake_retries: u32,
    /// Packets held per pending handshake (1.6.1: 100).
    pub handshake_queue_len: usize,
    /// `static_host_map`: underlay addresses per VPN IP.
    pub static_host_map: BTreeMap<VpnIp, Vec<SocketAddr>>,
    pub send_recv_error: SendRecvError,
    /// `listen.accept_recv_error` (since Nebula 1.10.1): which sources' recv_errors are acted on.
    pub accept_recv_error: SendRecvError,
    /// `tun.disabled`: answer ICMP echo to ourselves, drop everything else addressed to us.
    pub tun_disabled: bool,
    /// `timers.connection_alive_interval`
    pub connection_alive_interval: Duration,
    /// `timers.pending_deletion_interval`
    pub pending_deletion_interval: Duration,
    /// `pki.disconnect_invalid` (default false): at each connection-manager check, close the
    /// tunnel (with closeTunnel) if the peer's certificate no longer verifies at the current
    /// wall-clock time. Restart-only, as in 1.6.1.
    pub disconnect_invalid: bool,
    /// Bounds on peer-growable state.
    pub max_hosts: usize,
    pub max_pending: usize,
    pub max_queued_outputs: usize,
    /// `lighthouse.am_lighthouse`: answer HostQuery, store HostUpdateNotification.
    pub am_lighthouse: bool,
    /// `lighthouse.hosts`: VPN IPs of the lighthouses (each also in `static_host_map`).
    pub lighthouses: Vec<VpnIp>,
    /// `lighthouse.interval` (1.6.1 code default 10 s): time between HostUpdateNotifications.
    pub lighthouse_interval: Duration,
    /// `lighthouse.advertise_addrs`, names already resolved by the driver; port 0 means our
    /// listen port.
    pub advertise_addrs: Vec<SocketAddr>,
    /// `lighthouse.local_allow_list` (CIDR part; the driver applies the `interfaces` part before
    /// calling [`Node::set_local_addrs`]). None = allow all.
    pub local_allow_list: Option<AllowList>,
    /// `lighthouse.remote_allow_list`: filters handshake sources, roaming, and addresses from
    /// lighthouse answers and updates.
    pub remote_allow_list: Option<AllowList>,
    /// `lighthouse.remote_allow_ranges`: VPN range → an allow list that must also pass for
    /// peers inside that range (most specific range wins).
    pub remote_allow_ranges: Vec<(Ipv4Net, AllowList)>,
    /// `preferred_ranges` (plus the deprecated `local_range`): addresses inside them are tried
    /// first.
    pub preferred_ranges: Vec<crate::config::IpNet>,
    /// `punchy.punch`: every 10 s send a 1-byte 0x01 to every known address of every host.
    pub punch: bool,
    /// `punchy.respond`: answer a HostPunchNotification with a TestRequest / handshake back.
    pub punch_respond: bool,
    /// `punchy.delay` (default 1 s): wait before punching after a HostPunchNotification.
    pub punch_delay: Duration,
    /// `punchy.respond_delay` (1.6.1: a fixed 5 s): wait before responding.
    pub punch_respond_delay: Duration,
    /// `relay.relays` (empty when `relay.am_relay`): advertised in our HostUpdateNotification.
    pub advertise_relays: Vec<VpnIp>,
    /// `relay.am_relay` (default false): forward for others on request. Such a node never
    /// uses relays itself and advertises none.
    pub am_relay: bool,
    /// `relay.use_relays` (default true): reach peers through the relays the lighthouses
    /// name for them when direct attempts fail.
    pub use_relays: bool,
    /// Bound on relay legs in total (each hop tunnel also carries at most
    /// [`MAX_LEGS_PER_HOP`]).
    pub max_relay_legs: usize,
    /// The port the UDP socket is actually bound to (`listen.port`, resolved when 0).
    pub listen_port: u16,
    /// `tun.unsafe_routes`: networks outside the VPN reached through a peer (`via`).
    pub unsafe_routes: Vec<UnsafeRoute>,
    /// `tun.mtu`: larger DF packets into the VPN network get ICMP fragmentation needed.
    pub tun_mtu: u16,
    /// `tun.routes`: VPN ranges with their own MTU.
    pub route_mtus: Vec<(Ipv4Net, u16)>,
    /// `lighthouse.serve_dns` (only effective with `am_lighthouse`): keep name → VPN IP records
    /// for [`Node::dns_answer`].
    pub serve_dns: bool,
    /// `tun.drop_local_broadcast` (default false): drop packets to the VPN network's broadcast
    /// address. Otherwise 1.6.1 treats that address as a peer (a handshake that never answers).
    pub drop_local_broadcast: bool,
    /// `tun.drop_multicast` (default false): drop multicast. Otherwise it is routed like any
    /// address outside the VPN network (an unsafe route, or no route).
    pub drop_multicast: bool,
    /// `counters.try_promote` (1.6.1: fixed 1000): outbound packets between path-promotion
    /// probes.
    pub try_promote_every: u32,
    /// `counters.requery_every_packets` (1.6.1: fixed 5000): outbound packets between
    /// lighthouse re-queries for an established peer.
    pub requery_every_packets: u32,
    /// `punchy.target_all_remotes`: keepalive punches go to every known address of a host (as
    /// 1.6.1 always does, meshd's default) or, when false, only to its tunnel's current remote.
    pub punch_target_all_remotes: bool,
    /// `tunnels.drop_inactive` (Nebula 1.10+, default false): close tunnels idle for
    /// `inactivity_timeout` (default 10 min).
    pub drop_inactive: bool,
    pub inactivity_timeout: Duration,
    /// `timers.requery_wait_duration` (Nebula 1.8+, default 1 min): least time between two
    /// counter-driven lighthouse re-queries for one peer.
    pub requery_wait: Duration,
    /// `lighthouse.calculated_remotes` (Nebula 1.7+): VPN range → guessed underlay addresses.
    pub calculated_remotes: Vec<(Ipv4Net, Vec<CalculatedRemote>)>,
}

/// The node's settings when the config sets nothing: every value that comes from a config key
/// is taken from `config::defaults`, the one place defaults live (a setup test checks that a
/// plan built from an empty config equals this). Only the table bounds and the packet queue,
/// which no key sets, are defined here.
impl Default for NodeConfig {
    fn default() -> Self {
        use crate::config::defaults as d;
        let secs = |n: i64| Duration::from_secs(n.unsigned_abs());
        NodeConfig {
            cipher: Cipher::AesGcm,
            handshake_try_interval: d::HANDSHAKE_TRY_INTERVAL,
            handshake_retries: d::HANDSHAKE_RETRIES as u32,
            handshake_queue_len: 100,
            static_host_map: BTreeMap::new(),
            send_recv_error: SendRecvError::Always,
            accept_recv_error: SendRecvError::Always,
            tun_disabled: false,
            connection_alive_interval: secs(d::CONNECTION_ALIVE_INTERVAL_SECS),
            pending_deletion_interval: secs(d::PENDING_DELETION_INTERVAL_SECS),
            disconnect_invalid: false,
            max_hosts: crate::config::defaults::MAX_HOSTS,
            max_pending: crate::config::defaults::MAX_PENDING_HANDSHAKES,
            max_queued_outputs: 4_096,
            am_lighthouse: false,
            lighthouses: Vec::new(),
            lighthouse_interval: secs(d::LIGHTHOUSE_INTERVAL_SECS),
            advertise_addrs: Vec::new(),
            local_allow_list: None,
            remote_allow_list: None,
            remote_allow_ranges: Vec::new(),
            preferred_ranges: Vec::new(),
            punch: false,
            punch_respond: false,
            punch_delay: d::PUNCHY_DELAY,
            punch_respond_delay: d::PUNCHY_RESPOND_DELAY,
            advertise_relays: Vec::new(),
            am_relay: false,
            use_relays: d::USE_RELAYS,
            max_relay_legs: crate::config::defaults::MAX_RELAY_LEGS,
            // The bound port, which the driver always sets; simulations bind 4242.
            listen_port: 4242,
            serve_dns: false,
            unsafe_routes: Vec::new(),
            tun_mtu: d::TUN_MTU as u16,
            route_mtus: Vec::new(),
            drop_local_broadcast: false,
            drop_multicast: false,
            try_promote_every: d::TRY_PROMOTE_EVERY as u32,
            requery_every_packets: d::REQUERY_EVERY_PACKETS as u32,
            punch_target_all_remotes: d::PUNCHY_TARGET_ALL_REMOTES,
            drop_inactive: false,
            inactivity_timeout: d::TUNNELS_INACTIVITY_TIMEOUT,
            requery_wait: d::REQUERY_WAIT,
            calculated_remotes: Vec::new(),
        }
    }
}

/// This node's own identity.
#[derive(Clone, Debug)]
pub struct Identity {
    pub vpn_ip: VpnIp,
    /// The VPN network (first cert IP with its prefix): underlay packets from inside it are
    /// refused, and its broadcast address is never tunnelled.
    pub vpn_net: Ipv4Net,
    pub static_secret: StaticSecret,
    /// Our certificate in handshake form (marshalled without the public key).
    pub cert_handshake_bytes: Vec<u8>,
}

/// Recombines a peer's handshake certificate with its Noise static key and verifies it against
/// the CA pool at `unix_ns` (`RecombineCertAndValidate`). Implemented on top of `cert`.
pub trait CertVerifier {
    fn verify(
        &self,
        cert_handshake_bytes: &[u8],
        static_key: &[u8; 32],
        unix_ns: u64,
    ) -> Result<PeerCert, String>;

    /// Would an established peer's certificate still verify at `unix_now` (seconds)? Used by
    /// `pki.disconnect_invalid`; verifiers without a notion of expiry keep every peer.
    fn still_valid(&self, _peer: &PeerCert, _unix_now: i64) -> bool {
        true
    }
}

/// Traffic direction for the packet filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// What the firewall decided about one inner packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterVerdict {
    Allow,
    Drop,
    /// Refuse and answer with this IP packet (TCP RST / ICMP unreachable). For inbound packets
    /// the node seals it back to the peer; for outbound ones it goes to [`Node::poll_tun`].
    Reject(Vec<u8>),
}

/// The firewall hook: called for every inner IP packet after the node's own checks (inbound:
/// after decryption and the source-address check; outbound: before sealing, and again for
/// packets released from a handshake queue).
pub trait PacketFilter {
    fn check(
        &mut self,
        now: Instant,
        dir: Direction,
        packet: &[u8],
        peer: &PeerCert,
    ) -> FilterVerdict;

    /// Drops expired state (conntrack); the driver calls it through [`Node::expire_filter`].
    fn expire(&mut self, _now: Instant) {}

    /// Refusals so far by direction and reason, for the driver's log; `None` when nothing
    /// changed since the last call.
    fn drop_report(&mut self) -> Option<String> {
        None
    }

    /// The concrete filter, for a driver that swaps its rules on reload.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// A filter that allows everything (until the firewall is wired in).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl PacketFilter for AllowAll {
    fn check(&mut self, _: Instant, _: Direction, _: &[u8], _: &PeerCert) -> FilterVerdict {
        FilterVerdict::Allow
    }
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Why a tunnel went away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent an authenticated closeTunnel.
    PeerClosed,
    /// Four recv_errors on the tunnel's current path (its remote, or its relay) with no
    /// authenticated packet in between.
    RecvError,
    /// The connection manager saw no answer to its TestRequest.
    Silent,
    /// A newer handshake from the same peer replaced it.
    Replaced,
    /// Closed locally ([`Node::close_tunnel`] / shutdown).
    Local,
    /// The tunnel had no direct address and the relay it used went away.
    RelayLost,
}

/// Things the driver may want to log or act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    HandshakeComplete {
        vpn_ip: VpnIp,
        remote: Option<SocketAddr>,
        initiator: bool,
    },
    HandshakeTimedOut {
        vpn_ip: VpnIp,
        dropped_packets: usize,
    },
    HandshakeFailed {
        vpn_ip: VpnIp,
        reason: DropReason,
    },
    TunnelClosed {
        vpn_ip: VpnIp,
        reason: CloseReason,
    },
    Roamed {
        vpn_ip: VpnIp,
        from: Option<SocketAddr>,
        to: SocketAddr,
    },
}

/// Result of [`Node::handle_tun_packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunOutcome {
    /// `out[..len]` is a sealed datagram for `to`.
    Send {
        to: SocketAddr,
        len: usize,
    },
    /// Held until the handshake completes (handshake packets are in `poll_transmit`).
    Queued,
    /// Consumed without a datagram in `out` (e.g. answered locally).
    Handled,
    Dropped(DropReason),
}

/// Result of [`Node::handle_datagram`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatagramOutcome {
    /// `buf[range]` is a decrypted IP packet to write to TUN.
    ToTun(Range<usize>),
    /// Processed; replies, if any, are in `poll_transmit`.
    Handled,
    Dropped(DropReason),
}

/// One Nebula node.
pub struct Node {
    config: NodeConfig,
    identity: Identity,
    verifier: Box<dyn CertVerifier>,
    filter: Box<dyn PacketFilter>,
    /// Every ephemeral key, local and relay index comes from here (see [`NodeRng`]).
    rng: NodeRng,
    start: Instant,
    start_unix_ns: u64,
    hostmap: HostMap,
    /// Known underlay addresses per peer (static map now, lighthouse answers later); bounded
    /// by `max_hosts`.
    remotes: BTreeMap<VpnIp, RemoteList>,
    /// Deadlines (handshake retries, liveness checks) by time; superseded entries linger
    /// until they surface and are skipped.
    timers: BinaryHeap<Reverse<(Instant, VpnIp)>>,
    transmits: VecDeque<Transmit>,
    tun: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    drops: DropCounters,
    /// Lighthouse server/client state and punch schedule.
    lh: lighthouse::LighthouseState,
    /// Relay legs (separate index space from tunnels).
    relays: relay_table::RelayTable,
    /// Set while an inner packet that arrived through a relay is processed.
    relay_ctx: Option<relay::RelayCtx>,
    /// Control-message and handshake counts for `status` and metrics.
    msgs: status::MessageCounters,
    /// Next `tunnels.drop_inactive` sweep (`None` when off).
    inactivity_at: Option<Instant>,
    /// `tun.use_system_route_table`: unsafe routes the driver read from the kernel table.
    system_routes: Vec<UnsafeRoute>,
}

impl Node {
    /// A node with no tunnels. `unix_ns` is the wall clock at `now` (used for handshake Time and
    /// certificate validity); later wall times are derived from `now` offsets. `rng` is the
    /// daemon's OS-seeded generator or a simulation's seeded one.
    pub fn new(
        mut config: NodeConfig,
        identity: Identity,
        verifier: Box<dyn CertVerifier>,
        rng: NodeRng,
        now: Instant,
        unix_ns: u64,
    ) -> Self {
        if config.am_relay {
            // `relay.relays` is ignored on a relay (1.6.1 relay_manager).
            config.advertise_relays.clear();
        }
        let remotes = config
            .static_host_map
            .iter()
            .map(|(ip, addrs)| {
                let targets = lighthouse::static_targets(&config, identity.vpn_net, *ip, addrs);
                (*ip, RemoteList::with_static(&targets))
            })
            .collect();
        let lh = lighthouse::LighthouseState::new(&config, now);
        let mut node = Node {
            lh,
            config,
            identity,
            verifier,
            filter: Box::new(AllowAll),
            rng,
            start: now,
            start_unix_ns: unix_ns,
            remotes,
            hostmap: HostMap::default(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            tun: VecDeque::new(),
            events: VecDeque::new(),
            drops: DropCounters::default(),
            relays: relay_table::RelayTable::default(),
            relay_ctx: None,
            msgs: status::MessageCounters::default(),
            inactivity_at: None,
            system_routes: Vec::new(),
        };
        node.arm_inactivity(now);
        node
    }

    /// `tun.use_system_route_table`: replaces the routes taken from the system table (looked up
    /// beside `tun.unsafe_routes`, the most specific prefix of either winning).
    pub fn set_system_routes(&mut self, routes: Vec<UnsafeRoute>) {
        self.system_routes = routes;
    }

    /// Installs the firewall.
    pub fn set_filter(&mut self, filter: Box<dyn PacketFilter>) {
        self.filter = filter;
    }

    /// Sweeps expired filter state (conntrack); the driver calls this on an idle tick.
    pub fn expire_filter(&mut self, now: Instant) {
        self.filter.expire(now);
    }

    /// The installed filter (e.g. to replace its rules on reload).
    pub fn filter_mut(&mut self) -> &mut dyn PacketFilter {
        self.filter.as_mut()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Where this node's keys and indexes come from (the daemon's is always `Os`).
    pub fn rng_origin(&self) -> RngOrigin {
        self.rng.origin()
    }

    pub fn hostmap(&self) -> &HostMap {
        &self.hostmap
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next locally generated packet to write to TUN (firewall rejects of outbound packets).
    /// Packets decrypted by `handle_datagram` are returned there, not here.
    pub fn poll_tun(&mut self) -> Option<Vec<u8>> {
        self.tun.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest time `handle_timeout` must be called. Amortised O(log n): stale entries of
    /// the timer heap are discarded here.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut next = None;
        while let Some(&Reverse((at, ip))) = self.timers.peek() {
            if self.deadline_live(at, ip) {
                next = Some(at);
                break;
            }
            self.timers.pop();
        }
        [next, self.lh.next_deadline(), self.inactivity_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs due handshake retries and connection-manager checks.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, ip))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push(ip);
        }
        due.sort();
        due.dedup();
        for ip in due {
            self.handshake_timer(now, ip);
            self.liveness_timer(now, ip);
            self.candidate_timer(now, ip);
            self.answer_timer(now, ip);
        }
        self.lighthouse_timers(now);
        self.inactivity_timer(now);
    }

    /// Is `at` still a deadline of `ip` (the heap keeps superseded entries until they surface)?
    fn deadline_live(&self, at: Instant, ip: VpnIp) -> bool {
        let pending = self
            .hostmap
            .pending(ip)
            .is_some_and(|p| p.next_attempt == at);
        let host = self.hostmap.host(ip).is_some_and(|h| {
            h.liveness.check_at == Some(at)
                || h.liveness.delete_at == Some(at)
                || h.answer_drop_at() == Some(at)
        });
        let candidate = self.hostmap.candidate(ip).is_some_and(|c| c.expires == at);
        pending || host || candidate
    }

    fn arm_timer(&mut self, at: Instant, ip: VpnIp) {
        self.timers.push(Reverse((at, ip)));
    }

    /// Starts a handshake to `vpn_ip` unless a tunnel or attempt exists (e.g. for lighthouses).
    pub fn connect(&mut self, now: Instant, vpn_ip: VpnIp) {
        if self.hostmap.host(vpn_ip).is_none() && self.hostmap.pending(vpn_ip).is_none() {
            if let Err(r) = self.start_handshake(now, vpn_ip) {
                self.drops.count(r);
            }
        }
    }

    /// Records addresses/relays a lighthouse reported for `vpn_ip` and, if a handshake to it is
    /// waiting for its first attempt, fires that attempt now (1.6.1's lighthouse trigger).
    pub fn set_learned_remotes(
        &mut self,
        now: Instant,
        lighthouse: VpnIp,
        vpn_ip: VpnIp,
        addrs: &[SocketAddr],
        relays: &[VpnIp],
    ) {
        if !self.remotes.contains_key(&vpn_ip) && self.remotes.len() >= self.config.max_hosts {
            self.drops.count(DropReason::HostMapFull);
            return;
        }
        let list = self.remotes.entry(vpn_ip).or_default();
        if !list.set_learned(lighthouse, addrs, relays) {
            self.drops.count(DropReason::HostMapFull);
        }
        self.lighthouse_triggered_attempt(now, vpn_ip);
    }

    /// The candidate addresses and relays known for a peer.
    pub fn remotes(&self, vpn_ip: VpnIp) -> Option<&RemoteList> {
        self.remotes.get(&vpn_ip)
    }

    /// Sends closeTunnel to every peer and forgets all tunnels (shutdown). Tunnels that carry
    /// relay legs go last, so closeTunnels of relayed tunnels can still get through.
    pub fn close_all(&mut self, now: Instant) {
        let mut ips = self.hostmap.host_ips();
        ips.sort_by_key(|ip| self.relays.carries(*ip));
        for ip in ips {
            self.close_tunnel(now, ip);
        }
    }

    /// Sends an authenticated closeTunnel to `vpn_ip` and deletes the tunnel.
    pub fn close_tunnel(&mut self, now: Instant, vpn_ip: VpnIp) {
        self.send_control(
            now,
            vpn_ip,
            crate::wire::MessageType::CloseTunnel,
            crate::wire::Subtype::NONE,
            &[],
        );
        if self.hostmap.remove_host(vpn_ip).is_some() {
            self.push_event(Event::TunnelClosed {
                vpn_ip,
                reason: CloseReason::Local,
            });
        }
    }

    /// Sends a TestRequest over an established tunnel.
    pub fn send_test_request(&mut self, now: Instant, vpn_ip: VpnIp) {
        use crate::wire::{MessageType, Subtype};
        self.send_control(now, vpn_ip, MessageType::Test, Subtype::TEST_REQUEST, &[]);
    }

    fn wall_ns(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.start).as_nanos();
        self.start_unix_ns
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn next_seed(&mut self) -> NoiseSeed {
        self.rng.noise_seed()
    }

    /// A random, non-zero local index unused in both maps; 32 tries like `generateIndex`.
    fn new_local_index(&mut self) -> Result<LocalIndex, DropReason> {
        for _ in 0..32 {
            let idx = LocalIndex(self.rng.next_u32());
            if self.hostmap.index_free(idx) {
                return Ok(idx);
            }
        }
        Err(DropReason::IndexExhausted)
    }

    fn push_transmit(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if to.ip().is_unspecified() || to.port() == 0 {
            // The stand-in source of relayed packets: such replies go through the relay.
            self.drops.count(DropReason::NoRemote);
            return;
        }
        if self.transmits.len() >= self.config.max_queued_outputs {
            self.drops.count(DropReason::OutputQueueFull);
            return;
        }
        self.msgs.count_tx_datagram(&bytes);
        self.transmits.push_back(Transmit { to, bytes });
    }

    fn push_tun(&mut self, packet: Vec<u8>) {
        if self.tun.len() >= self.config.max_queued_outputs {
            self.drops.count(DropReason::OutputQueueFull);
            return;
        }
        self.tun.push_back(packet);
    }

    fn push_event(&mut self, e: Event) {
        let mut promote = None;
        match e {
            Event::TunnelClosed { vpn_ip, reason } => {
                let survives = self.candidate_survives(vpn_ip, reason);
                if reason != CloseReason::Replaced && !survives {
                    self.lighthouse_host_gone(vpn_ip);
                }
                // A replaced tunnel means the peer restarted or re-keyed: its legs are stale.
                self.relay_tunnel_gone(vpn_ip);
                promote = survives.then_some(vpn_ip);
            }
            Event::HandshakeTimedOut {
                vpn_ip,
                dropped_packets,
            } => {
                self.msgs.handshakes_timed_out += 1;
                self.msgs.cached_dropped += dropped_packets as u64;
                self.lighthouse_unreachable(vpn_ip);
                self.relays.remove_requested_to(vpn_ip);
            }
            _ => {}
        }
        if self.events.len() < self.config.max_queued_outputs {
            self.events.push_back(e);
        }
        if let Some(vpn_ip) = promote {
            // After the close event, so the driver sees close then establish.
            self.promote_candidate(vpn_ip);
        }
    }
}
