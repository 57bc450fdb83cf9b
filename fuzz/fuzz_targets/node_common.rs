//! Shared setup for the node fuzz targets: a CA, two nodes and, on request, an established
//! tunnel between them (all in memory, fixed seeds), and [`AnyCertVerifier`], the permissive
//! verifier that lets fuzz input get past the certificate checks. Every target builds its
//! nodes through [`make_node_opts`], the one place that calls `Node::new`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use meshd::cert::{
    CaPool, CaSigningKey, CertDetails, Ipv4Net, NebulaCertificate, X25519PrivateKey,
};
use meshd::node::{
    identity_from_cert, ipv4, peer_cert, CaPoolVerifier, CertVerifier, Node, NodeConfig, PeerCert,
    NodeRng, TunOutcome, VpnIp,
};

pub const EPOCH_S: u64 = 1_750_000_000;
pub const A_ADDR: ([u8; 4], u16) = ([192, 0, 2, 1], 4242);
pub const B_ADDR: ([u8; 4], u16) = ([192, 0, 2, 2], 4242);

pub fn addr(a: ([u8; 4], u16)) -> SocketAddr {
    SocketAddr::from(a)
}

pub fn vpn(n: u8) -> VpnIp {
    VpnIp::from(Ipv4Addr::new(10, 0, 0, n))
}

/// Fuzzing only, and only in this crate (the daemon cannot name it): accepts any certificate
/// that parses, recombined with the Noise static key exactly as [`CaPoolVerifier`] does, but
/// skips the CA, signature, blocklist and validity-time checks, so fuzz input reaches the code
/// after verification.
pub struct AnyCertVerifier;

impl CertVerifier for AnyCertVerifier {
    fn verify(
        &self,
        cert_handshake_bytes: &[u8],
        static_key: &[u8; 32],
        _unix_ns: u64,
    ) -> Result<PeerCert, String> {
        let cert = NebulaCertificate::from_handshake_bytes(cert_handshake_bytes, *static_key)
            .map_err(|e| e.to_string())?;
        assert_eq!(
            cert.public_key(),
            static_key,
            "recombined with the Noise key"
        );
        peer_cert(&cert, "fuzz ca".to_string()).map_err(|e| e.to_string())
    }
}

/// How [`make_node_opts`] builds a node beyond its config.
#[derive(Clone, Debug, Default)]
pub struct NodeOpts {
    /// Trust any well-formed certificate ([`AnyCertVerifier`]) instead of the CA.
    pub permissive: bool,
    /// Groups in the node's own certificate.
    pub groups: Vec<String>,
}

/// The node's certificate for 10.0.0.`n`, signed by `ca_key`.
pub fn node_cert(
    ca_key: &CaSigningKey,
    n: u8,
    public_key: [u8; 32],
    groups: Vec<String>,
) -> NebulaCertificate {
    CertDetails {
        name: format!("n{n}"),
        ips: vec![Ipv4Net::new(Ipv4Addr::new(10, 0, 0, n), 24).expect("valid prefix")],
        groups,
        not_before: EPOCH_S as i64 - 60,
        not_after: EPOCH_S as i64 + 3600,
        public_key,
        issuer: Some(ca_cert(ca_key).fingerprint()),
        ..CertDetails::default()
    }
    .sign(ca_key)
}

/// The self-signed CA of `ca_key`.
pub fn ca_cert(ca_key: &CaSigningKey) -> NebulaCertificate {
    CertDetails {
        name: "fuzz ca".into(),
        not_before: EPOCH_S as i64 - 3600,
        not_after: EPOCH_S as i64 + 86400,
        public_key: ca_key.public_key(),
        is_ca: true,
        ..CertDetails::default()
    }
    .sign(ca_key)
}

/// Node 10.0.0.`n` (keys and rng seeded by `n`) with a certificate from the CA of `ca_key`.
pub fn make_node(ca_key: &CaSigningKey, n: u8, config: NodeConfig, now: Instant) -> Node {
    make_node_opts(ca_key, n, config, now, &NodeOpts::default())
}

/// [`make_node`] with [`NodeOpts`].
pub fn make_node_opts(
    ca_key: &CaSigningKey,
    n: u8,
    config: NodeConfig,
    now: Instant,
    opts: &NodeOpts,
) -> Node {
    let key = X25519PrivateKey::from_bytes([n; 32]);
    let cert = node_cert(ca_key, n, key.public_key(), opts.groups.clone());
    let identity = identity_from_cert(&cert, &key).expect("identity");
    let verifier: Box<dyn CertVerifier> = if opts.permissive {
        Box::new(AnyCertVerifier)
    } else {
        let mut pool = CaPool::new();
        pool.add_ca(ca_cert(ca_key), EPOCH_S as i64).expect("ca");
        Box::new(CaPoolVerifier { pool })
    };
    Node::new(
        config,
        identity,
        verifier,
        NodeRng::seeded_for_simulation(u64::from(n)),
        now,
        EPOCH_S * 1_000_000_000,
    )
}

/// Two nodes, 10.0.0.1 (a) and 10.0.0.2 (b), knowing each other's address.
pub fn nodes(now: Instant) -> (Node, Node) {
    nodes_opts(now, &NodeOpts::default(), NodeConfig::default())
}

/// The CA key [`nodes`] uses.
pub fn ca_key() -> CaSigningKey {
    CaSigningKey::from_seed([7; 32])
}

/// [`nodes`] with options and a base config (its static host map is replaced).
pub fn nodes_opts(now: Instant, opts: &NodeOpts, base: NodeConfig) -> (Node, Node) {
    let ca_key = ca_key();
    let map: BTreeMap<VpnIp, Vec<SocketAddr>> =
        BTreeMap::from([(vpn(1), vec![addr(A_ADDR)]), (vpn(2), vec![addr(B_ADDR)])]);
    let make = |n: u8| {
        let config = NodeConfig {
            static_host_map: map.clone(),
            ..base.clone()
        };
        make_node_opts(&ca_key, n, config, now, opts)
    };
    (make(1), make(2))
}

/// Delivers every pending transmit between a and b until quiet.
pub fn exchange(now: Instant, a: &mut Node, b: &mut Node) {
    for _ in 0..10 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            let mut buf = t.bytes;
            b.handle_datagram(now, addr(A_ADDR), &mut buf);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            let mut buf = t.bytes;
            a.handle_datagram(now, addr(B_ADDR), &mut buf);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

/// Nodes with an established tunnel (a initiated).
pub fn established(now: Instant) -> (Node, Node) {
    established_opts(now, &NodeOpts::default(), NodeConfig::default())
}

/// [`established`] with options and a base config for both nodes.
pub fn established_opts(now: Instant, opts: &NodeOpts, base: NodeConfig) -> (Node, Node) {
    let (mut a, mut b) = nodes_opts(now, opts, base);
    let p = ipv4::echo_request(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        1,
        1,
        b"x",
    );
    let mut out = [0u8; 256];
    let r = a.handle_tun_packet(now, &p, &mut out);
    assert_eq!(r, TunOutcome::Queued);
    exchange(now, &mut a, &mut b);
    assert_eq!(b.hostmap().host_count(), 1, "tunnel established");
    (a, b)
}
