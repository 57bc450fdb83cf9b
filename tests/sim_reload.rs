//! `Node::apply_config` (SIGHUP reload) in the simulated network: an unchanged reload keeps
//! tunnels up; restart-only keys are reported and left alone; a new own certificate makes the
//! peer re-handshake and see it; a peer the new pki no longer accepts is disconnected (and told);
//! static_host_map, lighthouse and punchy changes take effect.

mod node_sim;

use std::net::SocketAddr;
use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::{identity_from_cert, CaPoolVerifier, NodeConfig, ReloadInput, VpnIp};
use node_sim::Sim;

const S: Duration = Duration::from_secs(1);

fn pair(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    sim
}

/// What node `i` would get from re-reading an unchanged config, with `tweak` applied.
fn input(sim: &Sim, i: usize, tweak: impl FnOnce(&mut NodeConfig)) -> ReloadInput {
    let mut config = sim.nodes[i].node.config().clone();
    tweak(&mut config);
    ReloadInput {
        config,
        identity: sim.nodes[i].node.identity().clone(),
        verifier: Box::new(CaPoolVerifier { pool: sim.pool() }),
        accepts: Box::new(|_| true),
    }
}

#[test]
fn unchanged_reload_keeps_tunnels() {
    let mut sim = pair(41);
    assert!(sim.ping_ok(0, 1, 1, S));
    let idx = sim.host(0, 1).unwrap().local_index;
    let now = sim.now;
    let inp = input(&sim, 0, |_| {});
    let r = sim.nodes[0].node.apply_config(now, inp);
    sim.flush(0);
    assert!(r.changed.is_empty(), "{r:?}");
    assert!(
        r.needs_restart.is_empty() && r.disconnected.is_empty(),
        "{r:?}"
    );
    sim.run_for(S);
    assert_eq!(sim.host(0, 1).unwrap().local_index, idx, "same tunnel");
    assert!(sim.ping_ok(0, 1, 2, S));
    assert_eq!(sim.host(0, 1).unwrap().local_index, idx);
}

#[test]
fn restart_only_keys_are_reported_and_kept() {
    let mut sim = pair(42);
    assert!(sim.ping_ok(0, 1, 1, S));
    let now = sim.now;
    let inp = input(&sim, 0, |c| {
        c.cipher = Cipher::ChaChaPoly;
        c.listen_port = 5000;
        c.tun_disabled = true;
        c.am_lighthouse = true;
        c.handshake_retries = 3;
    });
    let r = sim.nodes[0].node.apply_config(now, inp);
    sim.flush(0);
    for k in [
        "cipher",
        "listen.port",
        "tun.disabled",
        "lighthouse.am_lighthouse",
    ] {
        assert!(r.needs_restart.contains(&k), "{k} missing: {r:?}");
    }
    assert_eq!(r.changed, vec!["handshakes"]);
    let c = sim.nodes[0].node.config();
    assert_eq!(c.cipher, Cipher::AesGcm);
    assert_eq!(
        (c.listen_port, c.tun_disabled, c.am_lighthouse),
        (4242, false, false)
    );
    assert_eq!(c.handshake_retries, 3);
    assert!(sim.ping_ok(0, 1, 2, S), "tunnel unaffected");
}

#[test]
fn new_own_certificate_rehandshakes_and_peer_sees_it() {
    let mut sim = pair(43);
    assert!(sim.ping_ok(0, 1, 1, S));
    assert!(sim.host(1, 0).unwrap().peer.groups.is_empty());
    let cert = sim.resign(0, &["ops"]);
    let mut inp = input(&sim, 0, |_| {});
    inp.identity = identity_from_cert(&cert, &sim.nodes[0].key()).unwrap();
    let now = sim.now;
    let r = sim.nodes[0].node.apply_config(now, inp);
    sim.flush(0);
    assert_eq!(r.changed, vec!["pki.cert"], "{r:?}");
    assert!(sim.host(0, 1).is_none(), "tunnel closed to re-handshake");
    sim.run_for(S);
    assert!(sim.host(1, 0).is_none(), "peer got closeTunnel");
    assert!(sim.ping_ok(0, 1, 2, S));
    assert_eq!(sim.host(1, 0).unwrap().peer.groups, vec!["ops".to_string()]);
    assert!(sim.tunnel_consistent(0, 1));
}

#[test]
fn certificate_for_another_vpn_ip_needs_a_restart() {
    let mut sim = pair(44);
    sim.add_node(3);
    assert!(sim.ping_ok(0, 1, 1, S));
    // Node 2's identity (VPN IP 10.0.0.3) offered to node 0.
    let mut inp = input(&sim, 0, |_| {});
    inp.identity = sim.nodes[2].node.identity().clone();
    let now = sim.now;
    let r = sim.nodes[0].node.apply_config(now, inp);
    sim.flush(0);
    assert_eq!(r.needs_restart, vec!["pki.cert (vpn ip)"]);
    assert_eq!(
        sim.nodes[0].node.identity().vpn_ip,
        VpnIp::from(sim.nodes[0].vpn_ip)
    );
    assert!(sim.ping_ok(0, 1, 2, S));
}

#[test]
fn peers_no_longer_accepted_are_disconnected() {
    let mut sim = pair(45);
    sim.add_node(3);
    assert!(sim.ping_ok(0, 1, 1, S));
    assert!(sim.ping_ok(0, 2, 2, S));
    let banned = sim.host(0, 1).unwrap().peer.fingerprint.clone();
    let mut inp = input(&sim, 0, |_| {});
    inp.accepts = Box::new(move |p| p.fingerprint != banned);
    let now = sim.now;
    let r = sim.nodes[0].node.apply_config(now, inp);
    sim.flush(0);
    assert_eq!(r.disconnected, vec![VpnIp::from(sim.nodes[1].vpn_ip)]);
    sim.run_for(S);
    assert!(sim.host(0, 1).is_none() && sim.host(1, 0).is_none());
    assert!(sim.host(0, 2).is_some(), "other tunnels stay up");
    assert!(sim.ping_ok(0, 2, 3, S));
}

#[test]
fn static_hosts_lighthouses_and_punchy_are_applied() {
    let mut sim = pair(46);
    let peer = VpnIp::from(sim.nodes[1].vpn_ip);
    let extra: SocketAddr = "198.51.100.9:4242".parse().unwrap();
    let lh = VpnIp::from(std::net::Ipv4Addr::new(10, 0, 0, 9));
    let now = sim.now;
    let inp = input(&sim, 0, |c| {
        c.static_host_map.get_mut(&peer).unwrap().push(extra);
        c.static_host_map
            .insert(lh, vec!["198.51.100.10:4242".parse().unwrap()]);
        c.lighthouses = vec![lh];
        c.lighthouse_interval = Duration::from_secs(30);
        c.punch = true;
    });
    let r = sim.nodes[0].node.apply_config(now, inp);
    sim.flush(0);
    for k in ["static_host_map", "lighthouse", "punchy"] {
        assert!(r.changed.contains(&k), "{k}: {r:?}");
    }
    let n = &sim.nodes[0].node;
    assert!(n.remotes(peer).unwrap().addrs().contains(&extra));
    assert!(n.remotes(lh).is_some());
    assert_eq!(n.config().lighthouses, vec![lh]);
    // A client with a lighthouse reports to it at once: a handshake towards it starts.
    assert!(n.hostmap().pending(lh).is_none());
    sim.run_for(S);
    assert!(
        sim.nodes[0].node.hostmap().pending(lh).is_some(),
        "lighthouse handshake attempted"
    );
}
