//! Handshake integrity against an attacker who sees handshakes on the wire (issue 13), in the
//! simulated network: a replayed stage 1 with a bumped Time from another address must not
//! take over a live tunnel (whether or not we answered that stage 1 ourselves); a Noise-valid
//! stage 2 with a bad certificate must not end our attempt; a cached stage 2 obeys
//! remote_allow_list. Plus the candidate session's life: a restarted peer still gets back at
//! once (with or without something queued), and an unproven candidate expires.

mod node_sim;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use meshd::config::{AllowList, IpNet};
use meshd::crypto::{Cipher, NodeRng, NoiseHandshake};
use meshd::node::{CloseReason, DropReason, Event, VpnIp};
use meshd::wire::{
    Header, MessageType, NebulaHandshake, NebulaHandshakeDetails, RemoteIndex, Subtype, HEADER_LEN,
};
use node_sim::{kind, NatKind, Sim, Tap};
use prost::Message;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
const CIPHERS: [Cipher; 2] = [Cipher::AesGcm, Cipher::ChaChaPoly];

/// Where the attacker sends from: no node lives there.
fn attacker() -> SocketAddr {
    "198.51.100.66:4242".parse().unwrap()
}

fn vpn(sim: &Sim, i: usize) -> VpnIp {
    VpnIp::from(sim.nodes[i].vpn_ip)
}

/// Records every stage 1 a node sends (bytes as on the wire).
fn capture_stage1(sim: &mut Sim) -> Rc<RefCell<Vec<Vec<u8>>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    sim.tap = Some(Box::new(move |d| {
        if kind(&d.bytes) == Some((MessageType::Handshake, 1)) {
            s.borrow_mut().push(d.bytes.clone());
        }
        Tap::Pass
    }));
    seen
}

/// The handshake details of a stage-1 datagram (its payload is in clear in Noise IX).
fn stage1_details(stage1: &[u8]) -> NebulaHandshakeDetails {
    NebulaHandshake::decode(&stage1[HEADER_LEN + 64..])
        .expect("stage-1 payload")
        .details
        .expect("details")
}

/// `stage1` with its Time moved `ahead` into the future: what anyone who saw it can send.
fn bump_time(stage1: &[u8], ahead: Duration) -> Vec<u8> {
    let mut details = stage1_details(stage1);
    details.time += ahead.as_nanos() as u64;
    let payload = NebulaHandshake {
        details: Some(details),
        hmac: Vec::new(),
    }
    .encode_to_vec();
    let mut out = stage1[..HEADER_LEN + 64].to_vec();
    out.extend_from_slice(&payload);
    out
}

fn closes(sim: &Sim, i: usize) -> Vec<CloseReason> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TunnelClosed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Pings both ways every 20 ms for `rounds` rounds (a transfer in both directions), calling
/// `attack` every 100 ms; returns the rounds whose echo did not come back, per direction.
fn traffic_under_attack(
    sim: &mut Sim,
    rounds: u16,
    attack: impl FnMut(&mut Sim, u16),
) -> (Vec<u16>, Vec<u16>) {
    traffic_between(sim, (0, 1), rounds, attack)
}

/// [`traffic_under_attack`] between nodes `a` and `b`.
fn traffic_between(
    sim: &mut Sim,
    (a, b): (usize, usize),
    rounds: u16,
    mut attack: impl FnMut(&mut Sim, u16),
) -> (Vec<u16>, Vec<u16>) {
    for seq in 1..=rounds {
        sim.ping(a, b, seq);
        sim.ping(b, a, seq);
        if seq % 5 == 0 {
            attack(sim, seq);
        }
        sim.run_for(20 * MS);
    }
    sim.run_for(S);
    let lost = |sim: &Sim, i: usize, j: usize| {
        (1..=rounds)
            .filter(|s| !sim.got_reply(i, j, *s))
            .collect::<Vec<_>>()
    };
    (lost(sim, a, b), lost(sim, b, a))
}

