//! Interop with Debian's nebula 1.6.1 over real UDP on 127.0.0.1 (no root): meshd's sans-IO
//! node, driven by this test over a std UdpSocket, builds tunnels with a `tun.disabled` nebula in
//! both roles and with both ciphers, and exchanges ICMP echo through them.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::nebula::{self, Nebula};
use meshd::crypto::Cipher;
use meshd::node::{ipv4, DatagramOutcome, DropReason, Event, Node, NodeConfig, TunOutcome, VpnIp};

const NEBULA_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const MESHD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

fn start_nebula(
    dir: &Path,
    cipher: &str,
    meshd_addr: SocketAddr,
    as_lighthouse_client: bool,
) -> (Nebula, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], nebula::free_port([127, 0, 0, 1])));
    let lighthouse = if as_lighthouse_client {
        format!(
            "lighthouse:\n  am_lighthouse: false\n  interval: 60\n  hosts:\n    - \"{MESHD_IP}\"\n"
        )
    } else {
        "lighthouse:\n  am_lighthouse: false\n".to_string()
    };
    let extra = format!(
        "static_host_map:\n  \"{MESHD_IP}\": [\"{meshd_addr}\"]\n{lighthouse}\
         cipher: {cipher}\n"
    );
    (nebula::start(dir, "neb", addr, &extra), addr)
}

fn make_node(dir: &Path, cipher: Cipher, nebula_addr: SocketAddr) -> Node {
    let config = NodeConfig {
        cipher,
        static_host_map: BTreeMap::from([(VpnIp::from(NEBULA_IP), vec![nebula_addr])]),
        tun_disabled: false,
        ..NodeConfig::default()
    };
    nebula::node(dir, "mesh", config, 42)
}

/// Drives node <-> socket until `done` says so or the deadline passes.
struct Driver {
    node: Node,
    sock: UdpSocket,
    events: Vec<Event>,
    tun: Vec<Vec<u8>>,
}

impl Driver {
    fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.sock.send_to(&t.bytes, t.to).unwrap();
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push(e);
        }
    }

    fn send_tun(&mut self, packet: &[u8]) -> TunOutcome {
        let mut out = vec![0u8; packet.len() + 64];
        let r = self
            .node
            .handle_tun_packet(Instant::now(), packet, &mut out);
        if let TunOutcome::Send { to, len } = r {
            self.sock.send_to(&out[..len], to).unwrap();
        }
        self.flush();
        r
    }

    fn step(&mut self) {
        let mut buf = vec![0u8; 9001];
        self.sock
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            if let DatagramOutcome::ToTun(r) =
                self.node
                    .handle_datagram(Instant::now(), from, &mut buf[..n])
            {
                self.tun.push(buf[r].to_vec());
            }
        }
        self.node.handle_timeout(Instant::now());
        self.flush();
    }

    fn until(&mut self, secs: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn echo_replies(&self) -> Vec<u16> {
        self.tun
            .iter()
            .filter_map(|p| {
                let i = ipv4::parse(p).ok()?;
                (i.src == NEBULA_IP && i.dst == MESHD_IP && p.get(20) == Some(&0))
                    .then(|| u16::from_be_bytes([p[26], p[27]]))
            })
            .collect()
    }
}

fn ping(d: &mut Driver, seq: u16) -> TunOutcome {
    d.send_tun(&ipv4::echo_request(
        MESHD_IP,
        NEBULA_IP,
        0x4d53,
        seq,
        b"meshd interop",
    ))
}

