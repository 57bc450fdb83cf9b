//! Hostile packets in the simulated network (virtual time, fixed seeds; the packet flow is
//! printed on failure), one attack per test: recv_errors from strangers and replays with forged
//! sources must neither close a working tunnel nor make us send to a third party; a relay
//! refuses to work for VPN IPs outside its network and starts only a bounded number of
//! handshakes per requester; an oversized HostUpdateNotification costs bounded work; reported
//! addresses that cannot be peers are dropped; punch and handshake targets obey
//! remote_allow_list.

mod node_sim;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use meshd::config::{AllowList, IpNet};
use meshd::crypto::Cipher;
use meshd::node::{DropReason, NodeConfig, ReloadInput, VpnIp, MAX_HANDSHAKES_PER_REQUESTER};
use meshd::wire::{Header, MessageType, MetaType, NebulaMeta, RemoteIndex, Subtype};
use node_sim::{kind, Sim, Tap};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn vpn(n: u8) -> VpnIp {
    VpnIp::from(Ipv4Addr::new(10, 0, 0, n))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn allow(rules: &[(&str, bool)]) -> AllowList {
    let net = |s: &str| {
        let (a, p) = s.split_once('/').unwrap();
        IpNet::new(a.parse().unwrap(), p.parse().unwrap()).unwrap()
    };
    AllowList {
        rules: rules.iter().map(|(n, b)| (net(n), *b)).collect(),
    }
}

/// Every datagram leaving any node: (time, from, to, bytes).
type Log = Rc<RefCell<Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>>>;

fn record(sim: &mut Sim) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sim.tap = Some(Box::new(move |d| {
        l.borrow_mut().push((d.at, d.from, d.to, d.bytes.clone()));
        Tap::Pass
    }));
    log
}

fn sent_to(log: &Log, to: SocketAddr) -> usize {
    log.borrow().iter().filter(|(_, _, t, _)| *t == to).count()
}

fn recv_error(idx: RemoteIndex) -> Vec<u8> {
    Header::new(MessageType::RecvError, Subtype::NONE, idx, 0)
        .encode()
        .to_vec()
}

/// A stranger somewhere on the public underlay.
const STRANGER: &str = "198.51.100.7:4242";

fn pair(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    sim
}

#[test]
fn stranger_recv_errors_neither_count_nor_close() {
    let mut sim = pair(101);
    assert!(sim.ping_ok(0, 1, 1, S));
    let log = record(&mut sim);
    let idx = sim.host(0, 1).unwrap().remote_index;
    let (a, b, stranger) = (sim.nodes[0].addr, sim.nodes[1].addr, sa(STRANGER));
    // Three forged strikes from elsewhere (1.6.1 counts them), then one recv_error that does
    // come from the peer's address: a stray one must not be the fourth strike.
    for _ in 0..3 {
        sim.inject(stranger, a, recv_error(idx));
    }
    sim.run_for(10 * MS);
    sim.inject(b, a, recv_error(idx));
    sim.run_for(S);
    let host = sim.host(0, 1).expect("the tunnel survives");
    assert_eq!(
        host.recv_errors, 1,
        "only the one from the peer's address counts"
    );
    assert_eq!(
        sim.nodes[0]
            .node
            .drops()
            .get(DropReason::RecvErrorWrongSource),
        3
    );
    assert_eq!(sent_to(&log, stranger), 0, "nothing went to the stranger");
    assert!(sim.ping_ok(0, 1, 2, S));
}

#[test]
fn replays_with_forged_sources_are_not_answered() {
    let mut sim = pair(102);
    let log = record(&mut sim);
    assert!(sim.ping_ok(0, 1, 1, S));
    let (a, b, stranger) = (sim.nodes[0].addr, sim.nodes[1].addr, sa(STRANGER));
    // A data packet B sent to A, captured off the wire.
    let captured = log
        .borrow()
        .iter()
        .find(|(_, f, t, bytes)| {
            *f == b && *t == a && kind(bytes).is_some_and(|(m, _)| m == MessageType::Message)
        })
        .map(|(_, _, _, bytes)| bytes.clone())
        .expect("B sent A a data packet");
    let before = sent_to(&log, b);
    // Replayed as if from a stranger: 1.6.1 answers the stranger with a recv_error.
    sim.inject(stranger, a, captured.clone());
    // Replayed with B's own address forged: 1.6.1 sends B four recv_errors from A's real
    // address, and B closes its working tunnel.
    for _ in 0..4 {
        sim.inject(b, a, captured.clone());
    }
    sim.run_for(S);
    assert_eq!(sim.nodes[0].node.drops().get(DropReason::Replay), 5);
    assert_eq!(sent_to(&log, stranger), 0, "nothing went to the stranger");
    assert_eq!(sent_to(&log, b), before, "A sent B nothing for the replays");
    assert!(sim.host(1, 0).is_some() && sim.host(0, 1).is_some());
    assert!(sim.ping_ok(1, 0, 2, S));
}