/// Node 1 initiated, so node 0 answered this very stage 1; the attacker replays it with ever
/// later Times from its own address while traffic flows both ways.
#[test]
fn replayed_own_stage1_with_bumped_time_does_not_interrupt_traffic() {
    for cipher in CIPHERS {
        let mut sim = Sim::new(31, cipher);
        sim.add_node(1);
        sim.add_node(2);
        let seen = capture_stage1(&mut sim);
        assert!(sim.ping_ok(1, 0, 1000, S));
        let stage1 = seen.borrow()[0].clone();
        let before = (
            sim.host(0, 1).unwrap().local_index,
            sim.host(0, 1).unwrap().remote,
        );
        let (to, from) = (sim.nodes[0].addr, attacker());
        let (lost_01, lost_10) = traffic_under_attack(&mut sim, 150, |sim, seq| {
            let forged = bump_time(&stage1, u32::from(seq) * S);
            sim.inject(from, to, forged);
        });
        assert!(
            lost_01.is_empty() && lost_10.is_empty(),
            "{cipher:?}: lost {lost_01:?} / {lost_10:?}"
        );
        let h = sim.host(0, 1).unwrap();
        assert_eq!(
            (h.local_index, h.remote),
            before,
            "the tunnel was not replaced"
        );
        assert!(closes(&sim, 0).is_empty() && closes(&sim, 1).is_empty());
        assert!(sim.nodes[0].node.drops().get(DropReason::HandshakeReplayed) >= 30);
        assert!(sim.tunnel_consistent(0, 1));
    }
}

/// Node 0 initiated (it never saw node 1's stage 1 to it); the attacker replays the stage 1
/// node 1 sent to node 2, with bumped Times. Each makes a candidate at node 0 that is never
/// proven; traffic keeps flowing on the live tunnel, and the last candidate expires.
#[test]
fn replayed_foreign_stage1_with_bumped_time_does_not_interrupt_traffic() {
    for cipher in CIPHERS {
        let mut sim = Sim::new(32, cipher);
        sim.add_node(1);
        sim.add_node(2);
        sim.add_node(3);
        assert!(sim.ping_ok(0, 1, 1000, S));
        let seen = capture_stage1(&mut sim);
        assert!(sim.ping_ok(1, 2, 1001, S));
        let stage1 = seen.borrow()[0].clone();
        let before = sim.host(0, 1).unwrap().local_index;
        let (to, from) = (sim.nodes[0].addr, attacker());
        let (lost_01, lost_10) = traffic_under_attack(&mut sim, 150, |sim, seq| {
            sim.inject(from, to, bump_time(&stage1, u32::from(seq) * S));
        });
        assert!(
            lost_01.is_empty() && lost_10.is_empty(),
            "{cipher:?}: lost {lost_01:?} / {lost_10:?}"
        );
        assert_eq!(sim.host(0, 1).unwrap().local_index, before, "not replaced");
        assert!(closes(&sim, 0).is_empty() && closes(&sim, 1).is_empty());
        let peer = vpn(&sim, 1);
        assert!(
            sim.nodes[0].node.hostmap().candidate(peer).is_some(),
            "answered as a candidate"
        );
        assert_eq!(
            sim.nodes[0].node.hostmap().candidate_count(),
            1,
            "one per VPN IP"
        );
        // 10 retries at 100 ms linear back-off: 5.5 s.
        sim.run_for(6 * S);
        assert_eq!(
            sim.nodes[0].node.hostmap().candidate_count(),
            0,
            "expired unproven"
        );
        assert!(sim.ping_ok(0, 1, 2000, S) && sim.ping_ok(1, 0, 2001, S));
    }
}

/// Two hosts behind symmetric NATs talk through a relay; the attacker replays, at the relay,
/// the stage 1 one of them sent it, with bumped Times. The relay's tunnel to that host, and
/// the relay legs riding on it, must stay: the relayed traffic is not interrupted.
#[test]
fn replayed_stage1_at_a_relay_keeps_the_relay_legs() {
    let mut sim = Sim::new(38, Cipher::AesGcm);
    sim.full_mesh = false;
    let relay = VpnIp::from(Ipv4Addr::new(10, 0, 0, 1));
    let underlay = SocketAddr::from(([192, 0, 2, 1], 4242));
    // Node 1's first stage 1 to the relay (from its NAT's public address).
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    sim.tap = Some(Box::new(move |d| {
        let from_node1 = d.from.ip() == Ipv4Addr::new(203, 0, 113, 2);
        let is_stage1 = kind(&d.bytes) == Some((MessageType::Handshake, 1));
        if from_node1 && is_stage1 && d.to == underlay && s.borrow().is_none() {
            *s.borrow_mut() = Some(d.bytes.clone());
        }
        Tap::Pass
    }));
    sim.add_node_with(1, |c| {
        c.am_lighthouse = true;
        c.am_relay = true;
    });
    for n in [2, 3] {
        sim.add_node_nat(n, Some(NatKind::Symmetric), |c| {
            c.lighthouses = vec![relay];
            c.static_host_map = BTreeMap::from([(relay, vec![underlay])]);
            c.advertise_relays = vec![relay];
        });
    }
    sim.run_for(S);
    assert!(sim.ping_ok(1, 2, 1000, 15 * S), "no relayed tunnel");
    let via_relay = |sim: &Sim| {
        sim.host(1, 2)
            .is_some_and(|h| h.remote.is_none() && h.relay == Some(relay))
    };
    assert!(via_relay(&sim));
    let stage1 = seen.borrow().clone().expect("stage 1 captured");
    let legs_before = sim.nodes[0].node.relays().len();
    assert!(legs_before >= 2, "the relay forwards both ways");
    let to = sim.nodes[0].addr;
    let events_before: Vec<usize> = sim.nodes.iter().map(|n| n.events.len()).collect();
    let (lost_12, lost_21) = traffic_between(&mut sim, (1, 2), 150, |sim, seq| {
        sim.inject(attacker(), to, bump_time(&stage1, u32::from(seq) * S));
    });
    assert!(
        lost_12.is_empty() && lost_21.is_empty(),
        "lost {lost_12:?} / {lost_21:?}"
    );
    assert_eq!(sim.nodes[0].node.relays().len(), legs_before);
    for (i, n) in sim.nodes.iter().enumerate() {
        let closed = n.events[events_before[i]..]
            .iter()
            .any(|e| matches!(e, Event::TunnelClosed { .. }));
        assert!(!closed, "node {i} closed a tunnel");
    }
    assert!(via_relay(&sim) && sim.tunnel_consistent(1, 2));
}

