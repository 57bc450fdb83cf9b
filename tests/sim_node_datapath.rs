//! Data-path scenarios in a simulated network (virtual time, fixed seeds): replayed, tampered and
//! unknown packets, recv_error, roaming, closeTunnel, the connection manager, the inner source
//! check, tun-disabled echo, outbound edge cases and the firewall hook.

mod node_sim;

use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::{CloseReason, DropReason, Event, TunOutcome, VpnIp};
use meshd::wire::MessageType;
use node_sim::{kind, Sim, Tap};

const S: Duration = Duration::from_secs(1);

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
fn replayed_tampered_and_unknown_packets() {
    let mut sim = pair(6, Cipher::AesGcm);
    let data = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let d2 = data.clone();
    sim.tap = Some(Box::new(move |d| {
        if kind(&d.bytes).is_some_and(|(t, _)| t == MessageType::Message) {
            d2.borrow_mut().push(d.clone());
        }
        Tap::Pass
    }));
    assert!(sim.ping_ok(0, 1, 1, S));
    let first = data.borrow()[0].clone();
    let before = sim.nodes[1].tun_packets;
    // Replay: refused before decryption and not answered (1.6.1 sends a recv_error, which
    // would hand whoever replays a packet a strike against node 0's tunnel).
    sim.inject(first.from, first.to, first.bytes.clone());
    sim.run_for(S);
    assert_eq!(sim.nodes[1].tun_packets, before);
    assert_eq!(sim.nodes[1].node.drops().get(DropReason::Replay), 1);
    assert_eq!(sim.host(0, 1).unwrap().recv_errors, 0);
    // Tampered fresh counter: silently dropped, no recv_error.
    let mut t = first.bytes.clone();
    t[8..16].copy_from_slice(&500u64.to_be_bytes());
    sim.inject(first.from, first.to, t.clone());
    let last = t.len() - 1;
    t[last] ^= 1;
    sim.inject(first.from, first.to, t);
    sim.run_for(S);
    assert_eq!(sim.nodes[1].node.drops().get(DropReason::AuthFailed), 2);
    assert_eq!(sim.host(0, 1).unwrap().recv_errors, 0);
    // After the forged counter 500 failed, the window did not move: counter 4.. still fine.
    assert!(sim.ping_ok(0, 1, 2, S));
    // Unknown index gets a recv_error that nobody owns.
    let mut u = first.bytes.clone();
    u[4..8].copy_from_slice(&[9, 9, 9, 9]);
    sim.inject(first.from, first.to, u);
    sim.run_for(S);
    assert_eq!(sim.nodes[1].node.drops().get(DropReason::UnknownIndex), 1);
    assert_eq!(sim.nodes[0].node.drops().get(DropReason::UnknownIndex), 1);
    // Garbage and short datagrams.
    sim.inject(first.from, first.to, vec![0]);
    sim.inject(first.from, first.to, vec![0x1f; 40]);
    sim.run_for(S);
    assert_eq!(sim.nodes[1].node.drops().get(DropReason::ShortDatagram), 1);
    assert_eq!(
        sim.nodes[1]
            .node
            .drops()
            .get(DropReason::UnknownMessageType),
        1
    );
}

