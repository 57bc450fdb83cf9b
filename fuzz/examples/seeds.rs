//! Writes the seed corpora of the fuzz targets that need structured input (well-formed
//! certificates inside handshakes, sealed-record streams, DNS queries, counter sequences) into
//! `corpus/<target>/` (or the directory given as the first argument). Each seed follows the
//! input format documented at the top of its target. Run from `fuzz/`:
//! `cargo +nightly run --example seeds`.

#[path = "../fuzz_targets/node_common.rs"]
mod node_common;

use std::net::Ipv4Addr;
use std::path::Path;

use meshd::cert::{CaSigningKey, X25519PrivateKey};
use meshd::node::ipv4;
use meshd::wire::{
    ControlType, MetaType, NebulaControl, NebulaHandshake, NebulaHandshakeDetails, NebulaMeta,
    NebulaMetaDetails,
};
use node_common::{ca_key, node_cert, vpn, EPOCH_S};
use prost::Message;

/// A record `[ctl, len, payload]`.
fn record(ctl: u8, payload: &[u8]) -> Vec<u8> {
    let len = u8::try_from(payload.len()).expect("record payload fits a length byte");
    [&[ctl, len][..], payload].concat()
}

/// Handshake payload carrying the certificate of 10.0.0.`n` (from `ca`, key `[key; 32]`).
fn hello(ca: &CaSigningKey, n: u8, key: u8, groups: &[&str], time_s: u64, stage2: bool) -> Vec<u8> {
    let public = X25519PrivateKey::from_bytes([key; 32]).public_key();
    let groups = groups.iter().map(|g| g.to_string()).collect();
    let cert = node_cert(ca, n, public, groups).marshal_without_public_key();
    let details = NebulaHandshakeDetails {
        cert,
        initiator_index: 0x0102_0304,
        responder_index: if stage2 { 0x0506_0708 } else { 0 },
        time: time_s * 1_000_000_000,
        ..Default::default()
    };
    NebulaHandshake {
        details: Some(details),
        hmac: Vec::new(),
    }
    .encode_to_vec()
}

fn handshake_post_verify() -> Vec<Vec<u8>> {
    let ca = ca_key();
    let stranger = CaSigningKey::from_seed([42; 32]);
    let t = EPOCH_S;
    vec![
        // a's own certificate (key 0 is a's key) as stage 1 to b, then again older.
        [
            record(0x00, &hello(&ca, 1, 1, &[], t + 5, false)),
            record(0x00, &hello(&ca, 1, 1, &[], t, false)),
        ]
        .concat(),
        // a stranger CA's 10.0.0.3 with groups (key 2), from another address, then a tick.
        [
            record(0x0c, &hello(&stranger, 3, 3, &["ops", "db"], t, false)),
            record(0x80, &[]),
        ]
        .concat(),
        // b's certificate (key 1) answering a's handshake to 10.0.0.2.
        record(0x09, &hello(&ca, 2, 2, &[], t, true)),
        // the wrong host answers a's handshake to 10.0.0.3, then the right one.
        [
            record(0x0b, &hello(&ca, 5, 3, &[], t, true)),
            record(0x0b, &hello(&stranger, 3, 3, &[], t, true)),
        ]
        .concat(),
    ]
}

