//! Relays in the simulated network (virtual time, fixed seeds; the packet flow is printed on
//! failure): two hosts behind symmetric NATs talk through a relay that cannot read their
//! traffic; the relay never forwards a replayed packet; a relay restart tears the relayed
//! tunnel down and it comes back; a direct path that starts working later takes over without
//! flapping; `use_relays: false` stays unreachable; relay state stays bounded.

mod node_sim;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::{CloseReason, DropReason, Event, NodeConfig, RelayState, VpnIp};
use meshd::wire::{Header, MessageType, Subtype};
use node_sim::{NatKind, Sim, Tap};

const S: Duration = Duration::from_secs(1);

fn vpn(n: u8) -> VpnIp {
    VpnIp::from(Ipv4Addr::new(10, 0, 0, n))
}

fn underlay(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 4242))
}

/// Node 0 (10.0.0.1) is lighthouse and relay on the public underlay.
fn relay_lighthouse(c: &mut NodeConfig) {
    c.am_lighthouse = true;
    c.am_relay = true;
    // Ignored on a relay.
    c.advertise_relays = vec![vpn(9)];
}

/// A client of the lighthouse that names it as its relay (`relay.relays`).
fn client(use_relays: bool) -> impl FnOnce(&mut NodeConfig) {
    move |c| {
        c.lighthouses = vec![vpn(1)];
        c.static_host_map = BTreeMap::from([(vpn(1), vec![underlay(1)])]);
        c.advertise_relays = vec![vpn(1)];
        c.use_relays = use_relays;
        c.punch = true;
        c.punch_respond = true;
    }
}

fn network(seed: u64, nats: &[(Option<NatKind>, bool)]) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.full_mesh = false;
    sim.add_node_with(1, relay_lighthouse);
    for (k, (nat, use_relays)) in nats.iter().enumerate() {
        sim.add_node_nat(2 + k as u8, *nat, client(*use_relays));
    }
    sim.run_for(S);
    sim
}

fn header(b: &[u8]) -> Option<Header> {
    Header::parse(b).ok()
}

fn is_relay_packet(b: &[u8]) -> bool {
    header(b).is_some_and(|h| {
        h.message_type == MessageType::Message && h.subtype == Subtype::MESSAGE_RELAY
    })
}

/// Relay-framed datagrams delivered from node `i` to node `j` (underlay, after NAT).
fn relay_packets(sim: &Sim, from_relay: bool, j: usize) -> Vec<Vec<u8>> {
    let r = sim.nodes[0].addr;
    let to = sim.nodes[j].addr;
    sim.delivered
        .iter()
        .filter(|(f, t, b)| {
            let hop_ok = if from_relay {
                *f == r && *t == to
            } else {
                *t == r
            };
            hop_ok && is_relay_packet(b)
        })
        .map(|(_, _, b)| b.clone())
        .collect()
}

fn relayed_via(sim: &Sim, a: usize, b: usize) -> bool {
    sim.host(a, b)
        .is_some_and(|h| h.remote.is_none() && h.relay == Some(vpn(1)))
}

#[test]
fn symmetric_nats_talk_through_the_relay_which_cannot_read() {
    for seed in [1, 2, 3] {
        let nat = Some(NatKind::Symmetric);
        let mut sim = network(seed, &[(nat, true), (nat, true)]);
        assert!(
            sim.ping_ok(1, 2, 1, 15 * S),
            "seed {seed}: no reply via relay"
        );
        assert!(
            relayed_via(&sim, 1, 2) && relayed_via(&sim, 2, 1),
            "seed {seed}"
        );
        assert!(sim.tunnel_consistent(1, 2));
        // The data path goes through R: relay packets reached B from R.
        let forwarded = relay_packets(&sim, true, 2);
        assert!(!forwarded.is_empty(), "seed {seed}");
        // R forwards the inner packet as is; inner data packets are end-to-end sealed and the
        // ping payload never crosses any hop in the clear.
        let inner_data: Vec<&[u8]> = forwarded
            .iter()
            .map(|b| &b[16..b.len() - 16])
            .filter(|i| header(i).is_some_and(|h| h.message_type == MessageType::Message))
            .collect();
        assert!(!inner_data.is_empty(), "seed {seed}: data went through R");
        for (_, _, b) in &sim.delivered {
            assert!(
                !b.windows(8).any(|w| w == b"sim ping"),
                "plaintext on the wire"
            );
        }
        assert_eq!(
            sim.nodes[0].tun_packets, 0,
            "R decrypted nothing to its TUN"
        );
        assert!(sim.host(0, 1).is_some() && sim.host(0, 2).is_some());
        // Both legs at R established; replies flow back too.
        let legs: Vec<_> = sim.nodes[0].node.relays().legs().copied().collect();
        assert_eq!(legs.len(), 2, "{legs:?}");
        assert!(legs.iter().all(|l| l.state == RelayState::Established));
        assert!(
            sim.ping_ok(2, 1, 2, 5 * S),
            "seed {seed}: reverse direction"
        );
    }
}

