//! Proves the namespace harness with the reference implementation: real nebula 1.6.1 nodes with
//! real TUN devices in namespaces, directly linked and behind two NAT routers with a lighthouse.
//! Afterwards nothing the test created may remain.

mod common;

use std::time::Duration;

use common::netns::{
    netns_exists, pid_alive, root_link_exists, veth, wait_for, NatKind, NatRouter, NebulaCa, Netns,
    NodeConfig, NsProcess, Switch,
};

/// Names and PIDs a test created, checked after everything was dropped.
#[derive(Default)]
struct Leftovers {
    namespaces: Vec<String>,
    links: Vec<String>,
    pids: Vec<u32>,
}

impl Leftovers {
    fn assert_all_gone(&self) {
        assert!(
            !self.namespaces.is_empty() && !self.pids.is_empty(),
            "nothing was recorded"
        );
        for ns in &self.namespaces {
            assert!(!netns_exists(ns), "namespace {ns} still exists");
        }
        for link in &self.links {
            assert!(
                !root_link_exists(link),
                "link {link} leaked into the root namespace"
            );
        }
        for pid in &self.pids {
            assert!(!pid_alive(*pid), "process {pid} still running");
        }
    }
}

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
}

/// Starts nebula with `config` in `ns` and waits until its tun device `dev` exists there.
fn start_nebula(
    ns: &Netns,
    config: &std::path::Path,
    dev: &str,
    log: &std::path::Path,
) -> NsProcess {
    let mut p = ns.spawn(
        &["nebula", "-config", config.to_str().expect("utf-8 path")],
        log,
    );
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        ns.has_link(dev)
    });
    assert!(
        up && p.is_running(),
        "nebula did not bring up {dev} in {}:\n{}",
        ns.name(),
        p.log()
    );
    p
}

/// Pings until one echo is answered (the first ones trigger the handshake), bounded to `tries`.
fn ping_eventually(ns: &Netns, dest: &str, tries: u32) -> bool {
    (0..tries).any(|_| ns.ping(dest, 1))
}

#[test]
fn two_nebula_nodes_ping_over_a_veth() {
    if !ready("two_nebula_nodes_ping_over_a_veth") {
        return;
    }
    let mut seen = Leftovers::default();
    {
        let dir = common::tempdir();
        let a = Netns::new("nba");
        let b = Netns::new("nbb");
        seen.namespaces
            .extend([a.name().to_string(), b.name().to_string()]);
        let (va, vb) = veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
        seen.links.extend([va, vb]);
        assert!(a.ping("192.0.2.2", 1), "underlay veth does not work");

        let ca = NebulaCa::new(dir.path(), "netns test ca");
        let (dev_a, dev_b) = (common::unique_name("nt"), common::unique_name("nt"));
        seen.links.extend([dev_a.clone(), dev_b.clone()]);
        let mut cfg_a = NodeConfig::new(&dev_a);
        cfg_a
            .static_host_map
            .push(("10.42.0.2".into(), vec!["192.0.2.2:4242".into()]));
        let mut cfg_b = NodeConfig::new(&dev_b);
        cfg_b
            .static_host_map
            .push(("10.42.0.1".into(), vec!["192.0.2.1:4242".into()]));
        let path_a = cfg_a.write(dir.path(), "a.yml", &ca.sign("a", "10.42.0.1/24", &[]));
        let path_b = cfg_b.write(dir.path(), "b.yml", &ca.sign("b", "10.42.0.2/24", &[]));

        let node_a = start_nebula(&a, &path_a, &dev_a, &dir.path().join("a.log"));
        let node_b = start_nebula(&b, &path_b, &dev_b, &dir.path().join("b.log"));
        seen.pids.extend([node_a.pid(), node_b.pid()]);

        let addr = a.ip(&["-4", "addr", "show", "dev", &dev_a]);
        assert!(
            addr.contains("10.42.0.1/24") && addr.contains("mtu 1300"),
            "{addr}"
        );
        assert!(
            ping_eventually(&a, "10.42.0.2", 10),
            "no tunnel:\n{}\n{}",
            node_a.log(),
            node_b.log()
        );
        assert!(a.ping("10.42.0.2", 3), "overlay lost echoes a->b");
        assert!(b.ping("10.42.0.1", 3), "overlay lost echoes b->a");
        // Nobody owns this overlay address, so the same check must fail here.
        assert!(
            !a.ping("10.42.0.9", 1),
            "ping to an absent overlay host succeeded"
        );
    }
    seen.assert_all_gone();
}

