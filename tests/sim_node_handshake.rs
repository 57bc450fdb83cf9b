//! Handshake scenarios in a simulated network (virtual time, fixed seeds): both roles and
//! ciphers, loss and retransmission of either stage, duplicates, lossy/reordering links,
//! simultaneous initiation, restarted peers, foreign CAs and lighthouse-triggered attempts.

mod node_sim;

use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::{CloseReason, DropReason, Event, TunOutcome, VpnIp};
use meshd::wire::MessageType;
use node_sim::{kind, Sim, Tap};

const S: Duration = Duration::from_secs(1);
const CIPHERS: [Cipher; 2] = [Cipher::AesGcm, Cipher::ChaChaPoly];

fn pair(seed: u64, cipher: Cipher) -> Sim {
    let mut sim = Sim::new(seed, cipher);
    sim.add_node(1);
    sim.add_node(2);
    sim
}

fn closed(sim: &Sim, i: usize, reason: CloseReason) -> bool {
    sim.nodes[i]
        .events
        .iter()
        .any(|e| matches!(e, Event::TunnelClosed { reason: r, .. } if *r == reason))
}

#[test]
fn handshake_both_roles_both_ciphers() {
    for cipher in CIPHERS {
        for (a, b) in [(0, 1), (1, 0)] {
            let mut sim = pair(1, cipher);
            assert_eq!(sim.ping(a, b, 1), TunOutcome::Queued);
            sim.run_for(S);
            assert!(sim.got_reply(a, b, 1), "{cipher:?} {a}->{b}");
            assert!(sim.tunnel_consistent(a, b));
            assert!(sim.host(a, b).unwrap().initiator && !sim.host(b, a).unwrap().initiator);
            // Reverse direction over the same tunnel; first data counters are 3.
            assert!(matches!(sim.ping(b, a, 2), TunOutcome::Send { .. }));
            sim.run_for(S);
            assert!(sim.got_reply(b, a, 2));
            assert_eq!(
                sim.host(a, b).unwrap().counter,
                4,
                "ping + reply sent by the initiator"
            );
        }
    }
}

#[test]
fn lost_stage1_is_retransmitted_identically() {
    let mut sim = pair(2, Cipher::AesGcm);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
    let s2 = seen.clone();
    sim.tap = Some(Box::new(move |d| {
        if kind(&d.bytes) == Some((MessageType::Handshake, 1)) {
            s2.borrow_mut().push(d.bytes.clone());
            if s2.borrow().len() <= 3 {
                return Tap::Drop;
            }
        }
        Tap::Pass
    }));
    sim.ping(0, 1, 1);
    sim.run_for(S);
    assert!(
        sim.got_reply(0, 1, 1),
        "queued packet flushed after the 4th attempt"
    );
    let seen = seen.borrow();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "identical stage-1 bytes on every retry"
    );
}

#[test]
fn retry_schedule_is_linear_and_times_out() {
    let mut sim = pair(3, Cipher::AesGcm);
    sim.nodes[1].online = false;
    let times = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let t2 = times.clone();
    let start = sim.now;
    sim.tap = Some(Box::new(move |d| {
        if kind(&d.bytes) == Some((MessageType::Handshake, 1)) {
            t2.borrow_mut().push((d.at - start).as_millis());
        }
        Tap::Pass
    }));
    sim.ping(0, 1, 1);
    for seq in 2..=150 {
        sim.ping(0, 1, seq);
    }
    sim.run_for(10 * S);
    // attempt n+1 follows attempt n by n × 100ms; 10 attempts in all.
    assert_eq!(
        *times.borrow(),
        vec![0, 100, 300, 600, 1000, 1500, 2100, 2800, 3600, 4500]
    );
    assert!(sim.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::HandshakeTimedOut {
            dropped_packets: 100,
            ..
        }
    )));
    assert_eq!(
        sim.nodes[0]
            .node
            .drops()
            .get(DropReason::HandshakeQueueFull),
        50
    );
    assert_eq!(sim.nodes[0].node.hostmap().pending_count(), 0);
}