#[test]
fn relay_never_forwards_a_replayed_packet() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(4, &[(nat, true), (nat, true)]);
    assert!(sim.ping_ok(1, 2, 1, 15 * S));
    sim.run_for(S);
    let (from, to, bytes) = sim
        .delivered
        .iter()
        .rev()
        .find(|(_, t, b)| *t == sim.nodes[0].addr && is_relay_packet(b))
        .cloned()
        .expect("a relay packet reached R");
    let forwarded = relay_packets(&sim, true, 2).len() + relay_packets(&sim, true, 1).len();
    let replays = sim.nodes[0].node.drops().get(DropReason::Replay);
    for _ in 0..3 {
        sim.inject(from, to, bytes.clone());
    }
    sim.run_for(S);
    let after = relay_packets(&sim, true, 2).len() + relay_packets(&sim, true, 1).len();
    assert_eq!(after, forwarded, "nothing forwarded for the replays");
    assert_eq!(
        sim.nodes[0].node.drops().get(DropReason::Replay),
        replays + 3
    );
    // A tampered copy with a fresh counter fails authentication and is not forwarded either.
    let mut forged = bytes.clone();
    forged[8..16].copy_from_slice(&u64::MAX.to_be_bytes()[..]);
    sim.inject(from, to, forged);
    sim.run_for(S);
    let after2 = relay_packets(&sim, true, 2).len() + relay_packets(&sim, true, 1).len();
    assert_eq!(after2, forwarded);
    assert!(sim.nodes[0].node.drops().get(DropReason::AuthFailed) >= 1);
}

#[test]
fn relay_restart_tears_down_and_comes_back() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(5, &[(nat, true), (nat, true)]);
    assert!(sim.ping_ok(1, 2, 1, 15 * S));
    sim.restart(0, 0);
    sim.run_for(60 * S);
    let torn_down = sim.nodes[1].events.iter().any(|e| {
        matches!(e, Event::TunnelClosed { vpn_ip, reason: CloseReason::RelayLost } if *vpn_ip == vpn(3))
    });
    assert!(torn_down, "the relayed tunnel went with the relay");
    let ok = (2..=4).any(|seq| sim.ping_ok(1, 2, seq, 15 * S));
    assert!(
        ok,
        "the relayed tunnel comes back through the restarted relay"
    );
    assert!(relayed_via(&sim, 1, 2));
}

#[test]
fn direct_path_that_starts_working_takes_over_without_flapping() {
    // Public hosts, but the direct path between them is blocked at first.
    let mut sim = network(6, &[(None, true), (None, true)]);
    let blocked = Rc::new(Cell::new(true));
    let (a, b) = (sim.nodes[1].addr, sim.nodes[2].addr);
    let flag = blocked.clone();
    sim.tap = Some(Box::new(move |d| {
        let direct = (d.from == a && d.to == b) || (d.from == b && d.to == a);
        if direct && flag.get() {
            Tap::Drop
        } else {
            Tap::Pass
        }
    }));
    assert!(sim.ping_ok(1, 2, 1, 15 * S));
    assert!(relayed_via(&sim, 1, 2), "relayed while direct is blocked");
    blocked.set(false);
    // Path promotion probes the direct addresses every 1000 outbound packets (1.6.1).
    for seq in 2..1100u16 {
        sim.ping(1, 2, seq);
        if seq % 50 == 0 {
            sim.run_for(S / 10);
        }
    }
    sim.run_for(2 * S);
    assert_eq!(
        sim.host(1, 2).and_then(|h| h.remote),
        Some(b),
        "A went direct"
    );
    assert_eq!(
        sim.host(2, 1).and_then(|h| h.remote),
        Some(a),
        "B went direct"
    );
    let via_relay = relay_packets(&sim, true, 2).len() + relay_packets(&sim, true, 1).len();
    for seq in 1100..1400u16 {
        sim.ping(1, 2, seq);
        if seq % 50 == 0 {
            sim.run_for(S / 10);
        }
    }
    sim.run_for(2 * S);
    assert!(sim.got_reply(1, 2, 1399));
    let roams = sim.nodes[1]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Roamed { .. }))
        .count();
    assert_eq!(roams, 1, "one move off the relay, no flapping");
    assert_eq!(sim.host(1, 2).and_then(|h| h.remote), Some(b));
    let via_relay_after = relay_packets(&sim, true, 2).len() + relay_packets(&sim, true, 1).len();
    assert_eq!(
        via_relay_after, via_relay,
        "no traffic through the relay any more"
    );
}

