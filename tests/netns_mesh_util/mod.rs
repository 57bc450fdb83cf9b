//! Shared by the mesh and relay namespace tests: a "public" switch, NAT routers, mesh nodes of
//! either implementation (meshd or nebula 1.6.1) with tutorial-style configs, bounded pings, TCP
//! transfers with checked content, byte counters and a tiny DNS client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common;
use crate::common::netns::{
    wait_for, NatKind, NatRouter, NebulaCa, Netns, NodeConfig, NsProcess, Switch,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Meshd,
    Nebula,
}

/// The tutorial's host firewall (examples/host.yaml): ICMP, TCP 5432 and 8008 in; anything out.
pub const HOST_FIREWALL: &str = "  outbound_action: drop\n  inbound_action: drop\n  outbound:\n    \
- port: any\n      proto: any\n      host: any\n  inbound:\n    - port: any\n      proto: icmp\n      \
host: any\n    - port: 5432\n      proto: tcp\n      host: any\n    - port: 8008\n      proto: tcp\n      host: any\n";

pub fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
        && common::require_tool(test, "nft")
}

/// The "internet" plus the CA and temp dir every node of one test shares.
/// Field order matters: processes (in `nodes`) stop before namespaces go.
pub struct World {
    pub nodes: Vec<Node>,
    pub hosts: Vec<Netns>,
    pub routers: Vec<NatRouter>,
    pub internet: Switch,
    pub ca: NebulaCa,
    pub dir: tempfile::TempDir,
    next_router: u8,
}

/// A running mesh node.
pub struct Node {
    pub name: String,
    pub vpn_ip: String,
    pub which: Impl,
    pub process: NsProcess,
    /// Index into `World::hosts`.
    pub ns: usize,
}

impl World {
    pub fn new() -> World {
        let dir = common::tempdir();
        let ca = NebulaCa::new(dir.path(), "mesh test ca");
        World {
            nodes: Vec::new(),
            hosts: Vec::new(),
            routers: Vec::new(),
            internet: Switch::new("msi"),
            ca,
            dir,
            next_router: 11,
        }
    }

    /// A namespace on the public switch at `198.51.100.<last>`; returns (host index, ifname).
    pub fn public(&mut self, last: u8) -> (usize, String) {
        let ns = Netns::new("msp");
        let ifname = self.internet.attach(&ns, &format!("198.51.100.{last}/24"));
        self.hosts.push(ns);
        (self.hosts.len() - 1, ifname)
    }

    /// A namespace behind a fresh NAT router of `kind`; returns (host index, router index).
    pub fn behind_nat(&mut self, kind: NatKind) -> (usize, usize) {
        let n = self.next_router;
        self.next_router += 1;
        let router = NatRouter::new(
            "msr",
            &self.internet,
            &format!("198.51.100.{n}/24"),
            &format!("192.168.{n}.1/24"),
            kind,
        );
        let ns = Netns::new("msh");
        router.add_host(&ns, &format!("192.168.{n}.2/24"));
        self.routers.push(router);
        self.hosts.push(ns);
        (self.hosts.len() - 1, self.routers.len() - 1)
    }

    /// Another namespace on router `router`'s LAN at `192.168.<n>.<last>`; returns (host index,
    /// its interface name).
    pub fn join_lan(&mut self, router: usize, last: u8) -> (usize, String) {
        let r = &self.routers[router];
        // With br_netfilter loaded (as on hosts running docker), frames between LAN ports pass
        // the router's IP forward chain, whose policy drops them: keep the LAN a plain switch.
        let _ = r
            .ns()
            .exec(&["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"]);
        let lan = r
            .wan_ip()
            .rsplit('.')
            .next()
            .expect("dotted quad")
            .to_string();
        let ns = Netns::new("msh");
        let ifname = r.add_host(&ns, &format!("192.168.{lan}.{last}/24"));
        self.hosts.push(ns);
        (self.hosts.len() - 1, ifname)
    }

    pub fn host(&self, i: usize) -> &Netns {
        &self.hosts[i]
    }

    /// Writes the config for `cfg` (cert `name`, `vpn_ip`/24), edits it with `patch` and starts
    /// the node in host `ns`; waits for its tun device. Returns the node index.
    pub fn start(
        &mut self,
        which: Impl,
        ns: usize,
        name: &str,
        vpn_ip: &str,
        cfg: NodeConfig,
        patch: impl FnOnce(String) -> String,
    ) -> usize {
        let pki = self.ca.sign(name, &format!("{vpn_ip}/24"), &[]);
        let yaml = patch(cfg.to_yaml(&pki));
        let path: PathBuf = self.dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, yaml).expect("write node config");
        let bin = match which {
            Impl::Meshd => common::meshd_bin().to_string_lossy().into_owned(),
            Impl::Nebula => "nebula".to_string(),
        };
        let log = self.dir.path().join(format!("{name}.log"));
        let host = &self.hosts[ns];
        let mut p = host.spawn(&[&bin, "-config", path.to_str().expect("utf-8")], &log);
        let up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
            host.has_link(&cfg.tun_dev)
        });
        assert!(
            up && p.is_running(),
            "{name} ({which:?}) did not start:\n{}",
            p.log()
        );
        self.nodes.push(Node {
            name: name.into(),
            vpn_ip: vpn_ip.into(),
            which,
            process: p,
            ns,
        });
        self.nodes.len() - 1
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {} ({:?}):\n{}", n.name, n.which, n.process.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The namespace node `i` runs in.
    pub fn ns_of(&self, i: usize) -> &Netns {
        &self.hosts[self.nodes[i].ns]
    }

    /// Pings from node `from` to node `to`'s VPN IP until one echo returns, at most `tries`.
    pub fn ping_eventually(&self, from: usize, to: usize, tries: u32) -> bool {
        let dest = self.nodes[to].vpn_ip.clone();
        (0..tries).any(|_| self.ns_of(from).ping(&dest, 1))
    }
}

