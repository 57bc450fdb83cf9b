//! Fuzz the handshake past certificate verification. Both nodes trust any well-formed
//! certificate ([`node_common::AnyCertVerifier`]), and the target plays the other side of the
//! Noise IX exchange itself, so fuzzer-chosen `NebulaHandshake` bytes arrive inside valid Noise
//! messages and reach everything after the signature check: index and Time handling, conflicts
//! with existing tunnels and pending attempts, wrong-host retries and tunnel installation.
//!
//! Input: records `[ctl, len, payload[len]]`.
//! - `ctl & 1 == 0`: stage 1 to node b (10.0.0.2) with static key `KEYS[(ctl >> 1) & 3]`,
//!   ephemeral seed from the record number, payload as the Noise payload; sent from
//!   `FROM[(ctl >> 3) & 1]`. Any stage 2 b answers with must be readable by our initiator; the
//!   resulting session then carries a TestRequest to b.
//! - `ctl & 1 == 1`: stage 2 to node a (10.0.0.1)'s pending handshake to
//!   10.0.0.`2 + ((ctl >> 1) & 1)` (started if needed): our responder with static key
//!   `KEYS[(ctl >> 3) & 3]` reads a's stored stage 1 and answers with the payload.
//! - `ctl & 0x80`: afterwards advance time by `(ctl & 0x70) * 50` ms and run both timers.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshd::crypto::{Cipher, NodeRng, NoiseHandshake, Session, StaticSecret};
use meshd::node::{DatagramOutcome, DropReason, Node, NodeConfig, Transmit};
use meshd::wire::{Header, MessageType, NebulaHandshake, RemoteIndex, Subtype, HEADER_LEN};
use node_common::{addr, vpn, NodeOpts, A_ADDR, B_ADDR};
use prost::Message;

/// Static keys the target may handshake with: a's, b's own, and two strangers.
const KEYS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];
const FROM: [([u8; 4], u16); 2] = [A_ADDR, ([198, 51, 100, 7], 4242)];

/// Our side of a tunnel b accepted: its index at b, the session and our send counter.
struct OurTunnel {
    index: RemoteIndex,
    session: Session,
    counter: u64,
}

fn drain(n: &mut Node) -> Vec<Transmit> {
    while n.poll_event().is_some() {}
    std::iter::from_fn(|| n.poll_transmit()).collect()
}

/// Stage 1 to b; returns the tunnel if b answered with a stage 2 we could read.
fn stage1_to_b(now: Instant, b: &mut Node, ctl: u8, seq: u8, payload: &[u8]) -> Option<OurTunnel> {
    let key = StaticSecret(KEYS[usize::from((ctl >> 1) & 3)]);
    let from = addr(FROM[usize::from((ctl >> 3) & 1)]);
    let mut init = NoiseHandshake::initiator(Cipher::AesGcm, &key, NodeRng::seeded_for_simulation(u64::from(seq)).noise_seed()).expect("initiator");
    let mut pkt = Header::new(MessageType::Handshake, Subtype(0), RemoteIndex(0), 1)
        .encode()
        .to_vec();
    init.write_message(payload, &mut pkt).expect("stage 1 fits");
    b.handle_datagram(now, from, &mut pkt);
    let mut tunnel = None;
    for t in drain(b) {
        let Ok(h) = Header::parse(&t.bytes) else {
            panic!("node sent an unparsable datagram");
        };
        if h.message_type != MessageType::Handshake || h.counter != 2 || t.to != from {
            continue;
        }
        let answer = init
            .read_message(&t.bytes[HEADER_LEN..])
            .expect("b's stage 2 answers our stage 1");
        let details = NebulaHandshake::decode(answer.as_slice())
            .expect("b's stage 2 payload decodes")
            .details
            .expect("b's stage 2 has details");
        let session = init.into_session().expect("IX complete after stage 2");
        tunnel = Some(OurTunnel {
            index: RemoteIndex(details.responder_index),
            session,
            counter: 2,
        });
        break;
    }
    tunnel
}

