//! Shared setup for the node fuzz targets: a CA, two nodes and, on request, an established
//! tunnel between them (all in memory, fixed seeds).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use meshd::cert::{CaPool, CaSigningKey, CertDetails, Ipv4Net, X25519PrivateKey};
use meshd::node::{
    identity_from_cert, ipv4, CaPoolVerifier, Node, NodeConfig, NodeRng, TunOutcome, VpnIp,
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

/// Node 10.0.0.`n` (keys and rng seeded by `n`) with a certificate from the CA of `ca_key`.
pub fn make_node(ca_key: &CaSigningKey, n: u8, config: NodeConfig, now: Instant) -> Node {
    let ca = CertDetails {
        name: "fuzz ca".into(),
        not_before: EPOCH_S as i64 - 3600,
        not_after: EPOCH_S as i64 + 86400,
        public_key: ca_key.public_key(),
        is_ca: true,
        ..CertDetails::default()
    }
    .sign(ca_key);
    let key = X25519PrivateKey::from_bytes([n; 32]);
    let cert = CertDetails {
        name: format!("n{n}"),
        ips: vec![Ipv4Net::new(Ipv4Addr::new(10, 0, 0, n), 24).expect("valid prefix")],
        not_before: EPOCH_S as i64 - 60,
        not_after: EPOCH_S as i64 + 3600,
        public_key: key.public_key(),
        issuer: Some(ca.fingerprint()),
        ..CertDetails::default()
    }
    .sign(ca_key);
    let mut pool = CaPool::new();
    pool.add_ca(ca, EPOCH_S as i64).expect("ca");
    let identity = identity_from_cert(&cert, &key).expect("identity");
    let verifier = Box::new(CaPoolVerifier { pool });
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
    let ca_key = CaSigningKey::from_seed([7; 32]);
    let map: BTreeMap<VpnIp, Vec<SocketAddr>> =
        BTreeMap::from([(vpn(1), vec![addr(A_ADDR)]), (vpn(2), vec![addr(B_ADDR)])]);
    let make = |n: u8| {
        let config = NodeConfig {
            static_host_map: map.clone(),
            ..NodeConfig::default()
        };
        make_node(&ca_key, n, config, now)
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
    let (mut a, mut b) = nodes(now);
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