#[test]
fn authenticated_traffic_resets_the_recv_error_count() {
    let mut sim = pair(103);
    assert!(sim.ping_ok(0, 1, 1, S));
    let idx = sim.host(0, 1).unwrap().remote_index;
    let (a, b) = (sim.nodes[0].addr, sim.nodes[1].addr);
    for _ in 0..3 {
        sim.inject(b, a, recv_error(idx));
    }
    sim.run_for(10 * MS);
    assert_eq!(sim.host(0, 1).unwrap().recv_errors, 3);
    // The peer answers a ping on the tunnel: it has the session, the strikes were stale.
    assert!(sim.ping_ok(0, 1, 2, S));
    assert_eq!(sim.host(0, 1).unwrap().recv_errors, 0);
    sim.inject(b, a, recv_error(idx));
    sim.run_for(10 * MS);
    assert!(
        sim.host(0, 1).is_some(),
        "one strike after the reset is not the fourth"
    );
}

#[test]
fn restarted_peer_still_closes_the_tunnel_with_recv_errors() {
    // The legitimate case stays fast: a peer that lost the tunnel answers from its real
    // address, and the fourth answer closes it.
    let mut sim = pair(104);
    assert!(sim.ping_ok(0, 1, 1, S));
    sim.restart(1, 0);
    for seq in 2..=5 {
        sim.ping(0, 1, seq);
        sim.run_for(50 * MS);
    }
    assert!(
        sim.host(0, 1).is_none(),
        "four recv_errors from the peer close it"
    );
    assert!(sim.ping_ok(0, 1, 6, S));
}

/// Node 0 (10.0.0.1): lighthouse and relay. Nodes 1.. : public clients that name it as their
/// relay; the direct path between clients 1 and 2 is blocked, so they meet through node 0.
fn relay_network(seed: u64, clients: u8) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.full_mesh = false;
    sim.add_node_with(1, |c| {
        c.am_lighthouse = true;
        c.am_relay = true;
    });
    let lh = sim.nodes[0].addr;
    for n in 0..clients {
        sim.add_node_with(2 + n, |c| {
            c.lighthouses = vec![vpn(1)];
            c.static_host_map = BTreeMap::from([(vpn(1), vec![lh])]);
            c.advertise_relays = vec![vpn(1)];
        });
    }
    sim.run_for(S);
    sim
}

fn block_direct(sim: &mut Sim, i: usize, j: usize, log: &Log) {
    let (a, b) = (sim.nodes[i].addr, sim.nodes[j].addr);
    let l = log.clone();
    sim.tap = Some(Box::new(move |d| {
        l.borrow_mut().push((d.at, d.from, d.to, d.bytes.clone()));
        let direct = (d.from == a && d.to == b) || (d.from == b && d.to == a);
        if direct {
            Tap::Drop
        } else {
            Tap::Pass
        }
    }));
}

#[test]
fn relay_only_tunnel_ignores_direct_recv_errors() {
    let mut sim = relay_network(105, 2);
    let log: Log = Rc::default();
    block_direct(&mut sim, 1, 2, &log);
    assert!(sim.ping_ok(1, 2, 1, 15 * S));
    let host = sim.host(1, 2).unwrap();
    assert!(
        host.remote.is_none() && host.relay == Some(vpn(1)),
        "relay-only"
    );
    let idx = host.remote_index;
    let (a, b, stranger) = (sim.nodes[1].addr, sim.nodes[2].addr, sa(STRANGER));
    // A tunnel without a direct address takes recv_error only through its relay; 1.6.1
    // closes it on four from anywhere, here from a stranger and from B's own address.
    for _ in 0..4 {
        sim.inject(stranger, a, recv_error(idx));
        sim.inject(b, a, recv_error(idx));
    }
    sim.run_for(S);
    let host = sim.host(1, 2).expect("the relayed tunnel survives");
    assert_eq!(host.recv_errors, 0);
    assert_eq!(
        sim.nodes[1]
            .node
            .drops()
            .get(DropReason::RecvErrorWrongSource),
        8
    );
    assert_eq!(sent_to(&log, stranger), 0, "nothing went to the stranger");
    assert!(sim.ping_ok(1, 2, 2, 5 * S));
}

