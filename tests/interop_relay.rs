//! Relay interop with Debian's nebula 1.6.1 over real UDP on loopback (`tun.disabled`, no
//! root). (a) a nebula lighthouse+relay between two meshd nodes whose direct path is cut in the
//! test's socket shim; (b) a meshd lighthouse+relay between two nebula nodes (nebula with
//! tun.disabled originates no data, so the initiating nebula lists the other as a "lighthouse":
//! its HostUpdateNotifications and connection-manager tests then need a tunnel, which can only
//! come through the relay, because its remote_allow_list refuses the other's address);
//! (c) a meshd node pings a nebula node through a meshd relay.
//!
//! Only loopback is addressed; every process started is stopped by PID when the test ends.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::nebula::{self, free_port, tools};
use common::peer::{until, Peer};
use meshd::node::{ipv4, NodeConfig, RelayRole, RelayState, TunOutcome, VpnIp};

const R_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 3);

fn vpn(ip: Ipv4Addr) -> VpnIp {
    VpnIp::from(ip)
}

fn make_certs(dir: &Path) {
    let hosts = [("r", R_IP), ("a", A_IP), ("b", B_IP)];
    nebula::make_certs(dir, "relay interop", &hosts);
}

/// Lighthouse section for a host registering with R that advertises no interface addresses.
fn no_local_addrs() -> &'static str {
    "  local_allow_list:\n    \"0.0.0.0/0\": false\n    \"::/0\": false\n"
}

fn peer(dir: &Path, name: &str, config: NodeConfig) -> Peer {
    Peer::new(dir, name, config, 11)
}

trait RelayPeer {
    fn ping(&mut self, from: Ipv4Addr, to: Ipv4Addr, seq: u16) -> TunOutcome;
    fn relayed_to(&self, peer: Ipv4Addr, relay: Ipv4Addr) -> bool;
}

impl RelayPeer for Peer {
    fn ping(&mut self, from: Ipv4Addr, to: Ipv4Addr, seq: u16) -> TunOutcome {
        self.send_tun(&ipv4::echo_request(
            from,
            to,
            0x5259,
            seq,
            b"relay interop payload",
        ))
    }

    fn relayed_to(&self, peer: Ipv4Addr, relay: Ipv4Addr) -> bool {
        self.node
            .hostmap()
            .host(vpn(peer))
            .is_some_and(|h| h.remote.is_none() && h.relay == Some(vpn(relay)))
    }
}

/// A meshd client of lighthouse R at `r_addr` that names R as its relay.
fn client_of(r_addr: SocketAddr) -> NodeConfig {
    NodeConfig {
        lighthouses: vec![vpn(R_IP)],
        static_host_map: BTreeMap::from([(vpn(R_IP), vec![r_addr])]),
        advertise_relays: vec![vpn(R_IP)],
        lighthouse_interval: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

#[test]
fn nebula_relay_between_two_meshd_nodes() {
    if !tools("nebula_relay_between_two_meshd_nodes") {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
    let r_addr = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1])));
    let r = nebula::start(
        dir.path(),
        "r",
        r_addr,
        "static_host_map: {}\nlighthouse:\n  am_lighthouse: true\nrelay:\n  am_relay: true\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut a = peer(dir.path(), "a", client_of(r_addr));
    let mut b = peer(
        dir.path(),
        "b",
        NodeConfig {
            tun_disabled: true,
            ..client_of(r_addr)
        },
    );
    a.blocked.push(b.addr());
    b.blocked.push(a.addr());
    let registered = until(&mut [&mut a, &mut b], 10, |p| {
        p.iter().all(|x| x.node.hostmap().host(vpn(R_IP)).is_some())
    });
    assert!(registered, "both meshd nodes reach nebula R");
    // Give B's HostUpdateNotification (with its relay) time to land.
    until(&mut [&mut a, &mut b], 3, |_| false);
    let mut ok = false;
    for seq in 1..=3 {
        a.ping(A_IP, B_IP, seq);
        ok = until(&mut [&mut a, &mut b], 8, |p| p[0].got_reply(B_IP, seq));
        if ok {
            break;
        }
    }
    assert!(
        ok,
        "echo through the nebula relay; a events {:?} drops {:?} relays {:?}; b drops {:?}",
        a.events,
        a.node.drops().nonzero(),
        a.node.relays().legs().collect::<Vec<_>>(),
        b.node.drops().nonzero()
    );
    assert!(a.relayed_to(B_IP, R_IP) && b.relayed_to(A_IP, R_IP));
    assert!(a.relay_out > 0 && b.relay_in > 0 && b.relay_out > 0 && a.relay_in > 0);
    let leg = a.node.relays().find(vpn(R_IP), vpn(B_IP)).copied().unwrap();
    assert_eq!(
        (leg.state, leg.role),
        (RelayState::Established, RelayRole::Terminal)
    );
    let log = r.log();
    assert!(
        log.contains("CreateRelay"),
        "nebula R logged the relay setup"
    );
}

