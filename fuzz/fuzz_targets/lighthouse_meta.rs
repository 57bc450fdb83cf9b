//! Fuzz a lighthouse and its client with arbitrary `NebulaMeta` messages sent over their
//! established tunnel in both directions, interleaved with timer ticks. Must never panic, and the
//! peer-growable tables (remote lists, punch schedule, outputs) must stay bounded.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshd::cert::CaSigningKey;
use meshd::node::{Node, NodeConfig};
use meshd::wire::NebulaMeta;
use node_common::vpn;
use prost::Message;

const LH: ([u8; 4], u16) = ([192, 0, 2, 1], 4242);
const CLIENT: ([u8; 4], u16) = ([192, 0, 2, 2], 4242);

/// Lighthouse 10.0.0.1 and its client 10.0.0.2 (punch and respond on).
fn pair(now: Instant) -> (Node, Node) {
    let ca_key = CaSigningKey::from_seed([9; 32]);
    let make = |n: u8, config: NodeConfig| node_common::make_node(&ca_key, n, config, now);
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