/// Makes client `i` want `target` and name node 0 as its relay, so its handshake attempts ask
/// node 0 to relay there.
fn ask_relay_for(sim: &mut Sim, i: usize, target: VpnIp) {
    let now = sim.now;
    let node = &mut sim.nodes[i].node;
    node.set_learned_remotes(now, vpn(1), target, &[], &[vpn(1)]);
    node.connect(now, target);
    sim.flush(i);
}

fn handshakes_from(log: &Log, from: SocketAddr) -> usize {
    log.borrow()
        .iter()
        .filter(|(_, f, _, b)| {
            *f == from && kind(b).is_some_and(|(t, _)| t == MessageType::Handshake)
        })
        .count()
}

#[test]
fn relay_refuses_targets_outside_its_network() {
    let mut sim = relay_network(106, 1);
    assert!(sim.host(1, 0).is_some(), "client registered with the relay");
    let log = record(&mut sim);
    let outside = VpnIp::from(Ipv4Addr::new(10, 9, 9, 9));
    let broadcast = vpn(255);
    ask_relay_for(&mut sim, 1, outside);
    ask_relay_for(&mut sim, 1, broadcast);
    sim.run_for(2 * S);
    let relay = &sim.nodes[0].node;
    assert_eq!(relay.hostmap().pending_count(), 0, "no handshake started");
    assert!(
        relay.drops().get(DropReason::RelayOutsideNetwork) >= 2,
        "{:?}",
        relay.drops().nonzero()
    );
    assert_eq!(relay.relays().len(), 0, "no relay legs");
    assert_eq!(handshakes_from(&log, sim.nodes[0].addr), 0);
}

#[test]
fn relay_bounds_the_handshakes_it_starts_per_requester() {
    let mut sim = relay_network(107, 2);
    let hungry = 40u8;
    for k in 0..hungry {
        ask_relay_for(&mut sim, 1, vpn(100 + k));
    }
    // The relay has no way to reach these hosts, so each handshake it starts stays pending
    // for its whole retry schedule (~5.5 s); sample throughout.
    let mut most = 0;
    for _ in 0..40 {
        sim.run_for(100 * MS);
        most = most.max(sim.nodes[0].node.hostmap().pending_count());
    }
    let relay = &sim.nodes[0].node;
    assert_eq!(
        most, MAX_HANDSHAKES_PER_REQUESTER,
        "at most {MAX_HANDSHAKES_PER_REQUESTER} handshakes for one requester at a time"
    );
    assert!(relay.drops().get(DropReason::RelayRequesterBusy) >= u64::from(hungry) - 8);
    assert_eq!(
        relay.relays().handshakes_for(vpn(2)),
        MAX_HANDSHAKES_PER_REQUESTER
    );
    // The bound is per requester: another host is still served at once.
    ask_relay_for(&mut sim, 2, vpn(200));
    sim.run_for(S);
    assert!(sim.nodes[0].node.hostmap().pending(vpn(200)).is_some());
    assert_eq!(sim.nodes[0].node.relays().handshakes_for(vpn(3)), 1);
}

/// Node 0 = lighthouse 10.0.0.1; nodes 1.. = clients 10.0.0.2.. with `tweak`, all public and
/// knowing each other statically.
fn lighthouse_network(seed: u64, clients: u8, tweak: impl Fn(&mut NodeConfig)) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.full_mesh = false;
    let map: BTreeMap<VpnIp, Vec<SocketAddr>> = (1..=clients + 1)
        .map(|n| (vpn(n), vec![SocketAddr::from(([192, 0, 2, n], 4242))]))
        .collect();
    let m = map.clone();
    sim.add_node_with(1, move |c| {
        c.am_lighthouse = true;
        c.static_host_map = m;
    });
    for k in 0..clients {
        let m = map.clone();
        sim.add_node_with(2 + k, |c| {
            c.lighthouses = vec![vpn(1)];
            c.static_host_map = m;
            tweak(c);
        });
    }
    sim.run_for(S);
    sim
}

