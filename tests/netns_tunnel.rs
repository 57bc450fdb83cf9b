//! The meshd daemon moving real traffic through real TUN devices in network namespaces, against
//! itself and against nebula 1.6.1 (as initiator and as responder), with both ciphers: ping, and
//! 16 MB TCP transfers each way whose content is checked by SHA-256. Also: a killed peer comes
//! back by itself, and SIGTERM closes tunnels (the nebula peer logs it), removes the device and
//! exits 0 within 5 s.
//!
//! All traffic stays inside the namespaces the test creates; every namespace and process is
//! removed by Drop guards, also on failure.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NodePki, NsProcess};
use sha2::{Digest, Sha256};

const TRANSFER: usize = 16 << 20;
const VPN_A: &str = "10.42.0.1";
const VPN_B: &str = "10.42.0.2";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Meshd,
    Nebula,
}

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
}

/// Two namespaces on a veth, a CA, and per-side config files (ns, tun dev, config path).
struct Pair {
    // Processes are declared in tests after this, so they stop before the namespaces go.
    a: Netns,
    b: Netns,
    dir: tempfile::TempDir,
    dev_a: String,
    dev_b: String,
    cfg_a: PathBuf,
    cfg_b: PathBuf,
}

impl Pair {
    fn new(cipher: &str) -> Pair {
        Pair::with_firewall_a(cipher, None)
    }

    /// Like `new`, with raw `firewall:` YAML for side a (`None`: allow everything).
    fn with_firewall_a(cipher: &str, firewall_a: Option<&str>) -> Pair {
        let dir = common::tempdir();
        let a = Netns::new("mta");
        let b = Netns::new("mtb");
        veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
        let ca = NebulaCa::new(dir.path(), "tunnel test ca");
        let (dev_a, dev_b) = (common::unique_name("mt"), common::unique_name("mt"));
        let config = |dev: &str, peer_vpn: &str, peer_under: &str, pki: &NodePki, f: &str| {
            let mut c = NodeConfig::new(dev);
            if f == "a.yml" {
                c.firewall = firewall_a.map(str::to_string);
            }
            c.cipher = cipher.into();
            c.punchy = false;
            c.static_host_map
                .push((peer_vpn.into(), vec![format!("{peer_under}:4242")]));
            c.write(dir.path(), f, pki)
        };
        let cfg_a = config(
            &dev_a,
            VPN_B,
            "192.0.2.2",
            &ca.sign("a", "10.42.0.1/24", &[]),
            "a.yml",
        );
        let cfg_b = config(
            &dev_b,
            VPN_A,
            "192.0.2.1",
            &ca.sign("b", "10.42.0.2/24", &[]),
            "b.yml",
        );
        Pair {
            a,
            b,
            dir,
            dev_a,
            dev_b,
            cfg_a,
            cfg_b,
        }
    }

    fn start_a(&self, which: Impl, log: &str) -> NsProcess {
        start(
            which,
            &self.a,
            &self.cfg_a,
            &self.dev_a,
            &self.dir.path().join(log),
        )
    }

    fn start_b(&self, which: Impl, log: &str) -> NsProcess {
        start(
            which,
            &self.b,
            &self.cfg_b,
            &self.dev_b,
            &self.dir.path().join(log),
        )
    }
}

/// Starts a node and waits (bounded) until its tun device exists.
fn start(which: Impl, ns: &Netns, config: &Path, dev: &str, log: &Path) -> NsProcess {
    let bin = match which {
        Impl::Meshd => common::meshd_bin().to_string_lossy().into_owned(),
        Impl::Nebula => "nebula".to_string(),
    };
    let mut p = ns.spawn(&[&bin, "-config", config.to_str().expect("utf-8")], log);
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        ns.has_link(dev)
    });
    assert!(
        up && p.is_running(),
        "{which:?} did not bring up {dev}:\n{}",
        p.log()
    );
    p
}

/// Pings until one echo is answered (the first ones trigger the handshake), bounded.
fn ping_eventually(ns: &Netns, dest: &str, tries: u32) -> bool {
    (0..tries).any(|_| ns.ping(dest, 1))
}

