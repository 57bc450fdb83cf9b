//! `tun.unsafe_routes[].install` (Nebula 1.7+): a route with `install: false` stays out of the
//! kernel table (another mechanism routes traffic into the tun) while one without the key, or
//! with `install: true`, is installed on the tun device. One meshd in a throw-away namespace.

mod common;

use std::time::Duration;

use common::netns::{wait_for, NebulaCa, Netns, NodeConfig};

#[test]
fn install_false_keeps_the_route_out_of_the_kernel() {
    let test = "install_false_keeps_the_route_out_of_the_kernel";
    if !(common::require_root(test) && common::require_tool(test, "nebula-cert")) {
        return;
    }
    let dir = common::tempdir();
    let ns = Netns::new("mui");
    let ca = NebulaCa::new(dir.path(), "install ca");
    let pki = ca.sign("a", "10.47.0.1/24", &[]);
    let dev = common::unique_name("mu");
    let c = NodeConfig::new(&dev);
    let yaml = c.to_yaml(&pki);
    let tun = format!("  mtu: {}\n", c.mtu);
    assert!(yaml.contains(&tun), "config layout changed");
    let yaml = yaml.replacen(
        &tun,
        &format!(
            "{tun}  unsafe_routes:\n    - route: 172.16.1.0/24\n      via: 10.47.0.9\n    \
             - route: 172.16.2.0/24\n      via: 10.47.0.9\n      install: false\n    \
             - route: 172.16.3.0/24\n      via: 10.47.0.9\n      install: true\n"
        ),
        1,
    );
    let cfg = dir.path().join("a.yml");
    std::fs::write(&cfg, yaml).unwrap();
    let bin = common::meshd_bin().to_string_lossy().into_owned();
    let meshd = ns.spawn(
        &[&bin, "-config", cfg.to_str().unwrap()],
        &dir.path().join("a.log"),
    );
    // The whole table (the device may not exist yet); each line names its device.
    let routes = || {
        let out = ns.exec(&["ip", "route", "show"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
            routes().contains(&format!("172.16.1.0/24 dev {dev}"))
        }),
        "routes never installed: {}\n{}",
        routes(),
        meshd.log()
    );
    let table = routes();
    assert!(
        table.contains(&format!("172.16.3.0/24 dev {dev}")),
        "install: true missing: {table}"
    );
    assert!(
        !table.contains("172.16.2.0/24"),
        "install: false was installed: {table}"
    );
}
