//! `static_map.cadence`: meshd re-resolves `static_host_map` names while it runs, without a
//! reload. The name is answered from the namespace's own /etc/hosts (`ip netns exec` bind-mounts
//! /etc/netns/NAME/hosts); it first points at an address nobody uses, then at the peer, and the
//! tunnel comes up once the next resolution sees the change. The peer (nebula 1.6.1) knows no
//! address for meshd, so only meshd can start the tunnel. Everything is removed on drop.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig};

const VPN_B: &str = "10.46.0.2";
const NAME: &str = "peer.meshd-test";

/// /etc/netns/NAME/hosts for one namespace, removed on drop.
struct NsHosts {
    dir: PathBuf,
}

impl NsHosts {
    fn new(ns: &Netns) -> NsHosts {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        NsHosts { dir }
    }

    /// Rewrites the file in place (same inode), so the bind mount a running process sees
    /// follows.
    fn point(&self, ip: &str) {
        std::fs::write(
            self.dir.join("hosts"),
            format!("127.0.0.1 localhost\n{ip} {NAME}\n"),
        )
        .expect("write hosts");
    }
}

impl Drop for NsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn static_map_cadence_follows_a_changed_name() {
    let test = "static_map_cadence_follows_a_changed_name";
    if !(common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping"))
    {
        return;
    }
    let dir = common::tempdir();
    let a = Netns::new("mca");
    let b = Netns::new("mcb");
    veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
    let hosts = NsHosts::new(&a);
    hosts.point("192.0.2.99");
    let ca = NebulaCa::new(dir.path(), "static_map ca");
    let (pki_a, pki_b) = (
        ca.sign("a", "10.46.0.1/24", &[]),
        ca.sign("b", "10.46.0.2/24", &[]),
    );
    let mut ca_cfg = NodeConfig::new(&common::unique_name("mc"));
    ca_cfg.punchy = false;
    ca_cfg
        .static_host_map
        .push((VPN_B.into(), vec![format!("{NAME}:4242")]));
    ca_cfg.extra = "static_map:\n  cadence: 1s\n".into();
    let cfg_a = ca_cfg.write(dir.path(), "a.yml", &pki_a);
    let mut cb = NodeConfig::new(&common::unique_name("mc"));
    cb.punchy = false;
    let cfg_b = cb.write(dir.path(), "b.yml", &pki_b);
    let _nebula = b.spawn(
        &["nebula", "-config", cfg_b.to_str().unwrap()],
        &dir.path().join("b.log"),
    );
    let bin = common::meshd_bin().to_string_lossy().into_owned();
    let meshd = a.spawn(
        &[&bin, "-config", cfg_a.to_str().unwrap()],
        &dir.path().join("a.log"),
    );
    let early = wait_for(Duration::from_secs(3), Duration::from_millis(200), || {
        a.ping(VPN_B, 1)
    });
    assert!(
        !early,
        "tunnel while the name points nowhere: the test does not isolate re-resolution\n{}",
        meshd.log()
    );
    hosts.point("192.0.2.2");
    let up = wait_for(Duration::from_secs(20), Duration::from_millis(300), || {
        a.ping(VPN_B, 1)
    });
    let log = meshd.log();
    assert!(up, "no tunnel after the name moved to the peer\n{log}");
    assert!(
        log.contains("static_host_map names resolved to new addresses"),
        "{log}"
    );
    assert!(!log.contains("SIGHUP"), "no reload was involved\n{log}");
}
