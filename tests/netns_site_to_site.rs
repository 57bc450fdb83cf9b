//! Site to site through unsafe_routes: two LAN namespaces (10.1.0.0/24, 10.2.0.0/24) whose
//! machines run nothing but a default route to their gateway, joined by a meshd gateway and a
//! nebula 1.6.1 gateway whose certificates carry the LAN subnets. Ping and a TCP transfer (content
//! checked) cross both ways; a DF ping larger than the tunnel MTU is answered with
//! "fragmentation needed"; on SIGTERM meshd removes its unsafe route from the kernel.
//!
//! Traffic stays inside the namespaces the test creates; Drop guards remove them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NodePki, NsProcess};
use sha2::{Digest, Sha256};

const LAN1_HOST: &str = "10.1.0.10";
const LAN2_HOST: &str = "10.2.0.10";

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
}

/// A host certificate carrying `subnets` (NebulaCa::sign has no -subnets).
fn sign_gateway(ca: &NebulaCa, dir: &Path, name: &str, ip: &str, subnets: &str) -> NodePki {
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("nebula-cert")
        .args(["sign", "-name", name, "-ip", ip, "-subnets", subnets])
        .arg("-ca-crt")
        .arg(&ca.crt)
        .arg("-ca-key")
        .arg(&ca.key)
        .arg("-out-crt")
        .arg(&crt)
        .arg("-out-key")
        .arg(&key)
        .output()
        .expect("run nebula-cert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    NodePki {
        ca: ca.crt.clone(),
        crt,
        key,
    }
}

/// A gateway config with one unsafe route to the other LAN.
fn gateway_config(
    dir: &Path,
    file: &str,
    dev: &str,
    peer: (&str, &str),
    route: &str,
    pki: &NodePki,
) -> std::path::PathBuf {
    let mut c = NodeConfig::new(dev);
    c.punchy = false;
    c.static_host_map
        .push((peer.0.into(), vec![format!("{}:4242", peer.1)]));
    let yaml = c.to_yaml(pki);
    let tun = format!("  mtu: {}\n", c.mtu);
    assert!(yaml.contains(&tun), "config layout changed");
    let yaml = yaml.replacen(
        &tun,
        &format!(
            "{tun}  unsafe_routes:\n    - route: {route}\n      via: {}\n",
            peer.0
        ),
        1,
    );
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    path
}

fn lan_host(prefix: &str, gw: &Netns, gw_cidr: &str, host_cidr: &str, gw_ip: &str) -> Netns {
    let host = Netns::new(prefix);
    veth(gw, Some(gw_cidr), &host, Some(host_cidr));
    host.default_route(gw_ip);
    host
}

fn spawn_until_link(ns: &Netns, args: &[&str], dev: &str, log: &Path) -> NsProcess {
    let mut p = ns.spawn(args, log);
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        ns.has_link(dev)
    });
    assert!(
        up && p.is_running(),
        "{args:?} did not bring up {dev}:\n{}",
        p.log()
    );
    p
}

fn ping_eventually(ns: &Netns, dest: &str) -> bool {
    (0..10).any(|_| ns.ping(dest, 1))
}

/// 2 MB from `from` to `to_ip` (listener in `to`), SHA-256 compared.
fn transfer_ok(from: &Netns, to: &Netns, to_ip: &str) -> bool {
    let data: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    let want: [u8; 32] = Sha256::digest(&data).into();
    let listener = to.enter(|| TcpListener::bind(("0.0.0.0", 7201)).expect("bind"));
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            let (mut c, _) = listener.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).expect("read");
            let out: [u8; 32] = Sha256::digest(&got).into();
            out
        });
        from.enter(|| {
            let addr: SocketAddr = format!("{to_ip}:7201").parse().unwrap();
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            c.write_all(&data).expect("write");
        });
        server.join().expect("server") == want
    })
}

