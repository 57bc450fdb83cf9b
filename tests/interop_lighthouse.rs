//! Lighthouse interop with Debian's nebula 1.6.1 over real UDP on loopback (`tun.disabled`, no
//! root). (a) meshd is the lighthouse: a nebula host registers, its HostUpdateNotification is
//! stored, and a meshd client queries for it and handshakes to it. (b) nebula is the lighthouse:
//! a meshd client queries it for a nebula host and uses the HostQueryReply to handshake; a meshd
//! client's HostUpdateNotification is accepted by nebula and served to another meshd client.
//!
//! Only loopback is ever addressed: nebula advertises no interface addresses
//! (local_allow_list denies all) and the meshd clients accept only 127.0.0.0/8 from lighthouses.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::nebula::{self, tools, Nebula};
use common::peer::{until, Peer};
use meshd::config::{AllowList, IpNet};
use meshd::node::{ipv4, NodeConfig, TunOutcome, VpnIp};

const LH_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const NEB_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const MESH_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const MESH2_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 4);

/// Starts nebula as `name` on 127.0.0.1:`port` with the given lighthouse section.
fn nebula(dir: &Path, name: &str, port: u16, lighthouse: &str, static_map: &str) -> Nebula {
    let extra = format!("static_host_map:\n{static_map}lighthouse:\n{lighthouse}");
    nebula::start(dir, name, SocketAddr::from(([127, 0, 0, 1], port)), &extra)
}

fn make_certs(dir: &Path) {
    let hosts = [
        ("lh", LH_IP),
        ("neb", NEB_IP),
        ("mesh", MESH_IP),
        ("mesh2", MESH2_IP),
    ];
    nebula::make_certs(dir, "lh interop", &hosts);
}

fn free_port() -> u16 {
    nebula::free_port([127, 0, 0, 1])
}

/// Lighthouse section of a nebula host: registers with `LH_IP`, advertises only
/// 127.0.0.2:`port` (no interface addresses).
fn nebula_client_lighthouse(port: u16) -> String {
    format!(
        "  am_lighthouse: false\n  interval: 2\n  hosts:\n    - \"{LH_IP}\"\n  \
         local_allow_list:\n    \"0.0.0.0/0\": false\n    \"::/0\": false\n  \
         advertise_addrs:\n    - \"127.0.0.2:{port}\"\n"
    )
}

fn loopback_only() -> AllowList {
    let n = |s: &str, p| IpNet::new(s.parse().unwrap(), p).unwrap();
    AllowList {
        rules: vec![
            (n("127.0.0.0", 8), true),
            (n("0.0.0.0", 0), false),
            (n("::", 0), false),
        ],
    }
}

/// A meshd node on its own loopback socket.
fn peer(dir: &Path, name: &str, config: NodeConfig) -> Peer {
    let config = NodeConfig {
        tun_disabled: false,
        ..config
    };
    Peer::new(dir, name, config, 7)
}

trait Ping {
    fn ping(&mut self, to: Ipv4Addr, seq: u16) -> TunOutcome;
}

impl Ping for Peer {
    fn ping(&mut self, to: Ipv4Addr, seq: u16) -> TunOutcome {
        self.send_tun(&ipv4::echo_request(
            MESH_IP,
            to,
            0x4c48,
            seq,
            b"lighthouse interop",
        ))
    }
}

