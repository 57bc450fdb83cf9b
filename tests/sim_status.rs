//! `Node::status` and the operator commands in the simulated network (virtual time, fixed
//! seeds): per-tunnel counters agree exactly between the two ends of a lossless tunnel, a
//! relayed tunnel shows its relay and the relay shows the legs it serves, lighthouses show as
//! answering, Nebula's message and lighthouse counters move, and close/create/change-remote do
//! what they say.

mod node_sim;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::status::{LIGHTHOUSE_KINDS, MESSAGE_KINDS};
use meshd::node::{NodeConfig, VpnIp};
use node_sim::{NatKind, Sim};

const S: Duration = Duration::from_secs(1);

fn vpn(n: u8) -> VpnIp {
    VpnIp::from(Ipv4Addr::new(10, 0, 0, n))
}

fn underlay(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 4242))
}

fn kind(names: &[&str], name: &str) -> usize {
    names.iter().position(|k| *k == name).expect("known kind")
}

#[test]
fn tunnel_counters_agree_at_both_ends() {
    let mut sim = Sim::new(11, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    assert!(sim.ping_ok(0, 1, 1, 5 * S));
    for seq in 2..=20 {
        assert!(sim.ping_ok(0, 1, seq, 5 * S));
    }
    sim.run_for(S);
    let now = sim.now;
    let a = sim.nodes[0]
        .node
        .tunnel_status(now, vpn(2))
        .expect("a's tunnel");
    let b = sim.nodes[1]
        .node
        .tunnel_status(now, vpn(1))
        .expect("b's tunnel");
    assert!(a.tx_packets >= 20, "{a:?}");
    assert_eq!(
        a.tx_packets, b.rx_packets,
        "every packet a sealed, b opened"
    );
    assert_eq!(a.tx_bytes, b.rx_bytes);
    assert_eq!(b.tx_packets, a.rx_packets);
    assert_eq!(b.tx_bytes, a.rx_bytes);
    // Echo requests of at least an IP and an ICMP header each.
    assert!(a.tx_bytes >= 20 * 28, "{a:?}");
    assert_eq!(a.remote.as_deref(), Some("192.0.2.2:4242"));
    assert_eq!(a.relay, None);
    assert_eq!(a.name, "node2");
    assert!(a.last_rx_secs.is_some_and(|s| s <= 1.5), "{a:?}");
    let st = sim.nodes[0].node.status(now);
    assert_eq!(st.tunnels.len(), 1);
    assert_eq!(st.counters.handshakes_initiated, 1);
    assert!(
        st.counters.cached_packets_sent >= 1,
        "the first echo waited for the handshake"
    );
    assert_eq!(st.counters.cached_packets_dropped, 0);
    assert_eq!(st.counters.packets_lost, 0, "lossless network");
    let m = &st.counters.messages;
    assert_eq!(m.tx[kind(&MESSAGE_KINDS, "handshake_ixpsk0")], 1);
    assert_eq!(m.rx[kind(&MESSAGE_KINDS, "handshake_ixpsk0")], 1);
    assert_eq!(m.rx[kind(&MESSAGE_KINDS, "recv_error")], 0);
}

#[test]
fn close_create_and_change_remote() {
    let mut sim = Sim::new(12, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    assert!(sim.ping_ok(0, 1, 1, 5 * S));
    let now = sim.now;
    let old = sim.nodes[0].node.tunnel_status(now, vpn(2)).unwrap();
    assert!(sim.nodes[0].node.close_tunnel_cmd(now, vpn(2)));
    assert!(
        !sim.nodes[0].node.close_tunnel_cmd(now, vpn(2)),
        "already closed"
    );
    // Commands come from outside the node's inputs: the driver drains its outputs after them.
    sim.flush(0);
    sim.run_for(S);
    assert!(sim.host(1, 0).is_none(), "the peer got the closeTunnel");
    assert!(sim.nodes[0].node.create_tunnel(sim.now, vpn(2)).is_ok());
    assert!(
        sim.nodes[0].node.create_tunnel(sim.now, vpn(2)).is_err(),
        "a handshake is already under way"
    );
    assert_eq!(sim.nodes[0].node.status(sim.now).pending.len(), 1);
    sim.flush(0);
    sim.run_for(S);
    let new = sim.nodes[0]
        .node
        .tunnel_status(sim.now, vpn(2))
        .expect("re-created");
    assert_ne!(new.local_index, old.local_index);
    assert!(new.initiator);
    assert!(sim.nodes[0].node.create_tunnel(sim.now, vpn(2)).is_err());
    assert!(
        sim.nodes[0].node.create_tunnel(sim.now, vpn(1)).is_err(),
        "ourselves"
    );
    let outside = VpnIp::from(Ipv4Addr::new(192, 168, 1, 1));
    assert!(sim.nodes[0].node.create_tunnel(sim.now, outside).is_err());
    let elsewhere = underlay(9);
    sim.nodes[0].node.change_remote(vpn(2), elsewhere).unwrap();
    let moved = sim.nodes[0].node.tunnel_status(sim.now, vpn(2)).unwrap();
    assert_eq!(moved.remote.as_deref(), Some("192.0.2.9:4242"));
    assert!(sim.nodes[0].node.change_remote(vpn(3), elsewhere).is_err());
}

#[test]
fn relayed_tunnel_and_lighthouse_show_in_status() {
    let mut sim = Sim::new(13, Cipher::AesGcm);
    sim.full_mesh = false;
    sim.add_node_with(1, |c: &mut NodeConfig| {
        c.am_lighthouse = true;
        c.am_relay = true;
    });
    for n in [2, 3] {
        sim.add_node_nat(n, Some(NatKind::Symmetric), |c: &mut NodeConfig| {
            c.lighthouses = vec![vpn(1)];
            c.static_host_map = BTreeMap::from([(vpn(1), vec![underlay(1)])]);
            c.advertise_relays = vec![vpn(1)];
            c.punch = true;
            c.punch_respond = true;
        });
    }
    sim.run_for(S);
    assert!(sim.ping_ok(1, 2, 1, 15 * S), "no reply via the relay");
    sim.run_for(S);
    let now = sim.now;
    let st = sim.nodes[1].node.status(now);
    let t = st
        .tunnels
        .iter()
        .find(|t| t.vpn_ip == "10.0.0.3")
        .expect("relayed tunnel");
    assert_eq!(t.remote, None, "{t:?}");
    assert_eq!(t.relay.as_deref(), Some("10.0.0.1"));
    assert!(
        st.relays
            .iter()
            .any(|r| r.hop == "10.0.0.1" && r.peer == "10.0.0.3" && r.role == "terminal"),
        "{:?}",
        st.relays
    );
    assert_eq!(st.lighthouses.len(), 1);
    assert!(st.lighthouses[0].answered_recently, "{:?}", st.lighthouses);
    let m = &st.counters.messages;
    assert!(m.lighthouse_tx[kind(&LIGHTHOUSE_KINDS, "HostUpdateNotification")] >= 1);
    assert!(m.lighthouse_tx[kind(&LIGHTHOUSE_KINDS, "HostQuery")] >= 1);
    assert!(m.lighthouse_rx[kind(&LIGHTHOUSE_KINDS, "HostQueryReply")] >= 1);

    let relay = sim.nodes[0].node.status(now);
    let served: Vec<_> = relay
        .relays
        .iter()
        .filter(|r| r.role == "forwarding" && r.state == "established")
        .collect();
    assert_eq!(served.len(), 2, "one leg each way: {:?}", relay.relays);
    let lm = &relay.counters.messages;
    assert!(lm.lighthouse_rx[kind(&LIGHTHOUSE_KINDS, "HostQuery")] >= 1);
    assert!(lm.lighthouse_tx[kind(&LIGHTHOUSE_KINDS, "HostQueryReply")] >= 1);
    // The lighthouse's address map lists what it serves for each connected host.
    let map = sim.nodes[0].node.addrmap();
    assert!(
        map.iter()
            .any(|(ip, addrs, _)| ip == "10.0.0.2" && !addrs.is_empty()),
        "{map:?}"
    );
}