/// The attacker answers our stage 1 first, Noise-validly (its own static key), with a
/// certificate that does not verify. The real stage 2 must still complete the handshake.
#[test]
fn stage2_with_a_bad_certificate_keeps_the_attempt() {
    for cipher in CIPHERS {
        let mut sim = Sim::new(33, cipher);
        sim.add_node(1);
        sim.add_node(2);
        let mut other = Sim::new(34, cipher);
        other.add_node(7);
        let attacker_key = &other.nodes[0].node.identity().static_secret;
        let seen = capture_stage1(&mut sim);
        sim.ping(0, 1, 1);
        let stage1 = seen.borrow()[0].clone();
        let request = stage1_details(&stage1);
        let mut noise = NoiseHandshake::responder(
            cipher,
            attacker_key,
            NodeRng::seeded_for_simulation(9).noise_seed(),
        )
        .unwrap();
        noise.read_message(&stage1[HEADER_LEN..]).unwrap();
        let payload = NebulaHandshake {
            details: Some(NebulaHandshakeDetails {
                cert: b"not a certificate".to_vec(),
                responder_index: 0x5eed,
                ..request.clone()
            }),
            hmac: Vec::new(),
        }
        .encode_to_vec();
        let header = Header::new(
            MessageType::Handshake,
            Subtype::HANDSHAKE_IX_PSK0,
            RemoteIndex(request.initiator_index),
            2,
        );
        let mut forged = header.encode().to_vec();
        noise.write_message(&payload, &mut forged).unwrap();
        // Injected now: it arrives before the real answer (5 ms each way).
        let (from, to) = (sim.nodes[1].addr, sim.nodes[0].addr);
        sim.inject(from, to, forged);
        sim.run_for(50 * MS);
        assert_eq!(
            sim.nodes[0].node.drops().get(DropReason::HandshakeCert),
            1,
            "{cipher:?}"
        );
        assert!(
            sim.got_reply(0, 1, 1),
            "{cipher:?}: the real stage 2 completed at once"
        );
        assert!(sim.tunnel_consistent(0, 1));
        assert_eq!(seen.borrow().len(), 1, "no retry was needed");
    }
}

/// A retransmitted (identical) stage 1 from an address remote_allow_list refuses gets no
/// cached stage 2, exactly like a fresh one.
#[test]
fn cached_stage2_is_not_sent_to_a_disallowed_source() {
    let deny = AllowList {
        rules: vec![
            (
                IpNet::new(Ipv4Addr::new(198, 51, 100, 0).into(), 24).unwrap(),
                false,
            ),
            (IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).unwrap(), true),
        ],
    };
    let mut sim = Sim::new(35, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node_with(2, |c| c.remote_allow_list = Some(deny));
    let seen = capture_stage1(&mut sim);
    assert!(sim.ping_ok(0, 1, 1, S));
    let stage1 = seen.borrow()[0].clone();
    let (to, from) = (sim.nodes[1].addr, attacker());
    // The identical stage 1 from an allowed address is answered from the cache...
    let allowed: SocketAddr = "192.0.2.77:4242".parse().unwrap();
    sim.inject(allowed, to, stage1.clone());
    sim.run_for(50 * MS);
    let answered = |sim: &Sim, dest: SocketAddr| {
        sim.flow
            .iter()
            .filter(|l| l.contains(&format!("-> {dest} Handshake/0")))
            .count()
    };
    assert_eq!(
        answered(&sim, allowed),
        1,
        "cached stage 2 to an allowed source"
    );
    // ...but not from a refused one.
    sim.inject(from, to, stage1);
    sim.run_for(50 * MS);
    assert_eq!(
        answered(&sim, from),
        0,
        "cached stage 2 sent to a refused source"
    );
    assert_eq!(
        sim.nodes[1].node.drops().get(DropReason::RemoteNotAllowed),
        1
    );
    assert!(sim.tunnel_consistent(0, 1));
}