#[test]
fn nebula_hosts_behind_two_nats_meet_via_a_lighthouse() {
    if !ready("nebula_hosts_behind_two_nats_meet_via_a_lighthouse")
        || !common::require_tool("nat", "nft")
    {
        return;
    }
    let mut seen = Leftovers::default();
    {
        let dir = common::tempdir();
        let internet = Switch::new("nbi");
        let lh = Netns::new("nbl");
        let r1 = NatRouter::new(
            "nbr",
            &internet,
            "198.51.100.11/24",
            "192.168.1.1/24",
            NatKind::PortRestricted,
        );
        let r2 = NatRouter::new(
            "nbr",
            &internet,
            "198.51.100.12/24",
            "192.168.2.1/24",
            NatKind::PortRestricted,
        );
        let h1 = Netns::new("nbh");
        let h2 = Netns::new("nbh");
        let lh_if = internet.attach(&lh, "198.51.100.1/24");
        let h1_if = r1.add_host(&h1, "192.168.1.2/24");
        let h2_if = r2.add_host(&h2, "192.168.2.2/24");
        seen.namespaces.extend(
            [internet.ns(), &lh, r1.ns(), r2.ns(), &h1, &h2]
                .iter()
                .map(|n| n.name().to_string()),
        );
        seen.links.extend([lh_if, h1_if, h2_if]);

        // The NAT harness itself: out and back works, unsolicited inbound does not.
        assert!(
            h1.ping("198.51.100.1", 1),
            "host behind NAT cannot reach the internet"
        );
        assert!(
            !lh.ping(r1.wan_ip(), 1),
            "router answered unsolicited inbound traffic"
        );
        assert!(
            !h1.ping("192.168.2.2", 1),
            "hosts behind different NATs reach each other directly"
        );

        let ca = NebulaCa::new(dir.path(), "nat test ca");
        let devs: Vec<String> = (0..3).map(|_| common::unique_name("nt")).collect();
        seen.links.extend(devs.iter().cloned());
        let mut lh_cfg = NodeConfig::new(&devs[0]);
        lh_cfg.am_lighthouse = true;
        let lh_path = lh_cfg.write(
            dir.path(),
            "lh.yml",
            &ca.sign("lighthouse", "10.42.0.1/24", &[]),
        );
        let host_cfg = |dev: &str| {
            let mut c = NodeConfig::new(dev);
            c.static_host_map
                .push(("10.42.0.1".into(), vec!["198.51.100.1:4242".into()]));
            c.lighthouses.push("10.42.0.1".into());
            c
        };
        let h1_path =
            host_cfg(&devs[1]).write(dir.path(), "h1.yml", &ca.sign("h1", "10.42.0.2/24", &[]));
        let h2_path =
            host_cfg(&devs[2]).write(dir.path(), "h2.yml", &ca.sign("h2", "10.42.0.3/24", &[]));

        let lh_node = start_nebula(&lh, &lh_path, &devs[0], &dir.path().join("lh.log"));
        let h1_node = start_nebula(&h1, &h1_path, &devs[1], &dir.path().join("h1.log"));
        let h2_node = start_nebula(&h2, &h2_path, &devs[2], &dir.path().join("h2.log"));
        seen.pids
            .extend([lh_node.pid(), h1_node.pid(), h2_node.pid()]);

        let logs = || {
            format!(
                "lh:\n{}\nh1:\n{}\nh2:\n{}",
                lh_node.log(),
                h1_node.log(),
                h2_node.log()
            )
        };
        assert!(
            ping_eventually(&h1, "10.42.0.1", 10),
            "h1 cannot reach the lighthouse:\n{}",
            logs()
        );
        assert!(
            ping_eventually(&h2, "10.42.0.1", 10),
            "h2 cannot reach the lighthouse:\n{}",
            logs()
        );
        assert!(
            ping_eventually(&h1, "10.42.0.3", 15),
            "h1 cannot reach h2 through the NATs:\n{}",
            logs()
        );
        assert!(h2.ping("10.42.0.2", 3), "h2 -> h1 lost echoes:\n{}", logs());
        // The tunnel is direct: h1 learned h2 at router 2's public address (relays are off).
        let h1_log = h1_node.log();
        assert!(
            h1_log.contains(r2.wan_ip()),
            "h1 never used h2's NAT address:\n{h1_log}"
        );
    }
    seen.assert_all_gone();
}
