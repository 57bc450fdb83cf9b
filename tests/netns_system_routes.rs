//! `tun.use_system_route_table`: a route the operator adds to the kernel table on meshd's TUN
//! device with a VPN IP as gateway (`ip route add 172.16.9.0/24 via 10.48.0.2 dev TUN`) carries
//! traffic through that peer, with no `unsafe_routes` in the config; removing it stops that. The
//! peer is nebula 1.6.1 whose certificate holds the unsafe network, answering on an address of
//! it. Namespaces and processes are removed on drop.

mod common;

use std::time::Duration;

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig};

const VPN_B: &str = "10.48.0.2";
const LAN_IP: &str = "172.16.9.1";

#[test]
fn system_route_table_routes_through_the_gateway_peer() {
    let test = "system_route_table_routes_through_the_gateway_peer";
    if !(common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping"))
    {
        return;
    }
    let dir = common::tempdir();
    let a = Netns::new("mra");
    let b = Netns::new("mrb");
    veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
    b.ip(&["addr", "add", &format!("{LAN_IP}/32"), "dev", "lo"]);
    let ca = NebulaCa::new(dir.path(), "system routes ca");
    let pki_a = ca.sign("a", "10.48.0.1/24", &[]);
    let pki_b = {
        let crt = dir.path().join("b.crt");
        let key = dir.path().join("b.key");
        let out = std::process::Command::new("nebula-cert")
            .args([
                "sign",
                "-name",
                "b",
                "-ip",
                "10.48.0.2/24",
                "-subnets",
                "172.16.9.0/24",
            ])
            .arg("-ca-crt")
            .arg(&ca.crt)
            .arg("-ca-key")
            .arg(&ca.key)
            .arg("-out-crt")
            .arg(&crt)
            .arg("-out-key")
            .arg(&key)
            .output()
            .expect("nebula-cert");
        assert!(out.status.success(), "{out:?}");
        common::netns::NodePki {
            ca: ca.crt.clone(),
            crt,
            key,
        }
    };
    let dev_a = common::unique_name("mr");
    let mut ca_cfg = NodeConfig::new(&dev_a);
    ca_cfg.punchy = false;
    ca_cfg
        .static_host_map
        .push((VPN_B.into(), vec!["192.0.2.2:4242".into()]));
    let yaml =
        ca_cfg
            .to_yaml(&pki_a)
            .replacen("tun:\n", "tun:\n  use_system_route_table: true\n", 1);
    let cfg_a = dir.path().join("a.yml");
    std::fs::write(&cfg_a, yaml).unwrap();
    let mut cb = NodeConfig::new(&common::unique_name("mr"));
    cb.punchy = false;
    cb.static_host_map
        .push(("10.48.0.1".into(), vec!["192.0.2.1:4242".into()]));
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
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(200), || a
            .ping(VPN_B, 1)),
        "no tunnel\n{}",
        meshd.log()
    );
    let route = ["route", "add", "172.16.9.0/24", "via", VPN_B, "dev", &dev_a];
    a.ip(&route);
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        a.ping(LAN_IP, 1)
    });
    assert!(
        up,
        "no reply from {LAN_IP} through the system route\n{}\n--- nebula:\n{}",
        meshd.log(),
        std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default()
    );
    // Pointed at a VPN IP nobody has, the same prefix no longer reaches b.
    a.ip(&[
        "route",
        "replace",
        "172.16.9.0/24",
        "via",
        "10.48.0.77",
        "dev",
        &dev_a,
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !a.ping(LAN_IP, 1),
        "the route change was not followed\n{}",
        meshd.log()
    );
}