/// Deterministic test bytes (xorshift), different per seed.
fn payload(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(TRANSFER);
    while v.len() < TRANSFER {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(TRANSFER);
    v
}

/// Sends `data` over TCP from `from` to `to_ip` (a listener in `to`) and returns the SHA-256 the
/// receiver computed over what arrived.
fn transfer(from: &Netns, to: &Netns, to_ip: &str, data: &[u8]) -> [u8; 32] {
    let port = 20_000 + (std::process::id() % 10_000) as u16;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            to.enter(|| {
                let l = TcpListener::bind(("0.0.0.0", port)).expect("bind listener");
                tx.send(()).expect("signal listening");
                let (mut c, _) = l.accept().expect("accept");
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0usize;
                loop {
                    let n = c.read(&mut buf).expect("read transfer");
                    if n == 0 {
                        break;
                    }
                    total += n;
                    h.update(&buf[..n]);
                }
                assert_eq!(total, TRANSFER, "received byte count");
                let out: [u8; 32] = h.finalize().into();
                out
            })
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("listener up");
        from.enter(|| {
            let addr: SocketAddr = format!("{to_ip}:{port}").parse().unwrap();
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .expect("connect through the tunnel");
            c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
            c.write_all(data).expect("send transfer");
        });
        server.join().expect("receiver thread")
    })
}

/// Ping both ways, then 16 MB each way with content checked.
fn exercise(pair: &Pair, na: &NsProcess, nb: &NsProcess) {
    let logs = || format!("--- a:\n{}\n--- b:\n{}", na.log(), nb.log());
    assert!(ping_eventually(&pair.a, VPN_B, 10), "no tunnel\n{}", logs());
    assert!(pair.b.ping(VPN_A, 2), "b->a lost echoes\n{}", logs());
    assert!(!pair.a.ping("10.42.0.9", 1), "echo from an absent host");
    let data = payload(7);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let started = Instant::now();
    assert_eq!(
        transfer(&pair.a, &pair.b, VPN_B, &data),
        want,
        "a->b content"
    );
    let data = payload(11);
    let want: [u8; 32] = Sha256::digest(&data).into();
    assert_eq!(
        transfer(&pair.b, &pair.a, VPN_A, &data),
        want,
        "b->a content"
    );
    eprintln!("32 MB through the tunnel in {:?}", started.elapsed());
}

fn scenario(a: Impl, b: Impl, cipher: &str) {
    let pair = Pair::new(cipher);
    let na = pair.start_a(a, "a.log");
    let nb = pair.start_b(b, "b.log");
    // a initiates: its pings are the first packets.
    exercise(&pair, &na, &nb);
}

#[test]
fn meshd_to_meshd_both_ciphers() {
    if !ready("meshd_to_meshd_both_ciphers") {
        return;
    }
    for cipher in ["aes", "chachapoly"] {
        scenario(Impl::Meshd, Impl::Meshd, cipher);
    }
}

#[test]
fn meshd_initiates_to_nebula_both_ciphers() {
    if !ready("meshd_initiates_to_nebula_both_ciphers") {
        return;
    }
    for cipher in ["aes", "chachapoly"] {
        scenario(Impl::Meshd, Impl::Nebula, cipher);
    }
}

#[test]
fn nebula_initiates_to_meshd_both_ciphers() {
    if !ready("nebula_initiates_to_meshd_both_ciphers") {
        return;
    }
    for cipher in ["aes", "chachapoly"] {
        scenario(Impl::Nebula, Impl::Meshd, cipher);
    }
}