#[test]
fn lans_talk_through_meshd_and_nebula_gateways() {
    if !ready("lans_talk_through_meshd_and_nebula_gateways") {
        return;
    }
    let dir = common::tempdir();
    let gw1 = Netns::new("s2g1");
    let gw2 = Netns::new("s2g2");
    veth(&gw1, Some("192.0.2.1/24"), &gw2, Some("192.0.2.2/24"));
    let lan1 = lan_host("s2l1", &gw1, "10.1.0.1/24", "10.1.0.10/24", "10.1.0.1");
    let lan2 = lan_host("s2l2", &gw2, "10.2.0.1/24", "10.2.0.10/24", "10.2.0.1");
    for gw in [&gw1, &gw2] {
        gw.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    }
    let ca = NebulaCa::new(dir.path(), "site ca");
    let pki1 = sign_gateway(&ca, dir.path(), "gw1", "10.44.0.1/24", "10.1.0.0/24");
    let pki2 = sign_gateway(&ca, dir.path(), "gw2", "10.44.0.2/24", "10.2.0.0/24");
    let (dev1, dev2) = (common::unique_name("s2"), common::unique_name("s2"));
    let cfg1 = gateway_config(
        dir.path(),
        "gw1.yml",
        &dev1,
        ("10.44.0.2", "192.0.2.2"),
        "10.2.0.0/24",
        &pki1,
    );
    let cfg2 = gateway_config(
        dir.path(),
        "gw2.yml",
        &dev2,
        ("10.44.0.1", "192.0.2.1"),
        "10.1.0.0/24",
        &pki2,
    );
    let bin = common::meshd_bin().to_string_lossy().into_owned();
    let mut m = spawn_until_link(
        &gw1,
        &[&bin, "-config", cfg1.to_str().unwrap()],
        &dev1,
        &dir.path().join("gw1.log"),
    );
    let n = spawn_until_link(
        &gw2,
        &["nebula", "-config", cfg2.to_str().unwrap()],
        &dev2,
        &dir.path().join("gw2.log"),
    );
    let logs = || format!("--- meshd:\n{}\n--- nebula:\n{}", m.log(), n.log());
    let routes = gw1.ip(&["route", "show", "10.2.0.0/24"]);
    assert!(
        routes.contains(&dev1),
        "unsafe route installed on the tun: {routes}"
    );

    assert!(
        ping_eventually(&lan1, LAN2_HOST),
        "lan1 -> lan2\n{}",
        logs()
    );
    assert!(
        ping_eventually(&lan2, LAN1_HOST),
        "lan2 -> lan1\n{}",
        logs()
    );
    assert!(
        transfer_ok(&lan1, &lan2, LAN2_HOST),
        "tcp lan1 -> lan2\n{}",
        logs()
    );
    assert!(
        transfer_ok(&lan2, &lan1, LAN1_HOST),
        "tcp lan2 -> lan1\n{}",
        logs()
    );

    // DF ping bigger than the tunnel MTU (1300): "fragmentation needed" comes back.
    let out = lan1.exec(&[
        "ping", "-n", "-c", "2", "-W", "1", "-i", "0.3", "-M", "do", "-s", "1400", LAN2_HOST,
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a 1428-byte DF ping fit a 1300 MTU: {text}"
    );
    assert!(
        text.contains("Frag needed") || text.contains("mtu=1300") || text.contains("mtu = 1300"),
        "no fragmentation-needed report: {text}"
    );

    // SIGTERM: the unsafe route goes with the device.
    // SAFETY: kill on a PID this test started and still owns.
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) }, 0);
    let exited = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        m.try_wait().is_some()
    });
    assert!(exited, "meshd still running\n{}", m.log());
    assert!(!gw1.has_link(&dev1), "device left behind");
    let routes = gw1.ip(&["route", "show", "10.2.0.0/24"]);
    assert!(routes.trim().is_empty(), "route left behind: {routes}");
}