/// A peer that really restarted with nothing queued (`connect`) completes and sends a
/// TestRequest at once, which proves the candidate at the responder: no waiting.
#[test]
fn restarted_initiator_with_nothing_queued_is_switched_to_at_once() {
    let mut sim = Sim::new(36, Cipher::ChaChaPoly);
    sim.add_node(1);
    sim.add_node(2);
    assert!(sim.ping_ok(0, 1, 1, S));
    sim.run_for(S);
    sim.restart(1, 0);
    let (now, peer) = (sim.now, vpn(&sim, 0));
    sim.nodes[1].node.connect(now, peer);
    sim.flush(1);
    sim.run_for(50 * MS);
    assert!(sim.tunnel_consistent(0, 1), "switched within 50 ms");
    assert_eq!(closes(&sim, 0), vec![CloseReason::Replaced]);
    assert_eq!(sim.nodes[0].node.hostmap().candidate_count(), 0);
    assert!(sim.ping_ok(0, 1, 2, S));
}

/// Like nebula 1.6.1, the restarted initiator sends nothing after stage 2 (its TestRequest is
/// dropped here). The responder's own traffic on the dead session draws recv_errors; when
/// they close it, the candidate takes over without a new handshake.
#[test]
fn restarted_silent_initiator_is_switched_to_when_the_old_session_dies() {
    let mut sim = Sim::new(37, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    assert!(sim.ping_ok(0, 1, 1, S));
    sim.run_for(S);
    sim.restart(1, 0);
    let from1 = sim.nodes[1].addr;
    sim.tap = Some(Box::new(move |d| {
        let first_after_stage2 = d.from == from1 && kind(&d.bytes) == Some((MessageType::Test, 3));
        if first_after_stage2 {
            Tap::Drop
        } else {
            Tap::Pass
        }
    }));
    let (now, peer) = (sim.now, vpn(&sim, 0));
    sim.nodes[1].node.connect(now, peer);
    sim.flush(1);
    sim.run_for(50 * MS);
    assert!(sim.nodes[0]
        .node
        .hostmap()
        .candidate(vpn(&sim, 1))
        .is_some());
    let handshakes_before = sim
        .flow
        .iter()
        .filter(|l| l.contains("Handshake/0"))
        .count();
    let replied = (2..=11).find(|seq| sim.ping_ok(0, 1, *seq, 200 * MS));
    assert!(replied.is_some(), "node 0 never reached the restarted node");
    assert!(closes(&sim, 0).contains(&CloseReason::RecvError));
    assert!(sim.tunnel_consistent(0, 1));
    let handshakes_after = sim
        .flow
        .iter()
        .filter(|l| l.contains("Handshake/0"))
        .count();
    assert_eq!(
        handshakes_before, handshakes_after,
        "no new handshake was needed"
    );
}

/// A replayed stage 1 left a candidate from the attacker's address; then the peer really
/// restarts (silently) and the old session dies of recv_errors. The attacker's candidate must
/// not take its place (our traffic would go to the attacker); a fresh handshake rebuilds it.
#[test]
fn a_candidate_from_elsewhere_does_not_replace_a_dead_tunnel() {
    let mut sim = Sim::new(39, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    sim.add_node(3);
    assert!(sim.ping_ok(0, 1, 1000, S));
    let seen = capture_stage1(&mut sim);
    assert!(sim.ping_ok(1, 2, 1001, S));
    let stage1 = seen.borrow()[0].clone();
    let to = sim.nodes[0].addr;
    sim.inject(attacker(), to, bump_time(&stage1, 60 * S));
    sim.run_for(20 * MS);
    let peer = vpn(&sim, 1);
    assert!(sim.nodes[0].node.hostmap().candidate(peer).is_some());
    sim.restart(1, 0);
    let replied = (2..=12).find(|seq| sim.ping_ok(0, 1, *seq, 300 * MS));
    assert!(replied.is_some(), "node 0 never reached the restarted node");
    assert!(closes(&sim, 0).contains(&CloseReason::RecvError));
    assert_eq!(sim.host(0, 1).unwrap().remote, Some(sim.nodes[1].addr));
    assert!(
        sim.host(0, 1).unwrap().initiator,
        "rebuilt by a new handshake"
    );
    assert!(sim.tunnel_consistent(0, 1));
}
