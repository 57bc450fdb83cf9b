//! Fuzz a lighthouse and its client with arbitrary `NebulaMeta` messages sent over their
//! established tunnel in both directions, interleaved with timer ticks. Must never panic, and the
//! peer-growable tables (remote lists, punch schedule, outputs) must stay bounded.
#![no_main]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshd::cert::{CaPool, CaSigningKey, CertDetails, Ipv4Net, X25519PrivateKey};
use meshd::node::{identity_from_cert, CaPoolVerifier, Node, NodeConfig, VpnIp};
use meshd::wire::NebulaMeta;
use prost::Message;

const EPOCH_S: u64 = 1_750_000_000;
const LH: ([u8; 4], u16) = ([192, 0, 2, 1], 4242);
const CLIENT: ([u8; 4], u16) = ([192, 0, 2, 2], 4242);

fn vpn(n: u8) -> VpnIp {
    VpnIp::from(Ipv4Addr::new(10, 0, 0, n))
}

/// Lighthouse 10.0.0.1 and its client 10.0.0.2 (punch and respond on).
fn pair(now: Instant) -> (Node, Node) {
    let ca_key = CaSigningKey::from_seed([9; 32]);
    let ca = CertDetails {
        name: "fuzz ca".into(),
        not_before: EPOCH_S as i64 - 3600,
        not_after: EPOCH_S as i64 + 86400,
        public_key: ca_key.public_key(),
        is_ca: true,
        ..CertDetails::default()
    }
    .sign(&ca_key);
    let make = |n: u8, config: NodeConfig| {
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
        .sign(&ca_key);
        let mut pool = CaPool::new();
        pool.add_ca(ca.clone(), EPOCH_S as i64).expect("ca");
        let identity = identity_from_cert(&cert, &key).expect("identity");
        let verifier = Box::new(CaPoolVerifier { pool });
        Node::new(config, identity, verifier, u64::from(n), now, EPOCH_S * 1_000_000_000)
    };
    let lh = make(
        1,
        NodeConfig {
            am_lighthouse: true,
            serve_dns: true,
            ..NodeConfig::default()
        },
    );
    let client = make(
        2,
        NodeConfig {
            lighthouses: vec![vpn(1)],
            static_host_map: BTreeMap::from([(vpn(1), vec![SocketAddr::from(LH)])]),
            punch: true,
            punch_respond: true,
            ..NodeConfig::default()
        },
    );
    (lh, client)
}

/// Delivers pending transmits between the two (others are dropped) until quiet.
fn exchange(now: Instant, lh: &mut Node, client: &mut Node) {
    for _ in 0..10 {
        let mut moved = false;
        while let Some(t) = lh.poll_transmit() {
            if t.to == SocketAddr::from(CLIENT) {
                client.handle_datagram(now, SocketAddr::from(LH), &mut t.bytes.clone());
            }
            moved = true;
        }
        while let Some(t) = client.poll_transmit() {
            if t.to == SocketAddr::from(LH) {
                lh.handle_datagram(now, SocketAddr::from(CLIENT), &mut t.bytes.clone());
            }
            moved = true;
        }
        while lh.poll_event().is_some() || client.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let (mut lh, mut client) = pair(start);
    let mut now = start;
    client.handle_timeout(now);
    exchange(now, &mut lh, &mut client);
    let mut rest = data;
    while let [len, sel, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        if let Ok(meta) = NebulaMeta::decode(chunk) {
            match sel & 1 {
                0 => client.send_lighthouse_message(now, vpn(1), &meta),
                _ => lh.send_lighthouse_message(now, vpn(2), &meta),
            }
        }
        if sel & 0x80 != 0 {
            now += Duration::from_millis(u64::from(*sel) * 40);
            lh.handle_timeout(now);
            client.handle_timeout(now);
        }
        exchange(now, &mut lh, &mut client);
    }
    assert!(lh.hostmap().host_count() <= 1);
    assert!(client.hostmap().pending_count() <= 64);
});
