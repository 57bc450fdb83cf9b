//! Fuzz the responder: arbitrary bytes arrive as a handshake stage 1 (header forced to type 0,
//! counter 1). Stage 1 is all cleartext in Noise IX, so the fuzzer reaches payload decoding,
//! certificate recombination and verification.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use meshd::wire::{Header, MessageType, RemoteIndex, Subtype};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (_a, mut b) = node_common::nodes(now);
    let mut pkt = Header::new(MessageType::Handshake, Subtype(0), RemoteIndex(0), 1)
        .encode()
        .to_vec();
    pkt.extend_from_slice(data);
    b.handle_datagram(now, node_common::addr(node_common::A_ADDR), &mut pkt);
    while b.poll_transmit().is_some() {}
    assert!(b.hostmap().host_count() <= 1);
});