#[test]
fn use_relays_false_stays_unreachable() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(7, &[(nat, false), (nat, false)]);
    assert!(!sim.ping_ok(1, 2, 1, 15 * S));
    assert!(!sim.ping_ok(2, 1, 2, 15 * S));
    assert!(sim.host(1, 2).is_none() && sim.host(2, 1).is_none());
    assert!(
        sim.nodes[1].node.relays().is_empty(),
        "A asked for no relay"
    );
    assert!(
        sim.nodes[2].node.relays().is_empty(),
        "B asked for no relay"
    );
    assert!(sim.nodes[0].node.relays().is_empty(), "R set up nothing");
    assert!(relay_packets(&sim, false, 0).is_empty());
}

#[test]
fn use_relays_false_host_still_accepts_a_relayed_tunnel() {
    // As in 1.6.1, use_relays only governs our own attempts: the far end of a relay request
    // does not check it, so B (which uses relays) reaches A through R.
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(10, &[(nat, false), (nat, true)]);
    assert!(sim.ping_ok(2, 1, 1, 15 * S));
    assert!(relayed_via(&sim, 1, 2) && relayed_via(&sim, 2, 1));
}

#[test]
fn relay_ignores_its_own_relay_list_and_never_uses_relays() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = Sim::new(8, Cipher::AesGcm);
    sim.full_mesh = false;
    sim.add_node_with(1, relay_lighthouse);
    // Node 1 is itself a relay (behind a symmetric NAT): it must not use R.
    sim.add_node_nat(2, nat, |c| {
        client(true)(c);
        c.am_relay = true;
    });
    sim.add_node_nat(3, nat, client(true));
    sim.run_for(S);
    assert!(sim.nodes[0].node.config().advertise_relays.is_empty());
    assert!(sim.nodes[1].node.config().advertise_relays.is_empty());
    let (_, relays) = sim.nodes[0]
        .node
        .lighthouse_entry(vpn(3))
        .expect("registered");
    assert_eq!(relays, vec![vpn(1)], "clients advertise their relay");
    assert!(
        !sim.ping_ok(1, 2, 1, 15 * S),
        "an am_relay node never uses relays"
    );
    assert!(sim.nodes[1].node.relays().is_empty());
}

#[test]
fn relay_state_stays_bounded_across_restarts() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(9, &[(nat, true), (nat, true)]);
    for round in 0..4u16 {
        assert!(
            (0..3).any(|k| sim.ping_ok(1, 2, round * 10 + k, 15 * S)),
            "round {round}"
        );
        // A restarts: new tunnel to R, new leg index; R replaces the stale legs.
        sim.restart(1, 0);
        sim.run_for(30 * S);
    }
    let legs = sim.nodes[0].node.relays().len();
    assert!(legs <= 2, "{legs} legs at R for one pair");
    assert!(sim.nodes[2].node.relays().len() <= 1);
}

#[test]
fn shutdown_closes_relayed_tunnels_before_the_relay() {
    let nat = Some(NatKind::Symmetric);
    let mut sim = network(11, &[(nat, true), (nat, true)]);
    assert!(sim.ping_ok(1, 2, 1, 15 * S));
    let now = sim.now;
    sim.nodes[1].node.close_all(now);
    sim.flush(1);
    sim.run_for(S);
    let closed = sim.nodes[2].events.iter().any(|e| {
        matches!(e, Event::TunnelClosed { vpn_ip, reason: CloseReason::PeerClosed } if *vpn_ip == vpn(2))
    });
    assert!(closed, "B got A's closeTunnel through the relay");
    assert!(sim.host(0, 1).is_none(), "R's tunnel to A closed too");
}

#[test]
fn direct_and_relay_race_first_stage2_wins() {
    for seed in [12, 13] {
        let mut sim = network(seed, &[(None, true), (None, true)]);
        assert!(sim.ping_ok(1, 2, 1, 10 * S), "seed {seed}");
        // The direct stage 2 arrives first; relay work in parallel changes nothing.
        assert_eq!(
            sim.host(1, 2).and_then(|h| h.remote),
            Some(sim.nodes[2].addr),
            "seed {seed}"
        );
        assert!(sim.tunnel_consistent(1, 2));
        sim.run_for(3 * S);
        assert!(sim.ping_ok(1, 2, 2, 2 * S));
        let data_via_r = relay_packets(&sim, true, 2)
            .iter()
            .filter(|b| header(&b[16..]).is_some_and(|h| h.message_type == MessageType::Message))
            .count();
        assert_eq!(data_via_r, 0, "seed {seed}: no data through R");
    }
}