fn initiator(cipher_name: &str, cipher: Cipher) {
    if !nebula::tools("interop_initiator") {
        return;
    }
    let dir = common::tempdir();
    nebula::make_certs(
        dir.path(),
        "interop ca",
        &[("neb", NEBULA_IP), ("mesh", MESHD_IP)],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_guard, neb_addr) =
        start_nebula(dir.path(), cipher_name, sock.local_addr().unwrap(), false);
    std::thread::sleep(Duration::from_millis(500));
    let mut d = Driver {
        node: make_node(dir.path(), cipher, neb_addr),
        sock,
        events: vec![],
        tun: vec![],
    };

    assert_eq!(
        ping(&mut d, 1),
        TunOutcome::Queued,
        "first packet waits for the handshake"
    );
    let ok = d.until(10, |d| d.echo_replies().contains(&1));
    assert!(
        ok,
        "no echo reply; events {:?} drops {:?}",
        d.events,
        d.node.drops().nonzero()
    );
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::HandshakeComplete {
            initiator: true,
            ..
        }
    )));
    for seq in 2..=5 {
        assert!(matches!(ping(&mut d, seq), TunOutcome::Send { .. }));
    }
    assert!(
        d.until(5, |d| (1..=5).all(|s| d.echo_replies().contains(&s))),
        "replies {:?}",
        d.echo_replies()
    );
    assert_eq!(d.node.drops().get(DropReason::AuthFailed), 0);
    // Shutdown: nebula must accept our closeTunnel and forget the tunnel.
    d.node.close_all(Instant::now());
    d.flush();
    assert_eq!(d.node.hostmap().host_count(), 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    let closed = loop {
        let text = _guard.log();
        if text.contains("Close tunnel received") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(closed, "nebula did not log our closeTunnel");
}

fn responder(cipher_name: &str, cipher: Cipher) {
    if !nebula::tools("interop_responder") {
        return;
    }
    let dir = common::tempdir();
    nebula::make_certs(
        dir.path(),
        "interop ca",
        &[("neb", NEBULA_IP), ("mesh", MESHD_IP)],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_guard, neb_addr) =
        start_nebula(dir.path(), cipher_name, sock.local_addr().unwrap(), true);
    let mut d = Driver {
        node: make_node(dir.path(), cipher, neb_addr),
        sock,
        events: vec![],
        tun: vec![],
    };
    let ok = d.until(10, |d| {
        d.events.iter().any(|e| {
            matches!(
                e,
                Event::HandshakeComplete {
                    initiator: false,
                    ..
                }
            )
        })
    });
    assert!(
        ok,
        "nebula did not handshake to us; events {:?} drops {:?}",
        d.events,
        d.node.drops().nonzero()
    );
    // Its first post-handshake packet is a HostUpdateNotification (counter 3) that we decrypt.
    assert!(
        d.until(5, |d| d.node.drops().get(DropReason::LightHouseNotServing)
            >= 1)
    );
    assert!(matches!(ping(&mut d, 7), TunOutcome::Send { .. }));
    assert!(
        d.until(5, |d| d.echo_replies().contains(&7)),
        "drops {:?}",
        d.node.drops().nonzero()
    );
    assert_eq!(d.node.drops().get(DropReason::AuthFailed), 0);
    // SIGTERM: nebula sends an encrypted closeTunnel, which we authenticate and act on.
    // SAFETY: kill(2) on the PID of the child this test spawned.
    unsafe { libc::kill(_guard.pid() as i32, libc::SIGTERM) };
    let closed = d.until(5, |d| {
        d.events.iter().any(|e| {
            matches!(
                e,
                Event::TunnelClosed {
                    reason: meshd::node::CloseReason::PeerClosed,
                    ..
                }
            )
        })
    });
    assert!(
        closed,
        "no closeTunnel from nebula; drops {:?}",
        d.node.drops().nonzero()
    );
    assert_eq!(d.node.hostmap().host_count(), 0);
}

/// meshd restarts (new process state, same identity, later clock): nebula accepts the newer
/// handshake and replaces its tunnel.
#[test]
fn interop_meshd_restart_replaces_tunnel() {
    if !nebula::tools("interop_meshd_restart") {
        return;
    }
    let dir = common::tempdir();
    nebula::make_certs(
        dir.path(),
        "interop ca",
        &[("neb", NEBULA_IP), ("mesh", MESHD_IP)],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (_guard, neb_addr) = start_nebula(dir.path(), "aes", sock.local_addr().unwrap(), false);
    std::thread::sleep(Duration::from_millis(500));
    let mut d = Driver {
        node: make_node(dir.path(), Cipher::AesGcm, neb_addr),
        sock,
        events: vec![],
        tun: vec![],
    };
    ping(&mut d, 1);
    assert!(d.until(10, |d| d.echo_replies().contains(&1)));
    d.node = make_node(dir.path(), Cipher::AesGcm, neb_addr);
    d.events.clear();
    assert_eq!(ping(&mut d, 2), TunOutcome::Queued);
    assert!(
        d.until(10, |d| d.echo_replies().contains(&2)),
        "events {:?}",
        d.events
    );
}

/// nebula restarts and forgets the tunnel: it answers our packets with recv_errors; the fourth
/// closes our side, and the next packet re-handshakes.
#[test]
fn interop_nebula_restart_recv_errors() {
    if !nebula::tools("interop_nebula_restart") {
        return;
    }
    let dir = common::tempdir();
    nebula::make_certs(
        dir.path(),
        "interop ca",
        &[("neb", NEBULA_IP), ("mesh", MESHD_IP)],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (guard, neb_addr) =
        start_nebula(dir.path(), "chachapoly", sock.local_addr().unwrap(), false);
    std::thread::sleep(Duration::from_millis(500));
    let mut d = Driver {
        node: make_node(dir.path(), Cipher::ChaChaPoly, neb_addr),
        sock,
        events: vec![],
        tun: vec![],
    };
    ping(&mut d, 1);
    assert!(d.until(10, |d| d.echo_replies().contains(&1)));
    drop(guard);
    let _guard = nebula::spawn(dir.path(), "neb");
    std::thread::sleep(Duration::from_millis(700));
    let nebula = VpnIp::from(NEBULA_IP);
    for seq in 2..=4 {
        assert!(matches!(ping(&mut d, seq), TunOutcome::Send { .. }));
        d.until(1, |d| {
            d.node
                .hostmap()
                .host(nebula)
                .is_some_and(|h| h.recv_errors as u16 == seq - 1)
        });
    }
    assert_eq!(
        d.node.hostmap().host(nebula).map(|h| h.recv_errors),
        Some(3)
    );
    ping(&mut d, 5);
    assert!(
        d.until(3, |d| d.node.hostmap().host(nebula).is_none()),
        "fourth recv_error closes"
    );
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::TunnelClosed {
            reason: meshd::node::CloseReason::RecvError,
            ..
        }
    )));
    assert_eq!(ping(&mut d, 6), TunOutcome::Queued);
    assert!(d.until(10, |d| d.echo_replies().contains(&6)));
}

#[test]
fn interop_meshd_initiator_aes() {
    initiator("aes", Cipher::AesGcm);
}

#[test]
fn interop_meshd_initiator_chachapoly() {
    initiator("chachapoly", Cipher::ChaChaPoly);
}

#[test]
fn interop_meshd_responder_aes() {
    responder("aes", Cipher::AesGcm);
}

#[test]
fn interop_meshd_responder_chachapoly() {
    responder("chachapoly", Cipher::ChaChaPoly);
}