/// A node config with a fresh unique tun device name and the defaults of the harness.
pub fn node_config(lighthouses: &[(&str, &str)]) -> NodeConfig {
    let mut c = NodeConfig::new(&common::unique_name("mt"));
    for (vpn, underlay) in lighthouses {
        c.static_host_map
            .push(((*vpn).into(), vec![format!("{underlay}:4242")]));
        c.lighthouses.push((*vpn).into());
    }
    c
}

/// Bytes received on `ifname` inside `ns` (the kernel's counter).
pub fn rx_bytes(ns: &Netns, ifname: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/rx_bytes");
    ns.run(&["cat", &path])
        .trim()
        .parse()
        .expect("rx_bytes counter")
}

/// Deterministic test bytes (xorshift), different per seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Sends `data` over TCP from `from` to `to_ip:port` (a listener in `to`) and returns the
/// SHA-256 of what the receiver got, or an error naming the failing step.
pub fn transfer(
    from: &Netns,
    to: &Netns,
    to_ip: &str,
    port: u16,
    data: &[u8],
) -> Result<[u8; 32], String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            to.enter(|| -> Result<[u8; 32], String> {
                let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                let _ = tx.send(());
                let deadline = std::time::Instant::now() + Duration::from_secs(15);
                let mut c = loop {
                    match l.accept() {
                        Ok((c, _)) => break c,
                        Err(_) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(e) => return Err(format!("accept: {e}")),
                    }
                };
                c.set_nonblocking(false).map_err(|e| e.to_string())?;
                c.set_read_timeout(Some(Duration::from_secs(20)))
                    .map_err(|e| e.to_string())?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = c.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok(h.finalize().into())
            })
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "listener never came up".to_string())?;
        let sent = from.enter(|| -> Result<(), String> {
            let addr: SocketAddr = format!("{to_ip}:{port}").parse().expect("socket addr");
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("connect {addr}: {e}"))?;
            c.set_write_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| e.to_string())?;
            c.write_all(data).map_err(|e| format!("send: {e}"))
        });
        let got = server.join().expect("receiver thread");
        sent?;
        got
    })
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// True when a TCP connect from `from` to `ip:port` completes within `timeout` (a listener is
/// put up in `to` first, so a failure means the path, not a missing server).
pub fn tcp_connects(from: &Netns, to: &Netns, ip: &str, port: u16, timeout: Duration) -> bool {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let server = s.spawn(move || {
            to.enter(move || {
                let l = TcpListener::bind(("0.0.0.0", port)).expect("bind listener");
                let _ = tx.send(());
                // Held open until the client side is done.
                let _ = stop_rx.recv_timeout(Duration::from_secs(30));
                drop(l);
            })
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("listener up");
        let ok = from.enter(|| {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            TcpStream::connect_timeout(&addr, timeout).is_ok()
        });
        let _ = stop_tx.send(());
        server.join().expect("listener thread");
        ok
    })
}

/// Asks `server` (inside `ns`) for `name`'s A record; returns the addresses in the answer.
pub fn dns_a(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
) -> Result<Vec<std::net::Ipv4Addr>, String> {
    let mut q = vec![0x4d, 0x53, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let reply = ns.enter(|| -> Result<Vec<u8>, String> {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.send_to(&q, server).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf).map_err(|e| format!("no DNS reply: {e}"))?;
        Ok(buf[..n].to_vec())
    })?;
    parse_a_answers(&reply, q.len())
}

/// Reads the A records after the echoed question (answers use name compression or not; we skip
/// the owner name either way).
fn parse_a_answers(r: &[u8], question_end: usize) -> Result<Vec<std::net::Ipv4Addr>, String> {
    if r.len() < question_end || r[0..2] != [0x4d, 0x53] {
        return Err(format!("bad DNS reply {r:02x?}"));
    }
    let count = u16::from_be_bytes([r[6], r[7]]);
    let mut at = question_end;
    let mut out = Vec::new();
    for _ in 0..count {
        at = skip_name(r, at).ok_or("truncated answer name")?;
        let fixed = r.get(at..at + 10).ok_or("truncated answer")?;
        let (rtype, rdlen) = (
            u16::from_be_bytes([fixed[0], fixed[1]]),
            u16::from_be_bytes([fixed[8], fixed[9]]) as usize,
        );
        let data = r.get(at + 10..at + 10 + rdlen).ok_or("truncated rdata")?;
        if rtype == 1 && rdlen == 4 {
            out.push(std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlen;
    }
    Ok(out)
}

fn skip_name(r: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *r.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
}
