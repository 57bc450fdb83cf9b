//! Fuzz a relay node (10.0.0.2, am_relay) that has tunnels to 10.0.0.1 and 10.0.0.3 with
//! arbitrary NebulaControl messages (raw bytes or structured fields) and arbitrary relay-framed
//! datagrams, all properly sealed on the 10.0.0.1 tunnel so they reach the relay logic,
//! interleaved with timer ticks. Must never panic; the relay table stays bounded.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshd::cert::CaSigningKey;
use meshd::node::{ipv4, Node, NodeConfig};
use meshd::wire::{ControlType, Header, MessageType, NebulaControl, Subtype};
use node_common::{make_node, vpn};
use prost::Message;

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 4242))
}

/// Delivers all pending transmits among the nodes (node i sits at 192.0.2.(i+1)).
fn exchange(now: Instant, nodes: &mut [Node]) {
    for _ in 0..10 {
        let mut moved = false;
        for i in 0..nodes.len() {
            while let Some(t) = nodes[i].poll_transmit() {
                moved = true;
                let SocketAddr::V4(to) = t.to else { continue };
                let j = usize::from(to.ip().octets()[3]).wrapping_sub(1);
                if j < nodes.len() && j != i {
                    let mut buf = t.bytes;
                    nodes[j].handle_datagram(now, addr(i as u8 + 1), &mut buf);
                }
            }
        }
        if !moved {
            break;
        }
    }
}

/// Seals `payload` from node 0 to the relay on their tunnel with a counter of our choosing.
fn seal_from_a(
    a: &Node,
    t: MessageType,
    st: Subtype,
    idx: Option<u32>,
    ctr: u64,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let host = a.hostmap().host(vpn(2))?;
    let index = meshd::wire::RemoteIndex(idx.unwrap_or(host.remote_index.0));
    let mut buf = vec![0u8; payload.len() + 32];
    Header::new(t, st, index, ctr).write_to(&mut buf);
    buf[16..16 + payload.len()].copy_from_slice(payload);
    let len = if st == Subtype::MESSAGE_RELAY && t == MessageType::Message {
        host.session.seal_relay(ctr, &mut buf, payload.len()).ok()?
    } else {
        host.session
            .seal_in_place(ctr, &mut buf, payload.len())
            .ok()?
    };
    buf.truncate(len);
    Some(buf)
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let ca_key = CaSigningKey::from_seed([5; 32]);
    let map = (1..=3u8).map(|n| (vpn(n), vec![addr(n)])).collect();
    let base = NodeConfig {
        static_host_map: map,
        max_relay_legs: 256,
        ..NodeConfig::default()
    };
    let relay = NodeConfig {
        am_relay: true,
        ..base.clone()
    };
    let mut nodes = vec![
        make_node(&ca_key, 1, base.clone(), start),
        make_node(&ca_key, 2, relay, start),
        make_node(&ca_key, 3, base, start),
    ];
    let mut out = [0u8; 256];
    for i in [0usize, 2] {
        let p = ipv4::echo_request(
            Ipv4Addr::new(10, 0, 0, i as u8 + 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            1,
            b"x",
        );
        nodes[i].handle_tun_packet(start, &p, &mut out);
        exchange(start, &mut nodes);
    }
    let mut now = start;
    let mut ctr: u64 = 1 << 40;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        ctr += 1 + u64::from(op & 3);
        let legs: Vec<u32> = nodes[1].relays().legs().map(|l| l.local_index.0).collect();
        let dgram = match op % 3 {
            0 => seal_from_a(
                &nodes[0],
                MessageType::Control,
                Subtype::NONE,
                None,
                ctr,
                chunk,
            ),
            1 => {
                let word = |k: usize| {
                    chunk
                        .get(k..k + 4)
                        .map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                };
                let pick = |k: usize| chunk.get(k).map_or(vpn(3).0, |b| vpn(b % 5).0);
                let m = NebulaControl {
                    r#type: if chunk.first().is_some_and(|b| b & 1 == 1) {
                        ControlType::CreateRelayResponse as i32
                    } else {
                        ControlType::CreateRelayRequest as i32
                    },
                    initiator_relay_index: legs
                        .get(usize::from(chunk.get(1).copied().unwrap_or(0)))
                        .copied()
                        .unwrap_or(word(2)),
                    responder_relay_index: word(6),
                    relay_to_ip: pick(10),
                    relay_from_ip: pick(11),
                };
                seal_from_a(
                    &nodes[0],
                    MessageType::Control,
                    Subtype::NONE,
                    None,
                    ctr,
                    &m.encode_to_vec(),
                )
            }
            _ => {
                let idx = legs.get(usize::from(*len) % (legs.len() + 1)).copied();
                seal_from_a(
                    &nodes[0],
                    MessageType::Message,
                    Subtype::MESSAGE_RELAY,
                    idx,
                    ctr,
                    chunk,
                )
            }
        };
        if let Some(mut d) = dgram {
            nodes[1].handle_datagram(now, addr(1), &mut d);
            if op & 0x40 != 0 {
                // The same datagram again: a replay must be refused.
                nodes[1].handle_datagram(now, addr(1), &mut d);
            }
        }
        if op & 0x80 != 0 {
            now += Duration::from_millis(u64::from(*op) * 10);
            for node in nodes.iter_mut() {
                node.handle_timeout(now);
            }
        }
        exchange(now, &mut nodes);
        assert!(nodes[1].relays().len() <= 256);
    }
});