#[test]
fn four_recv_errors_from_current_remote_close_the_tunnel() {
    let mut sim = pair(7, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    sim.restart(1, 0); // node 1 forgets the tunnel; node 0 does not know
    for seq in 2..=4 {
        sim.ping(0, 1, seq);
        sim.run_for(Duration::from_millis(50));
    }
    assert!(sim.host(0, 1).is_some(), "three strikes are ignored");
    sim.ping(0, 1, 5);
    sim.run_for(Duration::from_millis(50));
    assert!(sim.host(0, 1).is_none());
    assert!(closed(&sim, 0, CloseReason::RecvError));
    // Traffic re-handshakes.
    assert!(sim.ping_ok(0, 1, 6, S));
    assert!(sim.tunnel_consistent(0, 1));
}

#[test]
fn spoofed_recv_errors_from_elsewhere_do_not_close() {
    let mut sim = pair(8, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    let idx = sim.host(0, 1).unwrap().remote_index;
    let to = sim.nodes[0].addr;
    let spoof = "198.51.100.7:9".parse().unwrap();
    for _ in 0..10 {
        let h =
            meshd::wire::Header::new(MessageType::RecvError, meshd::wire::Subtype::NONE, idx, 0);
        sim.inject(spoof, to, h.encode().to_vec());
    }
    sim.run_for(S);
    assert!(sim.host(0, 1).is_some());
    assert!(sim.ping_ok(0, 1, 2, S));
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut sim = pair(11, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    sim.rebind(0, 5555);
    assert!(sim.ping_ok(0, 1, 2, S), "reply reaches the new address");
    assert_eq!(sim.host(1, 0).unwrap().remote, Some(sim.nodes[0].addr));
    assert!(sim.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, Event::Roamed { .. })));
    // A forged packet from another address does not move the tunnel.
    let idx = sim.host(0, 1).unwrap().remote_index;
    let mut forged =
        meshd::wire::Header::new(MessageType::Message, meshd::wire::Subtype::NONE, idx, 999)
            .encode()
            .to_vec();
    forged.extend_from_slice(&[0u8; 40]);
    sim.inject("203.0.113.9:1".parse().unwrap(), sim.nodes[1].addr, forged);
    sim.run_for(S);
    assert_eq!(sim.host(1, 0).unwrap().remote, Some(sim.nodes[0].addr));
}

#[test]
fn roaming_back_within_two_seconds_is_suppressed() {
    let mut sim = pair(21, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    let original = sim.nodes[0].addr;
    sim.rebind(0, 5555);
    assert!(sim.ping_ok(0, 1, 2, S));
    // Straight back to the old address: node 1 does not follow for 2s (replies are lost).
    sim.rebind(0, original.port());
    assert!(!sim.ping_ok(0, 1, 3, Duration::from_millis(500)));
    assert_eq!(sim.host(1, 0).unwrap().remote.map(|a| a.port()), Some(5555));
    sim.run_for(2 * S);
    assert!(sim.ping_ok(0, 1, 4, S), "after 2s the roam is accepted");
    assert_eq!(sim.host(1, 0).unwrap().remote, Some(original));
}

#[test]
fn connection_manager_tears_down_silent_peer_and_traffic_rehandshakes() {
    let mut sim = pair(12, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    // The first check sees the reply and disarms; only new outbound traffic re-arms it (1.6.1).
    sim.run_for(6 * S);
    sim.nodes[1].online = false;
    sim.ping(0, 1, 2);
    sim.run_for(4 * S);
    assert!(sim.host(0, 1).is_some());
    sim.run_for(2 * S); // alive check at +5s sends a TestRequest
    assert!(sim.host(0, 1).is_some());
    assert!(sim
        .flow
        .iter()
        .any(|l| l.contains("NOHOST") && l.contains("Test/0")));
    sim.run_for(10 * S); // deletion 10s later
    assert!(sim.host(0, 1).is_none());
    assert!(closed(&sim, 0, CloseReason::Silent));
    sim.nodes[1].online = true;
    assert!(sim.ping_ok(0, 1, 3, 2 * S));
}

#[test]
fn connection_manager_keeps_live_tunnel() {
    let mut sim = pair(13, Cipher::AesGcm);
    for seq in 1..=30 {
        assert!(sim.ping_ok(0, 1, seq, S));
        sim.run_for(S);
    }
    assert_eq!(
        sim.nodes[0]
            .events
            .iter()
            .filter(|e| matches!(e, Event::HandshakeComplete { .. }))
            .count(),
        1
    );
    // Test packets sent by the idle side get answered and keep the tunnel up too.
    let (now, peer) = (sim.now, VpnIp::from(sim.nodes[1].vpn_ip));
    sim.nodes[0].node.send_test_request(now, peer);
    sim.flush(0);
    sim.run_for(20 * S);
    assert!(sim.host(0, 1).is_some());
}

#[test]
fn close_tunnel_is_authenticated() {
    let mut sim = pair(14, Cipher::ChaChaPoly);
    assert!(sim.ping_ok(0, 1, 1, S));
    // Forged closeTunnel with the right index: ignored.
    let idx = sim.host(1, 0).unwrap().local_index;
    let mut forged = meshd::wire::Header::new(
        MessageType::CloseTunnel,
        meshd::wire::Subtype::NONE,
        meshd::wire::RemoteIndex(idx.0),
        100,
    )
    .encode()
    .to_vec();
    forged.extend_from_slice(&[0u8; 16]);
    sim.inject(sim.nodes[0].addr, sim.nodes[1].addr, forged);
    sim.run_for(S);
    assert!(sim.host(1, 0).is_some());
    let now = sim.now;
    sim.nodes[0].node.close_all(now);
    sim.flush(0);
    sim.run_for(S);
    assert!(sim.host(1, 0).is_none());
    assert!(closed(&sim, 1, CloseReason::PeerClosed));
}

#[test]
fn inner_source_must_be_peer_cert_ip() {
    let mut sim = pair(16, Cipher::AesGcm);
    assert!(sim.ping_ok(0, 1, 1, S));
    let before = sim.nodes[1].tun_packets;
    let spoofed = meshd::node::ipv4::echo_request(
        std::net::Ipv4Addr::new(10, 0, 0, 77),
        sim.nodes[1].vpn_ip,
        1,
        9,
        b"spoof",
    );
    assert!(matches!(sim.tun_in(0, &spoofed), TunOutcome::Send { .. }));
    sim.run_for(S);
    assert_eq!(sim.nodes[1].tun_packets, before);
    assert_eq!(
        sim.nodes[1]
            .node
            .drops()
            .get(DropReason::InnerSourceNotAllowed),
        1
    );
}

#[test]
fn tun_disabled_node_answers_echo_itself() {
    let mut sim = Sim::new(17, Cipher::ChaChaPoly);
    sim.add_node(1);
    sim.add_node_with(2, |c| c.tun_disabled = true);
    assert!(sim.ping_ok(0, 1, 1, S));
    assert_eq!(
        sim.nodes[1].tun_packets, 0,
        "nothing reached the (absent) TUN of node 1"
    );
    // Non-echo traffic to a tun-disabled node is dropped.
    let mut udp =
        meshd::node::ipv4::echo_request(sim.nodes[0].vpn_ip, sim.nodes[1].vpn_ip, 1, 2, b"xxxx");
    udp[9] = 17;
    sim.tun_in(0, &udp);
    sim.run_for(S);
    assert_eq!(sim.nodes[1].node.drops().get(DropReason::TunDisabled), 1);
}

#[test]
fn outbound_tun_edge_cases() {
    let mut sim = pair(18, Cipher::AesGcm);
    let me = sim.nodes[0].vpn_ip;
    let cases = [
        (std::net::Ipv4Addr::new(10, 0, 0, 1), DropReason::ToSelf),
        (std::net::Ipv4Addr::new(10, 0, 1, 1), DropReason::NoRoute),
        // tun.drop_multicast off (the default): routed like any address outside the VPN.
        (std::net::Ipv4Addr::new(224, 0, 0, 251), DropReason::NoRoute),
    ];
    for (dst, want) in cases {
        let p = meshd::node::ipv4::echo_request(me, dst, 1, 1, b"");
        assert_eq!(sim.tun_in(0, &p), TunOutcome::Dropped(want), "{dst}");
    }
    assert_eq!(
        sim.tun_in(0, &[0x60; 40]),
        TunOutcome::Dropped(DropReason::NotIpv4)
    );
    let mut truncated_udp = [0u8; 22];
    truncated_udp[0] = 0x45;
    truncated_udp[9] = 17;
    assert_eq!(
        sim.tun_in(0, &truncated_udp),
        TunOutcome::Dropped(DropReason::MalformedIp)
    );
    // Too small an output buffer on an established tunnel.
    assert!(sim.ping_ok(0, 1, 1, S));
    let p = meshd::node::ipv4::echo_request(me, sim.nodes[1].vpn_ip, 1, 2, b"payload");
    let mut small = [0u8; 40];
    let now = sim.now;
    assert_eq!(
        sim.nodes[0].node.handle_tun_packet(now, &p, &mut small),
        TunOutcome::Dropped(DropReason::BufferTooSmall)
    );
}

/// Drops inbound UDP, rejects inbound TCP with a marker packet, rejects outbound UDP.
struct TestFilter;

impl meshd::node::PacketFilter for TestFilter {
    fn check(
        &mut self,
        _now: std::time::Instant,
        dir: meshd::node::Direction,
        packet: &[u8],
        _peer: &meshd::node::PeerCert,
    ) -> meshd::node::FilterVerdict {
        use meshd::node::{Direction, FilterVerdict};
        let reply = meshd::node::ipv4::echo_request(
            std::net::Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            std::net::Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            9,
            9,
            b"reject",
        );
        match (dir, packet[9]) {
            (Direction::Inbound, 17) => FilterVerdict::Drop,
            (Direction::Inbound, 6) => FilterVerdict::Reject(reply),
            (Direction::Outbound, 17) => FilterVerdict::Reject(reply),
            _ => FilterVerdict::Allow,
        }
    }
}

#[test]
fn firewall_hook_drop_and_reject() {
    let mut sim = pair(19, Cipher::AesGcm);
    sim.nodes[1].node.set_filter(Box::new(TestFilter));
    assert!(sim.ping_ok(0, 1, 1, S), "ICMP allowed");
    let (a, b) = (sim.nodes[0].vpn_ip, sim.nodes[1].vpn_ip);
    let with_proto = |src, dst, proto: u8| {
        let mut p = meshd::node::ipv4::echo_request(src, dst, 1, 2, b"abcdefgh");
        p[9] = proto;
        p
    };
    // Inbound UDP dropped at node 1.
    let before = sim.nodes[1].tun_packets;
    sim.tun_in(0, &with_proto(a, b, 17));
    sim.run_for(S);
    assert_eq!(sim.nodes[1].tun_packets, before);
    assert_eq!(
        sim.nodes[1].node.drops().get(DropReason::FirewallInbound),
        1
    );
    // Inbound TCP rejected: the reject packet travels back through the tunnel to node 0's TUN.
    let before0 = sim.nodes[0].tun_packets;
    sim.tun_in(0, &with_proto(a, b, 6));
    sim.run_for(S);
    assert_eq!(
        sim.nodes[0].tun_packets,
        before0 + 1,
        "reject delivered to the sender"
    );
    assert_eq!(
        sim.nodes[1].node.drops().get(DropReason::FirewallInbound),
        2
    );
    // Outbound UDP from node 1 rejected locally: reply on node 1's own TUN, nothing sent.
    let r = sim.tun_in(1, &with_proto(b, a, 17));
    assert_eq!(r, TunOutcome::Dropped(DropReason::FirewallOutbound));
    assert_eq!(sim.nodes[1].local_tun.len(), 1);
}

/// `tun.drop_local_broadcast` / `tun.drop_multicast` as 1.6.1 has them: off (the default), the
/// VPN broadcast address is treated as a peer to handshake with and multicast follows the unsafe
/// routes; on, both are dropped before any lookup.
#[test]
fn drop_local_broadcast_and_multicast_keys() {
    let mcast = std::net::Ipv4Addr::new(239, 1, 2, 3);
    let route = |c: &mut meshd::node::NodeConfig| {
        c.unsafe_routes = vec![meshd::node::UnsafeRoute {
            route: meshd::node::Ipv4Net::parse_cidr("224.0.0.0/4").unwrap(),
            via: VpnIp::from(std::net::Ipv4Addr::new(10, 0, 0, 2)),
            mtu: None,
        }];
    };
    let mut sim = Sim::new(19, Cipher::AesGcm);
    sim.add_node_with(1, route);
    sim.add_node(2);
    let me = sim.nodes[0].vpn_ip;
    let bcast = std::net::Ipv4Addr::new(10, 0, 0, 255);
    let p = meshd::node::ipv4::echo_request(me, bcast, 1, 1, b"");
    assert_eq!(sim.tun_in(0, &p), TunOutcome::Queued);
    assert!(
        sim.nodes[0]
            .node
            .hostmap()
            .pending(VpnIp::from(bcast))
            .is_some(),
        "1.6.1 starts a handshake towards the broadcast address"
    );
    let p = meshd::node::ipv4::echo_request(me, mcast, 1, 2, b"");
    sim.tun_in(0, &p);
    sim.run_for(S);
    assert!(
        sim.host(0, 1).is_some(),
        "multicast went to its unsafe route's via"
    );

    let mut sim = Sim::new(19, Cipher::AesGcm);
    sim.add_node_with(1, |c| {
        route(c);
        c.drop_local_broadcast = true;
        c.drop_multicast = true;
    });
    sim.add_node(2);
    for dst in [bcast, mcast] {
        let p = meshd::node::ipv4::echo_request(me, dst, 1, 3, b"");
        assert_eq!(
            sim.tun_in(0, &p),
            TunOutcome::Dropped(DropReason::BroadcastOrMulticast),
            "{dst}"
        );
    }
    sim.run_for(S);
    assert!(sim.host(0, 1).is_none(), "nothing was sent towards the via");
    assert!(sim.nodes[0]
        .node
        .hostmap()
        .pending(VpnIp::from(bcast))
        .is_none());
}

/// `tunnels.drop_inactive` / `inactivity_timeout`: a tunnel idle for the timeout is closed (the
/// peer told with closeTunnel); traffic keeps it; with the key off an idle tunnel stays.
#[test]
fn drop_inactive_closes_idle_tunnels_only() {
    let idle = |drop: bool, ping_every: Option<Duration>| {
        let mut sim = Sim::new(20, Cipher::AesGcm);
        sim.add_node_with(1, |c| {
            c.drop_inactive = drop;
            c.inactivity_timeout = 30 * S;
        });
        sim.add_node(2);
        assert!(sim.ping_ok(0, 1, 1, 5 * S));
        for seq in 2..62u16 {
            if let Some(every) = ping_every {
                if seq % (every.as_secs() as u16) == 0 {
                    sim.ping(0, 1, seq);
                }
            }
            sim.run_for(S);
        }
        (
            sim.host(0, 1).is_some(),
            sim.host(1, 0).is_some(),
            closed(&sim, 1, CloseReason::PeerClosed),
        )
    };
    let (a, b, told) = idle(true, None);
    assert!(!a && !b && told, "idle tunnel kept: {a} {b} {told}");
    let (a, b, _) = idle(true, Some(5 * S));
    assert!(a && b, "a tunnel with traffic every 5 s was dropped");
    let (a, b, _) = idle(false, None);
    assert!(a && b, "tunnels.drop_inactive off dropped an idle tunnel");
}