#[test]
fn lost_stage2_gets_cached_stage2_again() {
    for cipher in CIPHERS {
        let mut sim = pair(4, cipher);
        let stage2s = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Vec<u8>>::new()));
        let s2 = stage2s.clone();
        sim.tap = Some(Box::new(move |d| {
            if kind(&d.bytes) == Some((MessageType::Handshake, 2)) {
                s2.borrow_mut().push(d.bytes.clone());
                if s2.borrow().len() == 1 {
                    return Tap::Drop;
                }
            }
            Tap::Pass
        }));
        sim.ping(0, 1, 1);
        sim.run_for(S);
        assert!(sim.got_reply(0, 1, 1));
        let v = stage2s.borrow();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0], v[1],
            "duplicate stage 1 answered with the cached stage 2"
        );
        assert!(sim.tunnel_consistent(0, 1));
        assert_eq!(sim.nodes[1].node.hostmap().host_count(), 1);
    }
}

#[test]
fn lossy_duplicating_reordering_network_still_converges() {
    for seed in 10..16 {
        let mut sim = pair(
            seed,
            if seed % 2 == 0 {
                Cipher::AesGcm
            } else {
                Cipher::ChaChaPoly
            },
        );
        sim.loss = 0.2;
        sim.duplicate = 0.3;
        sim.jitter = Duration::from_millis(30);
        let mut ok = 0;
        for seq in 1..=30 {
            sim.ping(0, 1, seq);
            sim.run_for(Duration::from_millis(200));
        }
        sim.run_for(2 * S);
        for seq in 1..=30 {
            ok += sim.got_reply(0, 1, seq) as u32;
        }
        assert!(sim.tunnel_consistent(0, 1), "seed {seed}");
        // 20% loss each way: most pings should still make it, none twice.
        assert!(ok >= 10, "seed {seed}: {ok} replies");
        let mut r = sim.nodes[0].replies.clone();
        let n = r.len();
        r.dedup();
        assert_eq!(
            r.len(),
            n,
            "seed {seed}: duplicated datagrams delivered twice to TUN"
        );
        assert_eq!(sim.nodes[1].node.drops().get(DropReason::AuthFailed), 0);
    }
}

#[test]
fn simultaneous_initiation_higher_vpn_ip_wins() {
    for cipher in CIPHERS {
        let mut sim = pair(5, cipher);
        sim.ping(0, 1, 1);
        sim.ping(1, 0, 2);
        sim.run_for(S);
        assert!(sim.tunnel_consistent(0, 1));
        assert!(
            sim.got_reply(0, 1, 1) && sim.got_reply(1, 0, 2),
            "both queues flushed"
        );
        // 10.0.0.2's handshake wins: it is the initiator on both sides.
        assert!(sim.host(1, 0).unwrap().initiator);
        assert!(!sim.host(0, 1).unwrap().initiator);
        assert!(sim.nodes[1].node.drops().get(DropReason::HandshakeLostRace) >= 1);
    }
}

#[test]
fn restarted_peer_with_newer_clock_replaces_tunnel() {
    let mut sim = pair(9, Cipher::ChaChaPoly);
    assert!(sim.ping_ok(0, 1, 1, S));
    let old = sim.host(0, 1).unwrap().remote_index;
    sim.run_for(S);
    sim.restart(1, 0);
    assert!(
        sim.ping_ok(1, 0, 2, S),
        "restarted node handshakes and is accepted"
    );
    assert_ne!(sim.host(0, 1).unwrap().remote_index, old);
    assert!(closed(&sim, 0, CloseReason::Replaced));
    assert!(sim.tunnel_consistent(0, 1));
}