/// An ssh key pair for nebula's debug sshd (which is the only way to make a tun-less nebula
/// start a tunnel on its own: `create-tunnel`).
fn ssh_keys(dir: &Path) -> (std::path::PathBuf, String, std::path::PathBuf) {
    let key = dir.join("client_key");
    let host = dir.join("host_key");
    for k in [&key, &host] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(k)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success());
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string(), host)
}

/// Runs one command on nebula's debug sshd at 127.0.0.1:`port`.
fn nebula_ssh(key: &Path, port: u16, cmd: &str) -> String {
    let out = Command::new("ssh")
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-i",
        ])
        .arg(key)
        .args(["-p", &port.to_string(), "tester@127.0.0.1", cmd])
        .output()
        .expect("run ssh");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn meshd_relay_between_two_nebula_nodes() {
    if !tools("meshd_relay_between_two_nebula_nodes")
        || !common::require_tool("meshd_relay_between_two_nebula_nodes", "ssh")
        || !common::require_tool("meshd_relay_between_two_nebula_nodes", "ssh-keygen")
    {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
    let (key, public, host_key) = ssh_keys(dir.path());
    let mut r = peer(
        dir.path(),
        "r",
        NodeConfig {
            am_lighthouse: true,
            am_relay: true,
            ..NodeConfig::default()
        },
    );
    let r_addr = r.addr();
    // B listens on 127.0.0.3, which A's remote_allow_list refuses: A can reach B only
    // through R.
    let b_addr = SocketAddr::from(([127, 0, 0, 3], free_port([127, 0, 0, 3])));
    let b_cfg = format!(
        "static_host_map:\n  \"{R_IP}\": [\"{r_addr}\"]\n\
         lighthouse:\n  interval: 2\n  hosts:\n    - \"{R_IP}\"\n{}\
         relay:\n  relays:\n    - \"{R_IP}\"\n",
        no_local_addrs()
    );
    let nb = nebula::start(dir.path(), "b", b_addr, &b_cfg);
    let a_addr = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1])));
    let ssh_port = free_port([127, 0, 0, 1]);
    let a_cfg = format!(
        "static_host_map:\n  \"{R_IP}\": [\"{r_addr}\"]\n\
         lighthouse:\n  interval: 2\n  hosts:\n    - \"{R_IP}\"\n{}\
         \x20 remote_allow_list:\n    \"127.0.0.3/32\": false\n\
         relay:\n  use_relays: true\n\
         sshd:\n  enabled: true\n  listen: 127.0.0.1:{ssh_port}\n  host_key: {}\n  \
         authorized_users:\n    - user: tester\n      keys:\n        - \"{public}\"\n",
        no_local_addrs(),
        host_key.display()
    );
    let na = nebula::start(dir.path(), "a", a_addr, &a_cfg);
    let both = until(&mut [&mut r], 10, |p| {
        p[0].node.lighthouse_entry(vpn(B_IP)).is_some()
            && p[0].node.hostmap().host(vpn(A_IP)).is_some()
    });
    assert!(both, "both nebulas registered with meshd R");
    // ssh is blocking: run it on a thread while R keeps serving.
    let (k, port) = (key.clone(), ssh_port);
    let ssh = std::thread::spawn(move || nebula_ssh(&k, port, "create-tunnel 10.98.0.3"));
    let relayed = until(&mut [&mut r], 20, |p| {
        let legs: Vec<_> = p[0].node.relays().legs().copied().collect();
        legs.len() == 2
            && legs.iter().all(|l| l.state == RelayState::Established)
            && p[0].relay_in >= 2
            && p[0].relay_out >= 2
    });
    let said = ssh.join().unwrap();
    // Let the end-to-end handshake settle, then ask nebula A about its tunnel.
    until(&mut [&mut r], 2, |_| false);
    let k = key.clone();
    let t = std::thread::spawn(move || nebula_ssh(&k, ssh_port, "print-tunnel 10.98.0.3"));
    until(&mut [&mut r], 3, |_| false);
    let tunnel = t.join().unwrap();
    assert!(
        relayed,
        "meshd R relayed between the nebulas; ssh said {said:?}; legs {:?} in {} out {} \
         drops {:?}\n--- a ---\n{}\n--- b ---\n{}",
        r.node.relays().legs().collect::<Vec<_>>(),
        r.relay_in,
        r.relay_out,
        r.node.drops().nonzero(),
        na.log(),
        nb.log()
    );
    // Nebula A completed the end-to-end handshake with B through R (stage 2 came relayed).
    let a_log = na.log();
    assert!(
        a_log
            .lines()
            .any(|l| l.contains("Handshake message received")
                && l.contains("stage:2")
                && l.contains("10.98.0.3")),
        "{a_log}"
    );
    // print-tunnel: no direct address, reached through R.
    assert!(
        tunnel.contains("\"vpnIp\":\"10.98.0.3\""),
        "print-tunnel: {tunnel}"
    );
    assert!(
        tunnel.contains("\"currentRemote\":null"),
        "print-tunnel: {tunnel}"
    );
    assert!(
        tunnel.contains("\"currentRelaysToMe\":[\"10.98.0.1\"]"),
        "print-tunnel: {tunnel}"
    );
    assert!(r.tun.is_empty(), "R only forwarded");
    assert!(
        r.node.hostmap().host(vpn(A_IP)).is_some() && r.node.hostmap().host(vpn(B_IP)).is_some()
    );
}