#[test]
fn meshd_lighthouse_serves_a_nebula_host() {
    if !tools("meshd_lighthouse_serves_a_nebula_host") {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
    let mut lh = peer(
        dir.path(),
        "lh",
        NodeConfig {
            am_lighthouse: true,
            ..NodeConfig::default()
        },
    );
    let neb_port = free_port();
    let map = format!("  \"{LH_IP}\": [\"{}\"]\n", lh.addr());
    let _neb = nebula(
        dir.path(),
        "neb",
        neb_port,
        &nebula_client_lighthouse(neb_port),
        &map,
    );
    let advertised = SocketAddr::from(([127, 0, 0, 2], neb_port));
    let learned = SocketAddr::from(([127, 0, 0, 1], neb_port));
    let stored = until(&mut [&mut lh], 10, |p| {
        p[0].node
            .lighthouse_entry(VpnIp::from(NEB_IP))
            .is_some_and(|(a, _)| a.contains(&advertised))
    });
    let entry = lh.node.lighthouse_entry(VpnIp::from(NEB_IP));
    assert!(
        stored,
        "nebula's HostUpdateNotification stored; entry {entry:?} drops {:?}",
        lh.node.drops().nonzero()
    );
    assert_eq!(
        entry.unwrap().0,
        vec![learned, advertised],
        "learned first, then reported"
    );

    // A meshd client that only knows the lighthouse finds nebula through it.
    let mut client = peer(
        dir.path(),
        "mesh",
        NodeConfig {
            lighthouses: vec![VpnIp::from(LH_IP)],
            static_host_map: BTreeMap::from([(VpnIp::from(LH_IP), vec![lh.addr()])]),
            remote_allow_list: Some(loopback_only()),
            ..NodeConfig::default()
        },
    );
    assert_eq!(client.ping(NEB_IP, 1), TunOutcome::Queued);
    let ok = until(&mut [&mut lh, &mut client], 10, |p| {
        p[1].got_reply(NEB_IP, 1)
    });
    assert!(
        ok,
        "no echo reply from nebula; client events {:?} drops {:?}",
        client.events,
        client.node.drops().nonzero()
    );
    let remotes = client.node.remotes(VpnIp::from(NEB_IP)).unwrap().addrs();
    assert!(
        remotes.contains(&learned) && remotes.contains(&advertised),
        "{remotes:?}"
    );
    let host = client.node.hostmap().host(VpnIp::from(NEB_IP)).unwrap();
    assert_eq!(host.remote, Some(learned), "direct tunnel to nebula");
}

#[test]
fn nebula_lighthouse_answers_meshd() {
    if !tools("nebula_lighthouse_answers_meshd") {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
    let lh_port = free_port();
    let _lh = nebula(
        dir.path(),
        "lh",
        lh_port,
        "  am_lighthouse: true\n",
        "  {}\n",
    );
    let lh_addr = SocketAddr::from(([127, 0, 0, 1], lh_port));
    let neb_port = free_port();
    let map = format!("  \"{LH_IP}\": [\"{lh_addr}\"]\n");
    let _neb = nebula(
        dir.path(),
        "neb",
        neb_port,
        &nebula_client_lighthouse(neb_port),
        &map,
    );
    // Give the nebula host time to register.
    std::thread::sleep(Duration::from_secs(2));
    let mut client = peer(
        dir.path(),
        "mesh",
        NodeConfig {
            lighthouses: vec![VpnIp::from(LH_IP)],
            static_host_map: BTreeMap::from([(VpnIp::from(LH_IP), vec![lh_addr])]),
            remote_allow_list: Some(loopback_only()),
            ..NodeConfig::default()
        },
    );
    // A handshake gives up after ~5.5 s; ping again in case the host registered late.
    let mut ok = false;
    for _ in 0..3 {
        client.ping(NEB_IP, 1);
        ok = until(&mut [&mut client], 7, |p| p[0].got_reply(NEB_IP, 1));
        if ok {
            break;
        }
    }
    assert!(
        ok,
        "no echo reply; events {:?} drops {:?}",
        client.events,
        client.node.drops().nonzero()
    );
    let remotes = client
        .node
        .remotes(VpnIp::from(NEB_IP))
        .expect("HostQueryReply stored")
        .addrs();
    let learned = SocketAddr::from(([127, 0, 0, 1], neb_port));
    assert!(remotes.contains(&learned), "{remotes:?}");
    assert!(
        remotes.contains(&SocketAddr::from(([127, 0, 0, 2], neb_port))),
        "{remotes:?}"
    );
    let host = client.node.hostmap().host(VpnIp::from(NEB_IP)).unwrap();
    assert_eq!(host.remote, Some(learned));
}

#[test]
fn nebula_lighthouse_stores_meshd_update() {
    if !tools("nebula_lighthouse_stores_meshd_update") {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
    let lh_port = free_port();
    let _lh = nebula(
        dir.path(),
        "lh",
        lh_port,
        "  am_lighthouse: true\n",
        "  {}\n",
    );
    let lh_addr = SocketAddr::from(([127, 0, 0, 1], lh_port));
    let client_config = || NodeConfig {
        lighthouses: vec![VpnIp::from(LH_IP)],
        static_host_map: BTreeMap::from([(VpnIp::from(LH_IP), vec![lh_addr])]),
        remote_allow_list: Some(loopback_only()),
        ..NodeConfig::default()
    };
    std::thread::sleep(Duration::from_millis(500));
    // `a` advertises a marker address; nebula can only learn it from a's update.
    let marker = SocketAddr::from(([127, 0, 0, 3], 4999));
    let a_config = NodeConfig {
        advertise_addrs: vec![marker],
        ..client_config()
    };
    let mut a = peer(dir.path(), "mesh", a_config);
    let mut b = peer(dir.path(), "mesh2", client_config());
    let registered = until(&mut [&mut a], 10, |p| {
        p[0].node.hostmap().host(VpnIp::from(LH_IP)).is_some()
    });
    assert!(
        registered,
        "a's tunnel to the nebula lighthouse; events {:?}",
        a.events
    );
    std::thread::sleep(Duration::from_millis(200));
    // b reaches a through the nebula lighthouse.
    let p = ipv4::echo_request(MESH2_IP, MESH_IP, 1, 1, b"x");
    let mut out = vec![0u8; 256];
    let r = b.node.handle_tun_packet(Instant::now(), &p, &mut out);
    assert_eq!(r, TunOutcome::Queued);
    b.flush();
    let ok = until(&mut [&mut a, &mut b], 10, |p| {
        p[1].node.hostmap().host(VpnIp::from(MESH_IP)).is_some()
    });
    let remotes = b.node.remotes(VpnIp::from(MESH_IP)).map(|r| r.addrs());
    assert!(
        ok,
        "b found a; remotes {remotes:?} drops {:?}",
        b.node.drops().nonzero()
    );
    let remotes = remotes.unwrap();
    assert!(
        remotes.contains(&marker),
        "nebula served a's advertised address: {remotes:?}"
    );
    assert!(
        remotes.contains(&a.addr()),
        "and its learned one: {remotes:?}"
    );
}