fn meta(t: MetaType, vpn_ip: VpnIp, addrs: &[SocketAddr]) -> NebulaMeta {
    NebulaMeta {
        r#type: t as i32,
        details: Some(meshd::node::lighthouse_details(vpn_ip, addrs, &[])),
    }
}

fn send(sim: &mut Sim, i: usize, to: VpnIp, m: &NebulaMeta, dur: Duration) {
    let now = sim.now;
    sim.nodes[i].node.send_lighthouse_message(now, to, m);
    sim.flush(i);
    sim.run_for(dur);
}

#[test]
fn oversized_host_update_costs_bounded_work() {
    let mut sim = lighthouse_network(108, 1, |_| {});
    // ~2000 IPv4 and ~1000 IPv6 entries, half of them one repeated address: one packet that
    // would cost 1.6.1-style dedup-then-cap millions of comparisons.
    let mut addrs: Vec<SocketAddr> = (0..1000u32)
        .map(|i| SocketAddr::from((Ipv4Addr::from(0xc633_6400 + i), 4242)))
        .collect();
    addrs.extend(std::iter::repeat_n(sa("198.51.100.1:4242"), 1000));
    addrs.extend((0..1000u16).map(|i| sa(&format!("[2001:db8::{i:x}]:4242"))));
    let update = meta(MetaType::HostUpdateNotification, vpn(2), &addrs);
    let before = sim.nodes[0].node.lighthouse_addrs_examined();
    send(&mut sim, 1, vpn(1), &update, 100 * MS);
    let lh = &sim.nodes[0].node;
    let examined = lh.lighthouse_addrs_examined() - before;
    assert!(examined > 0, "the update was processed");
    assert!(
        examined <= 2 * meshd::node::MAX_EXAMINED_PER_FAMILY as u64,
        "{examined} entries examined for one packet"
    );
    let (stored, _) = lh.lighthouse_entry(vpn(2)).expect("registered");
    assert_eq!(
        stored.iter().filter(|a| a.is_ipv4()).count(),
        10,
        "{stored:?}"
    );
    assert_eq!(
        stored.iter().filter(|a| a.is_ipv6()).count(),
        10,
        "{stored:?}"
    );
    assert_eq!(stored[0], sim.nodes[1].addr, "learned address first");
    assert_eq!(
        stored[1], addrs[0],
        "then the first reported ones, in order"
    );
}

/// Addresses no peer can have, plus one good address of each family.
fn junk_and_good() -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let junk = [
        "0.0.0.0:4242",
        "127.0.0.1:4242",
        "127.3.2.1:53",
        "224.0.0.251:5353",
        "239.1.2.3:4242",
        "255.255.255.255:4242",
        "198.51.100.3:0",
        "[::]:4242",
        "[::1]:4242",
        "[ff02::1]:4242",
        "[::ffff:127.0.0.1]:4242",
    ]
    .map(sa);
    let good = vec![sa("198.51.100.9:4242"), sa("[2001:db8::9]:4242")];
    let mut all = junk.to_vec();
    all.extend(&good);
    (all, good)
}

fn punched(log: &Log, from: SocketAddr) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = log
        .borrow()
        .iter()
        .filter(|(_, f, _, b)| *f == from && b.as_slice() == [0])
        .map(|(_, _, t, _)| *t)
        .collect();
    v.sort();
    v
}