/// SIGKILL either side and restart it: the tunnel comes back by itself within a bounded wait.
#[test]
fn killed_side_restarts_and_tunnel_returns() {
    if !ready("killed_side_restarts_and_tunnel_returns") {
        return;
    }
    let pair = Pair::new("aes");
    let mut na = pair.start_a(Impl::Meshd, "a.log");
    let mut nb = pair.start_b(Impl::Nebula, "b.log");
    assert!(
        ping_eventually(&pair.a, VPN_B, 10),
        "no tunnel\n{}\n{}",
        na.log(),
        nb.log()
    );
    for victim in ["meshd", "nebula"] {
        let p = if victim == "meshd" { &mut na } else { &mut nb };
        // SAFETY: kill on a PID this test started and still owns.
        assert_eq!(unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) }, 0);
        assert!(
            wait_for(Duration::from_secs(5), Duration::from_millis(20), || !p
                .is_running()),
            "{victim} survived SIGKILL"
        );
        let (ns, dev) = if victim == "meshd" {
            (&pair.a, &pair.dev_a)
        } else {
            (&pair.b, &pair.dev_b)
        };
        assert!(
            wait_for(Duration::from_secs(5), Duration::from_millis(20), || !ns
                .has_link(dev)),
            "{victim}'s device outlived it"
        );
        if victim == "meshd" {
            na = pair.start_a(Impl::Meshd, "a2.log");
        } else {
            nb = pair.start_b(Impl::Nebula, "b2.log");
        }
        // Both directions must come back; the survivor still holds a stale tunnel.
        let started = Instant::now();
        let back = wait_for(Duration::from_secs(20), Duration::from_millis(10), || {
            pair.a.ping(VPN_B, 1) && pair.b.ping(VPN_A, 1)
        });
        assert!(
            back,
            "tunnel did not return after {victim} restarted\n--- a:\n{}\n--- b:\n{}",
            na.log(),
            nb.log()
        );
        eprintln!(
            "tunnel back {:?} after restarting {victim}",
            started.elapsed()
        );
    }
}

/// SIGTERM: exit 0 within 5 s, device gone, and nebula logs the closed tunnel.
#[test]
fn sigterm_closes_tunnels_and_exits_cleanly() {
    if !ready("sigterm_closes_tunnels_and_exits_cleanly") {
        return;
    }
    let pair = Pair::new("aes");
    let mut na = pair.start_a(Impl::Meshd, "a.log");
    let nb = pair.start_b(Impl::Nebula, "b.log");
    assert!(
        ping_eventually(&pair.a, VPN_B, 10),
        "no tunnel\n{}\n{}",
        na.log(),
        nb.log()
    );
    let started = Instant::now();
    // SAFETY: kill on a PID this test started and still owns.
    assert_eq!(unsafe { libc::kill(na.pid() as i32, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(s) = na.try_wait() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "meshd still running 5 s after SIGTERM\n{}",
            na.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "exit status {status}\n{}", na.log());
    assert!(!pair.a.has_link(&pair.dev_a), "tun device left behind");
    let closed = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        nb.log().contains("Close tunnel received")
    });
    assert!(closed, "nebula did not log the close:\n{}", nb.log());
}

/// `tun.use_offloads: false` and `listen.udp_offloads: false` on one meshd, offloads on (the
/// default) on the other: the plain and the offloading data paths carry the same 32 MB, both
/// ways, and each daemon logs which it runs.
#[test]
fn meshd_offloads_off_to_meshd_offloads_on() {
    if !ready("meshd_offloads_off_to_meshd_offloads_on") {
        return;
    }
    let pair = Pair::new("aes");
    let yaml = std::fs::read_to_string(&pair.cfg_a).unwrap();
    let off = yaml
        .replace(
            "tun:\n  disabled: false",
            "tun:\n  use_offloads: false\n  disabled: false",
        )
        .replace("listen:\n", "listen:\n  udp_offloads: false\n");
    assert_eq!(
        off.matches("offloads: false").count(),
        2,
        "config layout changed"
    );
    std::fs::write(&pair.cfg_a, off).unwrap();
    let na = pair.start_a(Impl::Meshd, "a.log");
    let nb = pair.start_b(Impl::Meshd, "b.log");
    exercise(&pair, &na, &nb);
    assert!(
        na.log()
            .contains("tun_offload=false udp_gso=false udp_gro=false"),
        "a runs without offloads:\n{}",
        na.log()
    );
    assert!(
        nb.log()
            .contains("tun_offload=true udp_gso=true udp_gro=true"),
        "b runs with offloads:\n{}",
        nb.log()
    );
}

