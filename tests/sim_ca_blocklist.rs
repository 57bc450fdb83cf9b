//! A CA fingerprint in `pki.blocklist` revokes every certificate that CA signed (Nebula 1.6.1
//! only matches leaf fingerprints; slackhq/nebula#1824): at handshake, in both roles, and at
//! reload, where established tunnels under that CA are closed.

mod node_sim;

use std::time::Duration;

use meshd::cert::CaPool;
use meshd::crypto::Cipher;
use meshd::daemon::reload::accepts;
use meshd::node::{CaPoolVerifier, DropReason, ReloadInput, VpnIp};
use node_sim::Sim;

const S: Duration = Duration::from_secs(1);

fn mesh(seed: u64) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    for n in 1..=3 {
        sim.add_node(n);
    }
    sim
}

/// The sim's CA pool with the CA itself (not any leaf) blocklisted.
fn pool_blocking_the_ca(sim: &Sim) -> CaPool {
    let mut pool = sim.pool();
    let ca = pool.cas().next().expect("sim CA").fingerprint();
    pool.blocklist_fingerprint(ca);
    pool
}

#[test]
fn handshakes_under_a_blocklisted_ca_are_refused_in_both_roles() {
    let mut sim = mesh(71);
    assert!(sim.ping_ok(0, 1, 1, S), "tunnel works before the blocklist");
    let pool = pool_blocking_the_ca(&sim);
    sim.restart_with_pool(0, 0, pool);
    // Node 0 initiates: it refuses node 1's stage 2.
    assert!(!sim.ping_ok(0, 1, 2, 3 * S));
    // Node 2 initiates: node 0 refuses its stage 1.
    assert!(!sim.ping_ok(2, 0, 3, 3 * S));
    let drops = sim.nodes[0].node.drops().get(DropReason::HandshakeCert);
    assert!(drops >= 2, "node 0 refused {drops} handshake certificates");
    assert_eq!(sim.nodes[0].node.hostmap().host_count(), 0);
    // Peers that do not blocklist the CA still talk to each other.
    assert!(sim.ping_ok(1, 2, 4, S));
}

#[test]
fn reload_blocklisting_a_ca_closes_its_tunnels_and_keeps_them_closed() {
    let mut sim = mesh(72);
    assert!(sim.ping_ok(0, 1, 1, S));
    assert!(sim.ping_ok(0, 2, 2, S));
    let pool = pool_blocking_the_ca(&sim);
    let unix_now = (sim.wall_ns() / 1_000_000_000) as i64;
    let node = &sim.nodes[0].node;
    let input = ReloadInput {
        config: node.config().clone(),
        identity: node.identity().clone(),
        verifier: Box::new(CaPoolVerifier { pool: pool.clone() }),
        // What the daemon's SIGHUP path hands the node.
        accepts: accepts(&pool, unix_now),
    };
    let now = sim.now;
    let r = sim.nodes[0].node.apply_config(now, input);
    sim.flush(0);
    let mut gone = r.disconnected.clone();
    gone.sort();
    let expected: Vec<VpnIp> = [1, 2]
        .iter()
        .map(|&i| VpnIp::from(sim.nodes[i].vpn_ip))
        .collect();
    assert_eq!(gone, expected, "{r:?}");
    sim.run_for(S);
    assert!(sim.host(1, 0).is_none(), "peer was told (closeTunnel)");
    // Neither side can bring the tunnel back.
    assert!(!sim.ping_ok(1, 0, 3, 3 * S));
    assert!(!sim.ping_ok(0, 2, 4, 3 * S));
    assert_eq!(sim.nodes[0].node.hostmap().host_count(), 0);
}
