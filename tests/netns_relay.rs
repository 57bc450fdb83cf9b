//! Issue 8 end to end: hosts behind symmetric NATs (no hole punching possible) reach each other
//! through a relay, with meshd and nebula 1.6.1 mixed in the relay and host roles. Proves the
//! traffic really crosses the relay (its interface counter grows by the transfer), the content
//! arrives intact, and a host with `use_relays: false` stays unreachable.

mod common;
mod netns_mesh_util;

use common::netns::NatKind;
use netns_mesh_util::{node_config, payload, rx_bytes, sha256, transfer, Impl, World};

const LH_VPN: &str = "10.42.0.1";
const LH_PUBLIC: &str = "198.51.100.1";
const RELAY_VPN: &str = "10.42.0.5";
const A_VPN: &str = "10.42.0.21";
const B_VPN: &str = "10.42.0.22";
const BULK: usize = 2 << 20;

fn use_relay(use_relays: bool) -> impl FnOnce(String) -> String {
    move |mut y| {
        y.push_str(&format!(
            "relay:\n  relays: [\"{RELAY_VPN}\"]\n  use_relays: {use_relays}\n"
        ));
        y
    }
}

/// A meshd lighthouse, relay R on the public switch, and A, B behind symmetric NATs.
/// Returns the world, the relay's (host index, interface) and the node indices of A and B.
fn relay_world(
    relay: Impl,
    a: Impl,
    b: Impl,
    a_uses_relays: bool,
) -> (World, usize, String, usize, usize) {
    let mut w = World::new();
    let (lh_ns, _) = w.public(1);
    let (r_ns, r_if) = w.public(3);
    let (a_ns, _) = w.behind_nat(NatKind::Symmetric);
    let (b_ns, _) = w.behind_nat(NatKind::Symmetric);
    let mut cfg = node_config(&[]);
    cfg.am_lighthouse = true;
    w.start(Impl::Meshd, lh_ns, "lighthouse", LH_VPN, cfg, |y| y);
    let lhs = [(LH_VPN, LH_PUBLIC)];
    w.start(
        relay,
        r_ns,
        "relay",
        RELAY_VPN,
        node_config(&lhs),
        |mut y| {
            y.push_str("relay:\n  am_relay: true\n");
            y
        },
    );
    let ai = w.start(
        a,
        a_ns,
        "a",
        A_VPN,
        node_config(&lhs),
        use_relay(a_uses_relays),
    );
    let mut b_cfg = node_config(&lhs);
    // punchy.respond makes B handshake back when A asks for it (1.6.1), which would connect
    // them through the relay on B's initiative; the use_relays test must see A's attempt alone.
    b_cfg.punchy = a_uses_relays;
    let bi = w.start(b, b_ns, "b", B_VPN, b_cfg, use_relay(true));
    (w, r_ns, r_if, ai, bi)
}

fn through_relay(relay: Impl, a: Impl, b: Impl) {
    let (w, r_ns, r_if, ai, bi) = relay_world(relay, a, b, true);
    assert!(
        w.ping_eventually(ai, bi, 30),
        "A -> B through the relay\n{}",
        w.logs()
    );
    assert!(w.ping_eventually(bi, ai, 5), "B -> A\n{}", w.logs());
    for (from, to, to_ip, seed) in [(ai, bi, B_VPN, 1), (bi, ai, A_VPN, 2)] {
        let data = payload(seed, BULK);
        let before = rx_bytes(w.host(r_ns), &r_if);
        let got = transfer(w.ns_of(from), w.ns_of(to), to_ip, 5432, &data)
            .unwrap_or_else(|e| panic!("transfer to {to_ip}: {e}\n{}", w.logs()));
        let via_relay = rx_bytes(w.host(r_ns), &r_if) - before;
        assert_eq!(got, sha256(&data), "content changed through the relay");
        assert!(
            via_relay >= BULK as u64,
            "only {via_relay} bytes crossed the relay during a {BULK}-byte transfer"
        );
    }
}

fn ready(test: &str) -> bool {
    netns_mesh_util::ready(test)
}

#[test]
fn meshd_hosts_through_meshd_relay() {
    if ready("meshd_hosts_through_meshd_relay") {
        through_relay(Impl::Meshd, Impl::Meshd, Impl::Meshd);
    }
}

#[test]
fn meshd_hosts_through_nebula_relay() {
    if ready("meshd_hosts_through_nebula_relay") {
        through_relay(Impl::Nebula, Impl::Meshd, Impl::Meshd);
    }
}

#[test]
fn nebula_hosts_through_meshd_relay() {
    if ready("nebula_hosts_through_meshd_relay") {
        through_relay(Impl::Meshd, Impl::Nebula, Impl::Nebula);
    }
}

#[test]
fn meshd_and_nebula_host_through_meshd_relay() {
    if ready("meshd_and_nebula_host_through_meshd_relay") {
        through_relay(Impl::Meshd, Impl::Meshd, Impl::Nebula);
    }
}

/// A has `use_relays: false`: with symmetric NATs on both sides it cannot reach B at all. As in
/// 1.6.1 the flag only governs A's own attempts: B (relays allowed, A advertising R) still
/// reaches A through the relay, which also shows the relay path itself was there.
#[test]
fn host_without_use_relays_stays_unreachable() {
    if !ready("host_without_use_relays_stays_unreachable") {
        return;
    }
    let (w, _, _, ai, bi) = relay_world(Impl::Meshd, Impl::Meshd, Impl::Meshd, false);
    let relay = 1;
    assert!(w.ping_eventually(ai, relay, 10), "A -> relay\n{}", w.logs());
    assert!(
        !w.ping_eventually(ai, bi, 10),
        "A (use_relays: false) reached B behind a symmetric NAT\n{}",
        w.logs()
    );
    assert!(
        w.ping_eventually(bi, ai, 30),
        "B (use_relays: true) could not reach A through the relay\n{}",
        w.logs()
    );
}
