//! README "Switching from Nebula", side by side on one machine (one network namespace): nebula
//! 1.6.1 and meshd with their own `tun.dev` and `listen.port` and certificates from different
//! VPN networks both keep their device and route, and nebula's survives meshd stopping. With
//! certificates from the *same* VPN network meshd takes over the route (what the README warns
//! about; if that changes, the README must too).
//!
//! Nothing leaves the namespace; namespace and processes are removed by Drop guards.

mod common;

use std::time::Duration;

use common::netns::{wait_for, NebulaCa, Netns, NodeConfig, NsProcess};

/// The namespace's IPv4 routes, one per line.
fn routes(ns: &Netns) -> String {
    ns.ip(&["-4", "route", "show"])
}

/// The route line for `net` on device `dev`, if any.
fn has_route(ns: &Netns, net: &str, dev: &str) -> bool {
    routes(ns)
        .lines()
        .any(|l| l.starts_with(&format!("{net} ")) && l.contains(&format!("dev {dev} ")))
}

struct SideBySide {
    ns: Netns,
    _dir: tempfile::TempDir,
    nebula_dev: String,
    meshd_dev: String,
}

/// nebula on 10.46.0.5/24 (port 4242), meshd with `meshd_cidr` (port 4243), in one namespace.
fn start(meshd_cidr: &str) -> (SideBySide, NsProcess, NsProcess) {
    let dir = common::tempdir();
    let ns = Netns::new("sbs");
    let ca = NebulaCa::new(dir.path(), "side by side ca");
    let (nebula_dev, meshd_dev) = (common::unique_name("nb"), common::unique_name("md"));
    let mut nc = NodeConfig::new(&nebula_dev);
    nc.am_lighthouse = true;
    let nebula_cfg = nc.write(dir.path(), "nebula.yml", &ca.sign("n", "10.46.0.5/24", &[]));
    let mut mc = NodeConfig::new(&meshd_dev);
    mc.am_lighthouse = true;
    mc.listen_port = 4243;
    let meshd_cfg = mc.write(dir.path(), "meshd.yml", &ca.sign("m", meshd_cidr, &[]));
    let nebula = ns.spawn(
        &["nebula", "-config", nebula_cfg.to_str().unwrap()],
        &dir.path().join("nebula.log"),
    );
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        has_route(&ns, "10.46.0.0/24", &nebula_dev)
    });
    assert!(up, "nebula did not come up: {}", nebula.log());
    let meshd = ns.spawn(
        &[
            common::meshd_bin().to_str().unwrap(),
            "-config",
            meshd_cfg.to_str().unwrap(),
        ],
        &dir.path().join("meshd.log"),
    );
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        meshd.log().contains("meshd started")
    });
    assert!(up, "meshd did not come up: {}", meshd.log());
    let s = SideBySide {
        ns,
        _dir: dir,
        nebula_dev,
        meshd_dev,
    };
    (s, nebula, meshd)
}

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
}

#[test]
fn different_vpn_networks_coexist_and_nebula_survives_meshd_stopping() {
    let test = "different_vpn_networks_coexist_and_nebula_survives_meshd_stopping";
    if !ready(test) {
        return;
    }
    let (s, mut nebula, mut meshd) = start("10.47.0.6/24");
    assert!(
        has_route(&s.ns, "10.46.0.0/24", &s.nebula_dev)
            && has_route(&s.ns, "10.47.0.0/24", &s.meshd_dev),
        "both routes expected:\n{}",
        routes(&s.ns)
    );
    meshd.stop();
    assert!(!s.ns.has_link(&s.meshd_dev), "meshd's device survived");
    assert!(
        has_route(&s.ns, "10.46.0.0/24", &s.nebula_dev),
        "nebula's route is gone after meshd stopped:\n{}",
        routes(&s.ns)
    );
    assert!(nebula.is_running(), "nebula exited: {}", nebula.log());
}

#[test]
fn same_vpn_network_meshd_takes_the_route() {
    let test = "same_vpn_network_meshd_takes_the_route";
    if !ready(test) {
        return;
    }
    let (s, _nebula, mut meshd) = start("10.46.0.6/24");
    assert!(
        has_route(&s.ns, "10.46.0.0/24", &s.meshd_dev)
            && !has_route(&s.ns, "10.46.0.0/24", &s.nebula_dev),
        "expected meshd to hold the shared network's route:\n{}",
        routes(&s.ns)
    );
    meshd.stop();
    assert!(
        !has_route(&s.ns, "10.46.0.0/24", &s.nebula_dev),
        "expected no route for nebula after meshd stopped:\n{}",
        routes(&s.ns)
    );
}