#[test]
fn restarted_peer_with_older_clock_recovers_via_recv_errors() {
    let mut sim = pair(10, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    sim.restart(1, -30);
    // Node 0 refuses the older handshake and sends TestRequests over the old tunnel; the
    // restarted node answers them with recv_errors until node 0 gives up the old tunnel.
    assert!(sim.ping_ok(1, 0, 2, 6 * S));
    assert!(sim.nodes[0].node.drops().get(DropReason::HandshakeTooOld) >= 4);
    assert!(closed(&sim, 0, CloseReason::RecvError));
    assert!(sim.tunnel_consistent(0, 1));
}

#[test]
fn foreign_ca_and_self_handshakes_are_refused() {
    let mut sim = pair(15, Cipher::AesGcm);
    // A node whose cert comes from another CA.
    let mut other = Sim::new(99, Cipher::AesGcm);
    other.add_node(1);
    other.add_node(3);
    let captured = std::rc::Rc::new(std::cell::RefCell::new(None));
    let c2 = captured.clone();
    other.tap = Some(Box::new(move |d| {
        *c2.borrow_mut() = Some(d.bytes.clone());
        Tap::Drop
    }));
    other.ping(1, 0, 1);
    let stage1 = captured.borrow_mut().take().expect("stage 1 produced");
    assert_eq!(kind(&stage1), Some((MessageType::Handshake, 1)));
    sim.inject("192.0.2.3:4242".parse().unwrap(), sim.nodes[1].addr, stage1);
    sim.run_for(S);
    assert_eq!(sim.nodes[1].node.drops().get(DropReason::HandshakeCert), 1);
    assert_eq!(sim.nodes[1].node.hostmap().host_count(), 0);
}

#[test]
fn lighthouse_learned_remotes_trigger_the_handshake() {
    let mut sim = pair(20, Cipher::AesGcm);
    sim.nodes[0].config.static_host_map.clear();
    sim.restart(0, 0);
    let peer = VpnIp::from(sim.nodes[1].vpn_ip);
    assert_eq!(sim.ping(0, 1, 1), TunOutcome::Queued);
    sim.run_for(Duration::from_millis(50));
    assert!(
        !sim.flow.iter().any(|l| l.contains("Handshake/0")),
        "no address known yet"
    );
    let (now, addr) = (sim.now, sim.nodes[1].addr);
    let lighthouse = VpnIp::from(std::net::Ipv4Addr::new(10, 0, 0, 99));
    sim.nodes[0]
        .node
        .set_learned_remotes(now, lighthouse, peer, &[addr], &[]);
    sim.flush(0);
    sim.run_for(Duration::from_millis(20));
    assert!(
        sim.got_reply(0, 1, 1),
        "answer fired the attempt before the 100ms timer"
    );
    assert_eq!(sim.nodes[0].node.remotes(peer).unwrap().addrs(), vec![addr]);
}

#[test]
fn connect_builds_a_tunnel_without_traffic() {
    let mut sim = pair(22, Cipher::ChaChaPoly);
    let (now, peer) = (sim.now, VpnIp::from(sim.nodes[1].vpn_ip));
    sim.nodes[0].node.connect(now, peer);
    sim.nodes[0].node.connect(now, peer); // idempotent while pending
    sim.flush(0);
    assert_eq!(sim.nodes[0].node.hostmap().pending_count(), 1);
    sim.run_for(S);
    assert!(sim.tunnel_consistent(0, 1));
    assert_eq!(sim.nodes[0].node.hostmap().pending_count(), 0);
}

#[test]
fn hostmap_and_pending_tables_are_bounded() {
    let mut sim = Sim::new(23, Cipher::AesGcm);
    sim.add_node_with(1, |c| {
        c.max_hosts = 2;
        c.max_pending = 1;
    });
    for n in 2..=4 {
        sim.add_node(n);
    }
    for (i, seq) in [(1, 1), (2, 2), (3, 3)] {
        sim.ping(i, 0, seq);
        sim.run_for(S);
    }
    assert_eq!(sim.nodes[0].node.hostmap().host_count(), 2);
    assert!(sim.nodes[0].node.drops().get(DropReason::HostMapFull) >= 1);
    assert!(sim.got_reply(1, 0, 1) && sim.got_reply(2, 0, 2) && !sim.got_reply(3, 0, 3));
    // Outbound: one pending handshake at a time.
    let mut fresh = Sim::new(24, Cipher::AesGcm);
    fresh.add_node_with(1, |c| c.max_pending = 1);
    fresh.add_node(2);
    fresh.add_node(3);
    fresh.nodes[1].online = false;
    fresh.nodes[2].online = false;
    assert_eq!(fresh.ping(0, 1, 1), TunOutcome::Queued);
    assert_eq!(
        fresh.ping(0, 2, 2),
        TunOutcome::Dropped(DropReason::PendingFull)
    );
}
