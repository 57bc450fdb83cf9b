//! `listen.so_mark`: meshd's UDP socket carries the mark, so policy routing applies. In meshd's
//! namespace the peer's underlay address is blackholed in the main table and reachable only
//! through a table that `ip rule fwmark` selects: the tunnel comes up with the mark set and not
//! without it. Namespaces and processes are removed on drop.

mod common;

use std::time::Duration;

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig};

const VPN_A: &str = "10.45.0.1";
const VPN_B: &str = "10.45.0.2";
const MARK: u32 = 0x2a;

/// Starts meshd (with `so_mark`) against nebula 1.6.1 and reports whether a ping got through.
fn tunnel_with_mark(so_mark: u32) -> (bool, String) {
    let dir = common::tempdir();
    let a = Netns::new("msa");
    let b = Netns::new("msb");
    let (veth_a, _) = veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
    a.ip(&["route", "add", "blackhole", "192.0.2.2/32"]);
    a.ip(&[
        "route",
        "add",
        "192.0.2.2/32",
        "dev",
        &veth_a,
        "table",
        "142",
    ]);
    a.ip(&[
        "rule",
        "add",
        "fwmark",
        &MARK.to_string(),
        "lookup",
        "142",
        "priority",
        "100",
    ]);
    let ca = NebulaCa::new(dir.path(), "so_mark ca");
    let (pki_a, pki_b) = (
        ca.sign("a", "10.45.0.1/24", &[]),
        ca.sign("b", "10.45.0.2/24", &[]),
    );
    let mut ca_cfg = NodeConfig::new(&common::unique_name("ms"));
    ca_cfg.punchy = false;
    ca_cfg
        .static_host_map
        .push((VPN_B.into(), vec!["192.0.2.2:4242".into()]));
    let mut yaml_a = ca_cfg.to_yaml(&pki_a);
    yaml_a = yaml_a.replacen("listen:\n", &format!("listen:\n  so_mark: {so_mark}\n"), 1);
    let cfg_a = dir.path().join("a.yml");
    std::fs::write(&cfg_a, yaml_a).unwrap();
    let mut cb = NodeConfig::new(&common::unique_name("ms"));
    cb.punchy = false;
    cb.static_host_map
        .push((VPN_A.into(), vec!["192.0.2.1:4242".into()]));
    let cfg_b = cb.write(dir.path(), "b.yml", &pki_b);
    let bin = common::meshd_bin().to_string_lossy().into_owned();
    let meshd = a.spawn(
        &[&bin, "-config", cfg_a.to_str().unwrap()],
        &dir.path().join("a.log"),
    );
    let _nebula = b.spawn(
        &["nebula", "-config", cfg_b.to_str().unwrap()],
        &dir.path().join("b.log"),
    );
    let up = wait_for(Duration::from_secs(8), Duration::from_millis(200), || {
        a.ping(VPN_B, 1)
    });
    (up, meshd.log())
}

#[test]
fn so_mark_puts_the_underlay_on_the_marked_route() {
    let test = "so_mark_puts_the_underlay_on_the_marked_route";
    if !(common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping"))
    {
        return;
    }
    let (up, log) = tunnel_with_mark(MARK);
    assert!(up, "no tunnel with listen.so_mark {MARK}\n{log}");
    let (up, log) = tunnel_with_mark(0);
    assert!(
        !up,
        "tunnel without the mark: the blackhole does not isolate the test\n{log}"
    );
}