/// `tun.disabled`: no device, yet meshd answers pings to its VPN IP through the tunnel. Nebula
/// (with a TUN) initiates and meshd responds; 200 pings and 1200-byte pings arrive without loss,
/// with both ciphers.
#[test]
fn tun_disabled_node_answers_echo_aes() {
    tun_disabled_node_answers_echo("tun_disabled_node_answers_echo_aes", "aes");
}

#[test]
fn tun_disabled_node_answers_echo_chachapoly() {
    tun_disabled_node_answers_echo("tun_disabled_node_answers_echo_chachapoly", "chachapoly");
}

fn tun_disabled_node_answers_echo(test: &str, cipher: &str) {
    if !ready(test) {
        return;
    }
    let pair = Pair::new(cipher);
    let yaml = std::fs::read_to_string(&pair.cfg_a).unwrap();
    let disabled = yaml.replace("tun:\n  disabled: false", "tun:\n  disabled: true");
    assert_ne!(yaml, disabled, "config layout changed");
    std::fs::write(&pair.cfg_a, disabled).unwrap();
    let bin = common::meshd_bin().to_string_lossy().into_owned();
    let mut na = pair.a.spawn(
        &[&bin, "-config", pair.cfg_a.to_str().unwrap()],
        &pair.dir.path().join("a.log"),
    );
    let started = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        na.log().contains("meshd started")
    });
    assert!(
        started && na.is_running(),
        "meshd did not start:\n{}",
        na.log()
    );
    assert!(
        !pair.a.has_link(&pair.dev_a),
        "a device despite tun.disabled"
    );
    let nb = pair.start_b(Impl::Nebula, "b.log");
    assert!(
        ping_eventually(&pair.b, VPN_A, 10),
        "no echo from the tun-less meshd\n{}\n{}",
        na.log(),
        nb.log()
    );
    // Bounded: 200 small echoes 10 ms apart, then 20 large ones (1200 bytes of payload fit the
    // 1300-byte tunnel MTU); each burst must come back whole.
    for (count, size, interval) in [("200", "56", "0.01"), ("20", "1200", "0.05")] {
        let out = pair.b.exec(&[
            "ping", "-n", "-q", "-c", count, "-s", size, "-i", interval, "-W", "2", VPN_A,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && text.contains(&format!("{count} received"))
                && text.contains(" 0% packet loss"),
            "ping -c {count} -s {size} through the tunnel lost packets:\n{text}\n{}\n{}",
            na.log(),
            nb.log()
        );
    }
}

/// The firewall from meshd's config is enforced on tunnel traffic: ICMP and one TCP port are
/// allowed in, another port with a listener behind it is not.
#[test]
fn meshd_enforces_its_configured_firewall() {
    if !ready("meshd_enforces_its_configured_firewall") {
        return;
    }
    let fw = "  outbound:\n    - {port: any, proto: any, host: any}\n  inbound:\n    \
              - {port: any, proto: icmp, host: any}\n    - {port: 7001, proto: tcp, host: b}\n";
    let pair = Pair::with_firewall_a("aes", Some(fw));
    let na = pair.start_a(Impl::Meshd, "a.log");
    let nb = pair.start_b(Impl::Nebula, "b.log");
    assert!(
        ping_eventually(&pair.b, VPN_A, 10),
        "icmp is allowed\n{}\n{}",
        na.log(),
        nb.log()
    );
    let listeners = pair.a.enter(|| {
        (
            TcpListener::bind(("0.0.0.0", 7001)).expect("bind 7001"),
            TcpListener::bind(("0.0.0.0", 7002)).expect("bind 7002"),
        )
    });
    let connects = |port: u16| {
        pair.b.enter(|| {
            let addr: SocketAddr = format!("{VPN_A}:{port}").parse().unwrap();
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        })
    };
    assert!(connects(7001), "allowed port refused\n{}", na.log());
    assert!(
        !connects(7002),
        "firewall let a port without a rule through"
    );
    drop(listeners);
}