#[test]
fn meshd_pings_nebula_through_a_meshd_relay() {
    if !tools("meshd_pings_nebula_through_a_meshd_relay") {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
    let mut r = peer(
        dir.path(),
        "r",
        NodeConfig {
            am_lighthouse: true,
            am_relay: true,
            ..NodeConfig::default()
        },
    );
    let r_addr = r.addr();
    let b_addr = SocketAddr::from(([127, 0, 0, 1], free_port([127, 0, 0, 1])));
    let b_cfg = format!(
        "static_host_map:\n  \"{R_IP}\": [\"{r_addr}\"]\n\
         lighthouse:\n  interval: 2\n  hosts:\n    - \"{R_IP}\"\n{}\
         relay:\n  relays:\n    - \"{R_IP}\"\n",
        no_local_addrs()
    );
    let _nb = nebula::start(dir.path(), "b", b_addr, &b_cfg);
    let registered = until(&mut [&mut r], 10, |p| {
        p[0].node
            .lighthouse_entry(vpn(B_IP))
            .is_some_and(|(_, relays)| relays == vec![vpn(R_IP)])
    });
    assert!(registered, "nebula B registered with its relay list");
    let mut a = peer(dir.path(), "a", client_of(r_addr));
    a.blocked.push(b_addr);
    let mut ok = false;
    for seq in 1..=3 {
        a.ping(A_IP, B_IP, seq);
        ok = until(&mut [&mut a, &mut r], 8, |p| p[0].got_reply(B_IP, seq));
        if ok {
            break;
        }
    }
    assert!(
        ok,
        "nebula answered through the meshd relay; a drops {:?} events {:?}; r drops {:?}",
        a.node.drops().nonzero(),
        a.events,
        r.node.drops().nonzero()
    );
    assert!(a.relayed_to(B_IP, R_IP));
    assert!(r.relay_in > 0 && r.relay_out > 0);
    assert!(r.tun.is_empty(), "R only forwarded");
}
