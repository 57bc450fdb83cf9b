//! A host that really restarts (SIGKILL, so no closeTunnel; a new process with new ephemeral
//! keys) gets its tunnel back within 5 s, with meshd and nebula 1.6.1 in either role: the
//! restarted host X is meshd with a nebula peer, and nebula with a meshd peer. The peer still
//! holds the old tunnel, so this is the path where a new stage 1 meets a live tunnel (for meshd:
//! a candidate session, switched to on the first authenticated packet).
//!
//! Two namespaces on a veth; all traffic stays inside them; namespaces and processes are
//! removed by Drop guards, also on failure.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NsProcess};

const VPN_X: &str = "10.42.0.1";
const VPN_Y: &str = "10.42.0.2";
const BACK_WITHIN: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Meshd,
    Nebula,
}

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
}

/// Starts a node and waits (bounded) until its tun device exists.
fn start(which: Impl, ns: &Netns, config: &Path, dev: &str, log: &Path) -> NsProcess {
    let bin = match which {
        Impl::Meshd => common::meshd_bin().to_string_lossy().into_owned(),
        Impl::Nebula => "nebula".to_string(),
    };
    let mut p = ns.spawn(&[&bin, "-config", config.to_str().expect("utf-8")], log);
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        ns.has_link(dev)
    });
    assert!(
        up && p.is_running(),
        "{which:?} did not bring up {dev}:\n{}",
        p.log()
    );
    p
}

/// Config for one side: its device, the other side in the static host map, no punching.
fn config(
    dir: &Path,
    file: &str,
    dev: &str,
    peer: (&str, &str),
    pki: &common::netns::NodePki,
) -> PathBuf {
    let mut c = NodeConfig::new(dev);
    c.punchy = false;
    c.static_host_map
        .push((peer.0.into(), vec![format!("{}:4242", peer.1)]));
    c.write(dir, file, pki)
}

/// X (`x`) and Y (`y`) build a tunnel, X is killed and started again, and the tunnel must
/// carry pings both ways within [`BACK_WITHIN`] of X being up. Returns how long it took.
fn restart_scenario(x: Impl, y: Impl) -> Duration {
    let dir = common::tempdir();
    let ns_x = Netns::new("rsx");
    let ns_y = Netns::new("rsy");
    veth(&ns_x, Some("192.0.2.1/24"), &ns_y, Some("192.0.2.2/24"));
    let ca = NebulaCa::new(dir.path(), "restart test ca");
    let (dev_x, dev_y) = (common::unique_name("rs"), common::unique_name("rs"));
    let pki_x = ca.sign("x", "10.42.0.1/24", &[]);
    let pki_y = ca.sign("y", "10.42.0.2/24", &[]);
    let cfg_x = config(dir.path(), "x.yml", &dev_x, (VPN_Y, "192.0.2.2"), &pki_x);
    let cfg_y = config(dir.path(), "y.yml", &dev_y, (VPN_X, "192.0.2.1"), &pki_y);
    let log = |f: &str| dir.path().join(f);
    let mut px = start(x, &ns_x, &cfg_x, &dev_x, &log("x.log"));
    let py = start(y, &ns_y, &cfg_y, &dev_y, &log("y.log"));
    let up = (0..10).any(|_| ns_x.ping(VPN_Y, 1));
    assert!(
        up,
        "no tunnel at first\n--- x:\n{}\n--- y:\n{}",
        px.log(),
        py.log()
    );
    assert!(ns_y.ping(VPN_X, 2), "y->x lost echoes before the restart");

    // SAFETY: kill on a PID this test started and still owns.
    assert_eq!(unsafe { libc::kill(px.pid() as i32, libc::SIGKILL) }, 0);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || !px
            .is_running()),
        "{x:?} survived SIGKILL"
    );
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || !ns_x
            .has_link(&dev_x)),
        "{x:?}'s device outlived it"
    );
    let px2 = start(x, &ns_x, &cfg_x, &dev_x, &log("x2.log"));
    let started = Instant::now();
    // The restarted host has traffic for its peer (that is what makes it handshake), and the
    // peer answers and sends its own.
    let back = wait_for(BACK_WITHIN, Duration::from_millis(10), || {
        ns_x.ping(VPN_Y, 1) && ns_y.ping(VPN_X, 1)
    });
    let took = started.elapsed();
    assert!(
        back && took <= BACK_WITHIN,
        "{x:?} restarted with a {y:?} peer: tunnel not back within {BACK_WITHIN:?} \
         ({took:?})\n--- x (before):\n{}\n--- x (after):\n{}\n--- y:\n{}",
        px.log(),
        px2.log(),
        py.log()
    );
    eprintln!("{x:?} restarted with a {y:?} peer: tunnel back both ways in {took:?}");
    took
}

#[test]
fn restarted_meshd_with_a_nebula_peer_is_back_within_5s() {
    if !ready("restarted_meshd_with_a_nebula_peer_is_back_within_5s") {
        return;
    }
    restart_scenario(Impl::Meshd, Impl::Nebula);
}

#[test]
fn restarted_nebula_with_a_meshd_peer_is_back_within_5s() {
    if !ready("restarted_nebula_with_a_meshd_peer_is_back_within_5s") {
        return;
    }
    restart_scenario(Impl::Nebula, Impl::Meshd);
}

#[test]
fn restarted_meshd_with_a_meshd_peer_is_back_within_5s() {
    if !ready("restarted_meshd_with_a_meshd_peer_is_back_within_5s") {
        return;
    }
    restart_scenario(Impl::Meshd, Impl::Meshd);
}
