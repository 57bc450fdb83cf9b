//! Interop with Debian's nebula 1.6.1 over real UDP on 127.0.0.1 (no root): meshd's sans-IO
//! node, driven by this test over a std UdpSocket, builds tunnels with a `tun.disabled` nebula in
//! both roles and with both ciphers, and exchanges ICMP echo through them.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshd::cert::CaPool;
use meshd::crypto::Cipher;
use meshd::node::{
    identity_from_pem, ipv4, CaPoolVerifier, DatagramOutcome, DropReason, Event, Node, NodeConfig,
    TunOutcome, VpnIp,
};

const NEBULA_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const MESHD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// Kills the nebula process (by PID) when the test ends, even on panic.
struct NebulaGuard {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for NebulaGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- nebula log ----\n{log}");
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run nebula-cert");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) {
    let d = dir.to_str().unwrap();
    run(Command::new("nebula-cert")
        .args(["ca", "-name", "interop ca", "-out-crt"])
        .arg(format!("{d}/ca.crt"))
        .arg("-out-key")
        .arg(format!("{d}/ca.key")));
    for (name, ip) in [("neb", NEBULA_IP), ("mesh", MESHD_IP)] {
        run(Command::new("nebula-cert")
            .args(["sign", "-name", name, "-ip", &format!("{ip}/24")])
            .arg("-ca-crt")
            .arg(format!("{d}/ca.crt"))
            .arg("-ca-key")
            .arg(format!("{d}/ca.key"))
            .arg("-out-crt")
            .arg(format!("{d}/{name}.crt"))
            .arg("-out-key")
            .arg(format!("{d}/{name}.key")));
    }
}

fn start_nebula(
    dir: &Path,
    cipher: &str,
    meshd_addr: SocketAddr,
    as_lighthouse_client: bool,
) -> (NebulaGuard, SocketAddr) {
    // Reserve a free loopback port for nebula.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let lighthouse = if as_lighthouse_client {
        format!(
            "lighthouse:\n  am_lighthouse: false\n  interval: 60\n  hosts:\n    - \"{MESHD_IP}\"\n"
        )
    } else {
        "lighthouse:\n  am_lighthouse: false\n".to_string()
    };
    let cfg = format!(
        "pki:\n  ca: {d}/ca.crt\n  cert: {d}/neb.crt\n  key: {d}/neb.key\n\
         static_host_map:\n  \"{MESHD_IP}\": [\"{meshd_addr}\"]\n{lighthouse}\
         listen:\n  host: 127.0.0.1\n  port: {port}\n\
         tun:\n  disabled: true\n  dev: nebula_it\n\
         cipher: {cipher}\n\
         logging:\n  level: debug\n\
         firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n  \
         inbound:\n    - port: any\n      proto: any\n      host: any\n"
    );
    std::fs::write(dir.join("neb.yml"), cfg).unwrap();
    (spawn_nebula(dir), SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Starts (or restarts) nebula with the config already written to `dir/neb.yml`.
fn spawn_nebula(dir: &Path) -> NebulaGuard {
    let log = dir.join("neb.log");
    let child = Command::new("nebula")
        .arg("-config")
        .arg(dir.join("neb.yml"))
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("neb.err")).unwrap(),
        ))
        .spawn()
        .expect("start nebula");
    NebulaGuard { child, log }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn make_node(dir: &Path, cipher: Cipher, nebula_addr: SocketAddr) -> Node {
    let cert = std::fs::read(dir.join("mesh.crt")).unwrap();
    let key = std::fs::read(dir.join("mesh.key")).unwrap();
    let identity = identity_from_pem(&cert, &key).expect("identity");
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let now_s = (unix_ns() / 1_000_000_000) as i64;
    let pool: CaPool = CaPool::from_pem(&ca, now_s).expect("ca").pool;
    let config = NodeConfig {
        cipher,
        static_host_map: BTreeMap::from([(VpnIp::from(NEBULA_IP), vec![nebula_addr])]),
        tun_disabled: false,
        ..NodeConfig::default()
    };
    Node::new(
        config,
        identity,
        Box::new(CaPoolVerifier { pool }),
        42,
        Instant::now(),
        unix_ns(),
    )
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
    if !common::require_tool("interop_initiator", "nebula")
        || !common::require_tool("interop_initiator", "nebula-cert")
    {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
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
    let log = _guard.log.clone();
    let deadline = Instant::now() + Duration::from_secs(3);
    let closed = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
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
    if !common::require_tool("interop_responder", "nebula")
        || !common::require_tool("interop_responder", "nebula-cert")
    {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
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
    unsafe { libc::kill(_guard.child.id() as i32, libc::SIGTERM) };
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
    if !common::require_tool("interop_meshd_restart", "nebula")
        || !common::require_tool("interop_meshd_restart", "nebula-cert")
    {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
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
    if !common::require_tool("interop_nebula_restart", "nebula")
        || !common::require_tool("interop_nebula_restart", "nebula-cert")
    {
        return;
    }
    let dir = common::tempdir();
    make_certs(dir.path());
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
    let _guard = spawn_nebula(dir.path());
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