/// A TestRequest on our tunnel to b, which must be authenticated and answered.
fn test_request(now: Instant, b: &mut Node, t: &mut OurTunnel, ctl: u8) {
    t.counter += 1;
    let mut buf = vec![0u8; HEADER_LEN + 16];
    Header::new(MessageType::Test, Subtype::TEST_REQUEST, t.index, t.counter).write_to(&mut buf);
    let len = t
        .session
        .seal_in_place(t.counter, &mut buf, 0)
        .expect("seal");
    buf.truncate(len);
    b.handle_datagram(now, addr(FROM[usize::from((ctl >> 3) & 1)]), &mut buf);
    drain(b);
}

/// Stage 2 from us (as `peer`) to a's pending handshake.
fn stage2_to_a(now: Instant, a: &mut Node, ctl: u8, seq: u8, payload: &[u8]) {
    let peer = vpn(2 + ((ctl >> 1) & 1));
    if a.hostmap().pending(peer).is_none() {
        if a.hostmap().host(peer).is_some() {
            return;
        }
        a.connect(now, peer);
        drain(a);
    }
    let Some(p) = a.hostmap().pending(peer) else {
        return;
    };
    let (stage1, local_index) = (p.stage1.clone(), p.local_index);
    let key = StaticSecret(KEYS[usize::from((ctl >> 3) & 3)]);
    let mut resp = NoiseHandshake::responder(Cipher::AesGcm, &key, NodeRng::seeded_for_simulation(u64::from(seq)).noise_seed()).expect("responder");
    let request = resp
        .read_message(&stage1[HEADER_LEN..])
        .expect("a's own stage 1 reads");
    let details = NebulaHandshake::decode(request.as_slice())
        .expect("a's stage 1 decodes")
        .details
        .expect("a's stage 1 has details");
    assert_eq!(details.initiator_index, local_index.0);
    let mut pkt = Header::new(
        MessageType::Handshake,
        Subtype(0),
        RemoteIndex(local_index.0),
        2,
    )
    .encode()
    .to_vec();
    resp.write_message(payload, &mut pkt).expect("stage 2 fits");
    let r = a.handle_datagram(now, addr(B_ADDR), &mut pkt);
    assert_ne!(
        r,
        DatagramOutcome::Dropped(DropReason::HandshakeNoise),
        "a proper Noise stage 2 must read"
    );
    drain(a);
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let opts = NodeOpts {
        permissive: true,
        ..NodeOpts::default()
    };
    let (mut a, mut b) = node_common::nodes_opts(start, &opts, NodeConfig::default());
    let mut now = start;
    let mut tunnels: Vec<OurTunnel> = Vec::new();
    let mut rest = data;
    let mut seq = 0u8;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        seq = seq.wrapping_add(1);
        if ctl & 1 == 0 {
            if let Some(t) = stage1_to_b(now, &mut b, *ctl, seq, payload) {
                tunnels.push(t);
            }
            if let Some(t) = tunnels.last_mut() {
                test_request(now, &mut b, t, *ctl);
            }
        } else {
            stage2_to_a(now, &mut a, *ctl, seq, payload);
        }
        if ctl & 0x80 != 0 {
            now += Duration::from_millis(u64::from(ctl & 0x70) * 50);
            a.handle_timeout(now);
            b.handle_timeout(now);
            drain(&mut a);
            drain(&mut b);
        }
        for node in [&a, &b] {
            let own = node.identity().vpn_ip;
            assert!(node.hostmap().host(own).is_none(), "no tunnel to ourselves");
            for h in node.hostmap().hosts() {
                assert_eq!(node.hostmap().host_by_index(h.local_index), Some(h.vpn_ip));
                assert_eq!(h.peer.vpn_ip, h.vpn_ip, "tunnel filed under its cert's IP");
            }
            assert!(node.hostmap().pending_count() <= 2);
        }
        assert!(b.hostmap().host_count() <= tunnels.len());
    }
});
