//! Small value types of the node: VPN IPs, local indexes, the verified peer identity and
//! the counted drop reasons. No behaviour beyond parsing and containment.

use std::net::Ipv4Addr;

pub use crate::net::Ipv4Net;

/// An overlay (VPN) IPv4 address; Nebula stores it as the big-endian u32 of its 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VpnIp(pub u32);

impl VpnIp {
    pub fn addr(self) -> Ipv4Addr {
        Ipv4Addr::from(self.0)
    }
}

impl From<Ipv4Addr> for VpnIp {
    fn from(a: Ipv4Addr) -> Self {
        VpnIp(u32::from(a))
    }
}

impl std::fmt::Display for VpnIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

/// Our index for a tunnel: random, non-zero, unique among pending and established tunnels.
/// Peers put it in the header of every packet they send us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalIndex(pub u32);

/// What the node keeps of a peer's verified certificate. Filled by the [`crate::node::CertVerifier`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// The certificate's first IP: the peer's VPN IP.
    pub vpn_ip: VpnIp,
    /// All IPs of the certificate (each counts as a single address).
    pub ips: Vec<Ipv4Addr>,
    /// `subnets` of the certificate (unsafe routes the peer may source traffic from).
    pub subnets: Vec<Ipv4Net>,
    pub name: String,
    pub groups: Vec<String>,
    /// Hex SHA-256 of the certificate.
    pub fingerprint: String,
    /// Hex fingerprint of the issuing CA.
    pub issuer: String,
    /// Name of the issuing CA (firewall `ca_name`).
    pub issuer_name: String,
    /// The certificate's NotAfter (Unix seconds): a reload re-checks live peers against it.
    pub not_after: i64,
    /// The whole certificate, for the lighthouse DNS TXT answer (`None` in hand-built values).
    pub cert: Option<std::sync::Arc<crate::cert::NebulaCertificate>>,
}

impl PeerCert {
    /// Whether an inner packet with source `ip` may come from this peer: one of its certificate
    /// IPs exactly, or inside one of its subnets (`hostmap.go` CreateRemoteCIDR).
    pub fn allows_source(&self, ip: Ipv4Addr) -> bool {
        self.ips.contains(&ip) || self.subnets.iter().any(|c| c.contains(ip))
    }
}

macro_rules! drop_reasons {
    ($($name:ident),* $(,)?) => {
        /// Why a packet was not processed. Counted, never logged per packet.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason { $($name),* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name),*];
        }
    };
}

drop_reasons!(
    // outside (UDP) path
    ShortDatagram,
    UnknownMessageType,
    FromVpnNetwork,
    UnknownIndex,
    Replay,
    ReplayAfterDecrypt,
    AuthFailed,
    UnexpectedHandshakeCounter,
    HandshakeNoise,
    HandshakePayload,
    HandshakeCert,
    HandshakeSelf,
    HandshakeTooOld,
    HandshakeLostRace,
    HandshakeAlreadyComplete,
    HandshakeWrongHost,
    HandshakeUnknownIndex,
    // A stage 1 with the ephemeral key of one already answered but other bytes (a replay).
    HandshakeReplayed,
    IndexExhausted,
    // recv_error refused by listen.accept_recv_error; recv_error not from the tunnel's
    // current remote (or, for a relay-only tunnel, not through its relay).
    RecvErrorNotAccepted,
    RecvErrorWrongSource,
    HostMapFull,
    PendingFull,
    // relays: unknown leg index, leg not (yet) established, relay packet inside a relay
    // packet, table bound hit, request at a non-relay, relay has no direct tunnel to the
    // target, undecodable NebulaControl, inner handshake from a host other than the leg's.
    RelayUnknownIndex,
    RelayNotEstablished,
    RelayNested,
    RelayTableFull,
    RelayNotServing,
    RelayNoTunnel,
    ControlMalformed,
    RelayWrongPeer,
    // A relay request for a VPN IP outside the relay's own network; one requester already
    // has MAX_HANDSHAKES_PER_REQUESTER handshakes under way at the relay.
    RelayOutsideNetwork,
    RelayRequesterBusy,
    LightHouseMalformed,
    // HostQuery/HostUpdateNotification at a non-lighthouse; answers/punches from a
    // non-lighthouse; an update about another host; a query for an unknown host.
    LightHouseNotServing,
    LightHouseNotLighthouse,
    LightHouseUpdateSpoofed,
    LightHouseUnknownHost,
    // A handshake from an underlay address refused by remote_allow_list.
    RemoteNotAllowed,
    // inner packets
    NotIpv4,
    MalformedIp,
    InnerSourceNotAllowed,
    FirewallInbound,
    FirewallOutbound,
    TunDisabled,
    // inside (TUN) path
    ToSelf,
    NoRoute,
    // Larger than the route's MTU with DF set: answered with ICMP fragmentation needed.
    TooBig,
    BroadcastOrMulticast,
    NoRemote,
    HandshakeQueueFull,
    BufferTooSmall,
    OutputQueueFull,
    CounterExhausted,
);

/// Per-reason drop counters.
#[derive(Clone, Debug)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::ALL.len()])
    }
}

impl DropCounters {
    pub fn count(&mut self, r: DropReason) {
        self.0[r as usize] = self.0[r as usize].saturating_add(1);
    }

    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }

    /// Non-zero counters, for stats and test diagnostics.
    pub fn nonzero(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .filter(|r| self.get(**r) > 0)
            .map(|r| (*r, self.get(*r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_and_broadcast() {
        let n = Ipv4Net::new(Ipv4Addr::new(10, 42, 1, 5), 16).unwrap();
        assert!(n.contains(Ipv4Addr::new(10, 42, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 43, 0, 1)));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 42, 255, 255));
        let all = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(Ipv4Net::new(Ipv4Addr::LOCALHOST, 33).is_none());
    }

    #[test]
    fn peer_source_rule() {
        let p = PeerCert {
            vpn_ip: VpnIp(0x0a2a0105),
            ips: vec![Ipv4Addr::new(10, 42, 1, 5)],
            subnets: vec![Ipv4Net::new(Ipv4Addr::new(192, 168, 7, 0), 24).unwrap()],
            name: "a".into(),
            groups: vec![],
            fingerprint: String::new(),
            issuer: String::new(),
            issuer_name: String::new(),
            not_after: i64::MAX,
            cert: None,
        };
        assert!(p.allows_source(Ipv4Addr::new(10, 42, 1, 5)));
        assert!(
            !p.allows_source(Ipv4Addr::new(10, 42, 1, 6)),
            "cert IP is exact, not its network"
        );
        assert!(p.allows_source(Ipv4Addr::new(192, 168, 7, 99)));
        assert!(!p.allows_source(Ipv4Addr::new(192, 168, 8, 1)));
    }
}