#[test]
fn unusable_reported_addresses_are_dropped() {
    let mut sim = lighthouse_network(109, 1, |_| {});
    let (all, good) = junk_and_good();
    // At the lighthouse, from a host's update.
    let update = meta(MetaType::HostUpdateNotification, vpn(2), &all);
    send(&mut sim, 1, vpn(1), &update, 100 * MS);
    let (stored, _) = sim.nodes[0].node.lighthouse_entry(vpn(2)).unwrap();
    assert_eq!(stored, vec![sim.nodes[1].addr, good[0], good[1]]);
    // At a client, from a lighthouse's answer ...
    let reply = meta(MetaType::HostQueryReply, vpn(20), &all);
    send(&mut sim, 0, vpn(2), &reply, 100 * MS);
    let learned = sim.nodes[1].node.remotes(vpn(20)).unwrap().addrs();
    let mut want = good.clone();
    want.sort();
    let mut got = learned.clone();
    got.sort();
    assert_eq!(got, want, "{learned:?}");
    // ... and from its punch notification.
    let log = record(&mut sim);
    let punch = meta(MetaType::HostPunchNotification, vpn(21), &all);
    send(&mut sim, 0, vpn(2), &punch, 2 * S);
    assert_eq!(punched(&log, sim.nodes[1].addr), want);
}

#[test]
fn punch_and_handshake_targets_obey_remote_allow_list() {
    let deny = allow(&[("198.51.100.0/24", false), ("0.0.0.0/0", true)]);
    let mut sim = lighthouse_network(110, 1, |c| {
        c.remote_allow_list = Some(deny.clone());
        c.static_host_map.insert(
            vpn(30),
            vec![sa("198.51.100.30:4242"), sa("203.0.113.30:4242")],
        );
    });
    let log = record(&mut sim);
    let me = sim.nodes[1].addr;
    // A punch notification naming a refused and an allowed address.
    let punch = meta(
        MetaType::HostPunchNotification,
        vpn(20),
        &[sa("198.51.100.5:4242"), sa("203.0.113.5:4242")],
    );
    send(&mut sim, 0, vpn(2), &punch, 2 * S);
    assert_eq!(punched(&log, me), vec![sa("203.0.113.5:4242")]);
    // A static_host_map entry with a refused address: only the other one is tried.
    let now = sim.now;
    sim.nodes[1].node.connect(now, vpn(30));
    sim.flush(1);
    sim.run_for(2 * S);
    let handshake_targets = |log: &Log| {
        let mut v: Vec<SocketAddr> = log
            .borrow()
            .iter()
            .filter(|(_, f, _, b)| {
                *f == me && kind(b).is_some_and(|(t, _)| t == MessageType::Handshake)
            })
            .map(|(_, _, t, _)| *t)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(handshake_targets(&log), vec![sa("203.0.113.30:4242")]);
    assert_eq!(sent_to(&log, sa("198.51.100.30:4242")), 0);
    // A reload that refuses 203.0.113.0/24 too: neither static nor learned addresses there
    // are targets any more.
    let reply = meta(
        MetaType::HostQueryReply,
        vpn(31),
        &[sa("203.0.113.31:4242"), sa("192.0.2.131:4242")],
    );
    send(&mut sim, 0, vpn(2), &reply, 100 * MS);
    let stricter = allow(&[
        ("198.51.100.0/24", false),
        ("203.0.113.0/24", false),
        ("0.0.0.0/0", true),
    ]);
    let mut config = sim.nodes[1].node.config().clone();
    config.remote_allow_list = Some(stricter);
    let input = ReloadInput {
        config,
        identity: sim.nodes[1].node.identity().clone(),
        verifier: Box::new(meshd::node::CaPoolVerifier { pool: sim.pool() }),
        accepts: Box::new(|_| true),
    };
    let now = sim.now;
    let r = sim.nodes[1].node.apply_config(now, input);
    assert!(r.changed.contains(&"lighthouse.remote_allow_list"), "{r:?}");
    assert!(sim.nodes[1]
        .node
        .remotes(vpn(30))
        .unwrap()
        .addrs()
        .is_empty());
    assert_eq!(
        sim.nodes[1].node.remotes(vpn(31)).unwrap().addrs(),
        vec![sa("192.0.2.131:4242")]
    );
    let quiet = Rc::new(Cell::new(0usize));
    let q = quiet.clone();
    sim.tap = Some(Box::new(move |d| {
        if d.to.ip().to_string().starts_with("203.0.113.") {
            q.set(q.get() + 1);
        }
        Tap::Pass
    }));
    let now = sim.now;
    sim.nodes[1].node.connect(now, vpn(31));
    sim.flush(1);
    sim.run_for(6 * S);
    assert_eq!(
        quiet.get(),
        0,
        "nothing sent to a refused address after the reload"
    );
}