/// An IPv4 packet from 10.0.0.1 to 10.0.0.2 around `l4` (checksum set).
fn ip(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + l4.len()).expect("small packet");
    let mut p = vec![
        0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let c = ipv4::checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

fn tcp_syn(port: u16) -> Vec<u8> {
    let mut t = vec![
        0x9c, 0x40, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];
    t[2..4].copy_from_slice(&port.to_be_bytes());
    ip(6, &t)
}

fn udp(port: u16) -> Vec<u8> {
    let mut u = vec![0x9c, 0x41, 0, 0, 0, 12, 0, 0, b'h', b'i', b'!', b'\n'];
    u[2..4].copy_from_slice(&port.to_be_bytes());
    ip(17, &u)
}

/// An inner_packet record `[t, st, dctr, len, payload]`.
fn sealed(t: u8, st: u8, dctr: u8, payload: &[u8]) -> Vec<u8> {
    let len = u8::try_from(payload.len()).expect("record payload fits a length byte");
    [&[t, st, dctr, len][..], payload].concat()
}

fn inner_packet() -> Vec<Vec<u8>> {
    let echo = ipv4::echo_request(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        7,
        1,
        b"ping",
    );
    let query = NebulaMeta {
        r#type: MetaType::HostQuery as i32,
        details: Some(NebulaMetaDetails {
            vpn_ip: vpn(1).0,
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let relay = NebulaControl {
        r#type: ControlType::CreateRelayRequest as i32,
        initiator_relay_index: 11,
        relay_from_ip: vpn(1).0,
        relay_to_ip: vpn(3).0,
        ..Default::default()
    }
    .encode_to_vec();
    let traffic = [
        sealed(1, 0, 1, &echo),
        sealed(1, 0, 1, &tcp_syn(22)),
        sealed(1, 0, 1, &tcp_syn(443)),
        sealed(1, 0, 1, &udp(53)),
        sealed(1, 0, 1, &tcp_syn(80)),
        sealed(0x41, 0, 0x81, &echo),
    ]
    .concat();
    let control = [
        sealed(4, 0, 1, b"test"),
        sealed(3, 0, 1, &query),
        sealed(6, 0, 1, &relay),
        sealed(1, 1, 1, &echo),
        sealed(0x21, 0, 1, &echo),
        sealed(0x91, 10, 1, &echo),
    ]
    .concat();
    let teardown = [
        sealed(2, 0, 0, &[]),
        sealed(2, 0, 0, &[]),
        sealed(2, 0, 0, &[]),
        sealed(2, 1, 0, &[]),
        sealed(5, 0, 1, &[]),
        sealed(1, 0, 1, &echo),
    ]
    .concat();
    let mut seeds = Vec::new();
    for flags in [0u8, 1, 3, 4] {
        for body in [&traffic, &control, &teardown] {
            seeds.push([&[flags][..], body].concat());
        }
    }
    seeds
}

/// A DNS query with one question per `(name, qtype)`.
fn dns(id: u16, questions: &[(&[&[u8]], u16)]) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x01, 0x20, 0, questions.len() as u8, 0, 0, 0, 0, 0, 0]);
    for (labels, qtype) in questions {
        for l in *labels {
            b.push(l.len() as u8);
            b.extend_from_slice(l);
        }
        b.push(0);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
    }
    b
}

fn dns_query() -> Vec<Vec<u8>> {
    let l63 = [b'a'; 63];
    let l61 = [b'b'; 61];
    vec![
        dns(0xbeef, &[(&[b"n1"], 1)]),
        dns(
            1,
            &[
                (&[b"n1"], 1),
                (&[b"N1"], 1),
                (&[b"n1"], 16),
                (&[b"nobody", b"example"], 1),
            ],
        ),
        dns(2, &[(&[b"a.b", b"c\\d", b"\x00\xff "], 1)]),
        dns(3, &[(&[], 1)]),
        // 3 × 64 + 62 + the root byte = 255 bytes of name, the longest allowed.
        dns(4, &[(&[&l63, &l63, &l63, &l61], 1)]),
    ]
}

/// replay_window steps: op byte then the counter bytes its mode takes.
fn replay_window() -> Vec<Vec<u8>> {
    let abs = |op: u8, c: u64| [&[op | 0x0c][..], &c.to_be_bytes()].concat();
    vec![
        // fresh window: in order, reordered, duplicates, through the receive path.
        vec![
            0, 0x00, 1, 0x00, 2, 0x04, 0, 1, 0x00, 0, 0x04, 0, 2, 0x01, 0, 0x02, 5,
        ],
        // empty window: 0 late, a jump past the window, the edge, check-only failures.
        [
            vec![1, 0x00, 5],
            abs(0, 0),
            abs(0, 5000),
            vec![
                0x04, 0x03, 0xff, 0x04, 0x04, 0x00, 0x05, 0x03, 0xfe, 0x00, 0,
            ],
        ]
        .concat(),
        // big counters.
        [
            vec![0],
            abs(0, u64::MAX - 2000),
            vec![0x08, 0x03, 0xe8, 0x04, 0x00, 0x10, 0x00, 0x01],
        ]
        .concat(),
    ]
}

fn write(dir: &Path, target: &str, seeds: Vec<Vec<u8>>) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create corpus directory");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i}")), s).expect("write seed");
    }
    println!("{}: {} seeds in {}", target, seeds.len(), d.display());
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus".to_string());
    let dir = Path::new(&dir);
    write(dir, "handshake_post_verify", handshake_post_verify());
    write(dir, "inner_packet", inner_packet());
    write(dir, "dns_query", dns_query());
    write(dir, "replay_window", replay_window());
}
