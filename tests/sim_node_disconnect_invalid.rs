//! `pki.disconnect_invalid` in the simulated network: when a peer's certificate expires while
//! its tunnel is up, the connection manager's next check closes the tunnel and tells the peer
//! (closeTunnel) if the option is on, and leaves the tunnel alone if it is off.

mod node_sim;

use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::{CloseReason, Event, VpnIp};
use node_sim::Sim;

const S: Duration = Duration::from_secs(1);
/// Node certificates in the sim expire 30 days after its epoch.
const CERT_LIFE_S: i64 = 30 * 86400;

/// Two nodes; node 0 (checking with `disconnect_invalid`) runs with its wall clock 30 s short of
/// node 1's certificate expiry, so the handshake succeeds and the certificate expires soon after.
fn near_expiry(seed: u64, disconnect_invalid: bool) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.add_node_with(1, |c| c.disconnect_invalid = disconnect_invalid);
    sim.add_node(2);
    sim.restart(0, CERT_LIFE_S - 30);
    assert!(sim.ping_ok(0, 1, 1, S), "tunnel comes up before expiry");
    sim
}

fn closed(sim: &Sim, i: usize, peer: usize, reason: CloseReason) -> bool {
    let ip = VpnIp::from(sim.nodes[peer].vpn_ip);
    sim.nodes[i]
        .events
        .contains(&Event::TunnelClosed { vpn_ip: ip, reason })
}

#[test]
fn expired_peer_is_disconnected_at_next_check() {
    let mut sim = near_expiry(71, true);
    // Keep traffic flowing (which arms the connection manager) until past the expiry.
    for seq in 2..=8 {
        sim.run_for(5 * S);
        if sim.host(0, 1).is_none() {
            break;
        }
        sim.ping(0, 1, seq);
    }
    sim.run_for(10 * S);
    assert!(sim.host(0, 1).is_none(), "checker closed the tunnel");
    assert!(closed(&sim, 0, 1, CloseReason::Local));
    assert!(sim.host(1, 0).is_none(), "peer got closeTunnel");
    assert!(closed(&sim, 1, 0, CloseReason::PeerClosed));
}

#[test]
fn still_valid_peer_is_kept() {
    let mut sim = near_expiry(72, true);
    let idx = sim.host(0, 1).unwrap().local_index;
    sim.run_for(10 * S);
    assert!(sim.ping_ok(0, 1, 2, S));
    sim.run_for(6 * S);
    assert_eq!(sim.host(0, 1).unwrap().local_index, idx, "same tunnel");
}

#[test]
fn expired_peer_is_kept_without_the_option() {
    let mut sim = near_expiry(73, false);
    let idx = sim.host(0, 1).unwrap().local_index;
    for seq in 2..=8 {
        sim.run_for(5 * S);
        assert!(sim.ping_ok(0, 1, seq, S), "ping {seq}");
    }
    sim.run_for(10 * S);
    assert_eq!(sim.host(0, 1).unwrap().local_index, idx, "same tunnel");
    assert!(sim.host(1, 0).is_some());
    assert!(!closed(&sim, 1, 0, CloseReason::PeerClosed));
}

#[test]
fn reload_reports_disconnect_invalid_as_restart_only() {
    let mut sim = near_expiry(74, false);
    let mut config = sim.nodes[0].node.config().clone();
    config.disconnect_invalid = true;
    let inp = meshd::node::ReloadInput {
        config,
        identity: sim.nodes[0].node.identity().clone(),
        verifier: Box::new(meshd::node::CaPoolVerifier { pool: sim.pool() }),
        accepts: Box::new(|_| true),
    };
    let now = sim.now;
    let r = sim.nodes[0].node.apply_config(now, inp);
    assert!(r.needs_restart.contains(&"pki.disconnect_invalid"), "{r:?}");
    assert!(
        !sim.nodes[0].node.config().disconnect_invalid,
        "old value kept"
    );
}
